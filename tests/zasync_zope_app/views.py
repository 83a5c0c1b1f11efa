"""Views that put jobs in a Zope request, as an application's do."""

import datetime
import json

from AccessControl import getSecurityManager
from Products.Five.browser import BrowserView
import zasync
import zasync.job.clock
from zasync.interfaces import IQueue

from zasync_zope_app import jobs


class Setup(BrowserView):
    """Make the folder /docs (a site) with the document /docs/doc1, the
    records of the jobs, and two users besides the admin: 'viewer', whose
    role JobViewer has the permission to view jobs but not to manage them,
    and 'member', who has neither."""

    def __call__(self):
        from OFS.Folder import Folder
        from Products.Five.component import enableSite
        from zope.component.persistentregistry import PersistentComponents
        from zope.component.globalregistry import base
        app = self.context.getPhysicalRoot()
        jobs.records(app)
        if "docs" not in app.objectIds():
            app._setObject("docs", Folder("docs"))
            docs = app["docs"]
            enableSite(docs)
            docs.setSiteManager(PersistentComponents("docs", bases=(base,)))
            docs._setObject("doc1", Folder("doc1"))
        if "JobViewer" not in app.valid_roles():
            app._addRole("JobViewer")
            app.manage_permission("zasync: View jobs", ["Manager", "JobViewer"], 0)
            app.acl_users._doAddUser("viewer", "viewer-pw", ["JobViewer"], [])
            app.acl_users._doAddUser("member", "member-pw", [], [])
            app.acl_users._doAddUser("leaver", "leaver-pw", [], [])
        return "ok"


class PutRecord(BrowserView):
    """Put a job counting a run for the token, with this object as argument."""

    def __call__(self):
        delay = float(self.request.get("delay", 0))
        job = IQueue(self.context).put(
            zasync.Job(jobs.record, self.context, self.request["token"]),
            begin_after=zasync.job.clock.now() + datetime.timedelta(seconds=delay))
        return job.id


class PutSlow(BrowserView):
    """Put a job that takes `seconds`, saying in `started_file` when it starts."""

    def __call__(self):
        job = IQueue(self.context).put(
            jobs.record_slowly, self.context, self.request["token"],
            self.request["seconds"], self.request["started_file"])
        return job.id


class PutThenFail(BrowserView):
    """Put a job, then fail the request: the job must never exist."""

    def __call__(self):
        IQueue(self.context).put(jobs.record, self.context, self.request["token"])
        raise ValueError("the request fails after its put")


class PutWhoami(BrowserView):
    """Put a job that records where and as whom it runs."""

    def __call__(self):
        delay = float(self.request.get("delay", 0))
        job = IQueue(self.context).put(
            zasync.Job(jobs.whoami, self.context, self.request["token"]),
            begin_after=zasync.job.clock.now() + datetime.timedelta(seconds=delay))
        return job.id


class RemoveUser(BrowserView):
    """Remove a user of the root's user folder."""

    def __call__(self):
        self.context.getPhysicalRoot().acl_users._doDelUsers([self.request["name"]])
        return "removed"


class PutMethod(BrowserView):
    """Put this object's own absolute_url method as the job."""

    def __call__(self):
        return IQueue(self.context).put(self.context.absolute_url).id


class State(BrowserView):
    """The records, the user of this request, and the jobs' statuses."""

    def __call__(self):
        from zasync.interfaces import IQueues
        book = jobs.records(self.context.getPhysicalRoot())
        wanted = self.request.get("job")
        found = {}
        if wanted:
            job = IQueues(self.context).find_job(wanted)
            found = {"status": job.status, "result": job.result,
                     "failure": str(job.failure) if job.failure else None} if job else {}
        self.request.response.setHeader("Content-Type", "application/json")
        return json.dumps({"records": {key: dict(value) for key, value in book.items()},
                           "user": getSecurityManager().getUser().getUserName(),
                           "job": found})

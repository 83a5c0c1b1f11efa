"""Job callables and persistent classes for the Zope integration tests
(test_component, test_context, test_eager, test_zcml, test_lifecycle_events).

Workers find a job's callable by importing it, so these live at module level
in a module the tests' path holds.
"""

import threading

import persistent
import persistent.mapping
import zope.component
from zope.component.interfaces import ISite
from zope.component.persistentregistry import PersistentComponents
from zope.interface import Interface, implementer

import zasync
from zasync.interfaces import IQueue


class IGreeter(Interface):
    """A utility registered only in a site's local registry."""

    def greet(name):
        """A greeting for `name`."""


@implementer(IGreeter)
class Greeter(persistent.Persistent):

    def __init__(self, greeting):
        self.greeting = greeting

    def greet(self, name):
        return f"{self.greeting}, {name}"


@implementer(ISite)
class Site(persistent.mapping.PersistentMapping):
    """A minimal Zope site: a folder with a persistent local registry whose
    base is the global registry."""

    def __init__(self, name="site"):
        super().__init__()
        self._sm = PersistentComponents(name, bases=(zope.component.getGlobalSiteManager(),))

    def getSiteManager(self):
        return self._sm

    def setSiteManager(self, sm):
        self._sm = sm


class Document(persistent.Persistent):

    def __init__(self, text=""):
        self.text = text
        self.log = []


def add(a, b):
    return a + b


def fail(message="failed on purpose"):
    raise ValueError(message)


def greet_in_site(name):
    """Needs the site's local registry: fails outside the site."""
    return zope.component.getUtility(IGreeter).greet(name)


def whoami():
    """The ids of the principals of the thread's security interaction."""
    from zope.security.management import queryInteraction
    interaction = queryInteraction()
    if interaction is None:
        return None
    return [p.principal.id for p in interaction.participations]


def note(document, text):
    """Append to a document (in whatever database it lives)."""
    document.log = document.log + [text]
    return len(document.log)


def note_in_context(document):
    """Record on the document who ran it and in which site."""
    from zope.component.hooks import getSite
    site = getSite()
    document.log = document.log + [(whoami(), site is not None and site is document.site)]
    return greet_in_site(whoami()[0])


def put_follow_up(document, text):
    """A job that puts another job (through the IQueue adapter)."""
    IQueue(document).put(zasync.Job(note, document, text))
    return "put"


_gates = {}
_gates_lock = threading.Lock()


def gate(name):
    with _gates_lock:
        return _gates.setdefault(name, threading.Event())


def arrived(name):
    """Set once a job has reached gate `name`."""
    return gate(f"{name} arrived")


def wait_at_gate(name, timeout=30.0):
    """Say that the job runs, then block until the test opens gate `name`."""
    arrived(name).set()
    if not gate(name).wait(timeout):
        raise TimeoutError(f"gate {name!r} was not opened in {timeout} s")
    return name


def site_now():
    """Whether the worker's thread has a site set."""
    from zope.component.hooks import getSite
    return getSite() is not None


def whoami_after(outcome):
    """A callback: who it runs as."""
    return whoami()


class Member:
    """An application's principal object."""

    def __init__(self, id, title):
        self.id = id
        self.title = title


def find_member(principal_id):
    """A principal lookup, as an application's authentication would do."""
    return Member(principal_id, principal_id.capitalize())


def member_title():
    from zope.security.management import getInteraction
    return getInteraction().participations[0].principal.title


#: what `Recording` contexts did, in order
context_log = []


@implementer(zasync.interfaces.IJobContext)
class Recording:
    """A job context that records its set-up and tear-down, and fails in
    one of them when asked."""

    def __init__(self, name, fail_in=None):
        self.name = name
        self.fail_in = fail_in

    def set_up(self, job):
        context_log.append(("set_up", self.name))
        if self.fail_in == "set_up":
            raise RuntimeError(f"{self.name} cannot set up")
        return self.name.upper()

    def tear_down(self, job, state):
        context_log.append(("tear_down", self.name, state))
        if self.fail_in == "tear_down":
            raise RuntimeError(f"{self.name} cannot tear down")


def capture_recording(job):
    """A capture for `zasync.job.context.capture_on_put`: records the job's
    callable name, or nothing for a job of `whoami`."""
    if job.callable is whoami:
        return None
    return (Recording(f"captured {job.callable.__name__}"),)


@implementer(zasync.interfaces.IJobContext)
class Doubling:
    """A job context that hands the callable its int arguments doubled."""

    def set_up(self, job):
        return 2

    def tear_down(self, job, state):
        pass

    def prepare_call(self, job, state, callable, args, kwargs):
        double = [arg * state if isinstance(arg, int) else arg for arg in args]
        return callable, tuple(double), kwargs

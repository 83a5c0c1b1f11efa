"""A small Pyramid application as docs/pyramid.rst builds it: pyramid_tm,
pyramid_zodbconn with a main and an 'async' database, zasync.integration.pyramid, and
views that put jobs for objects of the main database."""

from pyramid.config import Configurator
from pyramid_zodbconn import get_connection

import zasync.integration.pyramid

import multidb_jobs


def put(request):
    """Put a job for the target of the URL; pyramid_tm commits it."""
    target = get_connection(request).root()["targets"][int(request.matchdict["i"])]
    job = zasync.integration.pyramid.get_queue(request).put(multidb_jobs.touch, target)
    return {"job": job.id}


def put_then_fail(request):
    """Put a job, then fail: pyramid_tm aborts, and the job never was."""
    put(request)
    raise RuntimeError("the view failed after its put")


def make_app(settings):
    with Configurator(settings=settings) as config:
        config.include("pyramid_tm")
        config.include("pyramid_zodbconn")
        config.include("zasync.integration.pyramid")
        config.add_route("put", "/put/{i}")
        config.add_view(put, route_name="put", renderer="json", request_method="POST")
        config.add_route("fail", "/fail/{i}")
        config.add_view(put_then_fail, route_name="fail", renderer="json",
                        request_method="POST")
        return config.make_wsgi_app()

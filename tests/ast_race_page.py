"""Show a job's page for the first time in a fresh process while another
AST is built in the middle of the page's own compilation, and print what
came of it as JSON: {"status", "raced", "log"}.

Run by tests/test_web.py with this folder on PYTHONPATH.  A fresh process,
because Chameleon compiles each template once per process, at its first
use: in any other, the page may have been compiled already.

CPython 3.11 before 3.11.8 keeps the depth counter of its AST constructor
in one place for all threads (gh-106905), and a garbage collection in the
middle of building an AST can switch threads; a worker thread that builds
an AST then (3.11's traceback module parses the line of each frame of a
failed attempt to place its carets) makes the first one fail with
"SystemError: AST constructor recursion depth mismatch".  Here the garbage
collector's callback builds that other AST, in the same thread, at each
collection during Chameleon's first parse of an expression: it moves the
counter just as the other thread would, but at a known moment, so the
race happens every time instead of once in many loaded runs.
"""

import ast
import gc
import json
import logging
import sys

import webob

import zasync
from zasync.web import make_app

import web_jobs


class Race:
    """Build an AST at each garbage collection during the first call of
    Chameleon's parse function (``chameleon.astutil.parse``, which
    compiles an expression to an AST), and only then."""

    def __init__(self):
        self.frame = None
        self.done = False
        self.raced = 0
        self.threshold = gc.get_threshold()

    def profile(self, frame, event, arg):
        if self.done or frame.f_code.co_name != "parse" \
                or frame.f_globals.get("__name__") != "chameleon.astutil":
            return
        if event == "call" and self.frame is None:
            self.frame = frame
            gc.set_threshold(1)        # a collection at nearly every allocation
        elif event == "return" and frame is self.frame:
            self.done = True
            gc.set_threshold(*self.threshold)
            sys.setprofile(None)       # the rest of the page at full speed

    def collecting(self, phase, info):
        if phase == "start" and self.frame is not None and not self.done:
            ast.parse("other = thread(building, an_ast)")
            self.raced += 1


def main():
    records = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logging.getLogger("zasync").addHandler(handler)
    logging.getLogger("zasync").setLevel(logging.INFO)

    db = zasync.open_db("memory://")
    zasync.install(db)
    with db.transaction() as conn:
        job_id = zasync.get_queue(conn).put(zasync.Job(web_jobs.add, 1, 2)).id
    app = make_app(db)

    race = Race()
    gc.callbacks.append(race.collecting)
    sys.setprofile(race.profile)
    try:
        response = webob.Request.blank(f"/jobs/{job_id}").get_response(app)
    finally:
        sys.setprofile(None)
        gc.callbacks.remove(race.collecting)
        gc.set_threshold(*race.threshold)
    print(json.dumps({"status": response.status_code, "raced": race.raced,
                      "log": records}))


if __name__ == "__main__":
    main()

"""A real Zope instance for tests: made by ``mkwsgiinstance`` in a folder,
configured for zasync with the very ZCML and zope.conf that docs/zope.rst
shows, served by ``runwsgi`` on a free loopback port, and stopped by its
pid.  Requests go over HTTP with urllib.

The blocks of docs/zope.rst that an instance takes are marked in the page
by a comment ``.. zope-instance: NAME`` just before them.
"""

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request

from zasync.testing import free_port

HERE = os.path.dirname(os.path.abspath(__file__))
DOCS = os.path.join(os.path.dirname(HERE), "docs", "zope.rst")
BIN = os.path.dirname(sys.executable)

ADMIN = ("admin", "secret")


def doc_block(name, path=DOCS):
    """The text of the code block marked ``.. zope-instance: NAME``."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    marker = f".. zope-instance: {name}"
    try:
        start = lines.index(marker)
    except ValueError:
        raise LookupError(f"no block {name!r} in {path}") from None
    i = start + 1
    while not lines[i].startswith(".. code-block::"):
        i += 1
    i += 1
    block = []
    while i < len(lines) and (not lines[i].strip() or lines[i].startswith(" ")):
        block.append(lines[i])
        i += 1
    return textwrap.dedent("\n".join(block)).strip() + "\n"


class Answer:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body)


#: the ZEO server's address in the docs' examples, replaced by a free port
DOC_ZEO_ADDRESS = "127.0.0.1:8100"


class ZopeInstance:
    """A Zope instance of the `layout` 'main' (the queues in the main
    database), 'async' (in a database of their own) or 'zeo' (both
    databases storages of a ZEO server that the instance starts first)."""

    def __init__(self, folder, layout):
        self.folder = str(folder)
        self.layout = layout
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = None
        self.zeo = None
        self.zeo_address = f"127.0.0.1:{free_port()}"
        self.log_path = os.path.join(self.folder, "runwsgi.log")

    # -- making it -----------------------------------------------------------

    def make(self):
        subprocess.run([os.path.join(BIN, "mkwsgiinstance"), "-d", self.folder,
                        "-u", ":".join(ADMIN)], check=True, capture_output=True)
        etc = os.path.join(self.folder, "etc")
        self._edit(os.path.join(etc, "site.zcml"), self._site_zcml)
        self._edit(os.path.join(etc, "zope.conf"), self._zope_conf)
        self._edit(os.path.join(etc, "zope.ini"), self._zope_ini)
        includes = os.path.join(etc, "package-includes")
        os.makedirs(includes, exist_ok=True)
        with open(os.path.join(includes, "zasync_zope_app-configure.zcml"), "w") as f:
            f.write('<include xmlns="http://namespaces.zope.org/zope" '
                    'package="zasync_zope_app" />\n')
        if self.layout == "zeo":
            text = doc_block("zeo.conf")
            assert DOC_ZEO_ADDRESS in text, text
            with open(os.path.join(etc, "zeo.conf"), "w") as f:
                f.write(text.replace(DOC_ZEO_ADDRESS, self.zeo_address))
        return self

    @staticmethod
    def _edit(path, change):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        with open(path, "w", encoding="utf-8") as f:
            f.write(change(text))

    def _site_zcml(self, text):
        anchor = '<include package="Zope2.App" />'
        assert anchor in text, text
        layout = "async" if self.layout == "zeo" else self.layout
        ours = textwrap.indent(doc_block(f"site.zcml ({layout})"), "  ")
        return text.replace(anchor, anchor + "\n\n" + ours, 1)

    def _zope_conf(self, text):
        # mkwsgiinstance's one database is replaced by the documented ones
        sections = re.compile(r"<zodb_db main>.*?</zodb_db>\n", re.S)
        assert sections.search(text), text
        ours = doc_block(f"zope.conf ({self.layout})")
        if self.layout == "zeo":
            assert DOC_ZEO_ADDRESS in ours, ours
            ours = ours.replace(DOC_ZEO_ADDRESS, self.zeo_address)
        return sections.sub(lambda m: ours, text, 1)

    def _zope_ini(self, text):
        assert "port = 8080" in text, text
        return text.replace("port = 8080", f"port = {self.port}")

    # -- running it ----------------------------------------------------------

    def _env(self):
        return dict(os.environ, PYTHONPATH=os.pathsep.join(
            [HERE] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))

    def start_zeo(self, timeout=60.0):
        """Start the ZEO server of zeo.conf, from the instance's folder (its
        paths are relative), and wait until it accepts connections."""
        log = open(os.path.join(self.folder, "runzeo.log"), "ab")
        self.zeo = subprocess.Popen(
            [os.path.join(BIN, "runzeo"), "-C", os.path.join(self.folder, "etc", "zeo.conf")],
            cwd=self.folder, stdout=log, stderr=subprocess.STDOUT, env=self._env())
        log.close()
        host, port = self.zeo_address.split(":")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.zeo.poll() is not None:
                raise RuntimeError(f"runzeo exited with {self.zeo.returncode}")
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"the ZEO server did not listen in {timeout} s")

    def stop_zeo(self, timeout=30.0):
        zeo, self.zeo = self.zeo, None
        if zeo is None or zeo.poll() is not None:
            return
        os.kill(zeo.pid, signal.SIGTERM)
        try:
            zeo.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(zeo.pid, signal.SIGKILL)
            zeo.wait()

    def start(self, timeout=90.0):
        if self.layout == "zeo" and self.zeo is None:
            self.start_zeo()
        env = self._env()
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [os.path.join(BIN, "runwsgi"), os.path.join(self.folder, "etc", "zope.ini")],
            cwd=self.folder, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"runwsgi exited with {self.process.returncode}:\n"
                                   + self.log())
            try:
                if self.get("/").status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Zope did not answer in {timeout} s:\n" + self.log())

    def stop(self, timeout=60.0, sig=signal.SIGINT):
        """Ctrl-C (SIGINT) to runwsgi, as an operator stops it, or `sig`
        (SIGTERM, as a supervisor stops it); SIGKILL if it has not stopped
        in `timeout` seconds.  Returns its exit code."""
        process, self.process = self.process, None
        try:
            if process is None or process.poll() is not None:
                return None if process is None else process.returncode
            os.kill(process.pid, sig)
            try:
                return process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
                raise
        finally:
            self.stop_zeo()

    def log(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def errors(self):
        """The distinct exception lines of the instance's log so far."""
        found = re.findall(r"^([\w.]+(?:Error|Exception|Reference)\b.*)$", self.log(), re.M)
        return sorted(set(line[:300] for line in found))

    # -- asking it -----------------------------------------------------------

    def request(self, method, path, auth=None, data=None, headers=None, timeout=60):
        url = path if path.startswith("http") else self.url + path
        body = None
        if data is not None:
            body = urllib.parse.urlencode(data).encode("utf-8")
        request = urllib.request.Request(url, data=body, method=method)
        if auth is not None:
            token = base64.b64encode(":".join(auth).encode("utf-8")).decode("ascii")
            request.add_header("Authorization", f"Basic {token}")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(request, timeout=timeout) as response:
                return Answer(response.status, response.headers, response.read())
        except urllib.error.HTTPError as error:
            return Answer(error.code, error.headers, error.read())

    def get(self, path, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path, data=None, **kwargs):
        return self.request("POST", path, data=data or {}, **kwargs)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None

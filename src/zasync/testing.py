"""Helpers for test suites (zasync's own and applications'): a real ZEO
server on a free loopback port, and a database with zasync installed."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

from zasync.database import install, open_db


def free_port(host="127.0.0.1"):
    """A TCP port on `host` that nobody listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class ZEOServer:
    """A ZEO server in a child process, serving a FileStorage.

    ``start()`` waits until it accepts connections; ``stop()`` ends it by
    its pid (SIGTERM, then SIGKILL).  The server resolves conflicts with the
    classes it can import, so it runs with this process's Python and path.
    """

    def __init__(self, path=None, host="127.0.0.1", port=None):
        if path is None:
            self._tmp = tempfile.mkdtemp(prefix="zasync-zeo-")
            path = os.path.join(self._tmp, "Data.fs")
        self.path = path
        self.host = host
        self.port = port or free_port(host)
        self.process = None

    @property
    def address(self):
        return (self.host, self.port)

    @property
    def uri(self):
        return f"zeo://{self.host}:{self.port}"

    def start(self, timeout=30.0):
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"ZEO server pid {self.process.pid} already runs")
        self.log_path = self.path + ".zeo.log"
        log = open(self.log_path, "ab")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in sys.path if p))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ZEO.runzeo", "-a", f"{self.host}:{self.port}",
             "-f", self.path], stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"ZEO server exited with {self.process.returncode}; "
                    f"see {self.log_path}")
            with contextlib.suppress(OSError):
                with socket.create_connection(self.address, timeout=0.5):
                    return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"ZEO server did not listen on {self.uri} in {timeout} s")

    def stop(self, timeout=10.0):
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()


def installed_db(target, queues=("",), **db_kwargs):
    """Open a database (path or URI) and install zasync's queues in it."""
    db = open_db(target, **db_kwargs)
    install(db, queues)
    return db

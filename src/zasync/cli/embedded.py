"""An embedded ZEO server: one process keeps the FileStorage, others join.

A FileStorage can be opened by one process only.  For a single machine
without a separate ZEO server, the process that owns the file serves it
over ZEO on a loopback port, from a thread of its own, and opens its own
database as a ZEO client of it; worker processes join with
``zasync worker --db zeo://HOST:PORT``.  The server resolves the queue's
conflicts with the classes of this process, which has zasync imported.
"""

import logging

import ZODB.FileStorage
from ZEO.StorageServer import StorageServer

from zasync.interfaces import ConfigurationError

logger = logging.getLogger(__name__)


def parse_address(text):
    """'HOST:PORT' (or ':PORT' or 'PORT', on 127.0.0.1) as (host, port)."""
    host, _, port = str(text).rpartition(":")
    try:
        port = int(port)
    except ValueError:
        raise ConfigurationError(
            f"address {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8100") from None
    if not 0 <= port <= 65535:
        raise ConfigurationError(f"address {text!r}: port {port} is out of range")
    return (host or "127.0.0.1", port)


class EmbeddedServer:
    """A ZEO server for the FileStorage at `path`, run in a thread."""

    def __init__(self, path, address=("127.0.0.1", 0)):
        self.path = path
        self.address = address if isinstance(address, tuple) else parse_address(address)
        self._server = None

    @property
    def uri(self):
        host, port = self._server.addr[:2]
        return f"zeo://{host}:{port}"

    def start(self):
        storage = ZODB.FileStorage.FileStorage(self.path)
        try:
            self._server = StorageServer(self.address, {"1": storage})
        except Exception:
            storage.close()
            raise
        self._server.start_thread()
        logger.info("serving %s over ZEO at %s", self.path, self.uri)
        return self

    def stop(self):
        server, self._server = self._server, None
        if server is not None:
            server.close()
            logger.info("stopped serving %s", self.path)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

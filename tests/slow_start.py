"""A module that takes `SECONDS` to import, as a big application does: a
worker given it with ``-A`` (or ZASYNC_APP) imports it at start, and so
does each of a process agent's children, before its job begins."""

import time

SECONDS = 3.0

time.sleep(SECONDS)

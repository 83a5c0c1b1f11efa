"""The `zasync` command line: the `main` group (`cli`), the job and queue
commands (`commands`, `schedule_commands`), the reports they print
(`report`), the demo with its example jobs (`demo`, `examples`) and the
ZEO server it embeds (`embedded`).

``zasync.cli`` was the command line's module before it was a package; its
public names stay importable from here.
"""

from zasync.cli.cli import (
    CONTEXT_SETTINGS, LOG_FORMAT, LOG_LEVELS, database_options, import_hint,
    import_named, main)

# The operators' commands (status, jobs, job, put, cancel, ...) and those of
# recurring jobs register on `main` as they are imported: here, so that any
# import of the command line (the console script, ``python -m zasync``)
# has them all, and no module of it imports the one that imports it.
from zasync.cli import commands, schedule_commands  # noqa: E402,F401

__all__ = [
    "CONTEXT_SETTINGS", "LOG_FORMAT", "LOG_LEVELS", "database_options",
    "import_hint", "import_named", "main",
]

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

__all__ = [
    "CONTEXT_SETTINGS", "LOG_FORMAT", "LOG_LEVELS", "database_options",
    "import_hint", "import_named", "main",
]

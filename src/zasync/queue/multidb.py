"""Which databases a process outside the application opens: one database,
or the application's multi-database, named on the command line or read
from Zope's ``zope.conf``.

A job stored in a separate 'async' database refers to the application's
objects in its 'main' one by the main database's *name*; a worker that
opened the async database alone fails on the first such reference
(``KeyError: 'main'``).  So a worker, the web view and the operators'
commands open every database of the multi-database, under the names the
application gives them, the application's root database first (see
`zasync.queue.database.open_connection`), and serve the queues of one of them::

    zasync worker --db main=zeo://HOST:PORT?storage=main \\
                  --db async=zeo://HOST:PORT?storage=async --queue-db async
    zasync worker --zope-conf etc/zope.conf          # its <zodb_db> sections

`Databases` says that, and opens it; `parse` makes one from the command
line's values, `read_zope_conf` from a ``zope.conf``.
"""

import io
import json
import os
import re

from zasync.queue.database import close_databases, open_db
from zasync.interfaces import ConfigurationError
from zasync.job.call import missing_database  # where the job layer needs it too

#: The database that keeps the queues when several are named and none is
#: chosen: zasync's multi-database policy (multidb_dispatcher_policy.zcml).
ASYNC_DATABASE = "async"

# A database name on the command line: before the first '=', no character
# a path or a URI needs (so 'zeo://h:1?storage=main' is a URI, not a name).
_NAMED = re.compile(r"([\w.-]*)=(.+)", re.DOTALL)


class Databases:
    """The databases to open: `pairs` of (name, target), the application's
    root database first, where a target is a FileStorage path, a URI, or a
    ZConfig database section; and `queue_db`, the name of the one that keeps
    the queues.  A single unnamed database has the name None.

    `source` is the zope.conf they were read from, if any: child processes
    read it again.
    """

    def __init__(self, pairs, queue_db=None, source=None):
        pairs = list(pairs)
        if not pairs:
            raise ConfigurationError("no database given: expected --db URI "
                                     "(or several --db NAME=URI, or --zope-conf)")
        names = [name for name, target in pairs]
        if None in names and len(pairs) > 1:
            raise ConfigurationError(
                "several databases need a name each: expected --db NAME=URI "
                "for every one (e.g. --db main=zeo://HOST:PORT?storage=main "
                "--db async=zeo://HOST:PORT?storage=async)")
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1}, key=str)
            raise ConfigurationError(
                f"database name {twice[0]!r} is given twice; expected one "
                f"--db NAME=URI for each database")
        if queue_db is None:
            if len(pairs) == 1:
                queue_db = names[0]
            elif ASYNC_DATABASE in names:
                queue_db = ASYNC_DATABASE
            else:
                raise ConfigurationError(
                    "several databases and none named 'async': say which one "
                    "keeps the queues with --queue-db NAME (one of "
                    + ", ".join(repr(n) for n in names) + ")")
        elif None in names:
            raise ConfigurationError(
                f"--queue-db {queue_db!r}: a single database has no name; give "
                f"it one (--db NAME=URI) or leave --queue-db out")
        elif queue_db not in names:
            raise ConfigurationError(
                f"--queue-db {queue_db!r}: no database of that name; expected "
                f"one of " + ", ".join(repr(n) for n in names))
        self.pairs = pairs
        self.queue_db = queue_db
        self.source = source

    @property
    def single(self):
        """Whether this is one unnamed database."""
        return self.pairs[0][0] is None

    def __str__(self):
        if self.source is not None:
            return f"the databases of {self.source}"
        if self.single:
            return str(self.pairs[0][1])
        return " ".join(f"{name}={target}" for name, target in self.pairs)

    def __repr__(self):
        return repr(str(self))

    def uris(self):
        """The paths and URIs named (not those of a zope.conf)."""
        return [target for name, target in self.pairs if isinstance(target, str)]

    def open(self, **db_kwargs):
        """Open them all; return the database that keeps the queues (its
        ``databases`` has the others).  Keyword arguments go to `ZODB.DB`
        for databases given by path or URI."""
        if self.single:
            return open_db(self.pairs[0][1], **db_kwargs)
        databases = {}
        try:
            for name, target in self.pairs:
                if isinstance(target, str):
                    open_db(target, databases=databases, database_name=name,
                            **db_kwargs)
                else:
                    target.open(databases)
        except BaseException:
            close_databases(databases)
            raise
        return databases[self.queue_db]

    def replace(self, transform):
        """A copy whose path and URI targets went through `transform`."""
        return Databases(
            [(name, transform(target) if isinstance(target, str) else target)
             for name, target in self.pairs], self.queue_db, self.source)

    # -- for child processes ---------------------------------------------------

    def to_argument(self):
        """A string `from_argument` makes this again from."""
        if self.single:
            return self.pairs[0][1]
        if self.source is not None:
            return json.dumps({"zope_conf": self.source, "queue_db": self.queue_db})
        return json.dumps({"databases": self.pairs, "queue_db": self.queue_db})

    @classmethod
    def from_argument(cls, argument):
        """The `Databases` of `to_argument`'s string (or of a URI)."""
        if not argument.startswith("{"):
            return cls([(None, argument)])
        spec = json.loads(argument)
        if "zope_conf" in spec:
            return read_zope_conf(spec["zope_conf"], spec["queue_db"])
        return cls([tuple(pair) for pair in spec["databases"]], spec["queue_db"])


def missing_database_hint(name):
    """What to do about `missing_database`'s `name`."""
    return (f"a job refers to the database {name!r}, which this process did not "
            f"open: open every database of the multi-database under the "
            f"application's names, e.g. --db main=URI --db async=URI --queue-db async")


def parse(values, queue_db=None, zope_conf=None):
    """The `Databases` of the command line: `values` of ``--db`` (a path or
    URI, or NAME=URI for each database of a multi-database, the root one
    first), `queue_db` of ``--queue-db``, `zope_conf` of ``--zope-conf``."""
    values = list(values or ())
    if zope_conf is not None:
        if values:
            raise ConfigurationError("give --db or --zope-conf, not both")
        return read_zope_conf(zope_conf, queue_db)
    if not values:
        raise ConfigurationError("no database given: expected --db URI (or "
                                 "several --db NAME=URI, or --zope-conf PATH)")
    pairs = []
    for value in values:
        match = _NAMED.fullmatch(value)
        if match is None:
            pairs.append((None, value))
        else:
            name, target = match.groups()
            pairs.append((name, target))
    if len(pairs) == 1 and pairs[0][0] is not None and queue_db is None:
        # One named database: the name changes nothing but the name.
        queue_db = pairs[0][0]
    return Databases(pairs, queue_db)


# -- zope.conf -----------------------------------------------------------------

# Zope's zodb_db section: ZODB's zodb section and the keys Zope adds.  The
# rest of zope.conf (instancehome, http servers, loggers ...) belongs to
# Zope's own schema, which needs Zope installed; only the %define and
# %import lines and the <zodb_db> sections are read, with this schema.
_SCHEMA = """\
<schema prefix="ZODB.config">
  <import package="ZODB"/>
  <sectiontype name="zodb_db" datatype=".ZODBDatabase"
               implements="ZODB.database" extends="zodb">
    <multikey name="mount-point" attribute="mount_points" />
    <key name="container-class" />
    <key name="connection-class" />
  </sectiontype>
  <multisection type="ZODB.database" name="*" attribute="databases" />
</schema>
"""

_SECTION = re.compile(r"\s*<\s*(/?)\s*([\w.-]+)")


def _zodb_sections(text):
    """The %define and %import lines and the <zodb_db> sections of a
    zope.conf's text, in their order."""
    kept, depth, inside = [], 0, False
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if depth == 0 and not inside and stripped.startswith(("%define", "%import")):
            kept.append(stripped)
            continue
        match = _SECTION.match(line)
        if match is not None and not stripped.endswith("/>"):
            closing, kind = match.groups()
            if not closing and depth == 0 and kind == "zodb_db":
                inside = True
            depth += -1 if closing else 1
        if inside:
            kept.append(line)
            if depth == 0:
                inside = False
    return "\n".join(kept) + "\n"


def read_zope_conf(path, queue_db=None):
    """The `Databases` of a zope.conf's ``<zodb_db>`` sections, read with
    ZConfig as Zope reads them: the one mounted at ``/`` first (Zope's root
    database), the others in their order."""
    import ZConfig
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as error:
        raise ConfigurationError(
            f"--zope-conf {path!r}: cannot read it ({error.strerror})") from None
    schema = ZConfig.loadSchemaFile(io.StringIO(_SCHEMA))
    try:
        # Read as from the file itself, so that a relative %include
        # resolves as it does for Zope.
        config, handler = ZConfig.loadConfigFile(
            schema, io.StringIO(_zodb_sections(text)),
            url="file://" + os.path.abspath(path))
    except ZConfig.ConfigurationError as error:
        raise ConfigurationError(f"--zope-conf {path!r}: {error}") from None
    sections = list(config.databases)
    if not sections:
        raise ConfigurationError(
            f"--zope-conf {path!r}: no <zodb_db NAME> section; expected the "
            f"databases of a Zope instance (etc/zope.conf)")
    root = [s for s in sections if "/" in (s.config.mount_points or ())]
    rest = [s for s in sections if s not in root]
    pairs = [(s.config.database_name or s.name, s) for s in root[:1] + root[1:] + rest]
    return Databases(pairs, queue_db, source=os.path.abspath(path))


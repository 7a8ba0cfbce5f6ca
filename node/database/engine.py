"""Opening the database: engines for SQLite (WAL) and PostgreSQL, and schema migrations.

* SQLite runs in WAL mode with ``synchronous=FULL``: a committed transaction is
  on disk, which the audit ledger relies on. Large imports commit in chunks, so
  the flush costs little.
* A database whose schema is not the code's is refused (:func:`require_current_schema`):
  one behind with the command that upgrades it (``credit-node db upgrade``), one ahead
  (migrated by a newer version of the node) with the advice to run that version;
  nothing migrates silently.
* An upgrade runs every pending migration in one transaction
  (``migrations/env.py``): when one fails, the database is left exactly as it was
  before the upgrade — its revision and its data — and :func:`upgrade` says so,
  naming the migration that failed and the revision the database is still at.
* A SQLite database holds personal data, so its file is created here, empty,
  with mode 0600 (and its folder, when missing, with 0700) before SQLite opens
  it, whatever the process umask: SQLite gives the ``-wal``, ``-shm`` and journal
  files it creates beside it the database file's mode. Which of them exist is
  :func:`sqlite_files`; the node refuses to run when others can read them
  (``creditexchange.node.app.config``).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError, OperationalError

from creditexchange.errors import DatabaseError

if TYPE_CHECKING:  # alembic is imported where migrations are read: a health probe needs none
    from alembic.config import Config
    from alembic.script import Script, ScriptDirectory

__all__ = [
    "Migration",
    "SchemaState",
    "create_database_engine",
    "current_revision",
    "head_revision",
    "open_database",
    "read_snapshot",
    "require_current_schema",
    "schema_state",
    "sqlite_files",
    "upgrade",
]

SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")
"""Files SQLite keeps beside a database: its WAL, shared memory and rollback journal."""


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA cache_size=-65536")  # 64 MiB: index inserts stay in memory
    cursor.close()


def _sqlite_database(url: str) -> Path | None:
    """The database file of a SQLite URL; None for another backend or an in-memory database."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def sqlite_files(url: str) -> list[Path]:
    """The files a SQLite database at ``url`` keeps: the database and its -wal, -shm and
    journal files (whether they exist or not); none for another backend."""
    database = _sqlite_database(url)
    if database is None:
        return []
    return [database, *(database.with_name(database.name + s) for s in SQLITE_COMPANIONS)]


def _create_private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 (its folder, if missing, 0700) unless it exists."""
    folder = path.parent
    if not folder.is_dir():
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.chmod(0o700)  # mkdir's mode is masked by the umask
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def create_database_engine(url: str) -> Engine:
    """An engine for ``url`` with the node's connection settings; the schema is not checked.

    A SQLite database that does not exist yet is created private (see the module).
    """
    if url.startswith("sqlite:///"):
        database = _sqlite_database(url)
        if database is not None:
            _create_private_file(database)
        engine = create_engine(url)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def open_database(url: str) -> Engine:
    """The database at ``url``, refused unless its schema is the one this code needs."""
    engine = create_database_engine(url)
    require_current_schema(engine)
    return engine


def _alembic_config(engine: Engine, migrations: Path | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    location = migrations or resources.files("creditexchange.node.database").joinpath("migrations")
    cfg.set_main_option("script_location", str(location))
    cfg.attributes["engine"] = engine
    return cfg


@functools.lru_cache(maxsize=8)
def _scripts(migrations: Path | None = None) -> ScriptDirectory:
    """The migrations, read once per process (every command checks the schema)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config(create_engine("sqlite://"), migrations))


def head_revision(migrations: Path | None = None) -> str:
    """The revision this code's schema is at (the newest migration)."""
    head = _scripts(migrations).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database's schema is at; None for a database never migrated."""
    from alembic.runtime.migration import MigrationContext

    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except OperationalError as exc:
        raise DatabaseError(f"cannot open the database: {exc.orig}") from None


@dataclass(frozen=True)
class Migration:
    """One migration: its revision and the first line of its description."""

    revision: str
    title: str

    @classmethod
    def of(cls, script: Script) -> Migration:
        doc = (script.doc or "").strip()
        return cls(script.revision, doc.splitlines()[0] if doc else "")


@dataclass(frozen=True)
class SchemaState:
    """Where a database's schema stands against this code.

    ``current`` is the database's revision (None: never migrated), ``head`` the code's;
    ``pending`` the migrations an upgrade would run, oldest first. ``ahead`` is true when
    the database is at a revision this code does not know: a newer version of the node
    migrated it, and this one must not touch it.
    """

    current: str | None
    head: str
    pending: tuple[Migration, ...]
    ahead: bool

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head

    def describe(self) -> str:
        """One sentence an operator acts on."""
        at = f"revision {self.current}" if self.current else "no revision (an empty database)"
        if self.up_to_date:
            return f"the database schema is at revision {self.head}, the one this node needs"
        if self.current is None:
            return (
                f"the database holds no node schema yet (this node needs revision {self.head}): "
                "run 'credit-node db upgrade' to create it ('credit-node init' does so for a "
                "new node)"
            )
        if self.ahead:
            return (
                f"the database schema is at {at}, which this version of the node does not know "
                f"(it needs {self.head}): a newer version of the node migrated it. Run that "
                "version, or restore the backup taken before its upgrade; a schema is never "
                "migrated back"
            )
        return (
            f"the database schema is at {at}, the node needs {self.head}: take a backup "
            "('credit-node backup'), then run 'credit-node db upgrade'"
        )


def schema_state(engine: Engine, migrations: Path | None = None) -> SchemaState:
    """Where ``engine``'s schema stands against this code (or against ``migrations``)."""
    scripts = _scripts(migrations)
    current = current_revision(engine)
    head = head_revision(migrations)
    if current is not None and current not in {s.revision for s in scripts.walk_revisions()}:
        return SchemaState(current, head, (), ahead=True)
    pending = [
        Migration.of(script)
        for script in scripts.iterate_revisions(head, current or "base")
        if script.revision != current
    ]
    return SchemaState(current, head, tuple(reversed(pending)), ahead=False)


def upgrade(engine: Engine, revision: str = "head", *, migrations: Path | None = None) -> str:
    """Bring the schema to ``revision`` (the newest by default); returns the revision.

    Every pending migration runs in one transaction. When one fails, nothing of the
    upgrade stays: the :class:`DatabaseError` names the migration, the cause and the
    revision the database is still at (read back after the rollback). A database ahead
    of this code is refused before anything runs. ``migrations`` names another folder
    of migrations (the tests' failing one); the default is the node's own.
    """
    from alembic import command
    from alembic.util import CommandError

    state = schema_state(engine, migrations)
    if state.ahead:
        raise DatabaseError(f"cannot upgrade: {state.describe()}")
    target = state.head if revision == "head" else revision
    applied: list[str] = []
    cfg = _alembic_config(engine, migrations)
    cfg.attributes["on_version_apply"] = lambda *, step, **_: applied.append(step.up_revision_id)
    try:
        command.upgrade(cfg, revision)
    except Exception as exc:
        reason = getattr(exc, "orig", None) or exc
        if isinstance(exc, CommandError):
            raise DatabaseError(f"cannot upgrade to revision {revision}: {reason}") from None
        upcoming = [m.revision for m in state.pending]
        failed = next((r for r in upcoming if r not in applied), None)
        try:
            now = current_revision(engine)
            where = f"revision {now}" if now else "no revision (an empty database)"
            left = f"the database was rolled back and is still at {where}, its data untouched"
        except DatabaseError:
            left = "the database could not be read back after the failure: check it"
        which = f"migration {failed}" if failed else "the upgrade"
        raise DatabaseError(
            f"{which} failed: {' '.join(str(reason).split())}; {left}. Nothing of the upgrade "
            "was kept: fix the cause (the message above) and run 'credit-node db upgrade' "
            "again, or keep running the previous version of the node on this database"
        ) from None
    return target


def require_current_schema(engine: Engine) -> None:
    """Refuse a database whose schema is not the one this code needs, saying what to do."""
    state = schema_state(engine)
    if not state.up_to_date:
        raise DatabaseError(f"this node cannot use the database: {state.describe()}")


@contextlib.contextmanager
def read_snapshot(engine: Engine) -> Iterator[Connection]:
    """A connection whose reads, raw cursor included, all see one committed state.

    PostgreSQL: a ``REPEATABLE READ READ ONLY`` transaction, whose snapshot is taken
    at its first statement. SQLite: the driver opens transactions only before
    writes, so each SELECT would see the latest commit; an explicit deferred
    ``BEGIN`` makes the first read take a WAL snapshot that every later read shares
    (writers are not blocked). Nothing is written either way; the transaction is
    rolled back when the block ends.
    """
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(
            isolation_level="REPEATABLE READ", postgresql_readonly=True
        ) as conn:
            yield conn  # closing the connection rolls the transaction back
        return
    with engine.connect() as conn:
        driver = conn.connection.driver_connection
        assert driver is not None
        driver.execute("BEGIN DEFERRED")
        try:
            yield conn
        finally:
            driver.rollback()

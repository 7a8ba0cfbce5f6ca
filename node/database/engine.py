"""Opening the database: engines for SQLite (WAL) and PostgreSQL, and schema migrations.

* SQLite runs in WAL mode with ``synchronous=FULL``: a committed transaction is
  on disk, which the audit ledger relies on. Large imports commit in chunks, so
  the flush costs little.
* A database whose schema is behind the code is refused with the command that
  upgrades it (``credit-node db upgrade``); nothing migrates silently.
* A SQLite database holds personal data, so its file is created here, empty,
  with mode 0600 (and its folder, when missing, with 0700) before SQLite opens
  it, whatever the process umask: SQLite gives the ``-wal``, ``-shm`` and journal
  files it creates beside it the database file's mode. Which of them exist is
  :func:`sqlite_files`; the node refuses to run when others can read them
  (``creditexchange.node.app.config``).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError, OperationalError

from creditexchange.errors import DatabaseError

__all__ = [
    "create_database_engine",
    "current_revision",
    "head_revision",
    "open_database",
    "require_current_schema",
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


def _alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option(
        "script_location",
        str(resources.files("creditexchange.node.database").joinpath("migrations")),
    )
    cfg.attributes["engine"] = engine
    return cfg


def head_revision() -> str:
    script = ScriptDirectory.from_config(_alembic_config(create_engine("sqlite://")))
    head = script.get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except OperationalError as exc:
        raise DatabaseError(f"cannot open the database: {exc.orig}") from None


def upgrade(engine: Engine, revision: str = "head") -> str:
    """Bring the schema to ``revision`` (the newest by default); returns the revision."""
    try:
        command.upgrade(_alembic_config(engine), revision)
    except OperationalError as exc:
        raise DatabaseError(f"cannot migrate the database: {exc.orig}") from None
    return head_revision() if revision == "head" else revision


def require_current_schema(engine: Engine) -> None:
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise DatabaseError(
            f"the database schema is at revision {current or 'none'}, the node needs {head}: "
            "run 'credit-node db upgrade'"
        )

"""Opening the database: engines for SQLite (WAL) and PostgreSQL, and schema migrations.

* SQLite runs in WAL mode with ``synchronous=FULL``: a committed transaction is
  on disk, which the audit ledger relies on. Large imports commit in chunks, so
  the flush costs little.
* A database whose schema is behind the code is refused with the command that
  upgrades it (``credit-node db upgrade``); nothing migrates silently.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import OperationalError

from creditexchange.errors import DatabaseError

__all__ = [
    "create_database_engine",
    "current_revision",
    "head_revision",
    "open_database",
    "require_current_schema",
    "upgrade",
]


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA cache_size=-65536")  # 64 MiB: index inserts stay in memory
    cursor.close()


def create_database_engine(url: str) -> Engine:
    """An engine for ``url`` with the node's connection settings; the schema is not checked."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
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


def upgrade(engine: Engine) -> str:
    """Bring the schema to the newest revision; returns it."""
    try:
        command.upgrade(_alembic_config(engine), "head")
    except OperationalError as exc:
        raise DatabaseError(f"cannot migrate the database: {exc.orig}") from None
    return head_revision()


def require_current_schema(engine: Engine) -> None:
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise DatabaseError(
            f"the database schema is at revision {current or 'none'}, the node needs {head}: "
            "run 'credit-node db upgrade'"
        )

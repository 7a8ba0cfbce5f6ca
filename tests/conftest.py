"""Shared fixtures: a store on SQLite and on the real PostgreSQL.

Tests that take ``database_url`` or ``engine`` run twice, once per backend. The
PostgreSQL run gets a fresh schema of its own (dropped afterwards) in the
database named by CREDIT_NODE_TEST_PG. Locally a PostgreSQL that cannot be
reached skips those runs; in CI (CI=true) it fails them, loudly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine

from creditexchange.node.app.logs import LOGGERS
from creditexchange.node.catalog import Catalog, load_catalog
from creditexchange.node.database import create_database_engine, upgrade

PG_URL = os.environ.get("CREDIT_NODE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(autouse=True)
def _node_loggers_restored() -> Iterator[None]:
    """A command run in-process (``serve``, ``sync run``) sets the node's loggers up
    for a terminal; put them back, so that a later test's in-process nodes log to
    pytest's capture, not into some command's output."""
    loggers = [logging.getLogger(name) for name in LOGGERS]
    saved = [(lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    yield
    for lg, (handlers, level, propagate) in zip(loggers, saved, strict=True):
        lg.handlers[:], lg.level, lg.propagate = handlers, level, propagate


def _pg_conninfo() -> str:
    return PG_URL.replace("postgresql+psycopg://", "postgresql://")


_pg_reachable: bool | None = None


def require_postgres() -> None:
    global _pg_reachable
    if _pg_reachable is None:
        try:
            psycopg.connect(_pg_conninfo(), connect_timeout=5).close()
            _pg_reachable = True
        except psycopg.OperationalError as exc:
            _pg_reachable = False
            if IN_CI:
                pytest.fail(f"PostgreSQL at {PG_URL} is unreachable in CI: {exc}", pytrace=False)
    if not _pg_reachable:
        if IN_CI:
            pytest.fail(f"PostgreSQL at {PG_URL} is unreachable in CI", pytrace=False)
        pytest.skip(f"PostgreSQL at {PG_URL} is unreachable (these tests run in CI)")


@contextlib.contextmanager
def postgres_schema() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh, empty schema, dropped afterwards."""
    require_postgres()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_pg_conninfo(), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(_pg_conninfo(), autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with postgres_schema() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'node.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_database_engine(database_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog()

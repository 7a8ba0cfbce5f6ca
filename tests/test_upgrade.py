"""Upgrading a node's database (``deploy/operations/upgrade.md``), on SQLite and PostgreSQL.

A failed upgrade leaves the database exactly as it was — the revision, every table,
column and row — and says which migration failed; a node never runs on a schema that
is not its own, behind (``credit-node db upgrade``) or ahead (a newer node migrated it).
The failing migration is the tests' own, in a copy of the node's migrations.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey
from ports import free_ports
from sqlalchemy import Engine, MetaData, inspect, select, text
from typer.testing import CliRunner

from creditexchange.devtools.provision import ProvisionedNode, provision
from creditexchange.devtools.sample import write_sample
from creditexchange.errors import DatabaseError
from creditexchange.node.app.server import NodeServer
from creditexchange.node.catalog import Catalog
from creditexchange.node.cli import app
from creditexchange.node.database import (
    create_database_engine,
    current_revision,
    head_revision,
    open_database,
    schema_state,
    upgrade,
)
from creditexchange.node.ledger import AuditLog, entries, verify
from creditexchange.node.ledger.note import Signer
from creditexchange.node.records.importer import import_file

runner = CliRunner()
FAILING = "9001"
SIGNER = Signer("credit-exchange/3plus2/huizhou/audit", SigningKey(bytes(range(32))))

FAILING_MIGRATION = '''"""A migration that fails half-way through (the upgrade tests' own).

Revision ID: {revision}
Revises: {down}
"""

import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = "{down}"


def upgrade() -> None:
    op.create_table("half_done", sa.Column("id", sa.Integer, primary_key=True))
    with op.batch_alter_table("ledger_entries") as batch:
        batch.add_column(sa.Column("extra", sa.Integer, nullable=True))
    op.execute("UPDATE ledger_entries SET body = NULL")
    op.execute("DELETE FROM ledger_checkpoints")
    op.execute("INSERT INTO half_done (id) VALUES (1)")
    raise RuntimeError("the tests' migration fails here, half-way through")
'''


def _failing_migrations(tmp_path: Path, down: str) -> Path:
    """The node's migrations, copied, with one more that fails half-way after ``down``."""
    source = Path(str(resources.files("creditexchange.node.database").joinpath("migrations")))
    target = tmp_path / "migrations"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    (target / "versions" / f"{FAILING}_fails_midway.py").write_text(
        FAILING_MIGRATION.format(revision=FAILING, down=down)
    )
    return target


def _snapshot(engine: Engine) -> dict[str, Any]:
    """Every table's columns and rows, in a stable order: what 'untouched' means."""
    found = inspect(engine)
    metadata = MetaData()
    metadata.reflect(engine)
    tables: dict[str, Any] = {}
    with engine.connect() as conn:
        for name in sorted(found.get_table_names()):
            table = metadata.tables[name]
            columns = [c["name"] for c in found.get_columns(name)]
            rows = conn.execute(select(table)).all()
            tables[name] = (columns, sorted(tuple(map(repr, row)) for row in rows))
    return tables


def _with_data(engine: Engine, catalog: Catalog, tmp_path: Path) -> AuditLog:
    """A store holding records and a ledger of a few committed batches."""
    files = write_sample(catalog, "huizhou", 12, 3, tmp_path / "in")
    for path in files:
        if path.stem == "admin_penalty":
            import_file(engine, catalog, path, path.stem, reject_dir=tmp_path / "rejects")
    log = AuditLog(engine, SIGNER)
    for batch in range(3):
        log.commit(
            [entries.maintenance(f"batch {batch} entry {i}", "huizhou", 1 + i) for i in range(5)]
        )
    return log


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_database_engine(database_url)
    yield engine
    engine.dispose()


def test_a_migration_failing_half_way_leaves_the_database_as_it_was(
    engine: Engine, catalog: Catalog, tmp_path: Path
) -> None:
    upgrade(engine)
    log = _with_data(engine, catalog, tmp_path)
    before = _snapshot(engine)
    assert before["records"][1] and before["ledger_entries"][1]
    migrations = _failing_migrations(tmp_path, head_revision())

    with pytest.raises(DatabaseError) as failed:
        upgrade(engine, migrations=migrations)

    message = str(failed.value)
    assert f"migration {FAILING} failed" in message
    assert "fails here, half-way through" in message
    assert f"still at revision {head_revision()}, its data untouched" in message
    assert current_revision(engine) == head_revision()
    assert _snapshot(engine) == before  # no table, column or row changed
    assert "half_done" not in inspect(engine).get_table_names()
    report = verify(log, SIGNER.verifier())
    assert report.ok and report.size == 15, report.problems


def test_an_upgrade_of_several_migrations_is_undone_whole_when_one_fails(
    engine: Engine, catalog: Catalog, tmp_path: Path
) -> None:
    upgrade(engine, "0012")  # the schema of the node's previous version
    log = _with_data(engine, catalog, tmp_path)
    before = _snapshot(engine)
    migrations = _failing_migrations(tmp_path, head_revision())
    pending = [m.revision for m in schema_state(engine, migrations).pending]
    assert pending == [head_revision(), FAILING]

    with pytest.raises(DatabaseError, match=f"migration {FAILING} failed") as failed:
        upgrade(engine, migrations=migrations)

    assert "still at revision 0012" in str(failed.value)
    assert current_revision(engine) == "0012"  # the migration before it is undone too
    assert "node_keys" not in inspect(engine).get_table_names()
    assert _snapshot(engine) == before

    assert upgrade(engine) == head_revision()  # the real upgrade then runs as usual
    assert current_revision(engine) == head_revision()
    after = _snapshot(engine)
    assert {k: v for k, v in after.items() if k not in ("node_keys", "alembic_version")} == {
        k: v for k, v in before.items() if k != "alembic_version"
    }
    assert verify(log, SIGNER.verifier()).ok


def test_a_database_ahead_of_the_code_is_neither_used_nor_upgraded(engine: Engine) -> None:
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    state = schema_state(engine)
    assert state.ahead and not state.up_to_date

    with pytest.raises(DatabaseError, match="a newer version of the node migrated it"):
        upgrade(engine)
    with pytest.raises(DatabaseError, match="a newer version of the node migrated it"):
        open_database(engine.url.render_as_string(hide_password=False))
    assert current_revision(engine) == "0099"


# --- the procedure on a real node ------------------------------------------------------------


@pytest.fixture
def node(tmp_path: Path, database_url: str) -> ProvisionedNode:
    """A provisioned node (certificate, memorandum, data) whose store is ``database_url``."""
    nodes = provision(
        tmp_path / "fed",
        members=("huizhou", "shenzhen"),
        ports=free_ports(2),
        database_urls={"huizhou": database_url},
        subjects=6,
    )
    return nodes["huizhou"]


def _back_to_previous_schema(node: ProvisionedNode) -> None:
    """The schema as the node's previous version left it: revision 0012, before the key
    history table (what an operator finds after installing the new version)."""
    engine = create_database_engine(node.config.database_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE node_keys"))
            conn.execute(text("UPDATE alembic_version SET version_num = '0012'"))
    finally:
        engine.dispose()


def cli(*args: str, home: Path) -> tuple[int, str]:
    result = runner.invoke(app, [*args, "--home", str(home)])
    return result.exit_code, result.output


def test_the_node_refuses_an_old_schema_until_db_upgrade_brings_it_to_its_own(
    node: ProvisionedNode,
) -> None:
    _back_to_previous_schema(node)

    with pytest.raises(DatabaseError) as refused:
        asyncio.run(NodeServer(node.config).start())
    assert "the database schema is at revision 0012, the node needs" in str(refused.value)
    assert "credit-node db upgrade" in str(refused.value)
    code, output = cli("audit", "verify", home=node.home)
    assert code == 2 and "run 'credit-node db upgrade'" in output

    code, output = cli("db", "status", home=node.home)
    assert code == 1
    assert f"schema revision 0012; this node needs {head_revision()}" in output
    assert f"pending {head_revision()}: The keys a node has held" in output

    code, output = cli("db", "upgrade", home=node.home)
    assert code == 0, output
    assert f"migration {head_revision()}: The keys a node has held" in output
    assert f"upgraded from revision 0012 to {head_revision()}" in output
    code, output = cli("db", "status", home=node.home)
    assert code == 0 and "the one this node needs" in output
    code, output = cli("db", "upgrade", home=node.home)
    assert code == 0 and "nothing to do" in output

    async def serve_once() -> int:
        server = NodeServer(node.config)
        await server.start()
        try:
            return server.port
        finally:
            await server.stop(0)

    assert asyncio.run(serve_once()) == node.port
    code, output = cli("audit", "verify", home=node.home)
    assert code == 0, output


def test_a_failed_db_upgrade_says_what_failed_and_leaves_the_node_on_its_old_schema(
    node: ProvisionedNode,
) -> None:
    # the previous revision, but a table of the next one left behind (by hand, say): the
    # migration creating it fails, and the whole upgrade with it
    _back_to_previous_schema(node)
    engine = create_database_engine(node.config.database_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE node_keys (id INTEGER PRIMARY KEY)"))
    before = _snapshot(engine)

    code, output = cli("db", "upgrade", home=node.home)

    assert code == 2
    assert f"migration {head_revision()} failed" in output
    assert "still at revision 0012, its data untouched" in output
    assert _snapshot(engine) == before
    engine.dispose()

"""The models describe the migrated schema exactly: every table, column, index and key;
and a migration keeps what the tables held."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from nacl.signing import SigningKey
from sqlalchemy import Engine, inspect, text

from creditexchange.node.database import (
    create_database_engine,
    current_revision,
    head_revision,
    upgrade,
)
from creditexchange.node.database.models import Base
from creditexchange.node.ledger import AuditLog, entries, merkle, verify
from creditexchange.node.ledger.note import Checkpoint, Signer, sign_note


def test_the_models_map_every_table_exactly_as_the_migrations_create_it(engine: Engine) -> None:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    assert differences == []


@pytest.fixture
def engine_at_0004(database_url: str) -> Iterator[Engine]:
    """A database migrated only to revision 0004, when entries still had ``recorded_us``."""
    engine = create_database_engine(database_url)
    upgrade(engine, "0004")
    yield engine
    engine.dispose()


def test_dropping_recorded_us_keeps_every_entry_and_the_log_still_verifies(
    engine_at_0004: Engine,
) -> None:
    signer = Signer("credit-exchange/3plus2/huizhou/audit", SigningKey(bytes(range(32))))
    bodies = [
        entries.maintenance(f"entry {i}", "huizhou", 1_700_000_000_000_000 + i) for i in range(11)
    ]
    leaves = [merkle.leaf_hash(b) for b in bodies]
    tree, nodes = merkle.extend(merkle.Frontier(0, ()), leaves)
    note = sign_note(Checkpoint(signer.name, tree.size, tree.root()).body(), signer)
    with engine_at_0004.begin() as conn:  # the ledger as the code before 0005 wrote it
        conn.execute(
            text(
                "INSERT INTO ledger_entries (idx, leaf_hash, body, recorded_us) "
                "VALUES (:idx, :leaf, :body, :us)"
            ),
            [
                {"idx": i, "leaf": leaf, "body": body, "us": 1_700_000_000_000_000 + i}
                for i, (leaf, body) in enumerate(zip(leaves, bodies, strict=True))
            ],
        )
        conn.execute(
            text("INSERT INTO ledger_nodes (level, idx, hash) VALUES (:level, :idx, :hash)"),
            [{"level": level, "idx": idx, "hash": h} for level, idx, h in nodes if level],
        )
        conn.execute(
            text(
                "INSERT INTO ledger_checkpoints (size, root_hash, note, signed_us) "
                "VALUES (:size, :root, :note, 0)"
            ),
            {"size": tree.size, "root": tree.root(), "note": note},
        )
        conn.execute(
            text("UPDATE ledger_head SET size = :size, root_hash = :root"),
            {"size": tree.size, "root": tree.root()},
        )

    upgrade(engine_at_0004)

    assert current_revision(engine_at_0004) == head_revision()
    columns = {c["name"] for c in inspect(engine_at_0004).get_columns("ledger_entries")}
    assert columns == {"idx", "leaf_hash", "body"}
    log = AuditLog(engine_at_0004, signer)
    assert [e.body for e in log.entries(0, 11)] == bodies
    assert log.commit([entries.maintenance("after the upgrade", "huizhou", 1)])[0] == 11
    report = verify(log, signer.verifier())
    assert report.ok and report.size == 12 and report.checked_bodies == 12, report.problems

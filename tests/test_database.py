"""The models describe the migrated schema exactly: every table, column, index and key."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine

from creditexchange.node.database.models import Base


def test_the_models_map_every_table_exactly_as_the_migrations_create_it(engine: Engine) -> None:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    assert differences == []

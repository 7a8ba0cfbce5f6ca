"""The node's database: its tables, opening it, migrating it, and the driver fast path.

``open_database`` is the way in: it opens the database named by the node's
configuration and refuses a schema that is not at the code's revision.
"""

from __future__ import annotations

from creditexchange.node.database.engine import (
    Migration,
    SchemaState,
    create_database_engine,
    current_revision,
    head_revision,
    open_database,
    read_snapshot,
    require_current_schema,
    schema_state,
    upgrade,
)

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
    "upgrade",
]

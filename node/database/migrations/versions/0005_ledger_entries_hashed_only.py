"""The ledger's entries keep only what the leaf hash covers: drop ``recorded_us``.

An entry's time is its own ``time_unix_micros``, inside the hashed bytes; the
unhashed column beside it could be edited unseen and changed what a prune drops.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    # SQLite: the table is copied without the column (batch mode); PostgreSQL: ALTER TABLE.
    with op.batch_alter_table("ledger_entries") as batch:
        batch.drop_column("recorded_us")

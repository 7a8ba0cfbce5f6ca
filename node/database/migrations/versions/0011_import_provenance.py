"""Imports remember how current each row was and why rows were refused.

``source_time`` on records and their versions is when the source said the row was
true: the row's own update time where its theme has one, otherwise the export time
of its file; an older row does not replace a newer one unless the operator says so.
``import_rejects`` counts a batch's rejected rows by field and reason code, for the
departments' reporting statistics.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Stamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    for table in ("records", "record_versions"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("source_time", Stamp, nullable=True))
    with op.batch_alter_table("import_batches") as batch:
        batch.add_column(sa.Column("exported_at", Stamp, nullable=True))
        batch.add_column(sa.Column("sheet", sa.String(128), nullable=True))
        batch.add_column(
            sa.Column("allow_older", sa.Boolean, nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("stale", sa.Integer, nullable=False, server_default="0"))
    op.create_table(
        "import_rejects",
        sa.Column("batch_id", BigId, sa.ForeignKey("import_batches.id"), primary_key=True),
        sa.Column("field", sa.String(64), primary_key=True),
        sa.Column("reason", sa.String(32), primary_key=True),
        sa.Column("rows", sa.Integer, nullable=False),
    )

"""Change feeds: the feeds this node publishes (a Merkle tree per theme, its head and
what it last said of each record) and what it syncs from others (cursors, records).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"


def upgrade() -> None:
    op.create_table(
        "feed_leaves",
        sa.Column("theme", sa.String(64), primary_key=True),
        sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "feed_nodes",
        sa.Column("theme", sa.String(64), primary_key=True),
        sa.Column("level", sa.SmallInteger, primary_key=True, autoincrement=False),
        sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "feed_heads",
        sa.Column("theme", sa.String(64), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("root_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("checkpoint", sa.Text, nullable=False),
        sa.Column("signed_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "feed_published",
        sa.Column("theme", sa.String(64), primary_key=True),
        sa.Column("record_key", sa.String(128), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("content_hash", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("present", sa.Boolean, nullable=False),
        sa.Column("leaf_idx", sa.BigInteger, nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "sync_cursors",
        sa.Column("publisher", sa.String(32), primary_key=True),
        sa.Column("theme", sa.String(64), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("root_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("checkpoint", sa.Text, nullable=False),
        sa.Column("frontier", sa.LargeBinary, nullable=False),
        sa.Column("applied_us", sa.BigInteger, nullable=False),
        sa.Column("head_size", sa.BigInteger, nullable=False),
        sa.Column("head_us", sa.BigInteger, nullable=False),
        sa.Column("last_error", sa.Text, nullable=False),
        sa.Column("last_error_us", sa.BigInteger, nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "synced_records",
        sa.Column("origin", sa.String(32), primary_key=True),
        sa.Column("theme", sa.String(64), primary_key=True),
        sa.Column("record_key", sa.String(128), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("subject_id", sa.String(18), nullable=False),
        sa.Column("subject_type", sa.String(32), nullable=False),
        sa.Column("subject_name", sa.String(256), nullable=False),
        sa.Column("source_department", sa.String(64), nullable=False),
        sa.Column("fields", sa.Text, nullable=False),
        sa.Column("decision_date", sa.Date, nullable=True),
        sa.Column("valid_until", sa.Date, nullable=True),
        sa.Column("publicity_end", sa.Date, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("feed_idx", sa.BigInteger, nullable=False),
        sa.Column("changed_us", sa.BigInteger, nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_synced_records_subject", "synced_records", ["subject_id", "theme"])

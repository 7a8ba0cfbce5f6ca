"""Witnessing: the peers' checkpoints seen, cosignatures made and received, alarms.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "peer_checkpoints",
        sa.Column("peer", sa.String(32), primary_key=True),
        sa.Column("source", sa.String(16), primary_key=True),  # witnessed | receipt
        sa.Column("origin", sa.String(256), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("root_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("seen_us", sa.BigInteger, nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "cosignatures",
        sa.Column("role", sa.String(8), primary_key=True),  # made | received
        sa.Column("member", sa.String(32), primary_key=True),
        sa.Column("origin", sa.String(256), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("root_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("line", sa.Text, nullable=False),
        sa.Column("timestamp", sa.BigInteger, nullable=False),
        sa.Column("recorded_us", sa.BigInteger, nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_cosignatures_role_size", "cosignatures", ["role", "size"])
    op.create_table(
        "witness_alarms",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("peer", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),  # fork | rollback
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("earlier_note", sa.Text, nullable=False),
        sa.Column("later_note", sa.Text, nullable=False),
        sa.Column("raised_us", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_witness_alarms_peer", "witness_alarms", ["peer"])

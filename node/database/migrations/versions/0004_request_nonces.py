"""Nonces of the signed requests a node answered: replay protection across restarts.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.create_table(
        "request_nonces",
        sa.Column("requester", sa.String(32), primary_key=True),
        sa.Column("nonce", sa.LargeBinary(64), primary_key=True),
        sa.Column("created_us", sa.BigInteger, nullable=False),  # the request's own time, UTC
        sqlite_with_rowid=False,
    )
    op.create_index("ix_request_nonces_created", "request_nonces", ["created_us"])

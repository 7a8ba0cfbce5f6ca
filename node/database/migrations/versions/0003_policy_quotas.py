"""Quota counters of the memorandum's rules: queries per requester, rule and period.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.create_table(
        "quota_usage",
        sa.Column("requester", sa.String(32), primary_key=True),
        sa.Column("rule_id", sa.String(64), primary_key=True),
        sa.Column("period_start", sa.BigInteger, primary_key=True),  # unix seconds, UTC
        sa.Column("used", sa.BigInteger, nullable=False),
        sqlite_with_rowid=False,
    )

"""Witness alarms can be resolved by the operator: when, and why.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"


def upgrade() -> None:
    with op.batch_alter_table("witness_alarms") as batch:
        batch.add_column(sa.Column("resolved_us", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("resolution", sa.Text, nullable=True))

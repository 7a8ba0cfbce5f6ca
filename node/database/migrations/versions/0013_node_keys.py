"""The keys a node has held, and from which ledger entry on (key rotation).

``node_keys`` lists the node's signing keys (which signed the checkpoints of which
sizes, so that ``audit verify`` checks the checkpoints signed before a rotation with
the key that signed them) and its subject-HMAC keys (which keyed the subjects of which
entries, so that an auditor's search finds a subject before and after a rotation).
A node migrated to this revision has no row yet: its present keys count as in force
from the first entry until its first rotation records them.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "node_keys",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("public_key", sa.LargeBinary(32), nullable=True),
        sa.Column("from_index", sa.BigInteger, nullable=False),
        sa.Column("since_us", sa.BigInteger, nullable=False),
        sa.Column("recorded_as", sa.BigInteger, nullable=True),
        sa.UniqueConstraint("kind", "key_id", name="uq_node_keys"),
    )

"""Joint reward and punishment screenings, the measures they found, their feedback.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "screenings",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("scene", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("partner", sa.String(64), nullable=False),
        sa.Column("officer", sa.String(256), nullable=False),
        sa.Column("case_reference", sa.String(512), nullable=False),
        sa.Column("measures_version", sa.String(64), nullable=False),
        sa.Column("subject_count", sa.Integer, nullable=False),
        sa.Column("complete", sa.SmallInteger, nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("document", sa.Text, nullable=False),
    )
    op.create_index("ix_screenings_partner", "screenings", ["partner"])
    op.create_index("ix_screenings_created_us", "screenings", ["created_us"])
    op.create_index("ix_screenings_scene_created", "screenings", ["scene", "created_us"])
    op.create_table(
        "screening_subjects",
        sa.Column("screening_id", sa.String(32), sa.ForeignKey("screenings.id"), primary_key=True),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("subject_hmac", sa.LargeBinary(32), nullable=False),
        sa.Column("subject", sa.String(32), nullable=False),
        sa.Column("subject_type", sa.String(32), nullable=False),
    )
    op.create_index("ix_screening_subjects_subject_hmac", "screening_subjects", ["subject_hmac"])
    op.create_table(
        "screening_triggers",
        sa.Column("screening_id", sa.String(32), sa.ForeignKey("screenings.id"), primary_key=True),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("trigger", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("binding", sa.SmallInteger, nullable=False),
    )
    op.create_table(
        "screening_feedback",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("screening_id", sa.String(32), sa.ForeignKey("screenings.id"), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("trigger", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),  # applied | not_applied
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("officer", sa.String(256), nullable=False),
        sa.Column("recorded_us", sa.BigInteger, nullable=False),
    )
    op.create_index(
        "ix_screening_feedback_screening", "screening_feedback", ["screening_id", "position"]
    )

"""The credit store: subjects, records with their history, import batches, objections.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Stamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "subjects",
        sa.Column("subject_id", sa.String(18), primary_key=True),
        sa.Column("subject_type", sa.String(32), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("updated_at", Stamp, nullable=False),
        sqlite_with_rowid=False,  # one B-tree keyed by the identifier, not two
    )
    op.create_table(
        "import_batches",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("theme", sa.String(64), nullable=False),
        sa.Column("source_department", sa.String(64), nullable=False),
        sa.Column("file_name", sa.String(1024), nullable=False),
        sa.Column("file_digest", sa.String(64), nullable=False, index=True),
        sa.Column("file_format", sa.String(16), nullable=False),
        sa.Column("encoding", sa.String(32), nullable=False),
        sa.Column("catalog_version", sa.String(32), nullable=False),
        sa.Column("started_at", Stamp, nullable=False),
        sa.Column("finished_at", Stamp),
        sa.Column("rows_read", sa.Integer, nullable=False, server_default="0"),
        sa.Column("inserted", sa.Integer, nullable=False, server_default="0"),
        sa.Column("updated", sa.Integer, nullable=False, server_default="0"),
        sa.Column("unchanged", sa.Integer, nullable=False, server_default="0"),
        sa.Column("rejected", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_table(
        "records",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("theme", sa.String(64), nullable=False),
        sa.Column("record_key", sa.String(128), nullable=False),
        sa.Column("subject_id", sa.String(18), nullable=False),
        sa.Column("source_department", sa.String(64), nullable=False),
        sa.Column("fields", sa.Text, nullable=False),
        sa.Column("decision_date", sa.Date),
        sa.Column("valid_until", sa.Date),
        sa.Column("publicity_end", sa.Date),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("content_hash", sa.String(32), nullable=False),
        sa.Column("batch_id", BigId, sa.ForeignKey("import_batches.id")),
        sa.Column("updated_at", Stamp, nullable=False),
        sa.UniqueConstraint("theme", "record_key", name="uq_records_theme_key"),
    )
    op.create_index("ix_records_subject_theme", "records", ["subject_id", "theme"])
    op.create_table(
        "record_versions",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("record_id", BigId, sa.ForeignKey("records.id"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("subject_id", sa.String(18), nullable=False),
        sa.Column("source_department", sa.String(64), nullable=False),
        sa.Column("fields", sa.Text, nullable=False),
        sa.Column("decision_date", sa.Date),
        sa.Column("valid_until", sa.Date),
        sa.Column("publicity_end", sa.Date),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("content_hash", sa.String(32), nullable=False),
        sa.Column("batch_id", BigId, sa.ForeignKey("import_batches.id")),
        sa.Column("valid_from", Stamp, nullable=False),
        sa.Column("superseded_at", Stamp, nullable=False),
        sa.Column("superseded_by", sa.String(64), nullable=False),
        sa.UniqueConstraint("record_id", "version", name="uq_record_versions"),
    )
    op.create_table(
        "objections",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("record_id", BigId, sa.ForeignKey("records.id"), nullable=False, index=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("opened_at", Stamp, nullable=False),
        sa.Column("closed_at", Stamp),
        sa.Column("outcome", sa.String(16)),
        sa.Column("note", sa.Text),
    )

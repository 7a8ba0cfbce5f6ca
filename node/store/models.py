"""The store's tables (SQLAlchemy 2 declarative models).

The schema itself is owned by the Alembic migrations in ``migrations/``; these
models describe it for queries. Invariants:

* ``records`` holds the *current* version of every record, unique per
  (theme, record_key); every earlier version is kept in ``record_versions``, so
  a correction never loses what was served before.
* Subject lookups go through the (subject_id, theme) index and never scan.
* ``fields`` is the record's catalog fields as compact JSON with sorted keys,
  exactly as validated; ``content_hash`` is a digest of what the import compares,
  so re-importing the same data changes nothing.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only gives autoincrementing row ids to INTEGER PRIMARY KEY columns.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class RecordStatus(StrEnum):
    ACTIVE = "active"
    OBJECTION = "objection"  # 异议处理中: every answer carrying it says so
    REPAIRED = "repaired"  # 信用修复: corrected behaviour, publicity ended early
    EXPIRED = "expired"  # withdrawn from publicity by the credit center


class Base(DeclarativeBase):
    pass


class Subject(Base):
    __tablename__ = "subjects"
    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012 (SQLAlchemy reads it)

    subject_id: Mapped[str] = mapped_column(String(18), primary_key=True)
    subject_type: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(256))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class ImportBatch(Base):
    __tablename__ = "import_batches"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    theme: Mapped[str] = mapped_column(String(64))
    source_department: Mapped[str] = mapped_column(String(64))
    file_name: Mapped[str] = mapped_column(String(1024))
    file_digest: Mapped[str] = mapped_column(String(64), index=True)
    file_format: Mapped[str] = mapped_column(String(16))
    encoding: Mapped[str] = mapped_column(String(32))
    catalog_version: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    rows_read: Mapped[int] = mapped_column(Integer, default=0)
    inserted: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[int] = mapped_column(Integer, default=0)
    unchanged: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)


class Record(Base):
    __tablename__ = "records"
    __table_args__ = (
        UniqueConstraint("theme", "record_key", name="uq_records_theme_key"),
        Index("ix_records_subject_theme", "subject_id", "theme"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    theme: Mapped[str] = mapped_column(String(64))
    record_key: Mapped[str] = mapped_column(String(128))
    subject_id: Mapped[str] = mapped_column(String(18))
    source_department: Mapped[str] = mapped_column(String(64))
    fields: Mapped[str] = mapped_column(Text)
    decision_date: Mapped[dt.date | None] = mapped_column(Date)
    valid_until: Mapped[dt.date | None] = mapped_column(Date)
    publicity_end: Mapped[dt.date | None] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16), default=RecordStatus.ACTIVE)
    version: Mapped[int] = mapped_column(Integer, default=1)
    content_hash: Mapped[str] = mapped_column(String(32))
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("import_batches.id"))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class RecordVersion(Base):
    """An earlier version of a record, kept when an import or a status change replaced it."""

    __tablename__ = "record_versions"
    __table_args__ = (UniqueConstraint("record_id", "version", name="uq_record_versions"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    record_id: Mapped[int] = mapped_column(ForeignKey("records.id"))
    version: Mapped[int] = mapped_column(Integer)
    subject_id: Mapped[str] = mapped_column(String(18))
    source_department: Mapped[str] = mapped_column(String(64))
    fields: Mapped[str] = mapped_column(Text)
    decision_date: Mapped[dt.date | None] = mapped_column(Date)
    valid_until: Mapped[dt.date | None] = mapped_column(Date)
    publicity_end: Mapped[dt.date | None] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16))
    content_hash: Mapped[str] = mapped_column(String(32))
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("import_batches.id"))
    valid_from: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    superseded_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    superseded_by: Mapped[str] = mapped_column(String(64))  # "import batch 7", "objection 3"


class Objection(Base):
    """A subject's objection (信用异议) to a record; while open, the record says so."""

    __tablename__ = "objections"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    record_id: Mapped[int] = mapped_column(ForeignKey("records.id"), index=True)
    reason: Mapped[str] = mapped_column(Text)
    opened_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    outcome: Mapped[str | None] = mapped_column(String(16))  # corrected/confirmed/unresolved
    note: Mapped[str | None] = mapped_column(Text)

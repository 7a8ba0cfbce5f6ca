"""The node's tables, every one of them (SQLAlchemy 2 declarative models).

The schema itself is owned by the Alembic migrations in ``migrations/``; these
models describe it, table for table and column for column (a test compares them
with a migrated database), and every query of the node is written against them.

* ``records`` holds the *current* version of every record, unique per
  (theme, record_key); every earlier version is kept in ``record_versions``, so
  a correction never loses what was served before. Only the records repository
  (``creditexchange.node.records.repository``) writes either. A status change
  (an objection, a repair, a withdrawal) is not a version: it is a row of
  ``record_events``, written by the repository too.
* Subject lookups go through the (subject_id, theme) index and never scan.
* ``fields`` is the record's catalog fields as compact JSON with sorted keys,
  exactly as validated; ``content_hash`` is a digest of what the import compares,
  so re-importing the same data changes nothing.
* The ledger's tables (``ledger_*``) are written only by the audit log
  (``creditexchange.node.ledger``); ``quota_usage`` and ``request_nonces`` by the
  exchange's quota counter and replay guard, in the ledger's transactions.
* What the node knows of the other members' logs and they of its own —
  ``peer_checkpoints``, ``cosignatures``, ``witness_alarms`` — is written only by
  ``creditexchange.node.ledger.witnessing``.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "API_KEYS",
    "CHECKPOINTS",
    "COSIGNATURES",
    "ENTRIES",
    "FEED_HEADS",
    "FEED_LEAVES",
    "FEED_NODES",
    "FEED_PUBLISHED",
    "HEAD",
    "IMPORT_BATCHES",
    "IMPORT_REJECTS",
    "NODES",
    "NODE_KEYS",
    "NONCES",
    "OBJECTIONS",
    "OBJECTION_NOTES",
    "OBJECTION_RECORDS",
    "PEER_CHECKPOINTS",
    "QUOTA_USAGE",
    "RECORDS",
    "RECORD_EVENTS",
    "RECORD_VERSIONS",
    "REPAIRS",
    "SCREENINGS",
    "SCREENING_FEEDBACK",
    "SCREENING_SUBJECTS",
    "SCREENING_TRIGGERS",
    "SUBJECTS",
    "SYNCED_RECORDS",
    "SYNC_CURSORS",
    "WITNESS_ALARMS",
    "ApiKey",
    "Base",
    "FeedHead",
    "FeedLeaf",
    "FeedNode",
    "FeedPublished",
    "ImportBatch",
    "ImportReject",
    "LedgerCheckpoint",
    "LedgerEntry",
    "LedgerHead",
    "LedgerNode",
    "NodeKey",
    "Objection",
    "ObjectionNote",
    "ObjectionRecord",
    "PeerCheckpoint",
    "QuotaUsage",
    "Record",
    "RecordEvent",
    "RecordVersion",
    "Repair",
    "RequestNonce",
    "Screening",
    "ScreeningFeedback",
    "ScreeningSubject",
    "ScreeningTrigger",
    "Subject",
    "SyncCursor",
    "SyncedRecord",
    "WitnessAlarm",
    "WitnessCosignature",
]

# SQLite only gives autoincrementing row ids to INTEGER PRIMARY KEY columns.
BigId = BigInteger().with_variant(Integer(), "sqlite")
Stamp = DateTime(timezone=True)


class Base(DeclarativeBase):
    pass


# --- the credit store -------------------------------------------------------------


class Subject(Base):
    __tablename__ = "subjects"
    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012 (SQLAlchemy reads it)

    subject_id: Mapped[str] = mapped_column(String(18), primary_key=True)
    subject_type: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(256))
    updated_at: Mapped[dt.datetime] = mapped_column(Stamp)


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
    started_at: Mapped[dt.datetime] = mapped_column(Stamp)
    finished_at: Mapped[dt.datetime | None] = mapped_column(Stamp)
    rows_read: Mapped[int] = mapped_column(Integer, server_default="0")
    inserted: Mapped[int] = mapped_column(Integer, server_default="0")
    updated: Mapped[int] = mapped_column(Integer, server_default="0")
    unchanged: Mapped[int] = mapped_column(Integer, server_default="0")
    rejected: Mapped[int] = mapped_column(Integer, server_default="0")
    exported_at: Mapped[dt.datetime | None] = mapped_column(Stamp)
    sheet: Mapped[str | None] = mapped_column(String(128))
    allow_older: Mapped[bool] = mapped_column(Boolean, server_default=false())
    stale: Mapped[int] = mapped_column(Integer, server_default="0")


class ImportReject(Base):
    """How many rows of an import batch were rejected, by field and reason code."""

    __tablename__ = "import_rejects"

    batch_id: Mapped[int] = mapped_column(BigId, ForeignKey("import_batches.id"), primary_key=True)
    field: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[str] = mapped_column(String(32), primary_key=True)
    rows: Mapped[int] = mapped_column(Integer)


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
    status: Mapped[str] = mapped_column(String(16))
    version: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(32))
    batch_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("import_batches.id"))
    updated_at: Mapped[dt.datetime] = mapped_column(Stamp)
    # When the source said this version was true: the row's own update time, else its
    # file's export time (None before it was recorded). An older row does not replace it.
    source_time: Mapped[dt.datetime | None] = mapped_column(Stamp)


class RecordVersion(Base):
    """An earlier data version of a record, kept when an import replaced it (its status is
    the record's status at that moment)."""

    __tablename__ = "record_versions"
    __table_args__ = (UniqueConstraint("record_id", "version", name="uq_record_versions"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    record_id: Mapped[int] = mapped_column(BigId, ForeignKey("records.id"))
    version: Mapped[int] = mapped_column(Integer)
    subject_id: Mapped[str] = mapped_column(String(18))
    source_department: Mapped[str] = mapped_column(String(64))
    fields: Mapped[str] = mapped_column(Text)
    decision_date: Mapped[dt.date | None] = mapped_column(Date)
    valid_until: Mapped[dt.date | None] = mapped_column(Date)
    publicity_end: Mapped[dt.date | None] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16))
    content_hash: Mapped[str] = mapped_column(String(32))
    batch_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("import_batches.id"))
    valid_from: Mapped[dt.datetime] = mapped_column(Stamp)
    superseded_at: Mapped[dt.datetime] = mapped_column(Stamp)
    superseded_by: Mapped[str] = mapped_column(String(64))  # "import batch 7"
    source_time: Mapped[dt.datetime | None] = mapped_column(Stamp)


class RecordEvent(Base):
    """Something that happened to a record without changing its data: an objection opened
    or closed, a repair, a withdrawal. The record's status after it is ``status``; its
    data version (``version``) stays what it was. Written only by the records repository."""

    __tablename__ = "record_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    record_id: Mapped[int] = mapped_column(BigId, ForeignKey("records.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)  # the data version it happened to
    kind: Mapped[str] = mapped_column(String(24))  # objection_opened, repaired, withdrawn …
    status: Mapped[str] = mapped_column(String(16))  # the record's status after it
    why: Mapped[str] = mapped_column(Text)  # "objection 3", "repair 1"
    at: Mapped[dt.datetime] = mapped_column(Stamp)


class Objection(Base):
    """A subject's objection (信用异议) to records of its own (``objection_records``);
    while it is open, every record it covers says so."""

    __tablename__ = "objections"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    subject_id: Mapped[str] = mapped_column(String(18), index=True)
    reason: Mapped[str] = mapped_column(Text)
    applicant: Mapped[str] = mapped_column(String(256))
    applicant_role: Mapped[str] = mapped_column(String(16))  # subject | agent
    channel: Mapped[str] = mapped_column(String(64))  # window | online | member:<id>
    received: Mapped[dt.date] = mapped_column(Date)
    due: Mapped[dt.date] = mapped_column(Date)  # the last working day to answer it
    opened_at: Mapped[dt.datetime] = mapped_column(Stamp)
    closed_at: Mapped[dt.datetime | None] = mapped_column(Stamp)
    outcome: Mapped[str | None] = mapped_column(String(16))  # confirmed, corrected, revoked …
    answered: Mapped[dt.date | None] = mapped_column(Date)


class ObjectionRecord(Base):
    """A record an objection covers: its data version when the objection opened and, for
    the outcome ``corrected``, the newer version (and its import batch) that corrected it."""

    __tablename__ = "objection_records"

    objection_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("objections.id"), primary_key=True, autoincrement=False
    )
    record_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("records.id"), primary_key=True, autoincrement=False, index=True
    )
    version_opened: Mapped[int] = mapped_column(Integer)
    corrected_version: Mapped[int | None] = mapped_column(Integer)
    corrected_batch_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("import_batches.id"))


class ObjectionNote(Base):
    """A handling note on an objection, in the order they were written."""

    __tablename__ = "objection_notes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    objection_id: Mapped[int] = mapped_column(BigId, ForeignKey("objections.id"), index=True)
    text: Mapped[str] = mapped_column(Text)
    written_at: Mapped[dt.datetime] = mapped_column(Stamp)


class Repair(Base):
    """A credit repair (信用修复): a record's publicity ended early, on what basis and
    evidence, decided when; the record's status is ``repaired`` from then on."""

    __tablename__ = "repairs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    record_id: Mapped[int] = mapped_column(BigId, ForeignKey("records.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)  # the data version repaired
    basis: Mapped[str] = mapped_column(Text)
    evidence: Mapped[str] = mapped_column(Text)
    applicant: Mapped[str | None] = mapped_column(String(256))
    decided: Mapped[dt.date] = mapped_column(Date)
    publicity_end_before: Mapped[dt.date | None] = mapped_column(Date)
    recorded_at: Mapped[dt.datetime] = mapped_column(Stamp)


# --- the audit ledger ---------------------------------------------------------------


class LedgerEntry(Base):
    """A leaf of the log: the entry's bytes (NULL once pruned) and their leaf hash.

    Nothing else: when the entry was recorded is inside its bytes, which the leaf
    hash covers, so no column here can be edited unseen.
    """

    __tablename__ = "ledger_entries"

    idx: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    body: Mapped[bytes | None] = mapped_column(LargeBinary)


class LedgerNode(Base):
    """The hash of a perfect subtree above the leaves: (level, index) -> hash."""

    __tablename__ = "ledger_nodes"
    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012 (SQLAlchemy reads it)

    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class LedgerCheckpoint(Base):
    """A signed checkpoint (C2SP signed note) of the log at ``size``."""

    __tablename__ = "ledger_checkpoints"

    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    note: Mapped[str] = mapped_column(Text)
    signed_us: Mapped[int] = mapped_column(BigInteger)


class LedgerHead(Base):
    """The one row (id 1) saying how many entries the log has and its root."""

    __tablename__ = "ledger_head"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(BigInteger)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class NodeKey(Base):
    """A key the node has held, and from which entry of its ledger on.

    ``kind`` is ``signing`` (the Ed25519 key that signs its checkpoints; ``key_id`` is
    SHA-256 of ``public_key``, hex, as the memorandum names it) or ``subject_hmac`` (the
    secret keying the subjects' HMACs; ``key_id`` names it without revealing it). A key
    is in force from entry ``from_index`` on: a signing key signs the checkpoints of
    sizes above it, a subject-HMAC key hashes the subjects of the entries from it, until
    the next key of its kind. ``recorded_as`` is the ledger entry that records the change
    (a LOCAL maintenance entry naming both keys); None for the key the node was created
    with. Written only by ``creditexchange.node.app.keys``, with that entry.
    """

    __tablename__ = "node_keys"
    __table_args__ = (UniqueConstraint("kind", "key_id", name="uq_node_keys"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    key_id: Mapped[str] = mapped_column(String(64))
    public_key: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    from_index: Mapped[int] = mapped_column(BigInteger)
    since_us: Mapped[int] = mapped_column(BigInteger)
    recorded_as: Mapped[int | None] = mapped_column(BigInteger)


# --- the exchange's counters --------------------------------------------------------


class QuotaUsage(Base):
    """Queries a requester made under a memorandum rule in one quota period."""

    __tablename__ = "quota_usage"
    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012 (SQLAlchemy reads it)

    requester: Mapped[str] = mapped_column(String(32), primary_key=True)
    rule_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    period_start: Mapped[int] = mapped_column(
        BigInteger, primary_key=True, autoincrement=False
    )  # unix seconds, UTC
    used: Mapped[int] = mapped_column(BigInteger)


class RequestNonce(Base):
    """A signed request's nonce, spent: replay protection across restarts."""

    __tablename__ = "request_nonces"
    __table_args__ = (
        Index("ix_request_nonces_created", "created_us"),
        {"sqlite_with_rowid": False},
    )

    requester: Mapped[str] = mapped_column(String(32), primary_key=True)
    nonce: Mapped[bytes] = mapped_column(LargeBinary(64), primary_key=True)
    created_us: Mapped[int] = mapped_column(BigInteger)  # the request's own time, UTC


# --- witnessing: the other members' logs, and their cosignatures on this one ----------


class PeerCheckpoint(Base):
    """The largest checkpoint of a peer's log this node has seen, per way it saw it.

    ``source`` "witnessed": the last checkpoint this node's witness verified (signed by
    the peer, consistent with every earlier one it verified) and cosigned. "receipt":
    the largest checkpoint found in a receipt the peer gave this node as a requester
    (signed by the peer; the witness checks it against the peer's later ones).
    """

    __tablename__ = "peer_checkpoints"
    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012 (SQLAlchemy reads it)

    peer: Mapped[str] = mapped_column(String(32), primary_key=True)
    source: Mapped[str] = mapped_column(String(16), primary_key=True)
    origin: Mapped[str] = mapped_column(String(256))
    size: Mapped[int] = mapped_column(BigInteger)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    note: Mapped[str] = mapped_column(Text)  # the signed note, exactly as the peer signed it
    seen_us: Mapped[int] = mapped_column(BigInteger)


class WitnessCosignature(Base):
    """The latest cosignature (c2sp.org/tlog-cosignature) per role and member.

    ``role`` "made": this node cosigned ``member``'s checkpoint; "received": the witness
    ``member`` cosigned this node's checkpoint (served with it, carried in receipts).
    """

    __tablename__ = "cosignatures"
    __table_args__ = (
        Index("ix_cosignatures_role_size", "role", "size"),
        {"sqlite_with_rowid": False},
    )

    role: Mapped[str] = mapped_column(String(8), primary_key=True)
    member: Mapped[str] = mapped_column(String(32), primary_key=True)
    origin: Mapped[str] = mapped_column(String(256))
    size: Mapped[int] = mapped_column(BigInteger)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    note: Mapped[str] = mapped_column(Text)  # the checkpoint cosigned, as its log signed it
    line: Mapped[str] = mapped_column(Text)  # the cosignature line
    timestamp: Mapped[int] = mapped_column(BigInteger)  # the cosignature's own, POSIX seconds
    recorded_us: Mapped[int] = mapped_column(BigInteger)


class WitnessAlarm(Base):
    """A peer showed two checkpoints that cannot both be true: a fork or a rollback.

    Both signed notes are kept as evidence; the alarm's ledger entry commits with it.
    """

    __tablename__ = "witness_alarms"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    peer: Mapped[str] = mapped_column(String(32), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # fork | rollback
    detail: Mapped[str] = mapped_column(Text)
    earlier_note: Mapped[str] = mapped_column(Text)  # the checkpoint it showed before
    later_note: Mapped[str] = mapped_column(Text)  # the one contradicting it
    raised_us: Mapped[int] = mapped_column(BigInteger)
    resolved_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    resolution: Mapped[str | None] = mapped_column(Text, nullable=True)  # the operator's why


# --- the REST gateway: who may call it -------------------------------------------------


class ApiKey(Base):
    """A partner system's or an auditor's key to the REST gateway; only its hash is kept.

    ``key_id`` is the key's public part (it names the key in logs and lets the gateway
    find the row); ``key_hash`` is SHA-256 of the whole key. ``purposes`` and
    ``subject_types`` are JSON lists (a partner's; an auditor has none); a revoked key
    keeps its row, so the ledger's entries still name a known caller.
    """

    __tablename__ = "api_keys"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))  # partner | auditor
    key_id: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    purposes: Mapped[str] = mapped_column(Text)
    subject_types: Mapped[str] = mapped_column(Text)
    rate_per_min: Mapped[int] = mapped_column(Integer)
    created_us: Mapped[int] = mapped_column(BigInteger)
    rotated_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    revoked_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


# --- joint rewards and punishments: screenings and their feedback ----------------------


class Screening(Base):
    """A joint reward-and-punishment screening a partner system ran (``POST
    /v1/screenings``), written only by ``creditexchange.node.federation.screening`` in
    the transaction of its SCREENING ledger entry.

    ``document`` is the result as it was answered (JSON; identity numbers masked, never
    in clear); ``complete`` is 0 when a member asked did not answer, so the result may
    miss measures it would have triggered.
    """

    __tablename__ = "screenings"
    __table_args__ = (Index("ix_screenings_scene_created", "scene", "created_us"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    scene: Mapped[str] = mapped_column(String(64))
    purpose: Mapped[str] = mapped_column(String(64))
    partner: Mapped[str] = mapped_column(String(64), index=True)
    officer: Mapped[str] = mapped_column(String(256))
    case_reference: Mapped[str] = mapped_column(String(512))
    measures_version: Mapped[str] = mapped_column(String(64))
    subject_count: Mapped[int] = mapped_column(Integer)
    complete: Mapped[int] = mapped_column(SmallInteger)
    created_us: Mapped[int] = mapped_column(BigInteger, index=True)
    document: Mapped[str] = mapped_column(Text)


class ScreeningSubject(Base):
    """A subject screened, at its position in the request: its HMAC under the ledger's
    key (feedback names the subject again and is matched through it) and its id as
    shown (individuals masked)."""

    __tablename__ = "screening_subjects"

    screening_id: Mapped[str] = mapped_column(ForeignKey("screenings.id"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject_hmac: Mapped[bytes] = mapped_column(LargeBinary(32), index=True)
    subject: Mapped[str] = mapped_column(String(32))
    subject_type: Mapped[str] = mapped_column(String(32))


class ScreeningTrigger(Base):
    """A measure a screening found applying to one of its subjects: what the report
    counts and what feedback may be given on."""

    __tablename__ = "screening_triggers"

    screening_id: Mapped[str] = mapped_column(ForeignKey("screenings.id"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    trigger: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    binding: Mapped[int] = mapped_column(SmallInteger)


class ScreeningFeedback(Base):
    """What the department did with one measure for one subject: ``applied`` or
    ``not_applied`` with its reason. Append-only: a later feedback on the same measure
    supersedes an earlier one in the counts, and both stay."""

    __tablename__ = "screening_feedback"
    __table_args__ = (Index("ix_screening_feedback_screening", "screening_id", "position"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    screening_id: Mapped[str] = mapped_column(ForeignKey("screenings.id"))
    position: Mapped[int] = mapped_column(Integer)
    trigger: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))  # applied | not_applied
    reason: Mapped[str] = mapped_column(Text)
    officer: Mapped[str] = mapped_column(String(256))
    recorded_us: Mapped[int] = mapped_column(BigInteger)


# --- change feeds: what this node publishes, and what it syncs from others ---------------


class FeedLeaf(Base):
    """A leaf of one of this node's feeds (one published theme): the FeedChange bytes and
    their leaf hash, at ``idx`` in the feed's Merkle tree."""

    __tablename__ = "feed_leaves"
    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012 (SQLAlchemy reads it)

    theme: Mapped[str] = mapped_column(String(64), primary_key=True)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    body: Mapped[bytes] = mapped_column(LargeBinary)


class FeedNode(Base):
    """The hash of a perfect subtree of a feed's tree: (theme, level, index) -> hash."""

    __tablename__ = "feed_nodes"
    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012 (SQLAlchemy reads it)

    theme: Mapped[str] = mapped_column(String(64), primary_key=True)
    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class FeedHead(Base):
    """A feed's size, root and latest signed checkpoint (one row per published theme)."""

    __tablename__ = "feed_heads"

    theme: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    checkpoint: Mapped[str] = mapped_column(Text)
    signed_us: Mapped[int] = mapped_column(BigInteger)


class FeedPublished(Base):
    """What a feed last said of a record (its version and content), so that the next
    change of the record — and only a change — becomes the feed's next leaf."""

    __tablename__ = "feed_published"
    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012 (SQLAlchemy reads it)

    theme: Mapped[str] = mapped_column(String(64), primary_key=True)
    record_key: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    present: Mapped[bool] = mapped_column(Boolean)  # False: its removal was published
    leaf_idx: Mapped[int] = mapped_column(BigInteger)


class SyncCursor(Base):
    """A subscriber's position in one publisher's feed: the size and root it verified,
    the signed checkpoint that vouches for them, the tree's frontier (to extend it with
    the next batch's leaves), and what happened last."""

    __tablename__ = "sync_cursors"
    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012 (SQLAlchemy reads it)

    publisher: Mapped[str] = mapped_column(String(32), primary_key=True)
    theme: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    checkpoint: Mapped[str] = mapped_column(Text)
    frontier: Mapped[bytes] = mapped_column(LargeBinary)
    applied_us: Mapped[int] = mapped_column(BigInteger)
    head_size: Mapped[int] = mapped_column(BigInteger)  # the publisher's size, last seen
    head_us: Mapped[int] = mapped_column(BigInteger)  # when its newest change was made
    last_error: Mapped[str] = mapped_column(Text)
    last_error_us: Mapped[int] = mapped_column(BigInteger)


class SyncedRecord(Base):
    """A record synced from another member's feed, kept apart from this city's own and
    marked with its origin; its latest state as the publisher last changed it."""

    __tablename__ = "synced_records"
    __table_args__ = (
        Index("ix_synced_records_subject", "subject_id", "theme"),
        {"sqlite_with_rowid": False},
    )

    origin: Mapped[str] = mapped_column(String(32), primary_key=True)
    theme: Mapped[str] = mapped_column(String(64), primary_key=True)
    record_key: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    subject_id: Mapped[str] = mapped_column(String(18))
    subject_type: Mapped[str] = mapped_column(String(32))
    subject_name: Mapped[str] = mapped_column(String(256))
    source_department: Mapped[str] = mapped_column(String(64))
    fields: Mapped[str] = mapped_column(Text)
    decision_date: Mapped[dt.date | None] = mapped_column(Date)
    valid_until: Mapped[dt.date | None] = mapped_column(Date)
    publicity_end: Mapped[dt.date | None] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16))
    feed_idx: Mapped[int] = mapped_column(BigInteger)  # the leaf that set this state
    changed_us: Mapped[int] = mapped_column(BigInteger)


def _table(model: type[Base]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


# The tables, for Core statements.
SUBJECTS = _table(Subject)
IMPORT_BATCHES = _table(ImportBatch)
IMPORT_REJECTS = _table(ImportReject)
RECORDS = _table(Record)
RECORD_VERSIONS = _table(RecordVersion)
OBJECTIONS = _table(Objection)
OBJECTION_RECORDS = _table(ObjectionRecord)
OBJECTION_NOTES = _table(ObjectionNote)
RECORD_EVENTS = _table(RecordEvent)
REPAIRS = _table(Repair)
ENTRIES = _table(LedgerEntry)
NODES = _table(LedgerNode)
CHECKPOINTS = _table(LedgerCheckpoint)
HEAD = _table(LedgerHead)
NODE_KEYS = _table(NodeKey)
QUOTA_USAGE = _table(QuotaUsage)
NONCES = _table(RequestNonce)
PEER_CHECKPOINTS = _table(PeerCheckpoint)
COSIGNATURES = _table(WitnessCosignature)
WITNESS_ALARMS = _table(WitnessAlarm)
API_KEYS = _table(ApiKey)
FEED_LEAVES = _table(FeedLeaf)
FEED_NODES = _table(FeedNode)
FEED_HEADS = _table(FeedHead)
FEED_PUBLISHED = _table(FeedPublished)
SYNC_CURSORS = _table(SyncCursor)
SYNCED_RECORDS = _table(SyncedRecord)
SCREENINGS = _table(Screening)
SCREENING_SUBJECTS = _table(ScreeningSubject)
SCREENING_TRIGGERS = _table(ScreeningTrigger)
SCREENING_FEEDBACK = _table(ScreeningFeedback)

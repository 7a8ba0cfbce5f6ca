"""Snapshots of a node (``credit-node backup``) and bringing one back (``credit-node restore``).

A snapshot is one file, a gzip-compressed tar archive holding regular files only::

    manifest.json      what the snapshot holds; the archive's first member
    home/node.toml     the node's settings, as written
    home/keys/…        its signing key (and .pub), subject HMAC key, and a rotation's next
                       and retired keys
    home/policy/…      the installed memorandum and every accepted version (trust history)
    home/tls/…         its certificate, key, CA certificate and revocation list, when present
    home/…             the catalog, measures, workdays and gateway TLS files a setting names
                       in the home
    database.sqlite    the whole database at one moment, as a SQLite database

The manifest names the node (member id, federation), when the snapshot was made,
the database's backend and Alembic revision with each table's row count, the
ledger's size, root and latest signed checkpoint, every file's size and SHA-256,
and what a setting names outside the home and is therefore not in the snapshot.

Invariants of a backup (:func:`back_up`):

* **One moment.** The database is read at one instant while the node may go on
  serving: SQLite through its online backup API in one step (one read transaction
  of the WAL, so writers are not blocked), PostgreSQL inside one ``REPEATABLE READ
  READ ONLY`` transaction whose rows are copied into a SQLite database of the same
  schema revision. The ledger's head, entries, checkpoints and the tables written
  with them (nonces, quotas, cosignatures…) are therefore from one commit.
* **Only a sound ledger is kept.** The snapshot's ledger is verified
  (:func:`~creditexchange.node.ledger.verify.verify`) before the archive is written;
  a ledger that does not verify is refused, since no restore would accept it.
* **Private, whole, never over another file.** The archive is written 0600 under a
  temporary name beside its destination, flushed to disk, then linked to its name,
  which must not exist: a backup never replaces a file, and a failed one leaves
  nothing behind. Every member is stored 0600; the keys in it are the node's
  secrets, so the archive must be kept as privately as the home itself.

Invariants of a restore (:func:`restore`), which refuses, changing nothing, unless
every check passes, in this order:

1. **The archive is whole.** It opens with its manifest; every member is a regular
   file the manifest lists, once, under a plain relative name, of the size and
   SHA-256 it states; none is missing. Files are written by this module, 0600 in
   0700 folders, never by the archive's own paths or modes.
2. **The ledger verifies**, and its head and checkpoint are those the manifest
   states.
3. **Nothing is overwritten unasked.** A home that holds anything, or a database
   outside the home that holds a node's tables, is replaced only with ``force``;
   then the home's entries are moved, and such a database copied, into
   ``HOME.replaced-<time>`` beside the home before anything is written. A home or
   database of another member, or a database holding tables that are not a
   node's, is refused even so.
4. **The log is not forked.** The snapshot's ledger must hold every checkpoint that
   this node signed or that a witness cosigned, as far as can be learned: the
   checkpoints and the witnesses' cosignatures kept in the database being replaced;
   the cosigned checkpoints the operator gives (``cosigned``: a receipt as
   ``credit-node query --json`` prints it, or a signed note with its cosignature
   lines); and, unless ``ask_witnesses`` is off, every witness the memorandum
   lists, asked over the federation (``Audit.GetWitnessed``) what it last verified
   and cosigned of this log. A snapshot smaller than any of those, or holding
   another root at that size, would fork the log and is refused; so is a restore
   for which no witness could be asked. The comparison is
   :func:`~creditexchange.node.ledger.verify.verify_witnessed`.

Then the database is put in place — a SQLite database in the home as the
snapshot's file; any other (PostgreSQL, or SQLite outside the home) emptied, migrated,
then refilled in one transaction — and the home's files moved in, ``node.toml`` last.
A snapshot from either backend restores into either: rows are copied column by
column, timestamps kept as UTC instants.

What the hashes do not do: they find a damaged, cut or altered archive, not a forger
who holds it — the archive holds the node's signing key, so whoever has it can sign a
ledger of their own. What such a forger cannot make is the witnesses' cosignatures,
which step 4 checks; the archive is to be kept as privately as the home.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import functools
import hashlib
import io
import json
import os
import re
import shutil
import sqlite3
import tarfile
import tempfile
import tomllib
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path, PurePosixPath
from typing import Any

import tomli_w
from alembic.runtime.migration import MigrationContext
from alembic.util import CommandError
from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Date,
    DateTime,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    cast,
    create_engine,
    false,
    func,
    inspect,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import REGCLASS
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.types import TypeEngine

from creditexchange.errors import (
    ConfigError,
    CreditExchangeError,
    DatabaseError,
    InsecurePermissions,
    LedgerError,
    NoteError,
)
from creditexchange.node.app.config import (
    CONFIG_FILE,
    ENV_PREFIX,
    PRIVATE_DIR_MODE,
    PRIVATE_FILE_MODE,
    NodeConfig,
    home_relative_database_url,
    load_config,
    make_private_dir,
    mask_password,
    permission_problem,
)
from creditexchange.node.app.keys import load_signing_key, signing_keys_in_force
from creditexchange.node.app.wiring import federation_view, requester_from
from creditexchange.node.database import (
    create_database_engine,
    current_revision,
    head_revision,
    read_snapshot,
    upgrade,
)
from creditexchange.node.database.engine import sqlite_files
from creditexchange.node.database.models import Base
from creditexchange.node.exchange.client import FederationClient
from creditexchange.node.exchange.federation import Federation
from creditexchange.node.federation.witness import vouched_for, witness_verifiers
from creditexchange.node.ledger import AuditLog, Ledger, Vouched, origin_for, verify
from creditexchange.node.ledger.cosignature import Cosignature, CosignatureVerifier
from creditexchange.node.ledger.note import Checkpoint, Signer, Verifier, open_note
from creditexchange.node.ledger.note import key_id as note_key_id
from creditexchange.node.ledger.verify import KeyInForce, verify_witnessed
from creditexchange.node.ledger.witnessing import RECEIVED, WitnessRecords, checkpoint_of
from creditexchange.policy.trust import TrustStore

__all__ = [
    "DATABASE_MEMBER",
    "FORMAT",
    "MANIFEST_MEMBER",
    "BackupSummary",
    "FileEntry",
    "Manifest",
    "RestoreSummary",
    "back_up",
    "restore",
]

FORMAT = "credit-exchange-node-snapshot/1"
MANIFEST_MEMBER = "manifest.json"
DATABASE_MEMBER = "database.sqlite"
HOME_PREFIX = "home/"

_MAX_MANIFEST_BYTES = 1 << 20
_MAX_COSIGNED_BYTES = 1 << 20
_CHUNK = 1 << 20
_COPY_ROWS = 5000
_ALEMBIC_TABLE = "alembic_version"
_NODE_TABLES = frozenset(Base.metadata.tables) | {_ALEMBIC_TABLE}
_POLICY_FILE = re.compile(r"current\.json|v[1-9][0-9]*\.json")
_WITNESS_NAME = re.compile(
    r"credit-exchange/[a-z0-9][a-z0-9_-]{0,31}/([a-z][a-z0-9_-]{1,31})/witness"
)
_STORED_KINDS: tuple[tuple[type[TypeEngine[Any]], tuple[str, ...]], ...] = (
    (LargeBinary, ("blob", "null")),
    (Boolean, ("integer", "null")),
    (Integer, ("integer", "null")),
    (String, ("text", "null")),
    (DateTime, ("text", "null")),
    (Date, ("text", "null")),
)
"""What SQLite's ``typeof`` may say of a value in a column of each kind."""
_SAFE_PART = re.compile(r"[A-Za-z0-9._+@=,-]{1,255}")


# --- the manifest ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileEntry:
    """A file of the snapshot: its size in bytes and SHA-256 (hex)."""

    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """What a snapshot holds, as ``manifest.json`` states it."""

    member_id: str
    federation: str
    created: str  # ISO 8601, UTC
    software: str
    backend: str  # the backend the snapshot was taken from: sqlite | postgresql
    revision: str  # the database's Alembic revision
    tables: Mapping[str, int]  # rows per table
    ledger_size: int
    ledger_root: str  # base64
    checkpoint: str  # the latest signed checkpoint, as signed
    files: Mapping[str, FileEntry]
    left_out: tuple[str, ...] = ()  # what a setting names outside the home

    @property
    def origin(self) -> str:
        return origin_for(self.member_id, self.federation)

    def to_json(self) -> bytes:
        document = {
            "format": FORMAT,
            "member_id": self.member_id,
            "federation": self.federation,
            "created": self.created,
            "software": self.software,
            "database": {
                "backend": self.backend,
                "revision": self.revision,
                "tables": dict(self.tables),
            },
            "ledger": {
                "origin": self.origin,
                "size": self.ledger_size,
                "root": self.ledger_root,
                "checkpoint": self.checkpoint,
            },
            "files": {name: {"size": e.size, "sha256": e.sha256} for name, e in self.files.items()},
            "left_out": list(self.left_out),
        }
        return json.dumps(document, ensure_ascii=False, indent=2).encode("utf-8") + b"\n"

    @classmethod
    def parse(cls, raw: bytes) -> Manifest:
        """The manifest in ``raw``; :class:`ValueError` saying what is wrong with it."""
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"its manifest is not JSON ({exc})") from None
        doc = _Fields(data, "the manifest")
        found = doc.text("format")
        if found != FORMAT:
            raise ValueError(
                f"its manifest is of the format {found!r}; this software reads {FORMAT!r} "
                "(a snapshot made by another version: restore it with that version)"
            )
        database = _Fields(doc.get("database"), "the manifest's database")
        ledger = _Fields(doc.get("ledger"), "the manifest's ledger")
        tables = _Fields(database.get("tables"), "the manifest's table counts")
        files = _Fields(doc.get("files"), "the manifest's files")
        entries: dict[str, FileEntry] = {}
        for name in files.names():
            _check_member_name(name)
            entry = _Fields(files.get(name), f"the manifest's entry of {name}")
            digest = entry.text("sha256")
            if not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise ValueError(f"the manifest's SHA-256 of {name} is not 64 hex digits")
            entries[name] = FileEntry(entry.count("size"), digest)
        for required in (DATABASE_MEMBER, HOME_PREFIX + CONFIG_FILE):
            if required not in entries:
                raise ValueError(
                    f"its manifest does not list {required}, which every snapshot holds"
                )
        left_out = doc.get("left_out")
        if not isinstance(left_out, list) or not all(isinstance(s, str) for s in left_out):
            raise ValueError("the manifest's left_out is not a list of texts")
        manifest = cls(
            member_id=doc.text("member_id"),
            federation=doc.text("federation"),
            created=doc.text("created"),
            software=doc.text("software"),
            backend=database.text("backend"),
            revision=database.text("revision"),
            tables={name: tables.count(name) for name in tables.names()},
            ledger_size=ledger.count("size"),
            ledger_root=ledger.text("root"),
            checkpoint=ledger.text("checkpoint"),
            files=entries,
            left_out=tuple(left_out),
        )
        if ledger.text("origin") != manifest.origin:
            raise ValueError(
                f"the manifest's ledger origin {ledger.text('origin')!r} is not that of "
                f"{manifest.member_id} in {manifest.federation} ({manifest.origin!r})"
            )
        return manifest


class _Fields:
    """A JSON object of the manifest, read strictly: a missing or mistyped field is a
    :class:`ValueError` naming it."""

    def __init__(self, data: object, what: str) -> None:
        if not isinstance(data, dict):
            raise ValueError(f"{what} is not a JSON object")
        self.data: dict[str, Any] = data
        self.what = what

    def names(self) -> list[str]:
        return list(self.data)

    def get(self, key: str) -> Any:
        if key not in self.data:
            raise ValueError(f"{self.what} has no {key!r}")
        return self.data[key]

    def text(self, key: str) -> str:
        value = self.get(key)
        if not isinstance(value, str) or not value:
            raise ValueError(f"{self.what}'s {key!r} is not a non-empty text")
        return value

    def count(self, key: str) -> int:
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{self.what}'s {key!r} is not a whole number")
        return value


def _check_member_name(name: str) -> None:
    """A name a snapshot may hold: the database, or a plain relative path under home/."""
    if name == DATABASE_MEMBER:
        return
    path = PurePosixPath(name)
    parts = path.parts
    if (
        not name.startswith(HOME_PREFIX)
        or len(parts) < 2
        or len(parts) > 16
        or str(path) != name
        or any(p in (".", "..") or not _SAFE_PART.fullmatch(p) for p in parts)
    ):
        raise ValueError(
            f"it names a file {name[:80]!r}, which is not a plain relative path in the home "
            "(no '..', no absolute path, letters, digits and ._+@=,- only)"
        )


# --- backing up --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupSummary:
    """What :func:`back_up` wrote."""

    archive: Path
    manifest: Manifest
    archive_bytes: int


def back_up(home: Path, archive: Path) -> BackupSummary:
    """Write a snapshot of the node at ``home`` to the new file ``archive``.

    The node may be serving meanwhile (see the module). Refuses, writing nothing: a
    home that does not load, a key outside the home, a database that holds no node or
    whose ledger does not verify, and an ``archive`` that exists already.
    """
    config = load_config(home)
    archive = Path(os.path.abspath(archive))
    if os.path.lexists(archive):
        raise ConfigError(
            f"{archive} already exists, and a backup never replaces a file: give a new name "
            "(e.g. with the date in it)"
        )
    if not archive.parent.is_dir():
        raise ConfigError(f"there is no folder {archive.parent} to write the backup in: create it")
    files, left_out = _home_files(config)
    contents = {name: _read_home_file(path) for name, path in files}
    work = _private_temp_dir(archive.parent, f".{archive.name}.backup-")
    try:
        database = work / DATABASE_MEMBER
        backend = _snapshot_database(config.database_url, database)
        snapshot = _open_snapshot_file(database)
        try:
            revision = _revision_of(snapshot)
            tables = _row_counts(snapshot, revision)
            log = _audit_log(snapshot, config.member_id, config.settings.federation, config)
            keys = _keys_in_force(config, log, revision)
            size, root, checkpoint = _verified_head(
                log,
                keys,
                "the node's ledger",
                "Nothing was written: 'credit-node audit verify' tells the same, and the ledger "
                "must be repaired (or restored from a snapshot) before a snapshot of it is kept",
            )
        finally:
            snapshot.dispose()
        entries = {name: FileEntry(len(data), _sha256(data)) for name, data in contents.items()}
        entries[DATABASE_MEMBER] = FileEntry(database.stat().st_size, _sha256_file(database))
        manifest = Manifest(
            member_id=config.member_id,
            federation=config.settings.federation,
            created=dt.datetime.now(dt.UTC).isoformat(),
            software=_software(),
            backend=backend,
            revision=revision,
            tables=tables,
            ledger_size=size,
            ledger_root=base64.b64encode(root).decode(),
            checkpoint=checkpoint,
            files=entries,
            left_out=tuple(left_out),
        )
        partial = work / "archive.partial"
        _write_archive(partial, manifest, contents, database)
        _link_new(partial, archive)
        return BackupSummary(archive, manifest, archive.stat().st_size)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _home_files(config: NodeConfig) -> tuple[list[tuple[str, Path]], list[str]]:
    """The home's files a snapshot holds, by archive name; and what a setting names
    outside the home (left out, with why)."""
    home = config.home
    settings = config.settings
    wanted: list[tuple[str, Path | None, bool]] = [
        ("the settings", home / CONFIG_FILE, True),
        ("the signing key", config.signing_key_path, True),
        ("the public key", config.signing_key_path.with_suffix(".pub"), False),
        ("the subject HMAC key", config.subject_hmac_key_path, True),
        ("the TLS certificate", config.tls_cert_path, False),
        ("the TLS key", config.tls_key_path, False),
        ("the CA certificate", config.tls_ca_path, False),
        ("the revocation list", config.path(settings.tls_crl), False),
        ("the catalog", config.catalog_path, False),
        ("the workdays file", config.workdays_path, False),
        (
            "the measures catalog",
            None if settings.measures_path is None else config.path(settings.measures_path),
            False,
        ),
        (
            "the gateway certificate",
            None if settings.gateway_tls_cert is None else config.path(settings.gateway_tls_cert),
            False,
        ),
        (
            "the gateway key",
            None if settings.gateway_tls_key is None else config.path(settings.gateway_tls_key),
            False,
        ),
    ]
    for folder in {config.signing_key_path.parent, config.subject_hmac_key_path.parent}:
        if folder.is_dir():  # the next key and the retired ones of a rotation, too
            wanted.extend(
                ("a key", path, False) for path in sorted(folder.rglob("*")) if path.is_file()
            )
    policy = config.policy_dir
    if policy.is_dir():
        wanted.extend(
            ("the memorandum history", path, False)
            for path in sorted(policy.iterdir())
            if _POLICY_FILE.fullmatch(path.name)
        )
    files: dict[str, Path] = {}
    left_out: list[str] = []
    for what, path, required in wanted:
        if path is None or (not required and HOME_PREFIX + _relative(path, home) in files):
            continue
        inside = path.is_relative_to(home) and ".." not in path.parts
        if not inside:
            if required:
                raise ConfigError(
                    f"{what} is outside the home ({path}); a snapshot must hold it to restore "
                    f"the node: move it into the home and set it relative to {home}"
                )
            left_out.append(f"{what}: {path} (outside the home)")
            continue
        if not path.is_file():
            if required:
                raise ConfigError(f"{what} is missing ({path}): the home is incomplete")
            continue
        name = HOME_PREFIX + path.relative_to(home).as_posix()
        try:
            _check_member_name(name)
        except ValueError as exc:
            if required:
                raise ConfigError(
                    f"{what} cannot be kept in a snapshot: {exc}; rename it"
                ) from None
            left_out.append(f"{what}: {path} (a name a snapshot does not hold)")
            continue
        files[name] = path
    if config.database_password_file is not None:
        left_out.append(
            f"the database password file: {config.database_password_file} (a deployment "
            "secret, never in a snapshot)"
        )
    return sorted(files.items()), left_out


def _relative(path: Path, home: Path) -> str:
    return path.relative_to(home).as_posix() if path.is_relative_to(home) else str(path)


def _read_home_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}; nothing was written") from None


def _snapshot_database(url: str, target: Path) -> str:
    """Copy the database at ``url``, as it is at one moment, into the new SQLite file
    ``target``; returns its backend."""
    database = sqlite_files(url)
    if database and not database[0].is_file():
        raise DatabaseError(f"there is no database at {database[0]}: nothing to back up")
    engine = create_database_engine(url)
    try:
        backend = engine.dialect.name
        if backend == "sqlite":
            _sqlite_backup(engine, target)
        else:
            _copy_into_sqlite(engine, target)
        return backend
    except _database_errors(engine) as exc:
        reason = getattr(exc, "orig", None) or exc
        raise DatabaseError(f"cannot read the database {mask_password(url)}: {reason}") from None
    finally:
        engine.dispose()


def _sqlite_backup(engine: Engine, target: Path) -> None:
    """SQLite's online backup, in one step: one read transaction, one committed state."""
    _create_private_file(target)
    raw = engine.raw_connection()
    try:
        source = raw.driver_connection
        assert isinstance(source, sqlite3.Connection)
        destination = sqlite3.connect(target)
        try:
            source.backup(destination)  # pages=-1: everything in one step
            destination.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        finally:
            destination.close()
    except sqlite3.Error as exc:
        raise DatabaseError(f"cannot back up the SQLite database: {exc}") from None
    finally:
        raw.close()


def _copy_into_sqlite(engine: Engine, target: Path) -> None:
    """Copy every row of a PostgreSQL database, in one REPEATABLE READ snapshot, into a
    new SQLite database at the same schema revision."""
    _create_private_file(target)
    snapshot = _open_snapshot_file(target)
    try:
        with read_snapshot(engine) as source:
            revision = _revision_in(source)
            if revision is None:
                raise DatabaseError("the database holds no node (no schema revision)")
            _migrate(snapshot, revision)
            with snapshot.begin() as destination:
                _copy_rows(source, destination, revision)
    finally:
        snapshot.dispose()


# --- the database's rows, from one store into another -------------------------------------------


def _copy_rows(source: Connection, target: Connection, revision: str) -> None:
    """Copy every row of every node table from ``source`` into ``target``, both at schema
    ``revision`` (what ``target`` held is deleted first), parents before children; each
    table's count checked against what ``target`` then holds.

    Timestamps cross as UTC instants: SQLite keeps them without a zone (the node
    writes UTC), PostgreSQL with one.
    """
    theirs = _tables_at(source, revision)
    ours = {t.name: t for t in _tables_at(target, revision)}
    to_sqlite = target.dialect.name == "sqlite"
    for table in reversed(ours.values()):  # the rows a migration seeds (the ledger head)
        target.execute(table.delete())
    for table in theirs:
        into = ours.get(table.name)
        names = [c.name for c in table.columns]
        if into is None or sorted(c.name for c in into.columns) != sorted(names):
            raise DatabaseError(
                f"the table {table.name} differs between the snapshot and the database it is "
                "restored into, though both are at the same schema revision"
            )
        stamps = {c.name for c in table.columns if isinstance(c.type, DateTime)}
        count = 0
        result = source.execute(select(table).execution_options(yield_per=_COPY_ROWS))
        for rows in result.partitions():
            batch = [
                {
                    name: _stamp_for(value, to_sqlite) if name in stamps else value
                    for name, value in zip(names, row, strict=True)
                }
                for row in rows
            ]
            target.execute(into.insert(), batch)
            count += len(batch)
        held = target.execute(select(func.count()).select_from(into)).scalar_one()
        if held != count:
            raise DatabaseError(f"copied {count} rows of {table.name}, the database holds {held}")
    if target.dialect.name == "postgresql":
        _advance_sequences(target, ours.values())


def _tables_at(conn: Connection, revision: str) -> list[Table]:
    """The node's tables in a database at ``revision``, parents first: at this software's
    revision the models' (which describe it, table for table: checked against what the
    database holds, so no table is left behind), at another as found."""
    if revision == _head():
        tables = list(Base.metadata.sorted_tables)
        found = set(inspect(conn).get_table_names()) - {_ALEMBIC_TABLE}
        unknown = sorted(found - {t.name for t in tables})
        if unknown:
            raise DatabaseError(
                f"the database holds tables this software does not describe ({', '.join(unknown)})"
            )
        return tables
    metadata = MetaData()
    metadata.reflect(conn)
    return [t for t in metadata.sorted_tables if t.name != _ALEMBIC_TABLE]


def _stamp_for(value: Any, to_sqlite: bool) -> Any:
    if not isinstance(value, dt.datetime):
        return value
    if to_sqlite:
        return value if value.tzinfo is None else value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def _advance_sequences(conn: Connection, tables: Iterable[Table]) -> None:
    """Move every serial id's sequence past the ids copied in, so the next row gets a new one."""
    for table in tables:
        key = list(table.primary_key.columns)
        if len(key) != 1 or not isinstance(key[0].type, Integer):
            continue
        sequence = func.pg_get_serial_sequence(table.name, key[0].name)
        conn.execute(
            select(
                func.setval(
                    cast(sequence, REGCLASS), func.coalesce(func.max(key[0]), 0) + 1, false()
                )
            ).select_from(table)
        )


def _row_counts(engine: Engine, revision: str) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
            for t in sorted(_tables_at(conn, revision), key=lambda t: t.name)
        }


def _node_tables(engine: Engine) -> list[str]:
    return sorted(inspect(engine).get_table_names())


def _clear(engine: Engine) -> None:
    """Drop every table of the node's database, in one transaction (whatever its revision)."""
    with engine.begin() as conn:
        if _revision_in(conn) == _head():
            Base.metadata.drop_all(conn)  # the models describe it: no need to look
            Table(_ALEMBIC_TABLE, MetaData(), Column("version_num", String(32))).drop(conn)
        else:
            found = MetaData()
            found.reflect(conn)
            found.drop_all(conn)


def _revision_in(conn: Connection) -> str | None:
    """The schema revision of the database ``conn`` reads, in its transaction."""
    return MigrationContext.configure(conn).get_current_revision()


def _revision_of(engine: Engine) -> str:
    revision = current_revision(engine)
    if revision is None:
        raise DatabaseError("the database holds no node (no schema revision)")
    return revision


def _migrate(engine: Engine, revision: str = "head") -> None:
    try:
        upgrade(engine, revision)
    except CommandError:
        raise DatabaseError(
            f"schema revision {revision} is not one this version of the software knows (a "
            "newer version migrated the database): use that version or a newer one"
        ) from None


# --- the snapshot's database and ledger ---------------------------------------------------------


def _database_errors(engine: Engine) -> tuple[type[Exception], ...]:
    """What a database refusing a statement raises: SQLAlchemy's errors, and the driver's
    own (the ledger reads through the driver's cursor)."""
    return (SQLAlchemyError, engine.dialect.loaded_dbapi.Error)


def _open_snapshot_file(path: Path) -> Engine:
    """A snapshot's SQLite database, opened as it is: no WAL, no pragmas, one file."""
    return create_engine(f"sqlite:///{path}")


def _audit_log(engine: Engine, member_id: str, federation: str, config: NodeConfig) -> AuditLog:
    signer = Signer(origin_for(member_id, federation), load_signing_key(config.signing_key_path))
    return AuditLog(engine, signer)


def _keys_in_force(config: NodeConfig, log: AuditLog, revision: str) -> list[KeyInForce]:
    """The keys that signed the log's checkpoints, as ``audit verify`` takes them: the
    node's key history (from a database at this software's revision), else its key."""
    if revision != _head():
        return [KeyInForce(log.signer.verifier())]
    try:
        return signing_keys_in_force(config, log.engine)
    except _database_errors(log.engine) as exc:
        raise LedgerError(f"the node's key history cannot be read ({exc})") from None


def _verified_head(
    log: AuditLog, keys: Sequence[KeyInForce], whose: str, what_now: str
) -> tuple[int, bytes, str]:
    """The ledger's size, root and latest checkpoint, once it verifies whole; ``what_now``
    ends the refusal of one that does not (or cannot be read)."""
    try:
        report = verify(log, keys)
        size, root = log.root()
        checkpoint = log.latest_checkpoint()
    except _database_errors(log.engine) as exc:
        reason = getattr(exc, "orig", None) or exc
        raise LedgerError(f"{whose} cannot be read ({reason}). {what_now}") from None
    if not report.ok:
        raise LedgerError(f"{whose} does not verify: {'; '.join(report.problems)}. {what_now}")
    return size, root, checkpoint


# --- the archive --------------------------------------------------------------------------------


def _write_archive(
    path: Path, manifest: Manifest, contents: Mapping[str, bytes], database: Path
) -> None:
    """The snapshot as a gzip-compressed tar: manifest first, then the home, then the
    database; every member a regular file 0600; flushed to disk before it returns."""
    stamp = int(dt.datetime.fromisoformat(manifest.created).timestamp())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "wb") as raw:
        os.fchmod(raw.fileno(), PRIVATE_FILE_MODE)
        with tarfile.open(fileobj=raw, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
            body = manifest.to_json()
            tar.addfile(_member(MANIFEST_MEMBER, len(body), stamp), io.BytesIO(body))
            for name, data in contents.items():
                tar.addfile(_member(name, len(data), stamp), io.BytesIO(data))
            with database.open("rb") as f:
                tar.addfile(_member(DATABASE_MEMBER, database.stat().st_size, stamp), f)
        raw.flush()
        os.fsync(raw.fileno())


def _member(name: str, size: int, stamp: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = PRIVATE_FILE_MODE
    info.mtime = stamp
    info.type = tarfile.REGTYPE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _link_new(source: Path, target: Path) -> None:
    """Give ``source`` the name ``target``, which must not exist, and make that durable."""
    try:
        os.link(source, target)
    except FileExistsError:
        raise ConfigError(
            f"{target} appeared while the backup was written, and a backup never replaces a "
            "file: give a new name"
        ) from None
    except OSError:  # no hard links on this file system: a rename, checked just before
        if os.path.lexists(target):
            raise ConfigError(f"{target} already exists; give a new name") from None
        os.rename(source, target)
    _fsync_dir(target.parent)


def _extract(archive: Path, work: Path) -> Manifest:
    """Check the archive whole and write its files under ``work`` (module: restore, 1)."""
    with _open_archive(archive) as tar:
        manifest: Manifest | None = None
        seen: set[str] = set()
        try:
            for member in tar:
                name = member.name
                if name in seen:
                    raise _damaged(archive, f"it holds {name[:80]!r} twice")
                seen.add(name)
                if not member.isreg():
                    raise _damaged(
                        archive,
                        f"it holds {name[:80]!r}, which is not a regular file (a link, a "
                        "device or a folder)",
                    )
                if manifest is None:
                    if name != MANIFEST_MEMBER:
                        raise _damaged(archive, f"it does not begin with {MANIFEST_MEMBER}")
                    if member.size > _MAX_MANIFEST_BYTES:
                        raise _damaged(archive, f"its manifest is {member.size} bytes long")
                    try:
                        manifest = Manifest.parse(_read_member(tar, member))
                    except ValueError as exc:
                        raise _damaged(archive, str(exc)) from None
                    continue
                entry = manifest.files.get(name)
                if entry is None:
                    raise _damaged(
                        archive, f"it holds {name[:80]!r}, which its manifest does not list"
                    )
                if member.size != entry.size:
                    raise _damaged(
                        archive,
                        f"{name} is {member.size} bytes long, its manifest says {entry.size}",
                    )
                try:
                    digest = _extract_member(tar, member, work / name)
                except (FileExistsError, NotADirectoryError, IsADirectoryError):
                    raise _damaged(archive, f"{name} collides with another of its files") from None
                if digest != entry.sha256:
                    raise _damaged(
                        archive,
                        f"{name} does not hash to the SHA-256 its manifest states (it was "
                        "altered or damaged)",
                    )
        except (tarfile.TarError, EOFError, zlib.error) as exc:
            raise _damaged(archive, f"it ends early or is corrupt ({exc})") from None
        if manifest is None:
            raise _damaged(archive, "it is empty")
        missing = sorted(set(manifest.files) - seen)
        if missing:
            raise _damaged(
                archive,
                f"it is incomplete: {', '.join(missing[:5])}"
                + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
                + " listed in its manifest are missing (a truncated copy?)",
            )
        return manifest


def _open_archive(archive: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(archive, mode="r:*")
    except FileNotFoundError:
        raise ConfigError(f"there is no snapshot at {archive}") from None
    except IsADirectoryError:
        raise ConfigError(f"{archive} is a folder; give the snapshot file") from None
    except PermissionError:
        raise ConfigError(f"cannot read {archive}: permission denied") from None
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise _damaged(archive, f"it is not a snapshot archive ({exc})") from None


def _damaged(archive: Path, why: str) -> ConfigError:
    return ConfigError(
        f"the snapshot {archive} is damaged or incomplete: {why}. Nothing was restored; "
        "use another copy of the snapshot (compare its size and SHA-256 with the original)"
    )


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    stream = tar.extractfile(member)
    assert stream is not None  # a regular file
    data = stream.read(member.size + 1)
    if len(data) != member.size:
        raise EOFError(f"{member.name} ends after {len(data)} of {member.size} bytes")
    return data


def _extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> str:
    """Write ``member`` to ``target`` (0600, its folders 0700), as read; its SHA-256."""
    stream = tar.extractfile(member)
    assert stream is not None  # a regular file
    for folder in reversed(target.parents):
        if not folder.exists():
            folder.mkdir(mode=PRIVATE_DIR_MODE)
            folder.chmod(PRIVATE_DIR_MODE)
    digest = hashlib.sha256()
    written = 0
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), PRIVATE_FILE_MODE)
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
            f.write(chunk)
            written += len(chunk)
    if written != member.size:
        raise EOFError(f"{member.name} ends after {written} of {member.size} bytes")
    return digest.hexdigest()


# --- restoring ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RestoreSummary:
    """What :func:`restore` did, and what it checked the snapshot against."""

    home: Path
    manifest: Manifest
    database: str  # where the database went, password masked
    replaced: Path | None  # where what was replaced is kept
    checked: tuple[str, ...]  # what the snapshot was checked against, one line each
    unasked: tuple[str, ...]  # witnesses that could not be asked, with why
    warnings: tuple[str, ...] = ()


@dataclass
class _Evidence:
    """What can be learned of how far this node's log went: checkpoints it signed
    (found in a database being replaced) and what witnesses cosigned."""

    signed: list[tuple[str, Checkpoint]] = field(default_factory=list)
    vouched: list[Vouched] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    unasked: list[str] = field(default_factory=list)


@dataclass
class _Existing:
    """A database that is there before the restore: the existing home's, or the target."""

    url: str
    shown: str
    is_target: bool


def restore(
    archive: Path,
    home: Path,
    *,
    force: bool = False,
    database_url: str | None = None,
    cosigned: Sequence[Path] = (),
    ask_witnesses: bool = True,
) -> RestoreSummary:
    """Bring the snapshot ``archive`` back as the node home ``home``; see the module for
    what is checked first, in which order, and what ``force`` keeps aside.

    ``database_url`` puts the database elsewhere than the snapshot's settings say
    (another PostgreSQL, or SQLite); the restored ``node.toml`` then names it.
    """
    home = Path(os.path.abspath(home))
    archive = Path(os.path.abspath(archive))
    if os.path.lexists(home) and not home.is_dir():
        raise ConfigError(f"{home} is a file, not a folder: choose another --home")
    if not home.parent.is_dir():
        raise ConfigError(f"there is no folder {home.parent} to restore the home in: create it")
    if home.is_dir():
        problem = permission_problem(home, f"the folder {home}")
        if problem is not None:
            raise InsecurePermissions(
                f"a node home holds personal data and secrets, and other users can reach this "
                f"one: {problem}, then restore again. Nothing was restored."
            )
    work = _private_temp_dir(home.parent, f".{home.name}.restore-")
    try:
        return _restore(archive, home, work, force, database_url, cosigned, ask_witnesses)
    except OSError as exc:  # before anything was written (the writing turns its own)
        where = f" ({exc.filename})" if exc.filename else ""
        raise ConfigError(
            f"cannot restore: {exc.strerror or exc}{where}. Nothing was restored"
        ) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _restore(
    archive: Path,
    home: Path,
    work: Path,
    force: bool,
    database_url: str | None,
    cosigned: Sequence[Path],
    ask_witnesses: bool,
) -> RestoreSummary:
    manifest = _extract(archive, work)
    staged = work / "home"
    if database_url is not None:
        _set_database_url(staged, database_url, home)
    config = _staged_config(staged, manifest, archive)
    snapshot = _open_snapshot_file(work / DATABASE_MEMBER)
    try:
        log, keys = _snapshot_log(snapshot, manifest, config, archive)
        existing_config, databases = _inspect_target(home, config, manifest, force)
        ours = _Installed.of(config)
        theirs = _Installed.of(existing_config)
        evidence = _evidence(log, keys, config, ours, theirs, databases, cosigned, ask_witnesses)
        _require_not_older(log, keys, evidence, manifest)
    finally:
        snapshot.dispose()
    warnings = _memorandum_warnings(ours, theirs)
    replaced = _Replaced(home)
    try:
        target_database = _place_database(work, staged, home, config, databases, replaced)
        _place_home(staged, home, replaced)
    except BaseException as exc:
        left = replaced.undo()
        if isinstance(exc, OSError):
            where = f" ({exc.filename})" if exc.filename else ""
            raise ConfigError(
                f"cannot restore into {home}: {exc.strerror or exc}{where}. {left}"
            ) from None
        if isinstance(exc, DatabaseError | LedgerError | ConfigError):
            raise type(exc)(f"{str(exc).rstrip('.')}. {left}") from None
        raise
    return RestoreSummary(
        home=home,
        manifest=manifest,
        database=target_database,
        replaced=replaced.folder,
        checked=tuple(evidence.checked),
        unasked=tuple(evidence.unasked),
        warnings=tuple(warnings),
    )


def _staged_config(staged: Path, manifest: Manifest, archive: Path) -> NodeConfig:
    """The snapshot's settings as the restored node will read them (in the staging folder)."""
    try:
        config = load_config(staged)
    except ConfigError as exc:
        said = str(exc).replace(str(staged), "home")
        raise ConfigError(
            f"the settings in the snapshot {archive} do not load: {said}. Nothing was restored"
        ) from None
    if (config.member_id, config.settings.federation) != (manifest.member_id, manifest.federation):
        raise _damaged(
            archive,
            f"its node.toml is of {config.member_id} in {config.settings.federation}, its "
            f"manifest of {manifest.member_id} in {manifest.federation}",
        )
    for what, path in (
        ("signing key", config.signing_key_path),
        ("subject HMAC key", config.subject_hmac_key_path),
    ):
        if not path.is_relative_to(staged) or not path.is_file():
            raise _damaged(archive, f"it does not hold the node's {what}")
    for folder in (config.reject_dir, config.policy_dir, config.tls_key_path.parent):
        if folder.is_relative_to(staged) and ".." not in folder.parts:
            make_private_dir(folder)  # the folders init makes, also when the snapshot has none
    for path in sqlite_files(config.database_url_as_set):
        if path.is_relative_to(staged) and os.path.lexists(path):  # a -wal would be replayed
            raise _damaged(
                archive,
                f"it holds home/{path.relative_to(staged).as_posix()}, where the node's "
                f"database goes (the database is {DATABASE_MEMBER}, and only that)",
            )
    return config


def _set_database_url(staged: Path, url: str, home: Path) -> None:
    """Rewrite the staged ``node.toml`` to name ``url`` (relative when inside the home)."""
    variable = f"{ENV_PREFIX}DATABASE_URL"
    if os.environ.get(variable, url) != url:
        raise ConfigError(
            f"{variable} is set and overrides the database_url of node.toml: unset it, or "
            "restore without --database-url (the node then uses the variable's)"
        )
    path = staged / CONFIG_FILE
    text = path.read_text("utf-8")
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"the snapshot's node.toml is not valid TOML: {exc}") from None
    values["database_url"] = home_relative_database_url(url, home)
    header = ""
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        header += line + "\n"
    replacement = path.with_name(CONFIG_FILE + ".new")
    _write_private(replacement, (header + tomli_w.dumps(values)).encode("utf-8"))
    os.replace(replacement, path)


def _snapshot_log(
    engine: Engine, manifest: Manifest, config: NodeConfig, archive: Path
) -> tuple[AuditLog, list[KeyInForce]]:
    """The snapshot's ledger, brought to this software's schema, verified whole and
    found as its manifest states (module: restore, 2)."""
    unreadable: tuple[type[Exception], ...] = (DatabaseError, *_database_errors(engine))
    try:
        found = _revision_of(engine)
        _check_stored_kinds(engine, archive, found)
    except unreadable as exc:
        raise _damaged(archive, f"its database cannot be read ({exc})") from None
    if found != manifest.revision:
        raise _damaged(
            archive,
            f"its database is at schema revision {found}, its manifest says {manifest.revision}",
        )
    if found != _head():
        _migrate(engine)  # a snapshot by an earlier version: its copy brought to this one
    log = _audit_log(engine, manifest.member_id, manifest.federation, config)
    keys = _keys_in_force(config, log, _head())
    size, root, _ = _verified_head(
        log,
        keys,
        "the snapshot's ledger",
        "Nothing was restored: the snapshot was altered or taken of a damaged ledger; use "
        "another snapshot",
    )
    if (size, base64.b64encode(root).decode()) != (manifest.ledger_size, manifest.ledger_root):
        raise _damaged(
            archive,
            f"its ledger holds {size} entries with another root than the {manifest.ledger_size} "
            "its manifest states",
        )
    try:
        text, _ = open_note(manifest.checkpoint, [keys[-1].verifier])
        stated = Checkpoint.parse(text)
    except NoteError as exc:
        raise _damaged(archive, f"its manifest's checkpoint is not the node's: {exc}") from None
    if (stated.size, stated.root_hash) != (size, root):
        raise _damaged(archive, "its manifest's checkpoint is not that of its ledger's head")
    return log, keys


def _check_stored_kinds(engine: Engine, archive: Path, revision: str) -> None:
    """Refuse a snapshot's database holding a value of another kind than its column's (a
    text where bytes are kept, say): SQLite stores what it is given, and the node reads
    each column as its kind."""
    with engine.connect() as conn:
        for table in _tables_at(conn, revision):
            odd = [
                (column, kinds)
                for column in table.columns
                for kind, kinds in _STORED_KINDS
                if isinstance(column.type, kind)
            ]
            if not odd:
                continue
            wrong = [func.typeof(column).not_in(kinds) for column, kinds in odd]
            found = conn.execute(select(func.count()).select_from(table).where(or_(*wrong)))
            if found.scalar_one():
                column, kinds = next(
                    (c, k)
                    for c, k in odd
                    if conn.execute(
                        select(func.count()).select_from(table).where(func.typeof(c).not_in(k))
                    ).scalar_one()
                )
                raise _damaged(
                    archive,
                    f"its database holds in {table.name}.{column.name} a value that is not "
                    f"{' or '.join(k for k in kinds if k != 'null')}",
                )


def _inspect_target(
    home: Path, config: NodeConfig, manifest: Manifest, force: bool
) -> tuple[NodeConfig | None, list[_Existing]]:
    """The home's and the target database's state; refusals (module: restore, 3)."""
    entries = sorted(p.name for p in home.iterdir()) if home.is_dir() else []
    existing: NodeConfig | None = None
    if (home / CONFIG_FILE).is_file():
        try:
            existing = load_config(home)
        except ConfigError as exc:
            raise ConfigError(
                f"{home} holds a node whose settings cannot be read ({exc}); restore will "
                "not replace what it cannot read: fix it, or move the home away yourself, "
                "then restore again. Nothing was restored"
            ) from None
        if existing.member_id != manifest.member_id:
            raise ConfigError(
                f"{home} holds the node of {existing.member_id}, and this snapshot is of "
                f"{manifest.member_id}: a snapshot is restored only into its own node's home "
                "or an empty one. Nothing was restored"
            )
    if entries and not force:
        shown = ", ".join(entries[:5]) + (
            f" and {len(entries) - 5} more" if len(entries) > 5 else ""
        )
        raise ConfigError(
            f"{home} is not empty (it holds {shown}), and restore never replaces a node home "
            "unasked: restore into a new or empty folder, or give --force to replace it (what "
            f"is there is first moved to {home.name}.replaced-<time> beside it). Nothing was "
            "restored"
        )
    candidates: list[_Existing] = []
    if existing is not None:
        candidates.append(_Existing(existing.database_url, _shown(existing), False))
    target = _target_database(config)
    if target is not None:
        found = _Existing(target, _shown(config), True)
        same = next((d for d in candidates if d.shown == found.shown), None)
        if same is not None:
            same.is_target = True
        else:
            candidates.append(found)
    databases = []  # those holding a node's tables: checked against, kept aside if replaced
    for database in candidates:
        tables = _tables_of(database.url)
        if not tables:
            continue
        strangers = sorted(set(tables) - _NODE_TABLES)
        if strangers:
            raise ConfigError(
                f"the database {database.shown} holds tables that are not a node's "
                f"({', '.join(strangers[:5])}): restore replaces only a node's database; give "
                "--database-url naming a database (or PostgreSQL schema) of the node's own. "
                "Nothing was restored"
            )
        if database.is_target and not force:
            raise ConfigError(
                f"the database {database.shown} already holds a node's tables, and restore "
                "never replaces a database unasked: give --database-url naming an empty one, "
                "or --force to replace it (its rows are first copied to "
                f"{home.name}.replaced-<time>/{DATABASE_MEMBER} beside the home). Nothing was "
                "restored"
            )
        databases.append(database)
    return existing, databases


def _target_database(config: NodeConfig) -> str | None:
    """The restored node's database URL when it lies outside the home (None: a SQLite
    database in the home, which comes with the home)."""
    files = sqlite_files(config.database_url_as_set)
    if files and files[0].is_relative_to(config.home) and ".." not in files[0].parts:
        return None
    return config.database_url


def _shown(config: NodeConfig) -> str:
    """A node's database as it may be printed: its URL, password masked."""
    return mask_password(config.database_url_as_set)


def _tables_of(url: str) -> list[str] | None:
    """The tables of the database at ``url``; None when it is a SQLite file not there."""
    files = sqlite_files(url)
    if files and not files[0].exists():
        return None
    engine = create_database_engine(url)
    try:
        return _node_tables(engine)
    except _database_errors(engine) as exc:
        raise DatabaseError(
            f"cannot open the database {mask_password(url)}: {getattr(exc, 'orig', exc)}. "
            "Nothing was restored"
        ) from None
    finally:
        engine.dispose()


# --- how far the log went: what restore checks the snapshot against -----------------------------


@dataclass(frozen=True)
class _Installed:
    """The memorandum installed in a home: its federation, or why it does not load (both
    None: none is installed)."""

    federation: Federation | None = None
    problem: str | None = None

    @classmethod
    def of(cls, config: NodeConfig | None) -> _Installed:
        if config is None or not TrustStore(config.policy_dir).current_path.exists():
            return cls()
        try:
            return cls(federation_view(config).current())
        except CreditExchangeError as exc:
            return cls(problem=str(exc))


def _evidence(
    log: AuditLog,
    keys: Sequence[KeyInForce],
    config: NodeConfig,
    ours: _Installed,
    theirs: _Installed,
    databases: Sequence[_Existing],
    cosigned: Sequence[Path],
    ask_witnesses: bool,
) -> _Evidence:
    evidence = _Evidence()
    verifiers = _witness_keys(ours, theirs)
    own = [k.verifier for k in keys] + _member_keys(log.origin, config.member_id, ours, theirs)
    for database in databases:
        _from_database(database, log, own, verifiers, evidence)
    for path in cosigned:
        _from_file(path, verifiers, evidence)
    if ask_witnesses:
        _from_witnesses(config, ours, log, evidence)
    else:
        evidence.checked.append(
            "no witness (offline: not asked); run 'credit-node audit verify --witnessed' "
            "before the node serves"
        )
    return evidence


def _witness_keys(*installed: _Installed) -> dict[str, list[CosignatureVerifier]]:
    """Each witness's cosignature verifiers, from the memorandum in the snapshot and the
    one in the home being replaced (keys may have rotated between them)."""
    keys: dict[str, list[CosignatureVerifier]] = {}
    for federation in (i.federation for i in installed):
        if federation is None:
            continue
        for member in federation.memorandum.members:
            known = keys.setdefault(member.id, [])
            known.extend(v for v in witness_verifiers(federation, member.id) if v not in known)
    return keys


def _member_keys(origin: str, member: str, *installed: _Installed) -> list[Verifier]:
    """The node's checkpoint verifiers from the memoranda: the keys they list for it (one
    may be newer than the snapshot's, after a rotation)."""
    found: list[Verifier] = []
    for federation in (i.federation for i in installed):
        if federation is None:
            continue
        for key in federation.keys.get(member, {}).values():
            verifier = Verifier(origin, note_key_id(origin, bytes(key)), bytes(key))
            if verifier not in found:
                found.append(verifier)
    return found


def _from_database(
    database: _Existing,
    log: AuditLog,
    own: Sequence[Verifier],
    verifiers: Mapping[str, list[CosignatureVerifier]],
    evidence: _Evidence,
) -> None:
    """The largest checkpoint the node signed, and the cosignatures it received, as the
    database being replaced holds them."""
    files = sqlite_files(database.url)
    if files and not files[0].exists():
        return
    engine = create_database_engine(database.url)
    where = f"the database {database.shown}"
    try:
        if not inspect(engine).has_table("ledger_checkpoints"):
            return
        there = AuditLog(engine, log.signer)
        note = there.latest_checkpoint()
        try:
            text, _ = open_note(note, _distinct(own))
            checkpoint = Checkpoint.parse(text)
        except NoteError:
            raise ConfigError(
                f"{where} holds a ledger not signed by this node's keys (another node's, or "
                "its checkpoints were forged): restore will not replace it; inspect it, move "
                "it away or give --database-url naming another. Nothing was restored"
            ) from None
        if checkpoint.origin != log.origin:
            raise ConfigError(
                f"{where} holds the ledger {checkpoint.origin!r}, not this node's "
                f"{log.origin!r}: restore will not replace it. Nothing was restored"
            )
        evidence.signed.append((where, checkpoint))
        held = (
            WitnessRecords(engine).cosignatures(RECEIVED)
            if inspect(engine).has_table("cosignatures")
            else []
        )
        unknown = sorted({h.member for h in held if not verifiers.get(h.member)})
        for h in held:
            if verifiers.get(h.member):
                evidence.vouched.append(
                    Vouched(h.member, h.note, h.line, tuple(verifiers[h.member]))
                )
        line = f"{where}: its ledger reached {checkpoint.size} entries"
        counted = sorted({h.member for h in held} - set(unknown))
        if counted:
            largest = max(h.size for h in held if h.member in counted)
            line += f"; cosigned by {', '.join(counted)} up to {largest} entries"
        if unknown:
            line += f" ({', '.join(unknown)}: no memorandum lists its key, not counted)"
        evidence.checked.append(line)
    except _database_errors(engine) as exc:
        raise DatabaseError(
            f"cannot read the ledger of {where} ({getattr(exc, 'orig', exc)}): restore checks "
            "the snapshot against it before replacing it. Nothing was restored"
        ) from None
    finally:
        engine.dispose()


def _from_file(
    path: Path, verifiers: Mapping[str, list[CosignatureVerifier]], evidence: _Evidence
) -> None:
    """A cosigned checkpoint the operator gives: a receipt (JSON with ``checkpoint`` and
    ``cosignatures``, also under ``receipt``) or a signed note with cosignature lines."""
    where = f"--cosigned {path}"
    try:
        with path.open("rb") as f:
            raw = f.read(_MAX_COSIGNED_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read it ({exc.strerror})") from None
    if len(raw) > _MAX_COSIGNED_BYTES:
        raise ConfigError(f"{where}: larger than {_MAX_COSIGNED_BYTES} bytes; not a checkpoint")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: not UTF-8 text") from None
    note, lines = _cosigned_parts(text, where)
    if not lines:
        raise ConfigError(
            f"{where}: it holds no cosignature line ('— credit-exchange/…/witness …'); give a "
            "checkpoint as a witness cosigned it"
        )
    for line in lines:
        try:
            name = Cosignature.parse(line).name
        except NoteError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        match = _WITNESS_NAME.fullmatch(name)
        if match is None:
            raise ConfigError(f"{where}: {name!r} is not the name of a member's witness")
        member = match.group(1)
        evidence.vouched.append(Vouched(member, note, line, tuple(verifiers.get(member, ()))))
    try:
        size = checkpoint_of(note).size
    except NoteError as exc:
        raise ConfigError(f"{where}: its checkpoint: {exc}") from None
    evidence.checked.append(f"{where}: a checkpoint of {size} entries, {len(lines)} cosignature(s)")


def _cosigned_parts(text: str, where: str) -> tuple[str, list[str]]:
    """The checkpoint note and the cosignature lines in a --cosigned file."""
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}: not valid JSON ({exc})") from None
        if isinstance(data, dict) and isinstance(data.get("receipt"), dict):
            data = data["receipt"]
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: a JSON receipt is an object")
        note, lines = data.get("checkpoint"), data.get("cosignatures")
        if not isinstance(note, str) or not isinstance(lines, list):
            raise ConfigError(
                f"{where}: a JSON receipt holds 'checkpoint' (the signed note) and "
                "'cosignatures' (a list of lines)"
            )
        if not all(isinstance(line, str) for line in lines):
            raise ConfigError(f"{where}: its cosignatures are not lines of text")
        return note, [str(line) for line in lines]
    cosignature_lines = [
        line
        for line in text.splitlines()
        if line.startswith("— ") and line[2:].split(" ", 1)[0].endswith("/witness")
    ]
    return text, cosignature_lines


def _from_witnesses(
    config: NodeConfig, installed: _Installed, log: AuditLog, evidence: _Evidence
) -> None:
    """Ask every witness the snapshot's memorandum lists what it last verified and cosigned
    of this log (``Audit.GetWitnessed``), as the snapshot's node, over mutual TLS."""
    federation = installed.federation
    if federation is None and installed.problem is None:
        evidence.checked.append(
            "no witness: the snapshot holds no memorandum, so no member witnessed this log"
        )
        return
    peers = (
        ["the members"]
        if federation is None
        else [m.id for m in federation.memorandum.members if m.id != config.member_id]
    )
    if not peers:
        evidence.checked.append("no witness: the memorandum lists no other member")
        return

    async def ask() -> tuple[list[Vouched], list[str]]:
        client = FederationClient(requester_from(config), ledger=Ledger(log))
        async with client:
            return await vouched_for(client, WitnessRecords(log.engine))

    vouched: list[Vouched]
    unasked: list[str]
    if installed.problem is not None:
        vouched, unasked = [], [f"{peers[0]}: the snapshot's memorandum: {installed.problem}"]
    else:
        try:
            vouched, unasked = asyncio.run(ask())
        except CreditExchangeError as exc:
            vouched, unasked = [], [f"{peer}: {exc}" for peer in peers]
    evidence.vouched.extend(vouched)
    evidence.unasked.extend(unasked)
    if len(unasked) == len(peers):
        raise LedgerError(
            "none of the witnesses could be asked what they cosigned of this node's log ("
            + "; ".join(unasked)
            + "), so restore cannot tell whether the snapshot is older than what they saw, "
            "and restoring it then would fork the log. Retry when they can be reached, or "
            "give --offline (with --cosigned FILE for a checkpoint they cosigned, if you have "
            "one) and run 'credit-node audit verify --witnessed' before the node serves. "
            "Nothing was restored"
        )
    asked = [p for p in peers if not any(u.startswith(f"{p}:") for u in unasked)]
    sizes: dict[str, int] = {}
    for v in vouched:
        with contextlib.suppress(NoteError):  # verified below, where it counts
            sizes[v.witness] = max(sizes.get(v.witness, 0), checkpoint_of(v.note).size)
    said = ", ".join(f"{p} ({sizes[p]} entries)" if p in sizes else f"{p} (none)" for p in asked)
    evidence.checked.append(f"the witnesses asked now, and the largest log they cosigned: {said}")


def _require_not_older(
    log: AuditLog, keys: Sequence[KeyInForce], evidence: _Evidence, manifest: Manifest
) -> None:
    """Refuse a snapshot whose ledger lacks a checkpoint the node signed or a witness
    cosigned: restoring it would fork the log (module: restore, 4)."""
    size = log.size()
    problems: list[str] = []
    for where, checkpoint in evidence.signed:
        if checkpoint.size > size:
            problems.append(
                f"{where} holds a checkpoint of {checkpoint.size} entries signed by this node, "
                f"and the snapshot's ledger has {size}: restoring it would roll the log back"
            )
        elif log.root(checkpoint.size)[1] != checkpoint.root_hash:
            problems.append(
                f"{where} holds a checkpoint of {checkpoint.size} entries signed by this node "
                "whose root is not the snapshot's at that size: the two ledgers are different "
                "histories"
            )
    witnessed = verify_witnessed(log, evidence.vouched, keys)
    problems.extend(f"the snapshot's ledger: {p}" for p in witnessed.problems)
    if problems:
        raise LedgerError(
            f"the snapshot of {manifest.member_id} made {manifest.created} cannot be restored "
            f"without forking the node's audit log: {'; '.join(problems)}. Nothing was "
            "restored; restore a snapshot made after the log reached the largest size named "
            "here"
        )


def _memorandum_warnings(ours: _Installed, theirs: _Installed) -> list[str]:
    if theirs.federation is None:
        return []
    had = theirs.federation.version
    restored = None if ours.federation is None else ours.federation.version
    if restored is not None and restored >= had:
        return []
    return [
        f"the home replaced had memorandum version {had} installed, the snapshot "
        f"{'none' if restored is None else f'version {restored}'}: install the current "
        "version again ('credit-node policy install'); the replaced home keeps it"
    ]


# --- putting it in place ------------------------------------------------------------------------


class _Replaced:
    """Where what a forced restore replaces is kept: ``HOME.replaced-<time>`` beside the
    home, holding the home's entries as they were (``home/``) and a copy of a database
    outside the home (``database.sqlite``). Made only when something is replaced, and
    kept unless everything it holds went back where it was."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.folder: Path | None = None
        self._moved: list[tuple[Path, Path]] = []  # home entries moved here: (from, to)
        self._placed: list[tuple[Path, Path]] = []  # staged entries moved into the home
        self.database: str | None = None  # a database outside the home, as shown
        self.database_state = ""  # "", "kept" (copied here), "emptied", "filled"

    def _make(self) -> Path:
        if self.folder is None:
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
            base = self.home.with_name(f"{self.home.name}.replaced-{stamp}")
            folder, n = base, 1
            while os.path.lexists(folder):
                n += 1
                folder = base.with_name(f"{base.name}-{n}")
            folder.mkdir(mode=PRIVATE_DIR_MODE)
            folder.chmod(PRIVATE_DIR_MODE)
            self.folder = folder
        return self.folder

    def keep_database(self, database: _Existing) -> None:
        """Copy the database, at one moment, to ``database.sqlite`` here."""
        _snapshot_database(database.url, self._make() / DATABASE_MEMBER)
        self.database, self.database_state = database.shown, "kept"

    def move_home(self) -> None:
        """Move every entry of the home here, under ``home/``."""
        if not self.home.is_dir() or not any(self.home.iterdir()):
            return
        kept = self._make() / "home"
        kept.mkdir(mode=PRIVATE_DIR_MODE)
        kept.chmod(PRIVATE_DIR_MODE)
        for entry in sorted(self.home.iterdir()):
            os.rename(entry, kept / entry.name)
            self._moved.append((entry, kept / entry.name))

    def placed(self, source: Path, target: Path) -> None:
        self._placed.append((source, target))

    def undo(self) -> str:
        """Put the home back as it was; what there is to say about what is left."""
        problems = []
        for source, target in [*reversed(self._placed), *reversed(self._moved)]:
            try:
                os.rename(target, source)
            except OSError as exc:
                problems.append(f"{target} ({exc.strerror})")
        said = []
        if problems:
            said.append(
                f"These could not be moved back into {self.home}: {', '.join(problems)}; "
                "move them back by hand"
            )
        else:
            said.append(f"{self.home} is as it was" if self._moved else "No home was written")
        copy = None if self.folder is None else self.folder / DATABASE_MEMBER
        if self.database_state == "emptied":
            said.append(
                f"The database {self.database} was emptied and not refilled: its rows as they "
                f"were are kept in {copy}"
            )
        elif self.database_state == "filled":
            said.append(
                f"The database {self.database} holds the snapshot's rows now"
                + (f"; its rows as they were are kept in {copy}" if copy else "")
                + ": restore again with --force once the cause is fixed"
            )
        elif self.database_state == "kept":
            said.append(f"The database {self.database} was not changed (a copy is in {copy})")
        elif self.folder is not None and not problems:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
        return ". ".join(said)


def _place_database(
    work: Path,
    staged: Path,
    home: Path,
    config: NodeConfig,
    databases: Sequence[_Existing],
    replaced: _Replaced,
) -> str:
    """Put the snapshot's database where the restored node reads it; where that is, shown."""
    snapshot = work / DATABASE_MEMBER
    target = _target_database(config)
    if target is None:  # SQLite in the home: the snapshot's file, moved with the home
        placed = sqlite_files(config.database_url_as_set)[0]
        placed.parent.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        placed.parent.chmod(PRIVATE_DIR_MODE)
        os.replace(snapshot, placed)
        return str(home / placed.relative_to(staged))
    shown = mask_password(config.database_url_as_set)
    for database in databases:
        if database.is_target:
            replaced.keep_database(database)
    replaced.database = shown
    engine = create_database_engine(target)
    try:
        if _node_tables(engine):
            _clear(engine)
            replaced.database_state = "emptied"
        _migrate(engine)
        source = _open_snapshot_file(snapshot)
        try:
            with source.connect() as reading, engine.begin() as writing:
                _copy_rows(reading, writing, _head())
        finally:
            source.dispose()
        replaced.database_state = "filled"
    except _database_errors(engine) as exc:
        raise DatabaseError(
            f"cannot restore into the database {shown}: {getattr(exc, 'orig', exc)}"
        ) from None
    finally:
        engine.dispose()
    return shown


def _place_home(staged: Path, home: Path, replaced: _Replaced) -> None:
    """Move the staged home into place: one rename when the home does not exist; into an
    empty (or just emptied) home entry by entry, ``node.toml`` last."""
    replaced.move_home()
    if not home.exists():
        os.rename(staged, home)
        replaced.placed(staged, home)
        _fsync_dir(home.parent)
        return
    entries = sorted(staged.iterdir(), key=lambda p: (p.name == CONFIG_FILE, p.name))
    for entry in entries:
        target = home / entry.name
        if os.path.lexists(target):
            raise ConfigError(f"{target} appeared in the home during the restore")
        os.rename(entry, target)
        replaced.placed(entry, target)
    _fsync_dir(home)


# --- small things -------------------------------------------------------------------------------


def _distinct(verifiers: Sequence[Verifier]) -> list[Verifier]:
    """One verifier per name and key id, as :func:`open_note` takes them."""
    seen: dict[tuple[str, bytes], Verifier] = {}
    for v in verifiers:
        seen.setdefault((v.name, v.key_id), v)
    return list(seen.values())


@functools.cache
def _head() -> str:
    return head_revision()


def _private_temp_dir(where: Path, prefix: str) -> Path:
    try:
        folder = Path(tempfile.mkdtemp(prefix=prefix, dir=where))
    except OSError as exc:
        raise ConfigError(f"cannot write in {where}: {exc.strerror}") from None
    folder.chmod(PRIVATE_DIR_MODE)
    return folder


def _create_private_file(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    os.fchmod(fd, PRIVATE_FILE_MODE)
    os.close(fd)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), PRIVATE_FILE_MODE)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in _chunks(f):
            digest.update(chunk)
    return digest.hexdigest()


def _chunks(f: io.BufferedReader) -> Iterator[bytes]:
    while chunk := f.read(_CHUNK):
        yield chunk


def _software() -> str:
    try:
        return f"credit-exchange {version('credit-exchange')}"
    except PackageNotFoundError:
        return "credit-exchange"

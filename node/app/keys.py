"""The node's secrets — its Ed25519 signing key (PyNaCl) and the subject HMAC key — and
how each is rotated without losing what the one before made.

Each key is 32 bytes written once as hex, with mode 0600 from the moment the file
exists (never created world-readable and then tightened), whatever the umask, in a
folder created 0700, and never printed; the public key beside the signing key is
written the same way. Loading refuses a key file that others can read, as ssh does
(the rule is :func:`~creditexchange.node.app.config.permission_problem`). A key file
is never overwritten: a rotation moves the next key into place with one rename.

**The key history.** Which key signed which of the ledger's checkpoints, and which
keyed the subjects of which entries, is kept in the database with the ledger it
describes (``node_keys``): a key is in force from an entry on (``from_index``), until
the next key of its kind. ``init`` records the keys a node is created with; a node
created before the history existed has its present keys counted from the first entry
until its first rotation records them. Every rotation is itself a LOCAL maintenance
entry naming both keys, committed in the transaction that adds the history's rows
(and, for the signing key, signed into a checkpoint by the new key), so the history
cannot be edited unseen: each row names the entry that records it, which must name
its key (:func:`key_history`).

**Rotating the signing key** (the member's key in the memorandum; ``credit-node policy
next-key``, then ``policy use-next-key``): :func:`create_next_signing_key` writes
``keys/signing.next.key`` (and ``.pub``); the members list it beside the current key
in a new memorandum version and install it; then :func:`switch_signing_key`, with the
node stopped, refuses unless that memorandum is in force here and lists the next key
for this member, records the rotation, keeps the old key in ``keys/retired/`` and moves
the next key into ``keys/signing.key``. A later memorandum version without the old key
ends the overlap. ``audit verify`` checks each checkpoint with the key in force at its
size (:func:`signing_keys_in_force`).

**Rotating the subject HMAC key** (``credit-node audit rotate-subject-key``, node
stopped): :func:`rotate_subject_hmac_key` keeps the old key in ``keys/retired/`` and
records from which entry the new one keys the subjects. An auditor's search computes a
subject's HMAC under every key the node has held (:class:`SubjectKeyRing`), so entries
from before and after the rotation are found. A key file that is not the key the
history names — the current one replaced, a retired one missing or altered — is
refused with what to restore, never used to search: a search under a wrong key finds
nothing, silently.

Each step can be run again after a crash: a rotation recorded but not yet moved into
place is finished, never recorded twice.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import hashlib
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey, VerifyKey
from sqlalchemy import Dialect, Engine, bindparam, insert, select

from creditexchange.clock import now_us
from creditexchange.errors import ConfigError, InsecurePermissions, LedgerError
from creditexchange.files import fsync_dir, replace_file
from creditexchange.node.app.config import (
    PRIVATE_FILE_MODE,
    NodeConfig,
    make_private_dir,
    permission_problem,
)
from creditexchange.node.database.driver import Prepared
from creditexchange.node.database.models import ENTRIES, HEAD, NODE_KEYS
from creditexchange.node.ledger import AuditLog, origin_for
from creditexchange.node.ledger.entries import maintenance, subject_hmac
from creditexchange.node.ledger.note import Signer, Verifier
from creditexchange.node.ledger.note import key_id as note_key_id
from creditexchange.node.ledger.verify import KeyInForce
from creditexchange.policy.trust import TrustStore, key_id

__all__ = [
    "SIGNING",
    "SUBJECT_HMAC",
    "KeyRecord",
    "Rotation",
    "SubjectKey",
    "SubjectKeyRing",
    "create_next_signing_key",
    "describe_history",
    "hmac_key_id",
    "key_history",
    "load_hmac_key",
    "load_signing_key",
    "load_subject_key_ring",
    "next_key_path",
    "record_initial_keys",
    "retired_key_path",
    "rotate_subject_hmac_key",
    "signing_keys_in_force",
    "switch_signing_key",
    "write_new_hmac_key",
    "write_new_signing_key",
]

SIGNING = "signing"
SUBJECT_HMAC = "subject_hmac"
_HMAC_KEY_ID_LABEL = b"credit-exchange/subject-hmac-key-id\n"
_RETIRED = "retired"


# --------------------------------------------------------------------------- key files


def _write_key_file(path: Path, key: bytes) -> None:
    make_private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        raise ConfigError(f"{path} already exists; a key is never overwritten") from None
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), PRIVATE_FILE_MODE)
        f.write(key.hex() + "\n")
        f.flush()
        os.fsync(f.fileno())


def _read_secret(path: Path, setting: str) -> bytes:
    if not path.exists():
        raise ConfigError(f"setting {setting!r}: no key file at {path}")
    problem = permission_problem(path)
    if problem is not None:
        raise InsecurePermissions(f"setting {setting!r}: {problem}")
    try:
        secret = bytes.fromhex(path.read_text().strip())
    except ValueError:
        secret = b""
    if len(secret) != 32:
        raise ConfigError(f"setting {setting!r}: {path} does not hold 32 bytes in hex")
    return secret


def write_new_signing_key(path: Path) -> SigningKey:
    """Create a fresh signing key at ``path`` (and its public key beside it)."""
    key = SigningKey.generate()
    _write_key_file(path, bytes(key))
    _write_key_file(path.with_suffix(".pub"), bytes(key.verify_key))
    return key


def load_signing_key(path: Path) -> SigningKey:
    return SigningKey(_read_secret(path, "signing_key"))


def write_new_hmac_key(path: Path) -> None:
    _write_key_file(path, os.urandom(32))


def load_hmac_key(path: Path) -> bytes:
    return _read_secret(path, "subject_hmac_key")


def hmac_key_id(secret: bytes) -> str:
    """The name of a subject-HMAC key: SHA-256 of a label and the key, hex. It tells keys
    apart without revealing them (the key is 32 random bytes)."""
    return hashlib.sha256(_HMAC_KEY_ID_LABEL + secret).hexdigest()


def next_key_path(path: Path) -> Path:
    """Where the key that will replace the one at ``path`` waits: ``keys/signing.next.key``."""
    return path.with_name(f"{path.stem}.next{path.suffix}")


def retired_key_path(path: Path, key_id_hex: str, suffix: str = ".key") -> Path:
    """Where a key that was at ``path`` is kept once replaced:
    ``keys/retired/signing-<first 16 hex digits of its id>.key``."""
    return path.parent / _RETIRED / f"{path.stem}-{key_id_hex[:16]}{suffix}"


def _replace_file(source: Path, target: Path) -> None:
    """Move ``source`` onto ``target`` in one rename, durably."""
    os.replace(source, target)
    fsync_dir(target.parent)


def _write_public_key(path: Path, key: VerifyKey) -> None:
    """``path`` (a ``.pub`` beside its key) holding ``key``, replaced atomically, 0600."""
    replace_file(path, (bytes(key).hex() + "\n").encode(), PRIVATE_FILE_MODE)


def _retire(path: Path, secret: bytes, key_id_hex: str) -> Path:
    """A copy of the key at ``path`` in ``keys/retired/``, named by its id; one already
    there must hold the same key."""
    kept = retired_key_path(path, key_id_hex)
    if kept.exists():
        if _read_secret(kept, "retired key") != secret:
            raise ConfigError(
                f"{kept} holds another key than {path}: a retired key is never overwritten; "
                "move it away after checking what it is"
            )
        return kept
    _write_key_file(kept, secret)
    return kept


# --------------------------------------------------------------------------- the history


@dataclass(frozen=True)
class KeyRecord:
    """A key the node holds or held (a row of ``node_keys``): in force from entry
    ``from_index`` on, until the next of its kind; ``recorded_as`` is the entry that
    records its coming into force (None: the key the node was created with)."""

    kind: str
    key_id: str
    public_key: bytes | None
    from_index: int
    since_us: int
    recorded_as: int | None

    def values(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "key_id": self.key_id,
            "public_key": self.public_key,
            "from_index": self.from_index,
            "since_us": self.since_us,
            "recorded_as": self.recorded_as,
        }


_INSERT_KEY = Prepared(
    insert(NODE_KEYS).values(
        kind=bindparam("kind"),
        key_id=bindparam("key_id"),
        public_key=bindparam("public_key"),
        from_index=bindparam("from_index"),
        since_us=bindparam("since_us"),
        recorded_as=bindparam("recorded_as"),
    )
)


_HEAD_SIZE = Prepared(select(HEAD.c.size).where(HEAD.c.id == 1))


@dataclass(frozen=True)
class _RecordKeys:
    """The side write of a rotation: the history's new rows, with its ledger entry.

    The rotation's own entry is the batch's one entry, the log's last once it is written
    (side writes run after the entries, in their transaction): its index is where the
    new key comes into force, read here rather than guessed before, so that another
    process appending meanwhile cannot put it elsewhere. Rows with ``recorded_as`` set
    take that index.
    """

    rows: tuple[KeyRecord, ...]

    def write(self, cursor: Any, dialect: Dialect) -> None:
        index = int(_HEAD_SIZE.execute(cursor, dialect).fetchone()[0]) - 1
        rows = [
            r if r.recorded_as is None else replace(r, from_index=index, recorded_as=index)
            for r in self.rows
        ]
        _INSERT_KEY.executemany(cursor, dialect, [r.values() for r in rows])


def key_history(engine: Engine, kind: str) -> list[KeyRecord]:
    """The node's keys of ``kind``, oldest first, each checked against the ledger entry
    that records it; :class:`LedgerError` when a row is not backed by its entry (the
    history was edited in the database)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                NODE_KEYS.c.kind,
                NODE_KEYS.c.key_id,
                NODE_KEYS.c.public_key,
                NODE_KEYS.c.from_index,
                NODE_KEYS.c.since_us,
                NODE_KEYS.c.recorded_as,
            )
            .where(NODE_KEYS.c.kind == kind)
            .order_by(NODE_KEYS.c.from_index, NODE_KEYS.c.id)
        ).all()
        history = [
            KeyRecord(
                str(r.kind),
                str(r.key_id),
                None if r.public_key is None else bytes(r.public_key),
                int(r.from_index),
                int(r.since_us),
                None if r.recorded_as is None else int(r.recorded_as),
            )
            for r in rows
        ]
        recorded = {r.recorded_as: r for r in history if r.recorded_as is not None}
        if recorded:
            bodies = dict(
                conn.execute(
                    select(ENTRIES.c.idx, ENTRIES.c.body).where(ENTRIES.c.idx.in_(list(recorded)))
                ).all()
            )
            for index, record in recorded.items():
                if index not in bodies:
                    problem = "the log holds no such entry"
                elif bodies[index] is None:
                    continue  # pruned past retention: the history row is all that is left
                elif record.key_id.encode() not in bytes(bodies[index]):
                    problem = "that entry does not name it"
                else:
                    continue
                raise LedgerError(
                    f"the key history says entry {index} records {kind} key "
                    f"{record.key_id[:16]}… coming into force, but {problem}: the key history "
                    "(table node_keys) was altered; keep the database as evidence and restore "
                    "it from a backup"
                )
    return history


def record_initial_keys(engine: Engine, config: NodeConfig) -> None:
    """Record the keys a new node is created with, in force from its first entry
    (``init`` does this; a node with a history already is left as it is)."""
    if key_history(engine, SIGNING) or key_history(engine, SUBJECT_HMAC):
        return
    signing = load_signing_key(config.signing_key_path).verify_key
    secret = load_hmac_key(config.subject_hmac_key_path)
    now = now_us()
    rows = (
        KeyRecord(SIGNING, key_id(bytes(signing)), bytes(signing), 0, now, None),
        KeyRecord(SUBJECT_HMAC, hmac_key_id(secret), None, 0, now, None),
    )
    with engine.begin() as conn:
        conn.execute(insert(NODE_KEYS), [r.values() for r in rows])


def _require_current(
    kind: str, history: Sequence[KeyRecord], found: str, path: Path, setting: str
) -> None:
    """The key file at ``path`` (id ``found``) is the key the history says is in force."""
    if not history or history[-1].key_id == found:
        return
    latest = history[-1]
    since = (
        "since the node was created"
        if latest.recorded_as is None
        else (f"since entry {latest.from_index}")
    )
    pending = next_key_path(path)
    hint = (
        f"; {pending.name} is that key: run the rotation command again to finish moving it "
        "into place"
        if pending.exists() and _key_file_id(kind, pending) == latest.key_id
        else f"; restore the file {path} from the home's backup"
    )
    raise ConfigError(
        f"setting {setting!r}: {path} holds {kind} key {found[:16]}…, but the node's key "
        f"history puts key {latest.key_id[:16]}… in force {since}: the file is not the key "
        f"in force, and is not used{hint}"
    )


def _key_file_id(kind: str, path: Path) -> str | None:
    try:
        if kind == SIGNING:
            return key_id(bytes(load_signing_key(path).verify_key))
        return hmac_key_id(load_hmac_key(path))
    except ConfigError:
        return None


# --------------------------------------------------------------------------- in force


def signing_keys_in_force(config: NodeConfig, engine: Engine) -> list[KeyInForce]:
    """The keys that signed this node's checkpoints, each with the sizes it signed, as
    ``audit verify`` checks them; the last is the key in ``signing_key``.

    :class:`ConfigError` when ``signing_key`` is not the key the history puts in force.
    """
    current = load_signing_key(config.signing_key_path).verify_key
    history = key_history(engine, SIGNING)
    _require_current(
        SIGNING, history, key_id(bytes(current)), config.signing_key_path, "signing_key"
    )
    origin = origin_for(config.member_id, config.settings.federation)
    if not history:
        return [KeyInForce(_verifier(origin, bytes(current)), 0, None)]
    keys = []
    for i, record in enumerate(history):
        if record.public_key is None:
            raise LedgerError(
                f"the key history lists signing key {record.key_id[:16]}… without its public "
                "key: the key history (table node_keys) was altered"
            )
        first = 0 if record.recorded_as is None else record.from_index + 1
        last = history[i + 1].from_index if i + 1 < len(history) else None
        keys.append(KeyInForce(_verifier(origin, record.public_key), first, last))
    return keys


def _verifier(origin: str, public_key: bytes) -> Verifier:
    return Verifier(origin, note_key_id(origin, public_key), public_key)


@dataclass(frozen=True)
class SubjectKey:
    """A subject-HMAC key the node has held: its id, the secret (never shown), and the
    entries whose subjects it keyed, ``from_index`` up to ``until_index`` (excluded;
    None: on)."""

    key_id: str
    secret: bytes = field(repr=False)
    from_index: int
    until_index: int | None


@dataclass(frozen=True)
class SubjectKeyRing:
    """Every subject-HMAC key the node has held, oldest first; the last keys new entries.

    A subject's HMACs under each (:meth:`hmacs`) find it in every entry whatever key was
    in force when the entry was written; an HMAC under one key never equals another's.
    """

    keys: tuple[SubjectKey, ...]

    @property
    def current(self) -> bytes:
        return self.keys[-1].secret

    def hmacs(self, subject_id: str) -> tuple[bytes, ...]:
        """The subject's HMAC under each key, the key in force first."""
        return tuple(subject_hmac(k.secret, subject_id) for k in reversed(self.keys))


def load_subject_key_ring(config: NodeConfig, engine: Engine) -> SubjectKeyRing:
    """Every subject-HMAC key this node has held, each checked to be the key its history
    names; :class:`ConfigError` saying what to restore when one is missing or wrong."""
    secret = load_hmac_key(config.subject_hmac_key_path)
    history = key_history(engine, SUBJECT_HMAC)
    path = config.subject_hmac_key_path
    _require_current(SUBJECT_HMAC, history, hmac_key_id(secret), path, "subject_hmac_key")
    if not history:
        return SubjectKeyRing((SubjectKey(hmac_key_id(secret), secret, 0, None),))
    keys = []
    for i, record in enumerate(history):
        until = history[i + 1].from_index if i + 1 < len(history) else None
        if until is None:
            keys.append(SubjectKey(record.key_id, secret, record.from_index, until))
            continue
        kept = retired_key_path(path, record.key_id)
        span = f"entries {record.from_index}-{until - 1}"
        if not kept.exists():
            raise ConfigError(
                f"the subject HMAC key {record.key_id[:16]}…, which keyed {span}, is missing: "
                f"restore {kept} from the home's backup; without it those entries cannot be "
                "searched by subject"
            )
        old = _read_secret(kept, "retired subject HMAC key")
        if hmac_key_id(old) != record.key_id:
            raise ConfigError(
                f"{kept} holds key {hmac_key_id(old)[:16]}…, not the subject HMAC key "
                f"{record.key_id[:16]}… that keyed {span}: it is not used (a search under a "
                "wrong key would find nothing); restore the right file from the home's backup"
            )
        keys.append(SubjectKey(record.key_id, old, record.from_index, until))
    return SubjectKeyRing(tuple(keys))


# --------------------------------------------------------------------------- rotating


@dataclass(frozen=True)
class Rotation:
    """A rotation done: the key retired and where it is kept, the key in force from entry
    ``from_index`` (the one recording it) on, and whether this call recorded it (False:
    it was recorded before and this call only finished moving the key into place)."""

    kind: str
    retired: str
    in_force: str
    from_index: int
    kept_at: Path
    recorded_now: bool


def _refuse_while_serving(config: NodeConfig) -> None:
    """Refuse while a node serves from this home: its port is taken. A serving node keeps
    the keys it started with, and would go on using the retired one."""
    host, port = config.settings.grpc_host, config.settings.grpc_port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                return  # an address of another machine: nothing to tell from here
            raise ConfigError(
                f"{host}:{port} is in use: the node seems to be serving from this home. Stop "
                "it (every process of it) first: a running node keeps the keys it started "
                "with. Start it again after this command"
            ) from None


def _commit_rotation(
    log: AuditLog,
    member_id: str,
    note: str,
    history: Sequence[KeyRecord],
    old: KeyRecord,
    new: KeyRecord,
) -> int:
    """Record the rotation: its maintenance entry and the history's rows, in one
    transaction; the entry's index, from which the new key is in force."""
    at = now_us()
    rows = [KeyRecord(new.kind, new.key_id, new.public_key, -1, at, -1)]  # index: _RecordKeys
    if not history:  # a node older than the history: its first key, recorded now
        rows.insert(0, KeyRecord(old.kind, old.key_id, old.public_key, 0, at, None))
    first, _ = log.commit(
        [maintenance(note, member_id, at)], side_writes=[_RecordKeys(tuple(rows))]
    )
    recorded = key_history(log.engine, new.kind)[-1]
    if (recorded.key_id, recorded.from_index) != (new.key_id, first):
        raise LedgerError(
            f"the rotation was recorded as entry {first}, but the key history says "
            f"{recorded.from_index}: keep the database as it is and report this"
        )
    return first


def create_next_signing_key(config: NodeConfig) -> tuple[VerifyKey, bool]:
    """The key that will replace the signing key (``keys/signing.next.key``), created now
    unless it exists; and whether it was created now."""
    path = next_key_path(config.signing_key_path)
    if path.exists():
        return load_signing_key(path).verify_key, False
    return write_new_signing_key(path).verify_key, True


def switch_signing_key(config: NodeConfig, engine: Engine, now: dt.datetime) -> Rotation:
    """Make the next signing key the node's key, once the memorandum in force lists it.

    Refuses, changing nothing, while the node serves, without a next key, or when the
    memorandum installed here is expired or does not list the next key for this member
    (peers would refuse every request and answer signed with it). Records the rotation
    in the ledger (its checkpoint signed by the new key), keeps the old key in
    ``keys/retired/`` (destroy it once a memorandum without it is in force), and moves
    the next key into ``signing_key``. Restart the node afterwards.
    """
    _refuse_while_serving(config)
    path = config.signing_key_path
    pending = next_key_path(path)
    if not pending.exists():
        raise ConfigError(
            f"no next signing key at {pending}: create it with 'credit-node policy next-key', "
            "have the members list it beside the current key in a new memorandum version, "
            "install that version here, then run this again"
        )
    new = load_signing_key(pending)
    new_id = key_id(bytes(new.verify_key))
    current = load_signing_key(path)
    old_id = key_id(bytes(current.verify_key))
    _, memorandum = TrustStore(config.policy_dir).current_or_expired(now)
    member = memorandum.member_by_id.get(config.member_id)
    listed = [k.key_id for k in member.keys] if member is not None else []
    if new_id not in listed:
        shown = ", ".join(f"{k[:16]}…" for k in listed) or "none"
        raise ConfigError(
            f"memorandum version {memorandum.version}, in force here, lists key(s) {shown} for "
            f"{config.member_id}, not the next key {new_id[:16]}…: peers would refuse what it "
            "signs. Add its entry ('credit-node policy next-key' prints it) beside the current "
            "key, have a threshold of members sign that version and install it on every node "
            "first; nothing was changed"
        )
    history = key_history(engine, SIGNING)
    kept = retired_key_path(path, old_id)
    recorded_now = not (history and history[-1].key_id == new_id)
    if recorded_now:
        _require_current(SIGNING, history, old_id, path, "signing_key")
        kept = _retire(path, bytes(current), old_id)
        _write_public_key(retired_key_path(path, old_id, ".pub"), current.verify_key)
        origin = origin_for(config.member_id, config.settings.federation)
        note = (
            f"signing key rotated: key {old_id} retired; key {new_id} signs this log's "
            f"checkpoints from this entry on (memorandum version {memorandum.version} lists it)"
        )
        index = _commit_rotation(
            AuditLog(engine, Signer(origin, new)),
            config.member_id,
            note,
            history,
            KeyRecord(SIGNING, old_id, bytes(current.verify_key), 0, 0, None),
            KeyRecord(SIGNING, new_id, bytes(new.verify_key), 0, 0, None),
        )
    else:
        index = history[-1].from_index
        if len(history) > 1:
            old_id = history[-2].key_id
            kept = retired_key_path(path, old_id)
    _replace_file(pending, path)
    _write_public_key(path.with_suffix(".pub"), new.verify_key)
    next_public = pending.with_suffix(".pub")
    with contextlib.suppress(FileNotFoundError):
        next_public.unlink()
    return Rotation(SIGNING, old_id, new_id, index, kept, recorded_now)


def rotate_subject_hmac_key(config: NodeConfig, engine: Engine) -> Rotation:
    """Put a new subject-HMAC key in force; the old one is kept (``keys/retired/``) so
    that entries before the rotation stay searchable by subject.

    Refuses, changing nothing, while the node serves or when a key of the ring is not
    the one its history names. Records the rotation in the ledger, then moves the new key
    into ``subject_hmac_key``. Restart the node afterwards.
    """
    _refuse_while_serving(config)
    path = config.subject_hmac_key_path
    pending = next_key_path(path)
    history = key_history(engine, SUBJECT_HMAC)
    if pending.exists() and history and history[-1].key_id == hmac_key_id(load_hmac_key(pending)):
        # recorded before a crash, not yet moved into place: finish it
        _replace_file(pending, path)
        old_id = history[-2].key_id if len(history) > 1 else history[-1].key_id
        return Rotation(
            SUBJECT_HMAC,
            old_id,
            history[-1].key_id,
            history[-1].from_index,
            retired_key_path(path, old_id),
            recorded_now=False,
        )
    ring = load_subject_key_ring(config, engine)  # every key the one its history names
    current = ring.current
    old_id = hmac_key_id(current)
    if not pending.exists():
        write_new_hmac_key(pending)
    new_id = hmac_key_id(load_hmac_key(pending))
    kept = _retire(path, current, old_id)
    note = (
        f"subject HMAC key rotated: key {old_id} retired (kept to search the entries before "
        f"this one); key {new_id} keys the subjects from this entry on"
    )
    origin = origin_for(config.member_id, config.settings.federation)
    index = _commit_rotation(
        AuditLog(engine, Signer(origin, load_signing_key(config.signing_key_path))),
        config.member_id,
        note,
        history,
        KeyRecord(SUBJECT_HMAC, old_id, None, 0, 0, None),
        KeyRecord(SUBJECT_HMAC, new_id, None, 0, 0, None),
    )
    _replace_file(pending, path)
    return Rotation(SUBJECT_HMAC, old_id, new_id, index, kept, recorded_now=True)


def describe_history(
    engine: Engine, kinds: Iterable[str] = (SIGNING, SUBJECT_HMAC)
) -> list[KeyRecord]:
    """Every key of ``kinds`` the history holds, oldest first per kind."""
    return [record for kind in kinds for record in key_history(engine, kind)]

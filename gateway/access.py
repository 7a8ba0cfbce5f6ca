"""Who may call the REST gateway: partner systems' and auditors' keys, and their limits.

The operator registers a caller (``credit-node partners add`` / ``credit-node auditors
add``); the key is printed once and only its SHA-256 is stored. A key reads
``cx1.<key id>.<secret>``: the key id is public (it finds the row and names the key in
logs), the secret is 32 random bytes. A partner is registered for purposes (each one the
installed memorandum lists), optionally for subject types, and a rate; an auditor reads
the ledger and nothing else. A revoked key keeps its row, so the ledger's entries still
name a known caller; rotating replaces the key and keeps the registration.

:class:`KeyRegistry` is the library the command line and the gateway share; the
gateway asks it once per call (:meth:`KeyRegistry.authenticate`, cached for
:data:`CACHE_S` so a busy partner costs no database read per lookup, which is also how
long a revocation takes to bite). :class:`RateLimiter` keeps one token bucket per caller.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import Engine, insert, select, update

from creditexchange.clock import now_us
from creditexchange.errors import AccessError
from creditexchange.node.database.models import API_KEYS
from creditexchange.subjects import SubjectType

__all__ = [
    "CACHE_S",
    "DEFAULT_RATE_PER_MIN",
    "KEY_PREFIX",
    "Caller",
    "KeyRegistry",
    "RateLimiter",
    "Role",
]

KEY_PREFIX = "cx1"
DEFAULT_RATE_PER_MIN = 600
CACHE_S = 5.0
"""How long the gateway trusts what it read of a key: a revocation bites within this."""
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{1,63}$")
_KEY = re.compile(rf"^{KEY_PREFIX}\.([A-Za-z0-9_-]{{16}})\.([A-Za-z0-9_-]{{43}})$")


class Role(StrEnum):
    PARTNER = "partner"
    AUDITOR = "auditor"


@dataclass(frozen=True)
class Caller:
    """A registered caller as the gateway knows it (never its key)."""

    name: str
    role: Role
    key_id: str
    purposes: tuple[str, ...]
    subject_types: tuple[str, ...]  # empty: every type its purposes allow
    rate_per_min: int
    created_us: int
    rotated_us: int | None
    revoked_us: int | None

    @property
    def active(self) -> bool:
        return self.revoked_us is None


def _hash(key: str) -> bytes:
    return hashlib.sha256(key.encode("ascii")).digest()


def _new_key() -> tuple[str, str]:
    key_id = base64.urlsafe_b64encode(secrets.token_bytes(12)).decode("ascii")
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii").rstrip("=")
    return key_id, f"{KEY_PREFIX}.{key_id}.{secret}"


def _caller(row: object) -> Caller:
    r = row._mapping  # type: ignore[attr-defined]
    return Caller(
        name=r["name"],
        role=Role(r["role"]),
        key_id=r["key_id"],
        purposes=tuple(json.loads(r["purposes"])),
        subject_types=tuple(json.loads(r["subject_types"])),
        rate_per_min=r["rate_per_min"],
        created_us=r["created_us"],
        rotated_us=r["rotated_us"],
        revoked_us=r["revoked_us"],
    )


class KeyRegistry:
    """The gateway's callers, in the node's database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._cache: dict[str, tuple[float, Caller, bytes]] = {}  # one row per registered key
        self._unknown: dict[str, float] = {}  # key ids found in no row, and when
        self._lock = threading.Lock()

    # -- the operator's side ------------------------------------------------------------

    def add(
        self,
        name: str,
        role: Role,
        *,
        purposes: Sequence[str] = (),
        known_purposes: Collection[str] = (),
        subject_types: Sequence[str] = (),
        rate_per_min: int = DEFAULT_RATE_PER_MIN,
    ) -> tuple[Caller, str]:
        """Register ``name``; its record and its key (shown once, never stored)."""
        if not _NAME.match(name):
            raise AccessError(
                f"{name!r} is not a caller name: 2 to 64 of a-z, 0-9, '-' and '_', "
                "starting with a letter or digit (e.g. icbc-huizhou)"
            )
        purposes = list(dict.fromkeys(purposes))
        if role is Role.PARTNER:
            if not purposes:
                raise AccessError(
                    "a partner needs at least one purpose (--purposes P1,P2); "
                    f"the memorandum lists: {', '.join(known_purposes)}"
                )
            unknown = [p for p in purposes if p not in known_purposes]
            if unknown:
                raise AccessError(
                    f"unknown purpose {', '.join(map(repr, unknown))}: the installed memorandum "
                    f"lists {', '.join(known_purposes)}"
                )
        elif purposes or subject_types:
            raise AccessError("an auditor reads the ledger only: it takes no purposes or types")
        types = list(dict.fromkeys(subject_types))
        bad = [t for t in types if t not in {s.value for s in SubjectType}]
        if bad:
            raise AccessError(
                f"unknown subject type {', '.join(map(repr, bad))}: one of "
                f"{', '.join(s.value for s in SubjectType)}"
            )
        if not 1 <= rate_per_min <= 1_000_000:
            raise AccessError(f"a rate of {rate_per_min}/min: give 1 to 1000000 calls a minute")
        key_id, key = _new_key()
        with self.engine.begin() as conn:
            if conn.execute(select(API_KEYS.c.name).where(API_KEYS.c.name == name)).first():
                raise AccessError(
                    f"{name!r} is already registered: 'rotate' gives it a new key, 'revoke' ends it"
                )
            conn.execute(
                insert(API_KEYS).values(
                    name=name,
                    role=role.value,
                    key_id=key_id,
                    key_hash=_hash(key),
                    purposes=json.dumps(purposes),
                    subject_types=json.dumps(types),
                    rate_per_min=rate_per_min,
                    created_us=now_us(),
                )
            )
        return self.get(name), key

    def get(self, name: str) -> Caller:
        with self.engine.connect() as conn:
            row = conn.execute(select(API_KEYS).where(API_KEYS.c.name == name)).first()
        if row is None:
            raise AccessError(
                f"no caller named {name!r} is registered ('partners list' shows them)"
            )
        return _caller(row)

    def list(self, role: Role | None = None) -> list[Caller]:
        query = select(API_KEYS).order_by(API_KEYS.c.role, API_KEYS.c.name)
        if role is not None:
            query = query.where(API_KEYS.c.role == role.value)
        with self.engine.connect() as conn:
            return [_caller(row) for row in conn.execute(query)]

    def revoke(self, name: str, role: Role | None = None) -> Caller:
        caller = self._registered(name, role)
        if caller.revoked_us is None:
            with self.engine.begin() as conn:
                conn.execute(
                    update(API_KEYS).where(API_KEYS.c.name == name).values(revoked_us=now_us())
                )
        self._forget(caller.key_id)
        return self.get(name)

    def rotate(self, name: str, role: Role | None = None) -> tuple[Caller, str]:
        """A new key for ``name`` (the old one stops working); a revoked caller stays revoked."""
        caller = self._registered(name, role)
        if caller.revoked_us is not None:
            raise AccessError(f"{name!r} is revoked; register it again under a new name")
        key_id, key = _new_key()
        with self.engine.begin() as conn:
            conn.execute(
                update(API_KEYS)
                .where(API_KEYS.c.name == name)
                .values(key_id=key_id, key_hash=_hash(key), rotated_us=now_us())
            )
        self._forget(caller.key_id)
        return self.get(name), key

    def _registered(self, name: str, role: Role | None) -> Caller:
        caller = self.get(name)
        if role is not None and caller.role is not role:
            raise AccessError(f"{name!r} is registered as {caller.role.value}, not as {role.value}")
        return caller

    def _forget(self, key_id: str) -> None:
        with self._lock:
            self._cache.pop(key_id, None)
            self._unknown.clear()  # a rotated key's new id may have been tried before

    # -- the gateway's side -------------------------------------------------------------

    def authenticate(self, key: str) -> Caller:
        """The active caller holding ``key``, or :class:`AccessError` saying why not."""
        match = _KEY.match(key)
        if match is None:
            raise AccessError(
                f"that is not a gateway key: a key reads '{KEY_PREFIX}.<key id>.<secret>', "
                "as 'credit-node partners add' printed it"
            )
        key_id = match[1]
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key_id)
            unknown_since = self._unknown.get(key_id)
        if unknown_since is not None and now - unknown_since <= CACHE_S:
            raise AccessError("unknown key: ask the node's operator for a key of your own")
        if cached is None or now - cached[0] > CACHE_S:
            with self.engine.connect() as conn:
                row = conn.execute(select(API_KEYS).where(API_KEYS.c.key_id == key_id)).first()
            with self._lock:
                if row is None:  # kept apart: made-up keys never push out the real ones
                    if len(self._unknown) >= 1024:
                        self._unknown.clear()
                    self._unknown[key_id] = now
                    self._cache.pop(key_id, None)
                else:
                    cached = (now, _caller(row), row._mapping["key_hash"])
                    self._cache[key_id] = cached
            if row is None:
                raise AccessError("unknown key: ask the node's operator for a key of your own")
        assert cached is not None
        _, caller, stored = cached
        if not hmac.compare_digest(stored, _hash(key)):
            raise AccessError("unknown key: ask the node's operator for a key of your own")
        if not caller.active:
            raise AccessError(
                f"the key of {caller.name!r} is revoked: ask the operator for a new one"
            )
        return caller


class RateLimiter:
    """A token bucket per caller: ``rate_per_min`` calls a minute, bursts up to a tenth
    of that (at least 5); :meth:`take` returns 0 or the seconds to wait."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, caller: Caller, cost: float = 1.0) -> float:
        rate = caller.rate_per_min / 60.0
        burst = max(5.0, caller.rate_per_min / 10.0, cost)
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(caller.name, (burst, now))
            tokens = min(burst, tokens + (now - last) * rate)
            if tokens >= cost:
                self._buckets[caller.name] = (tokens - cost, now)
                return 0.0
            self._buckets[caller.name] = (tokens, now)
            return (cost - tokens) / rate

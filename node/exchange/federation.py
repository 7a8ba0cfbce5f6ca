"""The federation as this node sees it: the installed memorandum, compiled once per version.

:class:`FederationView` re-reads the trust store only when ``current.json``
changes on disk (``credit-node policy install`` replaces it atomically), so a
serving node picks up a new memorandum version within a second, without a
restart; a request costs no file access.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import nacl.signing

from creditexchange.errors import CreditExchangeError
from creditexchange.node.catalog import Catalog
from creditexchange.policy.document import Memorandum
from creditexchange.policy.engine import PolicyEngine
from creditexchange.policy.trust import TrustStore, memorandum_hash

__all__ = [
    "Federation",
    "FederationView",
]


@dataclass(frozen=True)
class Federation:
    """One memorandum version, with what serving and asking need from it."""

    memorandum: Memorandum
    hash: bytes
    engine: PolicyEngine
    keys: dict[str, dict[str, nacl.signing.VerifyKey]]  # member -> key id -> key
    key_owner: dict[str, str]  # key id -> member

    @property
    def version(self) -> int:
        return self.memorandum.version

    def endpoint(self, member: str, overrides: Mapping[str, str]) -> str:
        if member in overrides:
            return overrides[member]
        found = self.memorandum.member_by_id.get(member)
        if found is None:
            raise CreditExchangeError(
                f"{member!r} is not a member of memorandum version {self.version}; "
                f"members: {', '.join(sorted(self.memorandum.member_by_id))}"
            )
        return found.endpoint


def _compile(envelope: dict[str, Any], memorandum: Memorandum, catalog: Catalog) -> Federation:
    digest = memorandum_hash(envelope["signed"])
    keys: dict[str, dict[str, nacl.signing.VerifyKey]] = {}
    owner: dict[str, str] = {}
    for member in memorandum.members:
        keys[member.id] = {}
        for entry in member.keys:
            # the trust store refuses a memorandum whose key ids are not their keys' ids
            keys[member.id][entry.key_id] = nacl.signing.VerifyKey(bytes.fromhex(entry.public_key))
            owner[entry.key_id] = member.id
    return Federation(memorandum, digest, PolicyEngine(memorandum, digest, catalog), keys, owner)


class FederationView:
    """The current :class:`Federation`, reloaded when the installed memorandum changes."""

    def __init__(
        self, trust: TrustStore, catalog: Catalog, member_id: str, *, check_interval: float = 1.0
    ) -> None:
        self.trust = trust
        self.catalog = catalog
        self.member_id = member_id
        self.check_interval = check_interval
        self._stamp: tuple[int, int, int] | None = None
        self._current: Federation | None = None
        self._checked = 0.0

    def current(self) -> Federation:
        """The installed memorandum's federation; PolicyError if none is installed.

        The file is looked at no more than once per ``check_interval`` seconds.
        """
        now = time.monotonic()
        if self._current is not None and now - self._checked < self.check_interval:
            return self._current
        self._checked = now
        try:
            st = os.stat(self.trust.current_path)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if self._current is None or stamp != self._stamp:
            envelope, memorandum = self.trust.current()
            federation = _compile(envelope, memorandum, self.catalog)
            federation.engine.prepare(self.member_id)
            self._current, self._stamp = federation, stamp
        return self._current

"""The running gateway: the node's parts it uses, and how it records a call.

One :class:`Gateway` per process, built by ``gateway.server`` from a node home (or
beside a serving node, sharing its ledger and database). Routes reach it through
``request.app.state.gateway``. Every cross-city lookup goes through ``region`` — the
node's own client path — so it is signed, sealed, verified and recorded exactly as
from the command line, with the partner and the officer in every ledger entry on
this node and at every provider. A call that asks no member (an auditor's search, a
report verified) is recorded by :meth:`Gateway.record` as a LOCAL ``API_CALL`` entry.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import Engine

from creditexchange.clock import now_us
from creditexchange.gateway.access import Caller, KeyRegistry, RateLimiter
from creditexchange.gateway.metrics import GatewayMetrics
from creditexchange.node.app.config import NodeConfig
from creditexchange.node.app.keys import SubjectKeyRing
from creditexchange.node.catalog import Catalog
from creditexchange.node.federation.fanout import RegionalClient
from creditexchange.node.ledger import AuditLog, Ledger
from creditexchange.node.ledger.entries import encode, subject_hmac
from creditexchange.node.ledger.log import Receipt, SideWrite
from creditexchange.v1 import audit_pb2

__all__ = ["Gateway", "GatewayLimits"]


@dataclass(frozen=True)
class GatewayLimits:
    max_body_bytes: int = 1 << 20
    """The largest request body accepted (a 1,000-subject check is ~40 KB)."""
    max_subjects: int = 1000
    """The most subjects one check or screening may name."""
    deadline_s: float = 5.0
    """How long a fan-out waits for the members (a report, a check, a screening)."""


@dataclass
class Gateway:
    config: NodeConfig
    region: RegionalClient
    database: Engine
    ledger: Ledger
    log: AuditLog
    keys: KeyRegistry
    metrics: GatewayMetrics
    subject_keys: SubjectKeyRing | None = None
    """Every subject-HMAC key the node has held (None: the current one only)."""
    limits: GatewayLimits = field(default_factory=GatewayLimits)
    limiter: RateLimiter = field(default_factory=RateLimiter)

    @property
    def member_id(self) -> str:
        return self.region.member_id

    @property
    def catalog(self) -> Catalog:
        return self.region.catalog

    @property
    def hmac_key(self) -> bytes:
        """The key of the subjects' HMACs in this node's ledger (an auditor's subject
        search matches through it; the key itself never leaves the node)."""
        return self.region.client.hmac_key

    def subject_hmacs(self, subjects: Iterable[str]) -> list[bytes]:
        return [subject_hmac(self.hmac_key, s) for s in subjects]

    @property
    def subject_secrets(self) -> tuple[bytes, ...]:
        """Every subject-HMAC key the node has held, the one in force first."""
        if self.subject_keys is None:
            return (self.hmac_key,)
        return tuple(k.secret for k in reversed(self.subject_keys.keys))

    def subject_hmacs_under_every_key(self, subject: str) -> tuple[bytes, ...]:
        """A subject's HMAC under each key held: it finds the subject in entries written
        before a rotation of the key too."""
        return tuple(subject_hmac(k, subject) for k in self.subject_secrets)

    async def record(
        self,
        caller: Caller,
        officer: str,
        what: str,
        *,
        kind: audit_pb2.Kind = audit_pb2.API_CALL,
        case_reference: str = "",
        purpose: str = "",
        subjects: Iterable[str] = (),
        status: str = "OK",
        message: str = "",
        side_writes: Iterable[SideWrite] = (),
    ) -> Receipt:
        """A LOCAL entry for a gateway call: who (the caller, its officer), ``what`` (the
        route and its parameters, never an identifier in clear), the subjects as HMACs."""
        hmacs = self.subject_hmacs(subjects)
        entry = audit_pb2.AuditEntry(
            requester=self.member_id,
            responder=self.member_id,
            direction=audit_pb2.LOCAL,
            kind=kind,
            partner=caller.name,
            officer=officer,
            case_reference=case_reference,
            purpose=purpose,
            note=what[:4000],
            outcome=audit_pb2.Outcome(status=status, message=message[:1000]),
            subject_count=len(hmacs),
        )
        if len(hmacs) == 1:
            entry.subject_hmac = hmacs[0]
        else:
            entry.subject_hmacs.extend(hmacs)
        entry.time_unix_micros = now_us()
        return await self.ledger.append(encode(entry), list(side_writes))

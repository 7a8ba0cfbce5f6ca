"""Witnessing: the members' audit logs watch each other (c2sp.org/tlog-cosignature).

A node's log alone cannot show that it was not rolled back to an earlier signed
state, or that it did not show two members two different histories: nothing
outside it remembers what it signed. So every member witnesses every peer the
memorandum lists. A round (:meth:`Witness.round`), for each peer at once:

1. reads what this node saw of the peer before: the last checkpoint its witness
   verified and the largest found in the peer's receipts (``witnessing``);
2. fetches the peer's latest checkpoint (``Audit.GetCheckpoint``) and verifies it is
   signed by a key the memorandum lists for the peer, under its log's origin;
3. checks it against each of those: a smaller tree is a **rollback**; the same size
   with another root, or a larger tree that the peer's consistency proof
   (``Audit.GetConsistencyProof``) does not show to extend it, is a **fork**;
4. stores it, cosigns it under this member's witness name with its memorandum key,
   and hands the cosignature to the peer (``Audit.AddCosignature``), which keeps it
   and serves it with that checkpoint and in receipts on it.

Invariants:

* **Nothing unverified is cosigned.** A checkpoint is cosigned only when it is
  signed by the peer and consistent with every checkpoint of the peer's log this
  node verified before (the first one seen is trusted on first use).
* **The witnessed record only moves along a verified chain**; after an alarm it
  stays on the last good checkpoint, which later ones are compared against, and
  the peer is not cosigned until that is resolved.
* **An alarm** (fork or rollback) counts in ``credit_node_witness_alarms_total``,
  logs a WARNING, and is recorded in this node's ledger (direction LOCAL, kind
  WITNESS) with both signed notes kept as evidence, the alarm stored in the
  transaction of its entry. The same kind against the same good checkpoint is
  raised once.
* **No false alarm from a receipt in flight**: what was seen before is read before
  the peer's latest checkpoint is fetched, so it cannot be newer than that.

A peer that cannot be reached, or whose checkpoint does not verify, is reported for
the round and tried again the next; neither is an alarm (the memorandum may have
rotated its key). A consistency proof that does not verify is: the peer signed both
checkpoints, and between two trees of one log a valid proof always exists.

:func:`vouched_for` collects what the peers vouch for of this node's own log (the
cosignatures it holds, and what each peer's witness last verified of it), for
``audit verify --witnessed``; :func:`witness_status` is ``audit witness-status``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from creditexchange.clock import now_us
from creditexchange.errors import AnswerRejected, LedgerError, NoteError, ProofError
from creditexchange.node.exchange.client import FederationClient
from creditexchange.node.exchange.federation import Federation
from creditexchange.node.exchange.metrics import Metrics
from creditexchange.node.ledger import AuditLog, Ledger, merkle, origin_for
from creditexchange.node.ledger.cosignature import CosignatureVerifier, Cosigner, witness_name
from creditexchange.node.ledger.entries import encode
from creditexchange.node.ledger.note import Checkpoint, Verifier, open_note
from creditexchange.node.ledger.note import key_id as note_key_id
from creditexchange.node.ledger.verify import Vouched
from creditexchange.node.ledger.witnessing import (
    FORK,
    MADE,
    RECEIPT,
    RECEIVED,
    ROLLBACK,
    WITNESSED,
    Alarm,
    HeldCosignature,
    SeenCheckpoint,
    WitnessRecords,
)
from creditexchange.v1 import audit_pb2

__all__ = [
    "PeerResult",
    "PeerStatus",
    "Witness",
    "peer_verifiers",
    "reset_peer",
    "vouched_for",
    "witness_status",
    "witness_verifiers",
]

log = logging.getLogger("node.witness")

COSIGNED = "cosigned"
UNCHANGED = "unchanged"
ALARM = "alarm"
UNREACHABLE = "unreachable"
INVALID = "invalid"


def peer_verifiers(federation: Federation, peer: str) -> list[Verifier]:
    """The verifiers of ``peer``'s checkpoints: its log's origin, each key the memorandum
    lists for it."""
    origin = origin_for(peer, federation.memorandum.federation)
    return [
        Verifier(origin, note_key_id(origin, bytes(key)), bytes(key))
        for key in federation.keys.get(peer, {}).values()
    ]


def witness_verifiers(federation: Federation, member: str) -> list[CosignatureVerifier]:
    """The verifiers of ``member``'s cosignatures: its witness name, each memorandum key."""
    name = witness_name(member, federation.memorandum.federation)
    return [
        CosignatureVerifier.for_key(name, bytes(key))
        for key in federation.keys.get(member, {}).values()
    ]


@dataclass(frozen=True)
class PeerResult:
    """What one round found of one peer's log."""

    peer: str
    outcome: str  # cosigned | unchanged | alarm | unreachable | invalid
    detail: str
    size: int | None = None  # of the checkpoint the peer showed
    alarm: Alarm | None = None  # the alarm raised (or raised before and still standing)
    delivered: bool = False  # the peer took the cosignature


class _Alarmed(Exception):
    """A peer's checkpoint contradicts one it showed before (internal to a round)."""

    def __init__(self, kind: str, detail: str, earlier: SeenCheckpoint) -> None:
        super().__init__(detail)
        self.kind, self.detail, self.earlier = kind, detail, earlier


def _when(us: int) -> str:
    return dt.datetime.fromtimestamp(us / 1e6, dt.UTC).isoformat(timespec="seconds")


class Witness:
    """This node's witness of its peers' logs; ``await witness.round()`` runs one round.

    It asks through ``client`` (its channels, its memorandum) and records alarms in
    ``ledger``, the node's running appender.
    """

    def __init__(
        self, client: FederationClient, ledger: Ledger, metrics: Metrics | None = None
    ) -> None:
        self.client = client
        self.ledger = ledger
        self.metrics = metrics
        self.records: WitnessRecords = client.receipt_checkpoints.records
        self._lock = asyncio.Lock()
        # per peer, the receipt checkpoint last proved consistent with the witnessed chain:
        # it stays so as the chain grows, and is not proved again
        self._proved: dict[str, tuple[int, bytes]] = {}

    @property
    def member_id(self) -> str:
        return self.client.member_id

    def peers(self) -> list[str]:
        """Every other member of the installed memorandum, in its order."""
        members = self.client.federation.memorandum.members
        return [m.id for m in members if m.id != self.member_id]

    async def round(self) -> list[PeerResult]:
        """Check every peer's log once, all at the same time; one result per peer.

        Rounds do not overlap: a round asked for while one runs waits for it to end.
        """
        async with self._lock:
            peers = self.peers()
            found = await asyncio.gather(
                *(self.check(peer) for peer in peers), return_exceptions=True
            )
        results = []
        for peer, result in zip(peers, found, strict=True):
            if isinstance(result, BaseException):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                log.exception(
                    "witnessing a peer failed", exc_info=result, extra={"data": {"peer": peer}}
                )
                result = self._result(
                    peer, UNREACHABLE, f"this node failed to check it: {type(result).__name__}"
                )
            results.append(result)
        return results

    async def run(self, interval_s: float, first_after: float = 0.0) -> None:
        """A round every ``interval_s`` seconds, the first after ``first_after``, until
        cancelled; a round that fails is logged and the next one runs as planned."""
        await asyncio.sleep(first_after)
        while True:
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("witness round failed")
            await asyncio.sleep(interval_s)

    async def check(self, peer: str) -> PeerResult:
        """Check ``peer``'s latest checkpoint; cosign it, or raise an alarm."""
        federation = self.client.federation
        earlier, receipt = await asyncio.to_thread(
            lambda: (self.records.seen(peer, WITNESSED), self.records.seen(peer, RECEIPT))
        )  # before fetching: nothing seen before can be newer than what is fetched
        try:
            served = await self.client.checkpoint(peer)
        except grpc.aio.AioRpcError as exc:
            return self._result(peer, UNREACHABLE, f"{exc.code().name}: {exc.details()}")
        note = served.checkpoint
        try:
            text, _ = open_note(note, peer_verifiers(federation, peer))
            checkpoint = Checkpoint.parse(text)
        except NoteError as exc:
            log.warning(
                "peer checkpoint does not verify", extra={"data": {"peer": peer, "error": str(exc)}}
            )
            return self._result(peer, INVALID, f"its checkpoint does not verify: {exc}")
        expected = origin_for(peer, federation.memorandum.federation)
        if checkpoint.origin != expected:
            return self._result(
                peer, INVALID, f"its checkpoint is of {checkpoint.origin!r}, not {expected!r}"
            )
        if receipt is not None and self._proved.get(peer) == (receipt.size, receipt.root_hash):
            receipt = None
        try:
            for known in (earlier, receipt):
                if known is not None:
                    await self._compare(peer, known, checkpoint)
        except _Alarmed as alarmed:
            alarm = await self._alarm(peer, alarmed, note)
            return self._result(peer, ALARM, alarm.detail, checkpoint.size, alarm)
        except (grpc.aio.AioRpcError, AnswerRejected) as exc:
            detail = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
            return self._result(peer, UNREACHABLE, f"no consistency proof: {detail}")
        return await self._cosign(peer, checkpoint, note, earlier, receipt)

    async def _compare(self, peer: str, known: SeenCheckpoint, checkpoint: Checkpoint) -> None:
        """Raise :class:`_Alarmed` when ``checkpoint`` cannot follow ``known`` in one log."""
        where = "verified by this witness" if known.source == WITNESSED else "in a receipt"
        before = f"one of {known.size} entries it signed before ({where}, {_when(known.seen_us)})"
        if checkpoint.size < known.size:
            raise _Alarmed(
                ROLLBACK,
                f"{peer} shows a tree of {checkpoint.size} entries after {before}: its log was "
                "rolled back",
                known,
            )
        if checkpoint.size == known.size:
            if checkpoint.root_hash != known.root_hash:
                raise _Alarmed(
                    FORK,
                    f"{peer} shows a tree of {checkpoint.size} entries whose root differs from "
                    f"{before}: its log is forked",
                    known,
                )
            return
        if known.size == 0:
            return  # every tree extends the empty one
        proof = await self.client.consistency_proof(peer, known.size, checkpoint.size)
        try:
            merkle.verify_consistency(
                known.size, checkpoint.size, known.root_hash, checkpoint.root_hash, proof
            )
        except ProofError as exc:  # both trees are signed by the peer: no proof exists
            raise _Alarmed(
                FORK,
                f"{peer} shows a tree of {checkpoint.size} entries that does not extend "
                f"{before} ({exc}): its log is forked",
                known,
            ) from None

    async def _alarm(self, peer: str, alarmed: _Alarmed, note: str) -> Alarm:
        """Raise the alarm once: recorded with both notes, counted, logged."""
        standing = [
            a
            for a in await asyncio.to_thread(self.records.alarms, peer)
            if a.kind == alarmed.kind
            and a.earlier_note == alarmed.earlier.note
            and a.resolved_us is None
        ]
        if standing:
            return standing[-1]
        alarm = Alarm(
            peer=peer,
            kind=alarmed.kind,
            detail=alarmed.detail,
            earlier_note=alarmed.earlier.note,
            later_note=note,
            raised_us=now_us(),
        )
        entry = audit_pb2.AuditEntry(
            time_unix_micros=alarm.raised_us,
            requester=self.member_id,
            responder=peer,
            direction=audit_pb2.LOCAL,
            kind=audit_pb2.WITNESS,
            note=f"{alarm.kind}: {alarm.detail}",
            outcome=audit_pb2.Outcome(status="ALARM", message=alarm.kind),
        )
        receipt = await self.ledger.append(encode(entry), [self.records.alarm_write(alarm)])
        if self.metrics is not None:
            self.metrics.witness_alarms.labels(peer, alarm.kind).inc()
        log.warning(
            "witness alarm",
            extra={
                "data": {
                    "peer": peer,
                    "kind": alarm.kind,
                    "detail": alarm.detail,
                    "entry": receipt.index,
                }
            },
        )
        return alarm

    async def _cosign(
        self,
        peer: str,
        checkpoint: Checkpoint,
        note: str,
        earlier: SeenCheckpoint | None,
        receipt: SeenCheckpoint | None,
    ) -> PeerResult:
        federation = self.client.federation
        cosigner = Cosigner(
            witness_name(self.member_id, federation.memorandum.federation), self.client.signing_key
        )
        cosignature = cosigner.cosign(checkpoint.body())
        seen = SeenCheckpoint.of(peer, WITNESSED, checkpoint, note)
        made = HeldCosignature(
            role=MADE,
            member=peer,
            origin=checkpoint.origin,
            size=checkpoint.size,
            root_hash=checkpoint.root_hash,
            note=note,
            line=cosignature.line(),
            timestamp=cosignature.timestamp,
            recorded_us=seen.seen_us,
        )
        await asyncio.to_thread(self.records.witnessed, seen, made)
        self.client.receipt_checkpoints.saw(seen)
        if receipt is not None:
            self._proved[peer] = (receipt.size, receipt.root_hash)
        if self.metrics is not None:
            self.metrics.witness_size.labels(peer).set(checkpoint.size)
        grown = earlier is None or earlier.size != checkpoint.size
        outcome = COSIGNED if grown else UNCHANGED
        try:
            await self.client.add_cosignature(peer, note, cosignature.line())
        except grpc.aio.AioRpcError as exc:
            detail = f"cosigned {checkpoint.size} entries; {peer} refused it: {exc.details()}"
            return self._result(peer, outcome, detail, checkpoint.size)
        detail = f"cosigned its checkpoint of {checkpoint.size} entries"
        return self._result(peer, outcome, detail, checkpoint.size, delivered=True)

    def _result(
        self,
        peer: str,
        outcome: str,
        detail: str,
        size: int | None = None,
        alarm: Alarm | None = None,
        delivered: bool = False,
    ) -> PeerResult:
        if self.metrics is not None:
            self.metrics.witness_rounds.labels(peer, outcome).inc()
        return PeerResult(peer, outcome, detail, size, alarm, delivered)


# --- what the peers vouch for of this node's log ------------------------------------------


async def vouched_for(
    client: FederationClient, records: WitnessRecords
) -> tuple[list[Vouched], list[str]]:
    """Every checkpoint of this node's log a peer vouches for: the cosignatures this node
    holds, and what each peer's witness says it last verified of this log (asked now, so
    that it counts also when this node's database was restored from a backup).

    Returns them, each with the witness's verifiers from the memorandum, and one line per
    peer that could not be asked.
    """
    federation = client.federation
    peers = [m.id for m in federation.memorandum.members if m.id != client.member_id]
    vouched = [
        Vouched(h.member, h.note, h.line, tuple(witness_verifiers(federation, h.member)))
        for h in await asyncio.to_thread(records.cosignatures, RECEIVED)
        if h.member in peers
    ]

    async def ask(peer: str) -> Vouched | str | None:
        try:
            said = await client.witnessed(peer, client.member_id)
        except grpc.aio.AioRpcError as exc:
            return f"{peer}: {exc.code().name}: {exc.details()}"
        if not said.checkpoint or not said.cosignature:
            return None
        return Vouched(
            peer, said.checkpoint, said.cosignature, tuple(witness_verifiers(federation, peer))
        )

    unasked: list[str] = []
    for answer in await asyncio.gather(*(ask(peer) for peer in peers)):
        if isinstance(answer, str):
            unasked.append(answer)
        elif answer is not None:
            vouched.append(answer)
    return vouched, unasked


# --- status -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PeerStatus:
    """What this node's witness knows of one peer's log."""

    peer: str
    size: int | None  # the last checkpoint verified and cosigned
    seen_us: int | None
    cosigned_us: int | None  # when this node last cosigned it (the cosignature's time)
    receipt_size: int | None  # the largest checkpoint found in the peer's receipts
    alarms: tuple[Alarm, ...]


def reset_peer(
    log: AuditLog, records: WitnessRecords, member_id: str, peer: str, reason: str
) -> int:
    """The operator's reset of this node's witness of ``peer``, after an alarm was looked
    into (the peer's log was restored from a backup with every member's knowledge, say):
    the checkpoints seen of it are forgotten and its standing alarms resolved with
    ``reason``, in the transaction of a LOCAL ``WITNESS`` entry that records the reset —
    the alarms and their evidence stay. Returns the entry's index."""
    reason = reason.strip()
    if not reason:
        raise LedgerError("say why the witness of the peer is reset (--reason): it is recorded")
    now = now_us()
    entry = audit_pb2.AuditEntry(
        time_unix_micros=now,
        requester=member_id,
        responder=peer,
        direction=audit_pb2.LOCAL,
        kind=audit_pb2.WITNESS,
        note=f"reset by the operator: {reason}"[:4000],
        outcome=audit_pb2.Outcome(status="RESET", message="witness view of the peer reset"),
    )
    index, _ = log.commit([encode(entry)], side_writes=[records.reset_write(peer, reason, now)])
    return index


def witness_status(records: WitnessRecords, peers: Sequence[str]) -> list[PeerStatus]:
    """Per peer (in ``peers``' order, then any other recorded): sizes, times, alarms."""
    seen = {(s.peer, s.source): s for s in records.all_seen()}
    made = {c.member: c for c in records.cosignatures(MADE)}
    alarms = records.alarms()
    everyone = list(peers) + sorted(
        {p for p, _ in seen} - set(peers) | {a.peer for a in alarms} - set(peers)
    )
    result = []
    for peer in everyone:
        witnessed, receipt = seen.get((peer, WITNESSED)), seen.get((peer, RECEIPT))
        cosigned = made.get(peer)
        result.append(
            PeerStatus(
                peer=peer,
                size=witnessed.size if witnessed else None,
                seen_us=witnessed.seen_us if witnessed else None,
                cosigned_us=cosigned.timestamp * 1_000_000 if cosigned else None,
                receipt_size=receipt.size if receipt else None,
                alarms=tuple(a for a in alarms if a.peer == peer),
            )
        )
    return result

"""Reconciliation: whether two members' ledgers tell the same story of the calls between them.

Every query, check and batch check between two members is recorded twice: by the
requester (an OUTGOING entry, with the provider's receipt when one came back) and
by the provider (an INCOMING entry, before it answered). :func:`reconcile` fetches
the peer's entries about this node for a range of China days (``Audit.ListEntries``,
which a member may use for the entries about itself only), reads this node's own,
and :func:`match_entries` pairs the two sides' records of each call, both ways: this
node's OUTGOING with the peer's INCOMING, the peer's OUTGOING with this node's
INCOMING. What it promises:

* **Nothing of the peer's is used unverified.** Every page's checkpoint must be
  signed by a key the memorandum lists for the peer (its log's origin), never
  shrink from one page to the next, and include every entry listed (RFC 9162
  proof); every entry must hash to its leaf hash, be a call between the two members
  and lie in the range asked. Anything else raises :class:`AnswerRejected` and
  nothing is reported.
* **Pairing.** An OUTGOING entry that kept the provider's receipt pairs with the
  entry the receipt names, otherwise with the entry of the same nonce (a provider that
  could not open a request has only the digest of the bytes it received, and pairs
  only by the receipt it signed). Each entry pairs once.
* **What is compared** is what both sides record alike: the kind, the outcome's
  status, the decision (where both record one), the answer digest, the receipt's
  leaf (index and hash), and — where the provider opened the request, so that its
  entry holds the request — the nonce, the request digest, the header texts and the
  subject count. Subjects are HMACs under each node's own key and are not compared.
* **Findings.** A call one side recorded and the other did not (``missing``) and a
  pair that differs (``differs``) are mismatches. A call whose other record has lost
  its body to retention (``pruned``) cannot be compared and is not a mismatch, once
  it is older than :data:`MIN_RETENTION_DAYS` (a younger record said to be pruned is
  missing: no side hides a mismatch by calling its record pruned); nor is a failed
  call the requester could not attribute (outcome ``UNVERIFIED``, no receipt) of
  which the provider has no record: it may never have arrived (``unconfirmed``).
* **Midnight.** Both sides are read over the range widened by :data:`MARGIN_US`
  either way, and only entries recorded within the range are reported, so a call
  recorded on either side of midnight by the two nodes is still paired.

Calls still in flight while it runs may show as missing on one side: reconcile a
range that has ended.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import grpc

from creditexchange.clock import CST
from creditexchange.clock import now_us as clock_now_us
from creditexchange.errors import AnswerRejected, ExchangeError, NoteError, ProofError
from creditexchange.node.exchange.client import FederationClient
from creditexchange.node.exchange.federation import Federation
from creditexchange.node.exchange.protocol import METHODS, leaf_index_of
from creditexchange.node.ledger import AuditLog, merkle, origin_for
from creditexchange.node.ledger.listing import entries_about
from creditexchange.node.ledger.log import MIN_RETENTION_DAYS
from creditexchange.node.ledger.note import Checkpoint, Verifier, open_note
from creditexchange.node.ledger.note import key_id as note_key_id
from creditexchange.v1 import audit_pb2, exchange_pb2, exchange_pb2_grpc

__all__ = [
    "MARGIN_US",
    "MAX_PAGES",
    "MIN_RETENTION_DAYS",
    "Difference",
    "Finding",
    "FindingKind",
    "Listed",
    "ListingVerifier",
    "MemberEntries",
    "Reconciliation",
    "Window",
    "fetch_peer_entries",
    "match_entries",
    "own_entries",
    "reconcile",
]

MARGIN_US = 600_000_000
"""How far (10 minutes) beyond the range both sides are read, to pair a call the two
nodes recorded on either side of the range's edge."""

MIN_RETENTION_US = MIN_RETENTION_DAYS * 86_400_000_000

MAX_PAGES = 10_000
"""The most pages of a peer's listing read for one range (a page scans up to 20,000
entries of its log): a peer that keeps sending pages is cut off."""

_EXCHANGE_KINDS = frozenset(m.kind for m in METHODS.values())
_UNVERIFIED = "UNVERIFIED"


@dataclass(frozen=True)
class Window:
    """A time range [``from_us``, ``to_us``) in µs since the epoch (UTC)."""

    from_us: int
    to_us: int

    @classmethod
    def china_days(cls, first: dt.date, last: dt.date) -> Window:
        """From midnight of ``first`` to midnight after ``last``, China Standard Time."""
        if last < first:
            raise ExchangeError(
                f"the range ends ({last}) before it begins ({first}): give --from DATE "
                "no later than --to DATE"
            )
        start = dt.datetime.combine(first, dt.time(), CST)
        end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), CST)
        return cls(int(start.timestamp() * 1_000_000), int(end.timestamp() * 1_000_000))

    def widened(self, by_us: int) -> Window:
        return Window(self.from_us - by_us, self.to_us + by_us)

    def __contains__(self, time_us: object) -> bool:
        return isinstance(time_us, int) and self.from_us <= time_us < self.to_us


@dataclass(frozen=True)
class Listed:
    """An entry of a member's log: its index, its leaf hash and the entry (None once its
    body is pruned)."""

    index: int
    leaf_hash: bytes
    entry: audit_pb2.AuditEntry | None


@dataclass(frozen=True)
class MemberEntries:
    """One member's entries about the other, and from when its bodies are whole: entries
    recorded before ``pruned_before_us`` may have been pruned there (0: none)."""

    member: str
    entries: Sequence[Listed]
    pruned_before_us: int = 0


class FindingKind(StrEnum):
    MISSING = "missing"  # one side recorded the call, the other did not
    DIFFERS = "differs"  # both recorded it, differently
    PRUNED = "pruned"  # the other side's record has lost its body: it cannot be compared
    UNCONFIRMED = "unconfirmed"  # an unattributed failed call the provider has no record of


_MISMATCHES = frozenset({FindingKind.MISSING, FindingKind.DIFFERS})


@dataclass(frozen=True)
class Difference:
    """A field the two records of one call hold differently."""

    field: str
    requester_value: str
    provider_value: str


@dataclass(frozen=True)
class Finding:
    """What reconciliation found about one call from ``requester`` to ``provider``.

    ``requester_index`` and ``provider_index`` are the call's entries in each log (None:
    that side has no record of it); ``recorded_us`` is when it was recorded (by the
    requester, when it did)."""

    kind: FindingKind
    requester: str
    provider: str
    requester_index: int | None
    provider_index: int | None
    recorded_us: int
    call: str  # QUERY, CHECK, BATCH_CHECK
    request_digest: bytes
    nonce: bytes
    differences: tuple[Difference, ...] = ()
    detail: str = ""

    @property
    def mismatch(self) -> bool:
        return self.kind in _MISMATCHES

    @property
    def recorded_by(self) -> str:
        """The member whose record this finding starts from."""
        return self.provider if self.requester_index is None else self.requester

    @property
    def missing_at(self) -> str | None:
        """The member with no (readable) record of the call, for missing and pruned findings."""
        if self.kind in (FindingKind.DIFFERS, FindingKind.UNCONFIRMED):
            return None
        return self.requester if self.requester_index is None else self.provider

    def describe(self) -> str:
        """One sentence for people."""
        what = f"a {self.call.lower().replace('_', ' ')}"
        when = dt.datetime.fromtimestamp(self.recorded_us / 1e6, CST).isoformat(timespec="seconds")
        request = f"request {self.request_digest.hex()[:16]}…" if self.request_digest else ""
        if self.kind is FindingKind.DIFFERS:
            fields = "; ".join(
                f"{d.field}: {self.requester} {d.requester_value}, {self.provider} "
                f"{d.provider_value}"
                for d in self.differences
            )
            return (
                f"{what} from {self.requester} to {self.provider} ({when}, {request}) is "
                f"recorded differently by {self.requester} (entry {self.requester_index}) and "
                f"{self.provider} (entry {self.provider_index}): {fields}"
            )
        if self.requester_index is None:
            head = (
                f"{self.provider} recorded {what} from {self.requester} (its entry "
                f"{self.provider_index}, {when}, {request})"
            )
        else:
            head = (
                f"{self.requester} recorded {what} to {self.provider} (its entry "
                f"{self.requester_index}, {when}, {request})"
            )
        tail = {
            FindingKind.MISSING: f"that {self.missing_at} did not record",
            FindingKind.PRUNED: (
                f"of which {self.missing_at} keeps no readable record: pruned there "
                "(retention), not compared"
            ),
            FindingKind.UNCONFIRMED: (
                f"as a failed call it could not attribute, and {self.provider} has no record "
                "of it: it may never have arrived"
            ),
        }[self.kind]
        return f"{head} {tail}" + (f"; {self.detail}" if self.detail else "")

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "mismatch": self.mismatch,
            "call": self.call,
            "requester": self.requester,
            "provider": self.provider,
            "recorded_by": self.recorded_by,
            "missing_at": self.missing_at,
            "requester_index": self.requester_index,
            "provider_index": self.provider_index,
            "recorded": dt.datetime.fromtimestamp(self.recorded_us / 1e6, CST).isoformat(),
            "request_digest": self.request_digest.hex(),
            "nonce": self.nonce.hex(),
            "differences": [
                {"field": d.field, "requester": d.requester_value, "provider": d.provider_value}
                for d in self.differences
            ],
            "detail": self.detail,
            "description": self.describe(),
        }


@dataclass(frozen=True)
class Reconciliation:
    """Both directions of the calls between ``member`` and ``peer`` in ``window``:
    how many pairs matched each way, and every finding."""

    member: str
    peer: str
    window: Window
    matched: dict[tuple[str, str], int]  # (requester, provider) -> pairs that agree
    findings: tuple[Finding, ...] = field(default=())

    @property
    def mismatches(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.mismatch)

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def count(self, kind: FindingKind) -> int:
        return sum(1 for f in self.findings if f.kind is kind)

    def as_dict(self) -> dict[str, Any]:
        def day(time_us: int) -> str:
            return dt.datetime.fromtimestamp(time_us / 1e6, CST).isoformat()

        return {
            "member": self.member,
            "peer": self.peer,
            "from": day(self.window.from_us),
            "to": day(self.window.to_us),
            "ok": self.ok,
            "directions": [
                {
                    "requester": requester,
                    "provider": provider,
                    "matched": matched,
                    **{
                        kind.value: sum(
                            1
                            for f in self.findings
                            if f.kind is kind and (f.requester, f.provider) == (requester, provider)
                        )
                        for kind in FindingKind
                    },
                }
                for (requester, provider), matched in self.matched.items()
            ],
            "mismatches": len(self.mismatches),
            "findings": [f.as_dict() for f in self.findings],
        }


# --- matching (pure) ---------------------------------------------------------------------


def match_entries(
    ours: MemberEntries, theirs: MemberEntries, window: Window, *, now_us: int | None = None
) -> Reconciliation:
    """Pair the two members' records of the calls between them, both ways, and report what
    does not agree about calls recorded within ``window``. Entries of either side that are
    not calls between the two (or not in the right direction) are ignored.

    A body is kept at least :data:`MIN_RETENTION_DAYS`: a record said to be pruned, or a
    pruning horizon, younger than that (before ``now_us``, default now) is not believed,
    so that a side cannot hide a mismatch by calling its record pruned."""
    retained_from = (clock_now_us() if now_us is None else now_us) - MIN_RETENTION_US
    ours, theirs = (
        replace(side, pruned_before_us=min(side.pruned_before_us, retained_from))
        for side in (ours, theirs)
    )
    matched: dict[tuple[str, str], int] = {}
    findings: list[Finding] = []
    for requester, provider in ((ours, theirs), (theirs, ours)):
        count, found = _match_direction(requester, provider, window, retained_from)
        matched[(requester.member, provider.member)] = count
        findings += found
    findings.sort(key=lambda f: (f.recorded_us, f.requester, f.requester_index or -1))
    return Reconciliation(ours.member, theirs.member, window, matched, tuple(findings))


def _match_direction(
    requester: MemberEntries, provider: MemberEntries, window: Window, retained_from: int
) -> tuple[int, list[Finding]]:
    """Pair ``requester``'s OUTGOING entries to ``provider`` with ``provider``'s INCOMING
    entries from ``requester``."""
    asked = [
        e
        for e in requester.entries
        if e.entry is not None
        and _is_call(e.entry, audit_pb2.OUTGOING, requester.member, provider.member)
    ]
    answered = [
        e
        for e in provider.entries
        if e.entry is None
        or _is_call(e.entry, audit_pb2.INCOMING, requester.member, provider.member)
    ]
    by_index = {e.index: e for e in answered}
    by_nonce: dict[bytes, Listed] = {}
    for e in answered:
        if e.entry is not None and e.entry.nonce:  # no nonce: it never opened the request
            by_nonce.setdefault(e.entry.nonce, e)
    paired: set[int] = set()

    def partner_of(entry: audit_pb2.AuditEntry) -> Listed | None:
        candidates = []
        if entry.HasField("remote_receipt"):
            candidates.append(by_index.get(entry.remote_receipt.leaf_index))
        if entry.nonce:
            candidates.append(by_nonce.get(entry.nonce))
        return next((c for c in candidates if c is not None and c.index not in paired), None)

    matched = 0
    findings: list[Finding] = []
    for own in asked:
        entry = own.entry
        assert entry is not None
        other = partner_of(entry)
        if other is not None:
            paired.add(other.index)
        finding = _finding(requester, provider, own, other, window, retained_from)
        if finding is not None:
            findings.append(finding)
        elif other is not None and (entry.time_unix_micros in window or _in(other, window)):
            matched += 1
    for other in answered:
        if other.index in paired or other.entry is None:
            continue
        if other.entry.time_unix_micros not in window:
            continue
        pruned = other.entry.time_unix_micros < requester.pruned_before_us
        kind = FindingKind.PRUNED if pruned else FindingKind.MISSING
        detail = _pruned_before(requester) if pruned else ""
        findings.append(_about(kind, requester, provider, None, other, other.entry, detail))
    return matched, findings


def _finding(
    requester: MemberEntries,
    provider: MemberEntries,
    own: Listed,
    other: Listed | None,
    window: Window,
    retained_from: int,
) -> Finding | None:
    """What is to be said about the requester's entry ``own`` and its partner ``other``
    (None: no partner); None when they agree or lie outside the window."""
    entry = own.entry
    assert entry is not None
    in_window = entry.time_unix_micros in window
    receipt = entry.remote_receipt if entry.HasField("remote_receipt") else None
    if other is None:
        if not in_window:
            return None
        detail = ""
        if receipt is not None:
            detail = (
                f"its receipt names entry {receipt.leaf_index} of {provider.member}'s log "
                f"(leaf hash {receipt.leaf_hash.hex()[:16]}…), which {provider.member} did "
                "not list"
            )
        if entry.time_unix_micros < provider.pruned_before_us:
            kind, detail = FindingKind.PRUNED, _pruned_before(provider)
        elif receipt is None and entry.outcome.status == _UNVERIFIED:
            kind, detail = FindingKind.UNCONFIRMED, entry.outcome.message
        else:
            kind = FindingKind.MISSING
        return _about(kind, requester, provider, own, None, entry, detail)
    if other.entry is None:  # the provider's record of it is pruned
        if not in_window:
            return None
        if receipt is not None and (
            receipt.leaf_index != other.index or receipt.leaf_hash != other.leaf_hash
        ):  # a leaf the provider signed for us is not the one it lists: its log was rewritten
            difference = Difference(
                "receipt",
                f"entry {receipt.leaf_index} (leaf {receipt.leaf_hash.hex()[:16]}…)",
                f"entry {other.index} (leaf {other.leaf_hash.hex()[:16]}…), listed as pruned",
            )
            return _about(
                FindingKind.DIFFERS, requester, provider, own, other, entry, "", [difference]
            )
        if entry.time_unix_micros >= retained_from:
            detail = (
                f"{provider.member} lists its record (entry {other.index}) as pruned, but "
                f"bodies are kept at least {MIN_RETENTION_DAYS} days"
            )
            return _about(FindingKind.MISSING, requester, provider, own, other, entry, detail)
        return _about(FindingKind.PRUNED, requester, provider, own, other, entry)
    if not (in_window or _in(other, window)):
        return None
    differences = _differences(entry, other)
    if not differences:
        return None
    return _about(FindingKind.DIFFERS, requester, provider, own, other, entry, "", differences)


def _about(
    kind: FindingKind,
    requester: MemberEntries,
    provider: MemberEntries,
    own: Listed | None,
    other: Listed | None,
    entry: audit_pb2.AuditEntry,
    detail: str = "",
    differences: Sequence[Difference] = (),
) -> Finding:
    return Finding(
        kind=kind,
        requester=requester.member,
        provider=provider.member,
        requester_index=own.index if own is not None else None,
        provider_index=other.index if other is not None else None,
        recorded_us=entry.time_unix_micros,
        call=audit_pb2.Kind.Name(entry.kind),
        request_digest=entry.request_digest,
        nonce=entry.nonce,
        differences=tuple(differences),
        detail=detail,
    )


def _pruned_before(side: MemberEntries) -> str:
    when = dt.datetime.fromtimestamp(side.pruned_before_us / 1e6, CST).isoformat(timespec="seconds")
    return f"{side.member} keeps no bodies of the entries it recorded before {when}"


def _in(listed: Listed, window: Window) -> bool:
    return listed.entry is not None and listed.entry.time_unix_micros in window


def _is_call(entry: audit_pb2.AuditEntry, direction: int, requester: str, provider: str) -> bool:
    return (
        entry.kind in _EXCHANGE_KINDS
        and entry.direction == direction
        and entry.requester == requester
        and entry.responder == provider
    )


def _differences(asked: audit_pb2.AuditEntry, answered: Listed) -> list[Difference]:
    """Where the requester's entry and the provider's (paired) entry disagree."""
    other = answered.entry
    assert other is not None
    pairs: list[tuple[str, str, str]] = [
        ("kind", audit_pb2.Kind.Name(asked.kind), audit_pb2.Kind.Name(other.kind))
    ]
    if other.nonce:  # the provider opened the request: its entry records it
        pairs += [
            ("nonce", asked.nonce.hex(), other.nonce.hex()),
            ("request_digest", asked.request_digest.hex(), other.request_digest.hex()),
            ("purpose", asked.purpose, other.purpose),
            ("legal_basis", asked.legal_basis, other.legal_basis),
            ("case_reference", asked.case_reference, other.case_reference),
            ("officer", asked.officer, other.officer),
            ("partner", asked.partner, other.partner),
            ("subject_count", str(asked.subject_count), str(other.subject_count)),
        ]
    elif other.outcome.status == "OK":  # only a refusal comes before the request is opened
        pairs.append(("nonce", asked.nonce.hex(), "(none: an answer to a request not opened)"))
    pairs.append(("outcome", asked.outcome.status, other.outcome.status))
    if asked.HasField("decision") and other.HasField("decision"):
        pairs.append(("decision", _decision(asked.decision), _decision(other.decision)))
    pairs.append(
        ("answer_digest", asked.answer_digest.hex() or "-", other.answer_digest.hex() or "-")
    )
    if asked.HasField("remote_receipt"):
        receipt = asked.remote_receipt
        pairs.append(
            (
                "receipt",
                f"entry {receipt.leaf_index} (leaf {receipt.leaf_hash.hex()[:16]}…)",
                f"entry {answered.index} (leaf {answered.leaf_hash.hex()[:16]}…)",
            )
        )
    return [Difference(name, mine, theirs) for name, mine, theirs in pairs if mine != theirs]


def _decision(decision: audit_pb2.Decision) -> str:
    return (
        f"{'allowed' if decision.allowed else 'denied'} {decision.mode or '-'} by "
        f"{','.join(decision.rule_ids) or '-'} under memorandum v{decision.memorandum_version} "
        f"{decision.memorandum_hash.hex()[:12]}"
    )


# --- reading both sides --------------------------------------------------------------------


def own_entries(log: AuditLog, member: str, peer: str, window: Window) -> MemberEntries:
    """This node's entries about ``peer`` recorded in ``window``, every page, selected as
    the node selects them for a peer's ``ListEntries`` (``ledger.listing.entries_about``)."""
    end = log.size()
    listed: list[Listed] = []
    pruned_before = 0
    start: int | None = None
    while True:
        page = entries_about(log, peer, window.from_us, window.to_us, start, end)
        if start is None:
            pruned_before = page.pruned_before_us
        listed += [Listed(s.index, s.leaf_hash, _parsed(s.body)) for s in page.entries]
        if page.next_index is None:
            return MemberEntries(member, listed, pruned_before)
        start = page.next_index


class ListingVerifier:
    """Checks the pages of ``peer``'s listing of its entries about ``member`` in ``window``,
    in order, against the memorandum's keys for ``peer``: each page's checkpoint signed by
    one of them under ``peer``'s log origin and never smaller than the last page's; each
    entry included in it, hashing to its leaf hash, a call between the two members
    recorded in the window, after every entry listed before it. :class:`AnswerRejected`
    says what does not verify."""

    def __init__(self, federation: Federation, peer: str, member: str, window: Window) -> None:
        self.peer, self.member, self.window = peer, member, window
        self.origin = origin_for(peer, federation.memorandum.federation)
        self.verifiers = [
            Verifier(self.origin, note_key_id(self.origin, bytes(key)), bytes(key))
            for key in federation.keys.get(peer, {}).values()
        ]
        if not self.verifiers:
            raise ExchangeError(
                f"the memorandum (version {federation.version}) lists no signing key for "
                f"{peer}: its log cannot be verified"
            )
        self.last_size = 0
        self.last_index = -1

    def page(self, response: exchange_pb2.ListEntriesResponse) -> list[Listed]:
        """The entries of the next page, verified."""
        checkpoint = self._checkpoint(response.checkpoint)
        if checkpoint.size < self.last_size:
            raise AnswerRejected(
                f"{self.peer}'s checkpoint shrank from {self.last_size} to {checkpoint.size} "
                "entries between two pages of its listing: its log was rolled back"
            )
        self.last_size = checkpoint.size
        listed = []
        for item in response.entries:
            if item.leaf_index <= self.last_index:
                raise AnswerRejected(
                    f"{self.peer} listed entry {item.leaf_index} after entry {self.last_index}: "
                    "a listing runs in index order, each entry once"
                )
            self.last_index = item.leaf_index
            listed.append(self._entry(item, checkpoint))
        return listed

    def _checkpoint(self, note: str) -> Checkpoint:
        try:
            text, _ = open_note(note, self.verifiers)
            checkpoint = Checkpoint.parse(text)
        except NoteError as exc:
            raise AnswerRejected(
                f"the checkpoint of {self.peer}'s listing does not verify: {exc}"
            ) from None
        if checkpoint.origin != self.origin:
            raise AnswerRejected(
                f"the checkpoint of {self.peer}'s listing is of the log {checkpoint.origin!r}, "
                f"expected {self.origin!r}"
            )
        return checkpoint

    def _entry(self, item: exchange_pb2.ListedEntry, checkpoint: Checkpoint) -> Listed:
        index, peer, member = item.leaf_index, self.peer, self.member
        if not item.pruned and merkle.leaf_hash(item.entry) != item.leaf_hash:
            raise AnswerRejected(f"entry {index} listed by {peer} does not hash to its leaf hash")
        try:
            merkle.verify_inclusion(
                item.leaf_hash,
                index,
                checkpoint.size,
                list(item.inclusion_proof),
                checkpoint.root_hash,
            )
        except ProofError as exc:
            raise AnswerRejected(
                f"entry {index} listed by {peer} is not in its signed checkpoint of size "
                f"{checkpoint.size}: {exc}"
            ) from None
        if item.pruned:
            return Listed(index, bytes(item.leaf_hash), None)
        entry = _parsed(bytes(item.entry))
        if entry is None or not (
            _is_call(entry, audit_pb2.INCOMING, member, peer)
            or _is_call(entry, audit_pb2.OUTGOING, peer, member)
        ):
            raise AnswerRejected(
                f"entry {index} listed by {peer} is not a call between {peer} and {member}: "
                "a member is listed only the entries about itself"
            )
        if entry.time_unix_micros not in self.window:
            raise AnswerRejected(
                f"entry {index} listed by {peer} was recorded outside the range asked"
            )
        return Listed(index, bytes(item.leaf_hash), entry)


async def fetch_peer_entries(client: FederationClient, peer: str, window: Window) -> MemberEntries:
    """``peer``'s entries about this node recorded in ``window``, every page checked by a
    :class:`ListingVerifier` (:class:`AnswerRejected` when anything does not verify;
    :class:`ExchangeError` when the peer refuses or cannot be reached)."""
    member = client.member_id
    verifier = ListingVerifier(client.federation, peer, member, window)
    stub = exchange_pb2_grpc.AuditStub(client.channel(peer))
    listed: list[Listed] = []
    pruned_before = 0
    token = ""
    for page in range(MAX_PAGES):
        request = exchange_pb2.ListEntriesRequest(
            counterpart=member,
            from_unix_micros=window.from_us,
            to_unix_micros=window.to_us,
            page_token=token,
        )
        try:
            response: exchange_pb2.ListEntriesResponse = await stub.ListEntries(
                request, timeout=client.requester.timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            index = leaf_index_of(exc.trailing_metadata())
            where = f" (recorded there as entry {index})" if index is not None else ""
            raise ExchangeError(
                f"{peer} did not list its entries about {member}: {exc.code().name}: "
                f"{exc.details() or ''}{where}"
            ) from None
        listed += verifier.page(response)
        if page == 0:
            pruned_before = response.pruned_before_unix_micros
        if not response.next_page_token:
            return MemberEntries(peer, listed, pruned_before)
        token = response.next_page_token
    raise AnswerRejected(
        f"{peer} was still sending pages of its listing after {MAX_PAGES}: stopped; "
        "reconcile a shorter range"
    )


def _parsed(body: bytes | None) -> audit_pb2.AuditEntry | None:
    if body is None:
        return None
    entry = audit_pb2.AuditEntry()
    try:
        entry.ParseFromString(body)
    except Exception:
        return None
    return entry


async def reconcile(
    client: FederationClient,
    log: AuditLog,
    peer: str,
    window: Window,
    *,
    now_us: int | None = None,
) -> Reconciliation:
    """Reconcile this node's ledger (``log``) with ``peer``'s for the calls recorded in
    ``window``: the peer's entries first, then this node's (an in-flight call is recorded
    by a provider before its requester). ``now_us`` is the time retention is counted
    from (:func:`match_entries`)."""
    member = client.member_id
    members = client.federation.memorandum.member_by_id
    if peer == member:
        raise ExchangeError(f"{peer} is this node: reconcile with another member")
    if peer not in members:
        raise ExchangeError(
            f"{peer!r} is not a member of memorandum version {client.federation.version}; "
            f"members: {', '.join(sorted(members))}"
        )
    wide = window.widened(MARGIN_US)
    theirs = await fetch_peer_entries(client, peer, wide)
    ours = await asyncio.to_thread(own_entries, log, member, peer, wide)
    return match_entries(ours, theirs, window, now_us=now_us)

"""Reconciliation of two members' ledgers: the matching table, and a real federation.

The first half is table-driven over :func:`match_entries`: two small ledgers per row
(huizhou's, ours; shenzhen's, the peer's) and exactly what must be found. The second
half runs a three-member federation on loopback (huizhou and shenzhen on SQLite,
customs on PostgreSQL): queries both ways reconcile clean; an OUTGOING entry the
peer never saw (written through the ledger API) and an INCOMING entry the requester
never recorded (a raw call its client did not make) are each found, from both sides;
``ListEntries`` lists a member only its own entries, is recorded every time, and a
listing that was tampered with is rejected.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import postgres_schema
from fedharness import Federation
from typer.testing import CliRunner

from creditexchange.certs.authority import issue
from creditexchange.certs.identity import member_dns_name
from creditexchange.clock import CST, china_today, now_us
from creditexchange.devtools.sample import showcase_subject
from creditexchange.errors import AnswerRejected, ExchangeError, QueryRefused
from creditexchange.node.cli import app
from creditexchange.node.database import open_database
from creditexchange.node.exchange.protocol import METHODS, call_entry
from creditexchange.node.federation.reconcile import (
    MIN_RETENTION_DAYS,
    FindingKind,
    Listed,
    ListingVerifier,
    MemberEntries,
    Reconciliation,
    Window,
    match_entries,
    reconcile,
)
from creditexchange.node.ledger import AuditLog, merkle, origin_for
from creditexchange.node.ledger.entries import encode
from creditexchange.node.ledger.note import Checkpoint, Signer, sign_note
from creditexchange.v1 import audit_pb2, exchange_pb2, exchange_pb2_grpc

H, S = "huizhou", "shenzhen"
DAY = Window.china_days(dt.date(2026, 12, 1), dt.date(2026, 12, 1))
NOON = DAY.from_us + 12 * 3_600_000_000
YEAR_US = 365 * 86_400_000_000
IN, OUT = audit_pb2.INCOMING, audit_pb2.OUTGOING


# --- the matching table --------------------------------------------------------------------


def _entry(
    direction: int,
    requester: str,
    responder: str,
    nonce: str,
    *,
    at: int = NOON,
    status: str = "OK",
    answer: bytes = b"answer",
    digest: bytes | None = None,
    rules: tuple[str, ...] = ("core-records",),
    receipt: tuple[int, bytes] | None = None,
    kind: int = audit_pb2.QUERY,
    opened: bool = True,
) -> audit_pb2.AuditEntry:
    """An entry of a call; ``nonce`` names the request (its digest derives from it)."""
    entry = audit_pb2.AuditEntry(
        time_unix_micros=at,
        requester=requester,
        responder=responder,
        direction=direction,  # type: ignore[arg-type]
        kind=kind,  # type: ignore[arg-type]
        request_digest=digest or hashlib.sha256(nonce.encode()).digest(),
        outcome=audit_pb2.Outcome(status=status),
    )
    if opened:
        entry.nonce = nonce.encode().ljust(32, b".")
        entry.purpose = "public_procurement"
        entry.case_reference = "CG-2026-0001"
        entry.subject_count = 1
    if status == "OK":
        entry.answer_digest = hashlib.sha256(answer).digest()
        entry.decision.CopyFrom(
            audit_pb2.Decision(allowed=True, mode="full", rule_ids=rules, memorandum_version=1)
        )
    if receipt is not None:
        entry.remote_receipt.CopyFrom(
            audit_pb2.RemoteReceipt(leaf_index=receipt[0], leaf_hash=receipt[1])
        )
    return entry


def _at(index: int, entry: audit_pb2.AuditEntry) -> Listed:
    return Listed(index, merkle.leaf_hash(encode(entry)), entry)


def _receipt_of(listed: Listed) -> tuple[int, bytes]:
    return listed.index, listed.leaf_hash


SERVED = _at(7, _entry(IN, H, S, "q1"))  # shenzhen answered huizhou's query q1, its entry 7
ASKED_BACK = _at(8, _entry(OUT, S, H, "q2"))  # shenzhen asked huizhou q2, its entry 8


@dataclass(frozen=True)
class Case:
    name: str
    ours: list[Listed]  # huizhou's entries
    theirs: list[Listed]  # shenzhen's entries
    # each finding: its kind, the requester, who is missing the record, the fields differing
    found: list[tuple[FindingKind, str, str | None, set[str]]]
    matched: dict[tuple[str, str], int] = field(default_factory=dict)
    their_horizon: int = 0
    now: int = NOON + 86_400_000_000


CASES = [
    Case(
        "a query answered and recorded alike on both sides",
        [_at(3, _entry(OUT, H, S, "q1", receipt=_receipt_of(SERVED)))],
        [SERVED],
        [],
        {(H, S): 1, (S, H): 0},
    ),
    Case(
        "a query the other way recorded alike",
        [_at(4, _entry(IN, S, H, "q2"))],
        [_at(8, _entry(OUT, S, H, "q2", receipt=(4, _at(4, _entry(IN, S, H, "q2")).leaf_hash)))],
        [],
        {(H, S): 0, (S, H): 1},
    ),
    Case(
        "our query the peer never recorded",
        [_at(3, _entry(OUT, H, S, "q1"))],
        [],
        [(FindingKind.MISSING, H, S, set())],
    ),
    Case(
        "the peer's record of a query from us that we never recorded",
        [],
        [SERVED],
        [(FindingKind.MISSING, H, H, set())],
    ),
    Case(
        "the peer's query to us that we never recorded serving",
        [],
        [ASKED_BACK],
        [(FindingKind.MISSING, S, H, set())],
    ),
    Case(
        "our record of serving the peer a query it never recorded asking",
        [_at(4, _entry(IN, S, H, "q2"))],
        [],
        [(FindingKind.MISSING, S, S, set())],
    ),
    Case(
        "the same query with different outcomes",
        [_at(3, _entry(OUT, H, S, "q1", status="PERMISSION_DENIED"))],
        [_at(7, _entry(IN, H, S, "q1", status="PERMISSION_DENIED", answer=b""))],
        [],
        {(H, S): 1},
    ),
    Case(
        "the same query refused on one side and answered on the other",
        [_at(3, _entry(OUT, H, S, "q1", status="PERMISSION_DENIED"))],
        [SERVED],
        [(FindingKind.DIFFERS, H, None, {"outcome", "answer_digest"})],
    ),
    Case(
        "the same query with different answer digests",
        [_at(3, _entry(OUT, H, S, "q1", answer=b"another answer"))],
        [SERVED],
        [(FindingKind.DIFFERS, H, None, {"answer_digest"})],
    ),
    Case(
        "the same query with different decisions",
        [_at(3, _entry(OUT, H, S, "q1", rules=("core-bank-credit",)))],
        [SERVED],
        [(FindingKind.DIFFERS, H, None, {"decision"})],
    ),
    Case(
        "the same nonce with different request digests",
        [_at(3, _entry(OUT, H, S, "q1", digest=b"\x01" * 32))],
        [SERVED],
        [(FindingKind.DIFFERS, H, None, {"request_digest"})],
    ),
    Case(
        "a receipt naming an entry whose leaf is not the one the receipt holds",
        [_at(3, _entry(OUT, H, S, "q1", receipt=(7, b"\x02" * 32)))],
        [SERVED],
        [(FindingKind.DIFFERS, H, None, {"receipt"})],
    ),
    Case(
        "a receipt naming an entry the peer did not list",
        [_at(3, _entry(OUT, H, S, "q1", receipt=(9, b"\x02" * 32)))],
        [],
        [(FindingKind.MISSING, H, S, set())],
    ),
    Case(
        "a refusal of a request the provider never opened pairs by its receipt",
        [
            _at(
                3,
                _entry(
                    OUT,
                    H,
                    S,
                    "q1",
                    status="INVALID_ARGUMENT",
                    receipt=_receipt_of(
                        _at(7, _entry(IN, H, S, "sealed", status="INVALID_ARGUMENT", opened=False))
                    ),
                ),
            )
        ],
        [_at(7, _entry(IN, H, S, "sealed", status="INVALID_ARGUMENT", opened=False))],
        [],
        {(H, S): 1},
    ),
    Case(
        "an answer whose provider entry claims the request was never opened differs",
        [
            _at(
                3,
                _entry(
                    OUT,
                    H,
                    S,
                    "q1",
                    receipt=_receipt_of(_at(7, _entry(IN, H, S, "q1", opened=False))),
                ),
            )
        ],
        [_at(7, _entry(IN, H, S, "q1", opened=False))],
        [(FindingKind.DIFFERS, H, None, {"nonce"})],
    ),
    Case(
        "the peer's record pruned past retention is not compared",
        [_at(3, _entry(OUT, H, S, "q1", receipt=_receipt_of(SERVED)))],
        [Listed(7, SERVED.leaf_hash, None)],
        [(FindingKind.PRUNED, H, S, set())],
        now=NOON + 4 * YEAR_US,
    ),
    Case(
        "a receipt's leaf listed as pruned under another leaf hash is a rewritten log",
        [_at(3, _entry(OUT, H, S, "q1", receipt=_receipt_of(SERVED)))],
        [Listed(7, b"\x03" * 32, None)],
        [(FindingKind.DIFFERS, H, None, {"receipt"})],
        now=NOON + 4 * YEAR_US,
    ),
    Case(
        "a record said to be pruned within the retention period is missing",
        [_at(3, _entry(OUT, H, S, "q1", receipt=_receipt_of(SERVED)))],
        [Listed(7, SERVED.leaf_hash, None)],
        [(FindingKind.MISSING, H, S, set())],
        now=NOON + 2 * YEAR_US,
    ),
    Case(
        "a query recorded before the peer's pruning horizon is not compared",
        [_at(3, _entry(OUT, H, S, "q1"))],
        [],
        [(FindingKind.PRUNED, H, S, set())],
        their_horizon=NOON + 1,
        now=NOON + 4 * YEAR_US,
    ),
    Case(
        "a pruning horizon younger than the retention period is not believed",
        [_at(3, _entry(OUT, H, S, "q1"))],
        [],
        [(FindingKind.MISSING, H, S, set())],
        their_horizon=NOON + 1,
    ),
    Case(
        "a failed call we could not attribute, which the peer never saw, is unconfirmed",
        [_at(3, _entry(OUT, H, S, "q1", status="UNVERIFIED"))],
        [],
        [(FindingKind.UNCONFIRMED, H, None, set())],
    ),
    Case(
        "a failed call we could not attribute that the peer answered differs",
        [_at(3, _entry(OUT, H, S, "q1", status="UNVERIFIED"))],
        [SERVED],
        [(FindingKind.DIFFERS, H, None, {"outcome", "answer_digest"})],
    ),
    Case(
        "a query recorded on either side of midnight is paired",
        [_at(3, _entry(OUT, H, S, "q1", at=DAY.to_us - 1))],
        [_at(7, _entry(IN, H, S, "q1", at=DAY.to_us + 1_000))],
        [],
        {(H, S): 1},
    ),
    Case(
        "a record outside the range has nothing to say",
        [_at(3, _entry(OUT, H, S, "q1", at=DAY.to_us + 1_000))],
        [_at(9, _entry(OUT, S, H, "q2", at=DAY.from_us - 1))],
        [],
        {(H, S): 0, (S, H): 0},
    ),
    Case(
        "side calls and calls with other members are not reconciled here",
        [_at(3, _entry(OUT, H, "customs", "q3"))],
        [
            _at(7, _entry(IN, H, S, "list", kind=audit_pb2.SERVICE_CALL, opened=False)),
            _at(8, _entry(IN, "customs", S, "q4")),
        ],
        [],
        {(H, S): 0, (S, H): 0},
    ),
    Case(
        "every mismatch of a day is found, each once",
        [
            _at(3, _entry(OUT, H, S, "q1", receipt=_receipt_of(SERVED))),
            _at(4, _entry(OUT, H, S, "q5", at=NOON + 1)),
            _at(5, _entry(IN, S, H, "q2", answer=b"what huizhou answered")),
        ],
        [SERVED, ASKED_BACK, _at(9, _entry(IN, H, S, "q6", at=NOON + 2))],
        [
            (FindingKind.DIFFERS, S, None, {"answer_digest"}),
            (FindingKind.MISSING, H, S, set()),
            (FindingKind.MISSING, H, H, set()),
        ],
        {(H, S): 1, (S, H): 0},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_matching(case: Case) -> None:
    result = match_entries(
        MemberEntries(H, case.ours),
        MemberEntries(S, case.theirs, case.their_horizon),
        DAY,
        now_us=case.now,
    )
    found = [
        (f.kind, f.requester, f.missing_at, {d.field for d in f.differences})
        for f in result.findings
    ]
    assert found == case.found
    for direction, count in case.matched.items():
        assert result.matched[direction] == count, direction
    assert result.ok == (not any(kind in ("missing", "differs") for kind, *_ in case.found))


def test_a_finding_says_who_recorded_what_and_who_did_not() -> None:
    result = match_entries(MemberEntries(H, []), MemberEntries(S, [SERVED]), DAY, now_us=NOON)
    (finding,) = result.findings
    text = finding.describe()
    assert text.startswith("shenzhen recorded a query from huizhou (its entry 7, 2026-12-01T12:00")
    assert text.endswith("that huizhou did not record")
    data = result.as_dict()
    assert data["ok"] is False and data["mismatches"] == 1
    assert data["from"] == "2026-12-01T00:00:00+08:00" and data["to"] == "2026-12-02T00:00:00+08:00"
    assert data["findings"][0]["recorded_by"] == S and data["findings"][0]["missing_at"] == H
    (back,) = [d for d in data["directions"] if d["requester"] == H]
    assert back["missing"] == 1 and back["matched"] == 0


def test_a_differing_pair_names_each_side_and_value() -> None:
    ours = MemberEntries(H, [_at(3, _entry(OUT, H, S, "q1", status="PERMISSION_DENIED"))])
    result = match_entries(ours, MemberEntries(S, [SERVED]), DAY, now_us=NOON)
    text = result.findings[0].describe()
    assert "huizhou (entry 3) and shenzhen (entry 7)" in text
    assert "outcome: huizhou PERMISSION_DENIED, shenzhen OK" in text


def test_a_range_of_china_days_runs_from_midnight_to_midnight_in_china() -> None:
    window = Window.china_days(dt.date(2026, 12, 1), dt.date(2026, 12, 3))
    start = dt.datetime.fromtimestamp(window.from_us / 1e6, dt.UTC)
    end = dt.datetime.fromtimestamp(window.to_us / 1e6, dt.UTC)
    assert start == dt.datetime(2026, 11, 30, 16, tzinfo=dt.UTC)
    assert end == dt.datetime(2026, 12, 3, 16, tzinfo=dt.UTC)
    assert window.from_us in window and window.to_us not in window
    with pytest.raises(ExchangeError, match=r"ends .* before it begins"):
        Window.china_days(dt.date(2026, 12, 3), dt.date(2026, 12, 1))


def test_the_retention_bound_is_the_configured_minimum() -> None:
    from creditexchange.node.app.config import NodeSettings

    minimum = NodeSettings.model_fields["audit_retention_days"].metadata
    assert any(getattr(m, "ge", None) == MIN_RETENTION_DAYS for m in minimum)


# --- a real federation -----------------------------------------------------------------------

MEMBERS = ("huizhou", "shenzhen", "customs")
PROCUREMENT = {
    "purpose": "public_procurement",
    "legal_basis": "政府采购法第二十二条",
    "case_reference": "CG-2026-0001",
    "officer": "officer-7",
}
BANK_CREDIT = {
    "purpose": "bank_credit",
    "legal_basis": "海关注册登记和备案企业信用管理办法",
    "case_reference": "LOAN-2026-55",
    "officer": "bank-review",
}
CLEARANCE = {
    "purpose": "customs_clearance",
    "legal_basis": "海关法",
    "case_reference": "DECL-2026-0042",
    "officer": "customs-7",
}
THEMES = {"customs": ["customs_credit_grade"], H: ["admin_penalty"], S: []}


def _around_today() -> Window:
    """Yesterday to tomorrow in China: today's calls, whenever the test runs."""
    today = china_today()
    return Window.china_days(today - dt.timedelta(days=1), today + dt.timedelta(days=1))


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    with postgres_schema() as pg_url:
        federation = Federation(tmp_path_factory.mktemp("federation"), MEMBERS, {"customs": pg_url})
        try:
            yield federation
        finally:
            federation.close()


def _log(fed: Federation, member: str) -> AuditLog:
    return fed.servers[member].ledger.log


def _reconcile(fed: Federation, member: str, peer: str) -> Reconciliation:
    return fed.run(reconcile(fed.client(member), _log(fed, member), peer, _around_today()))


def _ask_both_ways(fed: Federation) -> None:
    fed.ask(S, showcase_subject(H, 2026), to=H, **PROCUREMENT)
    fed.ask(H, showcase_subject(S, 2026), to=S, **PROCUREMENT)
    with pytest.raises(QueryRefused):  # a refusal is a call recorded on both sides too
        fed.ask(S, showcase_subject(H, 2026), to=H, themes=THEMES["customs"], **PROCUREMENT)
    fed.ask(H, showcase_subject(H, 2026), to="customs", themes=THEMES["customs"], **BANK_CREDIT)
    fed.ask("customs", showcase_subject(H, 2026), to=H, themes=THEMES[H], **CLEARANCE)


@pytest.mark.slow
@pytest.mark.postgres
def test_queries_both_ways_reconcile_without_a_mismatch(fed: Federation) -> None:
    _ask_both_ways(fed)
    for member, peer in ((S, H), (H, S), (H, "customs"), ("customs", H)):
        result = _reconcile(fed, member, peer)
        assert result.ok, [f.describe() for f in result.findings]
        assert not result.findings
    between = _reconcile(fed, S, H).matched
    assert between[(S, H)] == 2 and between[(H, S)] == 1
    with_customs = _reconcile(fed, "customs", H).matched
    assert with_customs[("customs", H)] == 1 and with_customs[(H, "customs")] == 1


def _inject_outgoing(fed: Federation, member: str, peer: str) -> tuple[int, bytes]:
    """An OUTGOING entry in ``member``'s ledger, written through the ledger API, of an
    answered query to ``peer`` that was never sent; its index and nonce."""
    header = fed.header(member, peer, **{k: v for k, v in PROCUREMENT.items()})
    entry = call_entry(
        direction=audit_pb2.OUTGOING,
        method=METHODS["Query"],
        requester=member,
        responder=peer,
        header=header,
        request_digest=os.urandom(32),
        subject_hmacs=[os.urandom(32)],
        themes_asked=[],
        outcome=audit_pb2.Outcome(status="OK"),
        answer_digest=os.urandom(32),
    )
    receipt = fed.run(fed.servers[member].ledger.append(encode(entry)))
    return receipt.index, header.nonce


def _raw_query(fed: Federation, member: str, peer: str, **overrides: Any) -> tuple[int, bytes]:
    """A query ``member`` signs and sends to ``peer`` itself, bypassing its client: ``peer``
    records it, ``member`` does not. The peer's entry index and the nonce."""
    header = fed.header(member, peer, **overrides)
    request = exchange_pb2.QueryRequest(header=header, subject_id=showcase_subject(H, 2026))
    envelope = fed.envelope(METHODS["Query"].payload_type, request.SerializeToString(), member)
    answer, error = fed.raw(peer, "Query", envelope, fed.credentials(member))
    assert error is None, error
    assert answer is not None
    parsed = exchange_pb2.Answer()
    parsed.ParseFromString(answer.payload)
    return parsed.receipt.leaf_index, header.nonce


PAIRS = [
    pytest.param(S, H, PROCUREMENT, id="sqlite"),
    pytest.param(H, "customs", BANK_CREDIT, id="postgres"),
]


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize(("member", "peer", "purpose"), PAIRS)
def test_a_mismatch_in_each_direction_is_found_from_both_sides(
    fed: Federation, member: str, peer: str, purpose: dict[str, str]
) -> None:
    fed.ask(member, showcase_subject(H, 2026), to=peer, themes=THEMES[peer], **purpose)
    never_sent, sent_nonce = _inject_outgoing(fed, member, peer)
    unrecorded, raw_nonce = _raw_query(fed, member, peer, **purpose)

    for side, other in ((member, peer), (peer, member)):
        result = _reconcile(fed, side, other)
        assert not result.ok
        by_nonce = {f.nonce: f for f in result.mismatches}
        missing_at_peer = by_nonce[sent_nonce]
        assert missing_at_peer.kind is FindingKind.MISSING
        assert (missing_at_peer.recorded_by, missing_at_peer.missing_at) == (member, peer)
        assert missing_at_peer.requester_index == never_sent
        assert missing_at_peer.provider_index is None
        missing_here = by_nonce[raw_nonce]
        assert missing_here.kind is FindingKind.MISSING
        assert (missing_here.recorded_by, missing_here.missing_at) == (peer, member)
        assert missing_here.provider_index == unrecorded
        assert missing_here.requester_index is None
        assert result.matched[(member, peer)] >= 1  # the real query still matches


@pytest.mark.slow
@pytest.mark.postgres
def test_the_same_request_recorded_differently_is_found(fed: Federation) -> None:
    index, nonce = _raw_query(fed, "customs", H, **CLEARANCE)
    served = fed.entry_at(H, index)
    entry = audit_pb2.AuditEntry()
    entry.CopyFrom(served)
    entry.direction = audit_pb2.OUTGOING
    entry.answer_digest = hashlib.sha256(b"not what huizhou answered").digest()
    entry.ClearField("peer_certificate")
    entry.time_unix_micros = now_us()
    fed.run(fed.servers["customs"].ledger.append(encode(entry)))

    result = _reconcile(fed, "customs", H)
    (differs,) = [f for f in result.findings if f.nonce == nonce]
    assert differs.kind is FindingKind.DIFFERS and differs.provider_index == index
    assert [d.field for d in differs.differences] == ["answer_digest"]


@pytest.mark.slow
@pytest.mark.postgres
def test_the_command_prints_the_findings_and_exits_1_on_a_mismatch(fed: Federation) -> None:
    today = china_today().isoformat()
    args = ["audit", "reconcile", "--peer", H, "--from", today, "--to", today]
    home = str(fed.nodes[S].home)
    result = CliRunner().invoke(app, [*args, "--json", "--home", home])
    data = json.loads(result.output)
    assert result.exit_code == (0 if data["ok"] else 1), result.output
    assert data["member"] == S and data["peer"] == H
    assert {(d["requester"], d["provider"]) for d in data["directions"]} == {(S, H), (H, S)}

    _inject_outgoing(fed, S, H)
    result = CliRunner().invoke(app, [*args, "--home", home], env={"COLUMNS": "400"})
    assert result.exit_code == 1, result.output
    assert "mismatch(es):" in result.output
    assert "that huizhou did not record" in result.output

    result = CliRunner().invoke(app, [*args[:5], "01/12/2026", *args[6:], "--home", home])
    assert result.exit_code == 2 and "is not a date" in result.output


# --- who may list what, on the record -------------------------------------------------------


async def _list_entries(
    fed: Federation, provider: str, credentials: Any, request: exchange_pb2.ListEntriesRequest
) -> tuple[exchange_pb2.ListEntriesResponse | None, grpc.aio.AioRpcError | None]:
    target = f"127.0.0.1:{fed.nodes[provider].port}"
    options = [("grpc.ssl_target_name_override", member_dns_name(provider))]
    async with grpc.aio.secure_channel(target, credentials, options=options) as channel:
        stub = exchange_pb2_grpc.AuditStub(channel)
        try:
            return await stub.ListEntries(request, timeout=10), None
        except grpc.aio.AioRpcError as exc:
            return None, exc


def _request(counterpart: str, **overrides: Any) -> exchange_pb2.ListEntriesRequest:
    window = _around_today()
    values: dict[str, Any] = {
        "counterpart": counterpart,
        "from_unix_micros": window.from_us,
        "to_unix_micros": window.to_us,
    }
    return exchange_pb2.ListEntriesRequest(**(values | overrides))


def _last_entry(fed: Federation, member: str) -> dict[str, Any]:
    (entry,) = fed.ledger_entries(member)
    return entry


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("provider", [H, "customs"], ids=["sqlite", "postgres"])
def test_a_listing_is_recorded_with_the_range_asked(fed: Federation, provider: str) -> None:
    asker, texts = (S, PROCUREMENT) if provider == H else (H, BANK_CREDIT)
    fed.ask(asker, showcase_subject(H, 2026), to=provider, themes=THEMES[provider], **texts)
    request = _request(asker)
    response, error = fed.run(_list_entries(fed, provider, fed.credentials(asker), request))
    assert error is None and response is not None and response.entries

    entry = _last_entry(fed, provider)
    assert entry["kind"] == "SERVICE_CALL" and entry["requester"] == asker
    assert entry["note"] == "/creditexchange.v1.Audit/ListEntries"
    assert entry["outcome"]["status"] == "OK"
    day = dt.datetime.fromtimestamp(request.from_unix_micros / 1e6, CST).isoformat()
    assert f"entries about {asker} recorded from {day}" in entry["outcome"]["message"]
    digest = base64.b64decode(entry["request_digest"])
    assert digest == hashlib.sha256(request.SerializeToString()).digest()


@pytest.mark.slow
@pytest.mark.postgres
def test_a_member_asking_for_another_members_entries_is_refused_on_record(
    fed: Federation,
) -> None:
    _, error = fed.run(_list_entries(fed, H, fed.credentials(S), _request("customs")))
    assert error is not None and error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "may list only the entries about itself" in (error.details() or "")
    entry = _last_entry(fed, H)
    assert entry["kind"] == "SERVICE_CALL" and entry["requester"] == S
    assert entry["note"] == "/creditexchange.v1.Audit/ListEntries"
    assert entry["outcome"]["status"] == "PERMISSION_DENIED"


@pytest.mark.slow
@pytest.mark.postgres
def test_a_non_member_asking_for_entries_is_refused_on_record(
    fed: Federation, tmp_path: Path
) -> None:
    zhuhai = issue("zhuhai", fed.root / "ca", out_dir=tmp_path)
    credentials = fed.credentials(S, cert=zhuhai.certificate_path, key=zhuhai.key_path)
    for counterpart in ("zhuhai", S):
        _, error = fed.run(_list_entries(fed, H, credentials, _request(counterpart)))
        assert error is not None and error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "zhuhai is not a member" in (error.details() or "")
        entry = _last_entry(fed, H)
        assert entry["kind"] == "SERVICE_CALL" and entry["requester"] == "zhuhai"
        assert entry["outcome"]["status"] == "PERMISSION_DENIED"


BAD_REQUESTS = {
    "an empty range": {"to_unix_micros": 1, "from_unix_micros": 1},
    "a range ending before it starts": {"from_unix_micros": 2_000_000, "to_unix_micros": 1},
    "a page token this node never gave": {"page_token": "next-please"},
}


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("overrides", BAD_REQUESTS.values(), ids=list(BAD_REQUESTS))
def test_a_listing_request_that_makes_no_sense_is_refused_on_record(
    fed: Federation, overrides: dict[str, Any]
) -> None:
    _, error = fed.run(_list_entries(fed, H, fed.credentials(S), _request(S, **overrides)))
    assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT
    entry = _last_entry(fed, H)
    assert entry["note"] == "/creditexchange.v1.Audit/ListEntries"
    assert entry["outcome"]["status"] == "INVALID_ARGUMENT"


# --- a listing that does not verify ------------------------------------------------------


def _a_listing(fed: Federation) -> exchange_pb2.ListEntriesResponse:
    """huizhou's listing of its entries about shenzhen: two calls at least."""
    fed.ask(S, showcase_subject(H, 2026), to=H, **PROCUREMENT)
    fed.ask(S, showcase_subject(H, 2026), to=H, **PROCUREMENT)
    response, error = fed.run(_list_entries(fed, H, fed.credentials(S), _request(S)))
    assert error is None and response is not None and len(response.entries) >= 2
    return response


def _flip(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


def _resigned_by(fed: Federation, member: str, note: str) -> str:
    """``note``'s checkpoint signed with ``member``'s key under huizhou's log origin."""
    text = note.split("\n\n", 1)[0] + "\n"
    key = fed.signing_key(member)
    return sign_note(text, Signer(origin_for(H), key))


def _about_customs(fed: Federation, size: int) -> exchange_pb2.ListedEntry:
    """One of huizhou's entries about customs, with its true proof."""
    log = _log(fed, H)
    for stored in log.entries(0, size):
        if stored.body:
            entry = audit_pb2.AuditEntry.FromString(stored.body)
            if "customs" in (entry.requester, entry.responder) and entry.kind == audit_pb2.QUERY:
                proof = log.inclusion_proof(stored.index, size)["proof"]
                return exchange_pb2.ListedEntry(
                    leaf_index=stored.index,
                    leaf_hash=stored.leaf_hash,
                    entry=stored.body,
                    inclusion_proof=proof,
                )
    raise AssertionError("huizhou has recorded a call with customs")


def _tamper(fed: Federation, response: exchange_pb2.ListEntriesResponse, how: str) -> None:
    first = response.entries[0]
    size = Checkpoint.parse(response.checkpoint.split("\n\n", 1)[0] + "\n").size
    if how == "entry":
        first.entry = _flip(first.entry)
    elif how == "proof":
        first.inclusion_proof[0] = _flip(first.inclusion_proof[0])
    elif how == "index":
        first.leaf_index += 1
    elif how == "pruned":
        first.pruned, first.entry = True, b""
        first.leaf_hash = _flip(first.leaf_hash)
    elif how == "signer":
        response.checkpoint = _resigned_by(fed, S, response.checkpoint)
    elif how == "other":
        del response.entries[:]
        response.entries.append(_about_customs(fed, size))
    elif how == "repeated":
        response.entries.append(first)
    else:
        raise AssertionError(how)


TAMPERINGS = {
    "an entry's bytes altered": ("entry", "does not hash to its leaf hash"),
    "an entry's proof altered": ("proof", "is not in its signed checkpoint"),
    "an entry moved to another index": ("index", "is not in its signed checkpoint"),
    "an entry passed off as pruned under another leaf": ("pruned", "is not in its signed"),
    "the checkpoint signed by another member": ("signer", "does not verify"),
    "an entry about another member": ("other", "is not a call between huizhou and shenzhen"),
    "an entry listed twice": ("repeated", "a listing runs in index order"),
}


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize(("how", "says"), TAMPERINGS.values(), ids=list(TAMPERINGS))
def test_a_listing_that_does_not_verify_is_rejected(fed: Federation, how: str, says: str) -> None:
    response = _a_listing(fed)
    federation = fed.client(S).federation
    ListingVerifier(federation, H, S, _around_today()).page(response)  # as sent, it verifies
    _tamper(fed, response, how)
    with pytest.raises(AnswerRejected, match=says):
        ListingVerifier(federation, H, S, _around_today()).page(response)


@pytest.mark.slow
@pytest.mark.postgres
def test_a_listing_whose_log_shrinks_between_pages_is_rejected(fed: Federation) -> None:
    first = fed.ask(S, showcase_subject(H, 2026), to=H, **PROCUREMENT)
    later = _a_listing(fed)
    verifier = ListingVerifier(fed.client(S).federation, H, S, _around_today())
    verifier.page(later)
    older = exchange_pb2.ListEntriesResponse(checkpoint=first.receipt.checkpoint)
    with pytest.raises(AnswerRejected, match=r"shrank from .* its log was rolled back"):
        verifier.page(older)


@pytest.mark.slow
@pytest.mark.postgres
def test_a_listing_comes_whole_in_pages_each_recorded(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    from creditexchange.node.ledger import listing

    monkeypatch.setattr(listing, "LISTING_PAGE_ENTRIES", 2)
    _ask_both_ways(fed)
    before = _log(fed, H).size()
    clean = _reconcile(fed, S, H)
    served = [
        audit_pb2.AuditEntry.FromString(e.body)
        for e in _log(fed, H).entries(before, _log(fed, H).size())
        if e.body
    ]
    pages = [e for e in served if e.note == "/creditexchange.v1.Audit/ListEntries"]
    assert len(pages) >= 3 and all(e.requester == S for e in pages)
    monkeypatch.setattr(listing, "LISTING_PAGE_ENTRIES", 256)
    whole = _reconcile(fed, S, H)
    assert clean.matched == whole.matched and clean.findings == whole.findings


@pytest.mark.slow
@pytest.mark.postgres
def test_the_first_page_starts_at_the_range_not_at_the_start_of_the_log(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a page reading three rows at most, a range holding only the latest call still
    finds it on its first page: the start is searched for, not scanned to."""
    from creditexchange.node.ledger import listing

    answer = fed.ask(S, showcase_subject(H, 2026), to=H, **PROCUREMENT)
    recorded = fed.entry_at(H, answer.receipt.leaf_index).time_unix_micros
    monkeypatch.setattr(listing, "LISTING_SCAN_ROWS", 3)
    monkeypatch.setattr(listing, "CLOCK_SLACK_US", 0)
    log = _log(fed, H)
    assert answer.receipt.leaf_index > 3
    page = listing.entries_about(log, S, recorded, recorded + 1, None, log.size())
    assert [e.index for e in page.entries] == [answer.receipt.leaf_index]


@pytest.mark.slow
def test_records_pruned_on_the_peer_are_not_compared_once_past_retention(
    tmp_path: Path,
) -> None:
    """huizhou prunes every body it holds; shenzhen's records of its two queries are then
    reported as pruned on huizhou once retention allows it, and as missing before."""
    from creditexchange.node.app.wiring import open_audit_log

    fed = Federation(tmp_path, (H, S), {})
    try:
        for _ in range(2):
            fed.ask(S, showcase_subject(H, 2026), to=H, **PROCUREMENT)
        config = fed.nodes[H].config
        database = open_database(config.database_url)
        try:
            pruned = open_audit_log(config, database).prune(now_us() + 1, H)
        finally:
            database.dispose()
        assert pruned is not None and pruned.count >= 2
        fed.ask(S, showcase_subject(H, 2026), to=H, **PROCUREMENT)  # after the prune

        later = now_us() + 4 * YEAR_US
        for member, peer in ((S, H), (H, S)):
            client, log = fed.client(member), _log(fed, member)
            past = fed.run(reconcile(client, log, peer, _around_today(), now_us=later))
            assert past.ok and past.count(FindingKind.PRUNED) == 2
            assert {f.missing_at for f in past.findings} == {H}
            assert past.matched[(S, H)] == 1
            now = fed.run(reconcile(client, log, peer, _around_today()))
            assert not now.ok and len(now.mismatches) == 2
            assert {f.missing_at for f in now.mismatches} == {H}
    finally:
        fed.close()

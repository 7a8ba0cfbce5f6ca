"""The auditors' API of the REST gateway, over real HTTP (uvicorn on loopback) beside a
real three-member federation: huizhou's gateway, after real cross-city calls both ways
(one through a partner system, one refused, one by an officer whose name is a
spreadsheet formula) and a witness round on each side.

Every endpoint answers an auditor, shows what the ledger holds (checked against the
ledger read directly), and records the call; proofs verify against the signed
checkpoint; exports parse and match the listing. The hostile side: a partner's key, a
revoked key, no key, no officer, and malformed parameters are each refused with the
right status and a problem document that says what to do, and write nothing.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fedharness import Federation
from gatewayharness import GatewayHarness

from creditexchange.clock import china_today
from creditexchange.devtools.sample import showcase_subject
from creditexchange.errors import QueryRefused
from creditexchange.gateway.auditors import CSV_COLUMNS
from creditexchange.node.federation.witness import witness_verifiers
from creditexchange.node.ledger import merkle
from creditexchange.node.ledger.cosignature import verify_cosignatures
from creditexchange.node.ledger.entries import subject_hmac
from creditexchange.node.ledger.note import Checkpoint, open_note
from creditexchange.node.ledger.witnessing import checkpoint_of
from creditexchange.v1 import audit_pb2

pytestmark = pytest.mark.slow

H, S, C = "huizhou", "shenzhen", "customs"
PROCUREMENT = {
    "purpose": "public_procurement",
    "legal_basis": "政府采购法第二十二条",
    "case_reference": "CG-2026-0001",
    "officer": "officer-7",
}
FORMULA_OFFICER = "=1+1"
AUDITOR, OFFICER = "audit-office", "AUD-0042"
TODAY = china_today()
AROUND_TODAY = {
    "from": (TODAY - dt.timedelta(days=1)).isoformat(),
    "to": (TODAY + dt.timedelta(days=1)).isoformat(),
}


class World:
    """The federation, huizhou's gateway, and the keys to call it with."""

    def __init__(self, root: Path) -> None:
        self.fed = Federation(root, (H, S, C), {}, subjects=12)
        self.gw = GatewayHarness(self.fed, H)
        self.http = httpx.Client(base_url=self.gw.url, timeout=30)
        self.auditor = self.gw.auditor(AUDITOR)
        self.partner = self.gw.partner("land-centre", ["public_procurement"])
        self.revoked = self.gw.auditor("former-auditor")
        self.gw.keys.revoke("former-auditor")
        self.subject = showcase_subject(H, 2026)

    def get(self, path: str, key: str | None = None, **params: Any) -> httpx.Response:
        headers = GatewayHarness.headers(key or self.auditor, OFFICER)
        return self.http.get("/v1/audit" + path, params=params, headers=headers)

    def size(self) -> int:
        return self.gw.gateway.log.size()

    def entries(self, end: int | None = None) -> list[tuple[int, audit_pb2.AuditEntry]]:
        """huizhou's ledger read directly: (index, entry) of every entry with a body."""
        log = self.gw.gateway.log
        found = []
        for stored in log.entries(0, log.size() if end is None else end):
            if stored.body is not None:
                entry = audit_pb2.AuditEntry()
                entry.ParseFromString(stored.body)
                found.append((stored.index, entry))
        return found

    def last_entry(self) -> audit_pb2.AuditEntry:
        return self.entries()[-1][1]

    def close(self) -> None:
        self.http.close()
        self.gw.close()
        self.fed.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("auditors"))
    try:
        fed = w.fed
        fed.ask(S, w.subject, to=H, **PROCUREMENT)
        with pytest.raises(QueryRefused):  # a theme huizhou does not give shenzhen: denied
            fed.ask(S, w.subject, to=H, themes=["customs_credit_grade"], **PROCUREMENT)
        fed.ask(H, showcase_subject(S, 2026), to=S, partner="land-centre", **PROCUREMENT)
        fed.ask(H, showcase_subject(S, 2026), to=S, **{**PROCUREMENT, "officer": FORMULA_OFFICER})
        fed.run(fed.servers[S].witness.round())  # shenzhen cosigns huizhou's log
        fed.run(fed.servers[H].witness.round())  # huizhou cosigns shenzhen's and customs'
        yield w
    finally:
        w.close()


def assert_recorded(world: World, route: str) -> audit_pb2.AuditEntry:
    """The last entry is this call's: LOCAL API_CALL, the auditor, its officer, the route."""
    entry = world.last_entry()
    assert entry.kind == audit_pb2.API_CALL and entry.direction == audit_pb2.LOCAL
    assert (entry.partner, entry.officer) == (AUDITOR, OFFICER)
    assert entry.note.startswith(route), entry.note
    return entry


def assert_problem(response: httpx.Response, status: int, slug: str, *words: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["type"] == f"urn:credit-exchange:problem:{slug}", body
    assert body["status"] == status and body["title"]
    for word in words:
        assert word in body["detail"], body["detail"]


# --- every endpoint --------------------------------------------------------------------


def test_the_checkpoint_is_signed_and_comes_with_verifiable_cosignatures(world: World) -> None:
    size = world.size()
    response = world.get("/checkpoint")
    assert response.status_code == 200, response.text
    body = response.json()
    log = world.gw.gateway.log
    text, _ = open_note(body["checkpoint"], [log.signer.verifier()])
    checkpoint = Checkpoint.parse(text)
    assert checkpoint.size == body["size"] == size  # read before the call's own entry
    assert checkpoint.root_hash.hex() == body["root_hash"] == log.root(size)[1].hex()
    assert body["origin"] == log.origin
    (cosigned,) = [c for c in body["cosignatures"] if c["witness"] == S]
    assert cosigned["cosigned"].endswith("+08:00")
    verifiers = witness_verifiers(world.gw.region.federation, S)
    held = checkpoint_of(cosigned["checkpoint"])
    assert verify_cosignatures(held.body(), [cosigned["cosignature"]], verifiers)
    assert body["cosigned_checkpoint"] == cosigned["checkpoint"] + cosigned["cosignature"] + "\n"
    assert_recorded(world, "GET /v1/audit/checkpoint")
    assert world.size() == size + 1


FILTERS: dict[str, tuple[dict[str, str], Callable[[audit_pb2.AuditEntry], bool]]] = {
    "outgoing through a partner": (
        {"direction": "OUTGOING", "partner": "land-centre"},
        lambda e: e.direction == audit_pb2.OUTGOING and e.partner == "land-centre",
    ),
    "incoming from shenzhen": (
        {"direction": "incoming", "requester": S},
        lambda e: e.direction == audit_pb2.INCOMING and e.requester == S,
    ),
    "answered by shenzhen": ({"provider": S}, lambda e: e.responder == S),
    "denied": (
        {"decision": "deny"},
        lambda e: e.HasField("decision") and not e.decision.allowed,
    ),
    "allowed": ({"decision": "allow"}, lambda e: e.HasField("decision") and e.decision.allowed),
    "refused": (
        {"status": "permission_denied"},
        lambda e: e.outcome.status == "PERMISSION_DENIED",
    ),
    "by an officer": ({"officer": FORMULA_OFFICER}, lambda e: e.officer == FORMULA_OFFICER),
    "for a purpose, today": (
        {"purpose": "public_procurement", **AROUND_TODAY},
        lambda e: e.purpose == "public_procurement",
    ),
    "in a range with no entry": ({"from": "2020-01-01", "to": "2020-01-02"}, lambda e: False),
}


@pytest.mark.parametrize("name", list(FILTERS))
def test_a_search_lists_exactly_the_entries_its_filters_describe(world: World, name: str) -> None:
    params, expected = FILTERS[name]
    response = world.get("/entries", **params, limit=500)
    assert response.status_code == 200, response.text
    page = response.json()
    wanted = [i for i, e in world.entries(page["log_size"]) if expected(e)]
    assert [e["index"] for e in page["entries"]] == wanted
    assert wanted or name == "in a range with no entry"
    assert page["next_cursor"] is None
    for shown in page["entries"]:
        assert shown["recorded"].endswith("+08:00")
        assert {"officer", "case_reference", "partner", "decision", "outcome"} <= set(shown)
        stored = world.entries()[[i for i, _ in world.entries()].index(shown["index"])][1]
        assert shown["officer"] == stored.officer
        assert shown["case_reference"] == stored.case_reference
        assert shown["recorded_unix_micros"] == stored.time_unix_micros
    call = assert_recorded(world, "GET /v1/audit/entries")
    assert not call.subject_hmac and not call.subject_hmacs


def test_a_subject_search_finds_its_entries_and_is_itself_recorded_with_its_hmac(
    world: World,
) -> None:
    key = world.gw.gateway.hmac_key
    digest = subject_hmac(key, world.subject)
    response = world.get("/entries", subject=world.subject.lower())
    assert response.status_code == 200, response.text
    page = response.json()
    found = page["entries"]
    about = [
        i
        for i, e in world.entries(page["log_size"])
        if e.subject_hmac == digest or digest in e.subject_hmacs
    ]
    assert [e["index"] for e in found] == about and len(about) >= 2
    assert {e["decision"]["allowed"] for e in found if e["direction"] == "INCOMING"} == {
        True,
        False,
    }
    assert world.subject not in response.text
    call = assert_recorded(world, "GET /v1/audit/entries")
    assert call.subject_hmac == digest and call.subject_count == 1
    assert world.subject not in call.note and "subject=(its HMAC" in call.note
    again = world.get("/entries", subject=world.subject, direction="LOCAL", partner=AUDITOR)
    searches = again.json()["entries"]
    assert searches and all(s["kind"] == "API_CALL" for s in searches)
    assert searches[-1]["index"] == world.size() - 2  # the search before this one


def test_pages_follow_the_cursor_to_the_same_entries_as_one_page(world: World) -> None:
    whole = world.get("/entries", direction="INCOMING", limit=500).json()["entries"]
    paged: list[dict[str, Any]] = []
    cursor: int | None = None
    for _ in range(50):
        params: dict[str, Any] = {"direction": "INCOMING", "limit": 1}
        if cursor is not None:
            params["cursor"] = cursor
        page = world.get("/entries", **params).json()
        assert len(page["entries"]) <= 1
        paged += page["entries"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert paged == whole and len(whole) >= 2
    assert_recorded(world, "GET /v1/audit/entries")


def test_an_entry_comes_with_an_inclusion_proof_that_verifies_against_the_checkpoint(
    world: World,
) -> None:
    log = world.gw.gateway.log
    (index,) = [i for i, e in world.entries() if e.partner == "land-centre"]
    response = world.get(f"/entries/{index}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["entry"]["partner"] == "land-centre" and body["entry"]["direction"] == "OUTGOING"
    proof = body["proof"]
    text, _ = open_note(proof["checkpoint"], [log.signer.verifier()])
    checkpoint = Checkpoint.parse(text)
    assert proof["size"] == checkpoint.size and proof["root_hash"] == checkpoint.root_hash.hex()
    (stored,) = log.entries(index, index + 1)
    assert stored.body is not None
    assert proof["leaf_hash"] == body["entry"]["leaf_hash"] == merkle.leaf_hash(stored.body).hex()
    merkle.verify_inclusion(
        bytes.fromhex(proof["leaf_hash"]),
        index,
        checkpoint.size,
        [bytes.fromhex(h) for h in proof["hashes"]],
        checkpoint.root_hash,
    )
    assert_recorded(world, f"GET /v1/audit/entries/{index}")
    at = world.get(f"/entries/{index}", size=index + 1).json()["proof"]
    assert at["checkpoint"] is None and at["root_hash"] == log.root(index + 1)[1].hex()
    merkle.verify_inclusion(
        bytes.fromhex(at["leaf_hash"]),
        index,
        index + 1,
        [bytes.fromhex(h) for h in at["hashes"]],
        bytes.fromhex(at["root_hash"]),
    )


def test_a_consistency_proof_links_an_earlier_tree_to_the_latest_checkpoint(world: World) -> None:
    log = world.gw.gateway.log
    response = world.get("/consistency", first=3)
    assert response.status_code == 200, response.text
    body = response.json()
    text, _ = open_note(body["checkpoint"], [log.signer.verifier()])
    checkpoint = Checkpoint.parse(text)
    assert body["second"] == checkpoint.size
    assert body["second_root"] == checkpoint.root_hash.hex()
    assert body["first_root"] == log.root(3)[1].hex()
    merkle.verify_consistency(
        3,
        checkpoint.size,
        bytes.fromhex(body["first_root"]),
        checkpoint.root_hash,
        [bytes.fromhex(h) for h in body["hashes"]],
    )
    assert_recorded(world, "GET /v1/audit/consistency first=3")
    between = world.get("/consistency", first=2, second=5).json()
    assert between["checkpoint"] is None and between["second_root"] == log.root(5)[1].hex()


def test_the_witness_status_shows_both_sides_of_the_witnessing(world: World) -> None:
    response = world.get("/witnesses")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["member"] == H
    peers = {p["peer"]: p for p in body["peers"]}
    assert set(peers) == {S, C}
    for peer in (S, C):
        assert peers[peer]["size"] is not None and peers[peer]["cosigned"].endswith("+08:00")
        assert peers[peer]["alarms"] == []
    assert peers[S]["size"] > 0 and peers[S]["receipt_size"]  # huizhou holds shenzhen's receipts
    assert [c["witness"] for c in body["cosignatures"]] == [S]
    assert_recorded(world, "GET /v1/audit/witnesses")


def test_reconciliation_with_a_peer_finds_both_ledgers_agree(world: World) -> None:
    response = world.get("/reconcile", peer=S, **AROUND_TODAY)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ok"] is True and body["mismatches"] == 0, body["findings"]
    assert body["from"].endswith("+08:00") and body["to"].endswith("+08:00")
    matched = {(d["requester"], d["provider"]): d["matched"] for d in body["directions"]}
    assert matched[(S, H)] == 2 and matched[(H, S)] == 2
    assert_recorded(world, f"GET /v1/audit/reconcile peer={S}")


def test_exports_stream_every_match_as_csv_and_json_lines_as_the_listing_shows_them(
    world: World,
) -> None:
    listing = world.get("/entries", direction="OUTGOING", limit=500).json()["entries"]
    assert len(listing) == 2
    size = world.size()
    jsonl = world.get("/export", format="jsonl", direction="OUTGOING")
    assert jsonl.status_code == 200, jsonl.text
    assert jsonl.headers["content-type"].startswith("application/x-ndjson")
    assert re.match(
        r'attachment; filename="audit-huizhou-\d{8}T\d{6}\.jsonl"',
        jsonl.headers["content-disposition"],
    )
    assert [json.loads(line) for line in jsonl.text.splitlines()] == listing
    call = assert_recorded(world, "GET /v1/audit/export format=jsonl")
    assert f"size={size}" in call.note

    exported = world.get("/export", format="csv", direction="OUTGOING")
    assert exported.status_code == 200, exported.text
    assert exported.headers["content-type"].startswith("text/csv")
    text = exported.content.decode("utf-8")
    assert text.startswith("\ufeff")
    rows = list(csv.DictReader(io.StringIO(text[1:])))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [int(r["index"]) for r in rows] == [e["index"] for e in listing]
    for row, shown in zip(rows, listing, strict=True):
        assert row["recorded"] == shown["recorded"] and row["partner"] == shown["partner"]
        assert row["case_reference"] == shown["case_reference"]
        assert row["decision_allowed"] == "true"
        assert row["decision_rule_ids"] == ";".join(shown["decision"]["rule_ids"])
    officers = sorted(r["officer"] for r in rows)
    assert officers == sorted(["officer-7", "'" + FORMULA_OFFICER])  # never run as a formula
    assert_recorded(world, "GET /v1/audit/export format=csv")

    everything = world.get("/export", format="jsonl").text.splitlines()
    assert [json.loads(line)["index"] for line in everything] == list(range(world.size() - 1))


# --- the hostile side --------------------------------------------------------------------

ENDPOINTS: list[tuple[str, dict[str, Any]]] = [
    ("/checkpoint", {}),
    ("/entries", {"direction": "OUTGOING"}),
    ("/entries/0", {}),
    ("/consistency", {"first": 1}),
    ("/witnesses", {}),
    ("/reconcile", {"peer": S, **AROUND_TODAY}),
    ("/export", {"format": "csv"}),
]


@pytest.mark.parametrize(("path", "params"), ENDPOINTS)
def test_a_partner_key_is_refused_on_every_auditor_endpoint_and_nothing_is_written(
    world: World, path: str, params: dict[str, Any]
) -> None:
    size = world.size()
    response = world.get(path, world.partner, **params)
    assert_problem(response, 403, "wrong-role", "registered as partner", "for auditors")
    assert world.size() == size


@pytest.mark.parametrize(("path", "params"), ENDPOINTS)
def test_a_revoked_key_is_refused_and_nothing_is_written(
    world: World, path: str, params: dict[str, Any]
) -> None:
    size = world.size()
    response = world.get(path, world.revoked, **params)
    assert_problem(response, 401, "unauthenticated", "revoked", "new one")
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert world.size() == size


def test_no_key_and_no_officer_are_refused_and_nothing_is_written(world: World) -> None:
    size = world.size()
    no_key = world.http.get("/v1/audit/checkpoint", headers={"X-Officer": OFFICER})
    assert_problem(no_key, 401, "unauthenticated", "Authorization: Bearer")
    no_officer = world.http.get(
        "/v1/audit/entries", headers={"Authorization": f"Bearer {world.auditor}"}
    )
    assert_problem(no_officer, 400, "officer-required", "X-Officer")
    invisible_officer = world.http.get(
        "/v1/audit/export",
        headers={
            b"Authorization": f"Bearer {world.auditor}".encode(),
            b"X-Officer": "\u200b".encode(),
        },
    )
    assert_problem(invisible_officer, 400, "officer-required", "X-Officer")
    assert world.size() == size


MALFORMED: dict[str, tuple[str, dict[str, Any], int, str, tuple[str, ...]]] = {
    "a month 13": (
        "/entries",
        {"from": "2026-13-01"},
        400,
        "invalid-time",
        ("from=", "2026-12-01"),
    ),
    "a word for a date": ("/export", {"to": "yesterday"}, 400, "invalid-time", ("to=",)),
    "a range backwards": (
        "/entries",
        {"from": "2026-12-02", "to": "2026-11-30"},
        400,
        "invalid-range",
        ("ends before it begins",),
    ),
    "an unknown direction": (
        "/entries",
        {"direction": "SIDEWAYS"},
        400,
        "invalid-parameter",
        ("INCOMING, OUTGOING, LOCAL",),
    ),
    "an unknown decision": ("/export", {"decision": "maybe"}, 400, "invalid-parameter", ("ALLOW",)),
    "a status that is no name": (
        "/entries",
        {"status": "ok; drop"},
        400,
        "invalid-parameter",
        ("PERMISSION_DENIED",),
    ),
    "an identifier with a wrong check character": (
        "/entries",
        {"subject": "91441300MA4UXXXX0Z"},
        400,
        "invalid-identifier",
        ("unified social credit code", "18-character"),
    ),
    "an identifier too short": (
        "/export",
        {"subject": "4413021990"},
        400,
        "invalid-identifier",
        ("neither",),
    ),
    "a page too large": ("/entries", {"limit": 501}, 422, "invalid-request", ("limit",)),
    "a cursor that is no number": (
        "/entries",
        {"cursor": "x"},
        422,
        "invalid-request",
        ("cursor",),
    ),
    "a proof index past the tree": (
        "/entries/100000",
        {},
        404,
        "entry-not-found",
        ("past the log",),
    ),
    "a proof size that does not hold the entry": (
        "/entries/5",
        {"size": 5},
        400,
        "invalid-size",
        ("above 5",),
    ),
    "a proof size past the tree": (
        "/entries/1",
        {"size": 100000},
        400,
        "invalid-size",
        ("at most",),
    ),
    "a consistency backwards": (
        "/consistency",
        {"first": 6, "second": 4},
        400,
        "invalid-size",
        ("must be the smaller",),
    ),
    "a consistency past the tree": (
        "/consistency",
        {"first": 1, "second": 100000},
        400,
        "invalid-size",
        ("past the log",),
    ),
    "an export format unknown": ("/export", {"format": "xlsx"}, 400, "invalid-parameter", ("CSV",)),
    "a peer that is no member": (
        "/reconcile",
        {"peer": "atlantis", **AROUND_TODAY},
        400,
        "unknown-peer",
        ("shenzhen",),
    ),
    "reconciling with itself": ("/reconcile", {"peer": H, **AROUND_TODAY}, 400, "unknown-peer", ()),
    "a reconciliation of a year": (
        "/reconcile",
        {"peer": S, "from": "2026-01-01", "to": "2026-12-31"},
        400,
        "invalid-range",
        ("split the range",),
    ),
    "a reconciliation without dates": (
        "/reconcile",
        {"peer": S},
        422,
        "invalid-request",
        ("from",),
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_parameter_is_refused_with_a_clear_problem_and_nothing_is_written(
    world: World, case: str
) -> None:
    path, params, status, slug, words = MALFORMED[case]
    size = world.size()
    response = world.get(path, **params)
    assert_problem(response, status, slug, *words)
    assert world.size() == size


def test_the_openapi_description_documents_every_auditor_parameter_in_both_languages(
    world: World,
) -> None:
    spec = world.http.get("/openapi.json").json()
    operations = [
        (path, op)
        for path, ops in spec["paths"].items()
        if path.startswith("/v1/audit/")
        for op in ops.values()
    ]
    assert {path for path, _ in operations} == {
        "/v1/audit/checkpoint",
        "/v1/audit/entries",
        "/v1/audit/entries/{index}",
        "/v1/audit/consistency",
        "/v1/audit/witnesses",
        "/v1/audit/reconcile",
        "/v1/audit/export",
    }
    cjk = re.compile(r"[\u4e00-\u9fff]")
    for path, op in operations:
        assert op["tags"] == ["auditors"]
        assert cjk.search(op["description"]) and re.search(r"[a-z]{4}", op["description"]), path
        for problem in ("400", "401", "403"):
            assert "application/problem+json" in op["responses"][problem]["content"], path
        for parameter in op["parameters"]:
            where = f"{path} {parameter['name']}"
            text = parameter.get("description", "")
            assert cjk.search(text) and re.search(r"[a-z]{4}", text), where
            assert parameter.get("examples") or parameter["schema"].get("examples"), where
    entry = spec["components"]["schemas"]["AuditEntryView"]
    assert entry["examples"][0]["recorded"].endswith("+08:00")

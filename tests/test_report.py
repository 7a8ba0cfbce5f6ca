"""The consolidated report on a real six-member federation on loopback.

huizhou, shenzhen, dongguan, heyuan and shanwei keep their stores in SQLite,
customs in PostgreSQL. Every member is asked over real mutual TLS, under the
real memorandum, and records in its real ledger; the reports are verified
offline against the memorandum, then tampered with, one way per row.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import csv
import dataclasses
import datetime as dt
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
from conftest import postgres_schema
from fedharness import Federation
from prometheus_client import generate_latest
from sqlalchemy import text
from typer.testing import CliRunner

from creditexchange.devtools.sample import showcase_subject
from creditexchange.errors import CanonicalizationError, ExchangeError
from creditexchange.node.app.keys import load_signing_key
from creditexchange.node.app.wiring import federation_view, requester_from
from creditexchange.node.catalog import Catalog
from creditexchange.node.cli import app
from creditexchange.node.cli.report import print_everyone
from creditexchange.node.database import open_database
from creditexchange.node.exchange.client import FederationClient
from creditexchange.node.exchange.envelope import seal
from creditexchange.node.exchange.federation import Federation as Installed
from creditexchange.node.exchange.metrics import Metrics
from creditexchange.node.exchange.protocol import ANSWER
from creditexchange.node.exchange.quotas import QuotaCharge
from creditexchange.node.federation.breaker import Breakers, CircuitState
from creditexchange.node.federation.fanout import Outcome, RegionalClient
from creditexchange.node.federation.report import (
    SECTIONS,
    canonical_report,
    consolidated_report,
    report_digest,
    sign_report,
)
from creditexchange.node.federation.report_verify import TrustedMemorandum, verify_report
from creditexchange.node.ledger.cosignature import Cosigner, witness_name
from creditexchange.node.records.objections import ObjectionOutcome, close_objection, open_objection
from creditexchange.policy.canonical import canonical_json
from creditexchange.policy.document import Period
from creditexchange.policy.engine import quota_period_start
from creditexchange.v1 import exchange_pb2

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

MEMBERS = ("huizhou", "shenzhen", "dongguan", "heyuan", "shanwei", "customs")
OTHERS = ("huizhou", "dongguan", "heyuan", "shanwei", "customs")  # as shenzhen asks them
PROCUREMENT: dict[str, Any] = {
    "purpose": "public_procurement",
    "legal_basis": "政府采购法第二十二条",
    "case_reference": "CG-2026-0001",
    "officer": "officer-7",
}
PUBLIC = "r.status <> 'expired' AND (r.publicity_end IS NULL OR r.publicity_end >= CURRENT_DATE)"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    with postgres_schema() as pg_url:
        federation = Federation(
            tmp_path_factory.mktemp("region"), MEMBERS, {"customs": pg_url}, subjects=40
        )
        try:
            yield federation
        finally:
            federation.close()


def regional(
    fed: Federation,
    member: str = "shenzhen",
    *,
    peers: dict[str, str] | None = None,
    breakers: Breakers | None = None,
) -> RegionalClient:
    """``member``'s regional client sharing its running ledger (``peers`` overriding
    where it reaches some members), opened in the federation's loop."""
    config = fed.nodes[member].config
    server = fed.servers[member]
    requester = requester_from(config)
    if peers:
        requester = dataclasses.replace(requester, peers={**requester.peers, **peers})
    region = RegionalClient(
        FederationClient(requester, ledger=server.ledger),
        store=open_database(config.database_url),
        catalog=requester.federation.catalog,
        breakers=breakers or Breakers(),
    )
    fed.run(region.__aenter__())
    return region


def close(fed: Federation, region: RegionalClient) -> None:
    fed.run(region.__aexit__(None, None, None))
    region.store.dispose()


def installed(fed: Federation, member: str = "shenzhen") -> Installed:
    return federation_view(fed.nodes[member].config).current()


@pytest.fixture(scope="module")
def report(fed: Federation) -> dict[str, Any]:
    """shenzhen's full report on huizhou's richest enterprise."""
    region = regional(fed)
    try:
        return fed.run(
            consolidated_report(region, showcase_subject("huizhou", 2026), **PROCUREMENT)
        )
    finally:
        close(fed, region)


def _subjects(fed: Federation, member: str, sql: str) -> list[str]:
    database = open_database(fed.nodes[member].config.database_url)
    try:
        with database.connect() as conn:
            return [row[0] for row in conn.execute(text(sql))]
    finally:
        database.dispose()


def _records(report: dict[str, Any], member: str) -> list[dict[str, Any]]:
    return [r for s in report["sections"] for r in s["records"] if r["member"] == member]


# --- a full report ---------------------------------------------------------------------------


def test_a_full_report_holds_every_members_answer_in_the_nine_sections(
    fed: Federation, report: dict[str, Any], catalog: Catalog
) -> None:
    assert report["format"] == "creditexchange.report/v1" and report["issuer"] == "shenzhen"
    assert (
        report["subject"]
        == {
            "id": showcase_subject("huizhou", 2026),
            "type": "enterprise",
            "name": report["subject"]["name"],
        }
        and report["subject"]["name"]
    )
    assert report["request"]["purpose_name"] == "政府采购和工程建设招标投标"
    assert report["issued_at"].endswith("+08:00")
    statuses = {m["member"]: m["status"] for m in report["members"]}
    assert statuses == {"shenzhen": "own", **dict.fromkeys(OTHERS, "answered")}
    assert [s["code"] for s in report["sections"]] == [code for code, _, _ in SECTIONS]
    assert sorted(a["member"] for a in report["answers"]) == sorted(OTHERS)

    huizhou = _records(report, "huizhou")
    assert huizhou and {m["records"] for m in report["members"] if m["member"] == "huizhou"} == {
        len(huizhou)
    }
    by_section = {s["code"]: {r["theme"] for r in s["records"]} for s in report["sections"]}
    assert "registration" in by_section["registration"]
    assert "admin_license" in by_section["licensing_and_management"]
    assert "credit_rating" in by_section["evaluations"]
    registration = next(r for r in huizhou if r["theme"] == "registration")
    assert registration["source_department"] == "市场监督管理局"
    assert registration["theme_name"] == catalog.theme_by_code["registration"].name_zh
    capital = next(f for f in registration["fields"] if f["name"] == "registered_capital")
    assert (capital["label"], capital["unit"]) == ("注册资本（开办资金、资金数额）", "万元")
    form = next(f for f in registration["fields"] if f["name"] == "org_form")
    assert form["value"].endswith(")") and "(" in form["value"]  # the code with its label
    licence = next(r for r in huizhou if r["theme"] == "admin_license")
    id_number = next(f for f in licence["fields"] if f["name"] == "legal_rep_id_number")
    assert id_number["masked"] and "********" in id_number["value"]
    assert all(r["hit"] is None for r in huizhou)

    customs = _records(report, "customs")  # the same enterprise in customs' files, PostgreSQL
    assert {r["theme"] for r in customs} <= {
        "customs_credit_grade",
        "customs_case",
        "customs_light_status",
    }

    assert verify_report(report, installed(fed), catalog) == []
    key = load_signing_key(fed.nodes["shenzhen"].config.signing_key_path)
    assert report == sign_report(report, key)  # signed over its canonical unsigned form


def test_a_report_is_one_fan_out_recorded_once_per_member_on_both_sides(
    fed: Federation, report: dict[str, Any]
) -> None:
    for answer in report["answers"]:
        envelope = exchange_pb2.Envelope.FromString(base64.b64decode(answer["envelope"]))
        body = exchange_pb2.AnswerBody.FromString(
            exchange_pb2.Answer.FromString(envelope.payload).body
        )
        digest = bytes.fromhex(answer["request_digest"])
        assert body.request_digest == digest
        provided = [
            e for e in fed.ledger_entries(answer["member"], last=40)
            if e.get("request_digest") and base64.b64decode(e["request_digest"]) == digest
        ]  # fmt: skip
        assert len(provided) == 1 and provided[0]["requester"] == "shenzhen"


def test_the_report_digest_covers_the_signature_and_floats_are_canonical(
    report: dict[str, Any],
) -> None:
    assert report_digest(report) == report_digest(json.loads(json.dumps(report)))
    assert b'"deadline_s":5,' in canonical_report(report)  # as ECMAScript writes 5.0
    stripped = {k: v for k, v in report.items() if k != "signature"}
    assert report_digest(report) != report_digest(stripped)
    integral = json.loads(json.dumps(report).replace('"deadline_s": 5.0', '"deadline_s": 5'))
    assert canonical_report(integral) == canonical_report(report)


@pytest.mark.parametrize(
    "value",
    [
        {"b": 'a\x00b\x1f\x7f"\\ / \u2028 é 中 😀 \b\t\n\f\r', "a": [1, True, None, -(2**53 - 1)]},
        {"中文键": {"\U0001f600": 1, "\ufb33": 2}},  # non-ASCII keys: UTF-16 order
        {"long": "QUJD" * 5000, "nested": [[{"z": 1, "y": [2, {"x": ""}]}]]},
    ],
)
def test_the_canonical_form_of_a_report_is_rfc_8785(value: dict[str, Any]) -> None:
    assert canonical_report(value) == canonical_json(value)


@pytest.mark.parametrize(
    ("number", "written"),
    [(5.0, b"5"), (12.3, b"12.3"), (0.0, b"0"), (-0.0, b"0"), (1e21, b"1e+21"),
     (1e-7, b"1e-7"), (0.000001, b"0.000001"), (123456.789, b"123456.789"), (-2.5, b"-2.5")],
)  # fmt: skip
def test_floats_are_written_as_ecmascript_writes_them(number: float, written: bytes) -> None:
    assert canonical_report({"n": number}) == b'{"n":' + written + b"}"


def test_what_has_no_canonical_form_is_refused_by_name() -> None:
    for bad in ({"a": "\ud800"}, {"a": 2**60}, {"a": float("nan")}, {"a": (1, 2)}):
        with pytest.raises(CanonicalizationError):
            canonical_report(bad)


def test_the_issuers_own_store_is_shown_as_the_catalog_makes_it_public(
    fed: Federation, catalog: Catalog
) -> None:
    region = regional(fed, "huizhou")
    try:
        own = fed.run(consolidated_report(region, showcase_subject("huizhou", 2026), **PROCUREMENT))
    finally:
        close(fed, region)
    (mine,) = [m for m in own["members"] if m["member"] == "huizhou"]
    assert mine["status"] == "own" and mine["records"] > 0
    records = _records(own, "huizhou")
    licence = next(r for r in records if r["theme"] == "admin_license")
    shown = {f["name"]: f for f in licence["fields"]}
    assert (
        shown["legal_rep_id_number"]["masked"]
        and "********" in shown["legal_rep_id_number"]["value"]
    )
    assert not shown["legal_representative"]["masked"]  # public in 双公示 data
    assert "remarks" not in shown or not shown["remarks"]["masked"]
    assert verify_report(own, installed(fed, "huizhou"), catalog) == []


def test_a_check_report_says_hit_or_no_hit_per_theme_and_keeps_objection_marks(
    fed: Federation, catalog: Catalog
) -> None:
    subject = showcase_subject("huizhou", 2026)
    (record_key,) = _subjects(
        fed,
        "huizhou",
        f"SELECT record_key FROM records r WHERE subject_id = '{subject}' "
        f"AND theme = 'admin_penalty' AND {PUBLIC} LIMIT 1",
    )
    database = open_database(fed.nodes["huizhou"].config.database_url)
    region = regional(fed)
    try:
        case = open_objection(
            database,
            "admin_penalty",
            [record_key],
            reason="the company says it paid",
            applicant="the company",
            channel="online",
        )
        try:
            check = fed.run(consolidated_report(region, subject, mode="check", **PROCUREMENT))
            full = fed.run(consolidated_report(region, subject, **PROCUREMENT))
        finally:
            close_objection(database, case.number, ObjectionOutcome.CONFIRMED)
    finally:
        database.dispose()
        close(fed, region)
    lines = _records(check, "huizhou")
    assert lines and all(r["hit"] in (True, False) and not r["fields"] for r in lines)
    penalty = next(r for r in lines if r["theme"] == "admin_penalty")
    assert penalty["hit"] and penalty["under_objection"]
    hits = sum(1 for r in lines if r["hit"])
    assert next(m for m in check["members"] if m["member"] == "huizhou")["records"] == hits
    marked = next(r for r in _records(full, "huizhou") if r["record_key"] == record_key)
    assert marked["under_objection"] and marked["status"] == "objection"
    assert verify_report(check, installed(fed), catalog) == []


def test_an_individual_stays_masked_and_its_answer_key_is_not_embedded(
    fed: Federation, catalog: Catalog
) -> None:
    listed = _subjects(
        fed, "huizhou", "SELECT subject_id FROM subjects WHERE subject_type = 'individual' LIMIT 1"
    )
    region = regional(fed)
    try:
        found = fed.run(
            consolidated_report(
                region,
                listed[0],
                purpose="civil_service_hiring",
                legal_basis="公务员法第二十六条",
                case_reference="GWY-2026-17",
                officer="hr-3",
                mode="check",
            )
        )
    finally:
        close(fed, region)
    assert found["subject"]["id"] != listed[0] and "********" in found["subject"]["id"]
    assert listed[0] not in json.dumps(found)
    assert found["answers"] and all(a["answer_key"] == "" for a in found["answers"])
    lines = _records(found, "huizhou")
    assert {r["theme"] for r in lines} == {"serious_dishonesty", "dishonest_debtor", "honours"}
    assert all(r["hit"] in (True, False) and not r["fields"] for r in lines)
    assert {m["member"] for m in found["members"]} == {"shenzhen", *OTHERS} - {"customs"}
    assert verify_report(found, installed(fed), catalog) == []


def test_what_the_memorandum_rules_out_is_refused_before_anything_is_sent(fed: Federation) -> None:
    region = regional(fed)
    before = len(fed.ledger_entries("shenzhen", last=1000))
    try:
        for bad in (
            {"subject": showcase_subject("huizhou", 2026)[:-1] + "0"},  # a wrong check character
            {"purpose": "lottery"},
            {"officer": "wang\u200b"},
            {"mode": "partial"},
        ):
            arguments: dict[str, Any] = {
                "subject": showcase_subject("huizhou", 2026),
                **PROCUREMENT,
                **bad,
            }
            with pytest.raises(ExchangeError):
                fed.run(consolidated_report(region, arguments.pop("subject"), **arguments))
    finally:
        close(fed, region)
    assert len(fed.ledger_entries("shenzhen", last=1000)) == before


# --- members that fail ---------------------------------------------------------------------


class BlackHole:
    """A TCP listener that accepts every connection and never says a word."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(64)
        self.port = self.socket.getsockname()[1]
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            self.held.append(connection)

    def close(self) -> None:
        self.socket.close()
        for connection in self.held:
            connection.close()


def _exhaust_land_auction_quota(fed: Federation, provider: str, requester: str) -> None:
    """``requester`` has used its 500 land-auction lookups of today at ``provider``."""
    start = quota_period_start(Period.DAY, dt.datetime.now(dt.UTC))
    key = (requester, "regional-land-auction", int(start.timestamp()))
    database = open_database(fed.nodes[provider].config.database_url)
    try:
        with database.begin() as conn:
            QuotaCharge(key, 500).write(conn.connection.cursor(), conn.dialect)
    finally:
        database.dispose()


def test_a_stopped_a_black_holed_and_a_denying_member_cost_the_deadline_once(
    fed: Federation, catalog: Catalog
) -> None:
    hole = BlackHole()
    _exhaust_land_auction_quota(fed, "dongguan", "shenzhen")
    fed.stop("heyuan")
    region = regional(fed, peers={"shanwei": f"127.0.0.1:{hole.port}"})
    deadline = 1.5
    try:
        started = time.monotonic()
        found = fed.run(
            consolidated_report(
                region,
                showcase_subject("huizhou", 2026),
                purpose="land_auction",
                legal_basis="招标拍卖挂牌出让国有建设用地使用权规定",
                case_reference="TD-2026-08",
                officer="auction-system",
                deadline_s=deadline,
            )
        )
        took = time.monotonic() - started
    finally:
        close(fed, region)
        hole.close()
        fed.start("heyuan")
    members = {m["member"]: m for m in found["members"]}
    assert {m: e["status"] for m, e in members.items()} == {
        "shenzhen": "own",
        "huizhou": "answered",
        "dongguan": "denied",
        "heyuan": "unavailable",
        "shanwei": "timed_out",
        "customs": "answered",
    }
    assert "quota of 500 per day exceeded for requester shenzhen" in members["dongguan"]["reason"]
    assert "UNAVAILABLE" in members["heyuan"]["reason"]
    assert "deadline of 1.5 s" in members["shanwei"]["reason"]
    # the deadline once, not once per bad member (three would take 3 × deadline); the bound
    # leaves room for a loaded machine — how close to the deadline it ends is measured by
    # bench_federation's deadline_ratio, not here
    assert deadline <= took < deadline * 2, took
    assert members["shanwei"]["elapsed_ms"] >= deadline * 1000
    assert members["huizhou"]["elapsed_ms"] < deadline * 1000
    assert sorted(a["member"] for a in found["answers"]) == ["customs", "huizhou"]
    assert not _records(found, "dongguan") and _records(found, "huizhou")
    assert verify_report(found, installed(fed), catalog) == []


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_breaker_opens_skips_fast_then_lets_one_probe_through(fed: Federation) -> None:
    metrics = Metrics()
    clock = Clock()
    breakers = Breakers(
        failure_threshold=2, cool_down_s=30, gauge=metrics.member_circuit, clock=clock
    )
    subject = showcase_subject("huizhou", 2026)

    def outcomes(region: RegionalClient) -> dict[str, Outcome]:
        fanned = fed.run(consolidated_report(region, subject, deadline_s=3, **PROCUREMENT))
        return {m["member"]: m["status"] for m in fanned["members"]}

    def circuit(member: str) -> float | None:
        value = metrics.registry.get_sample_value("credit_node_member_circuit", {"member": member})
        return value

    fed.stop("heyuan")
    region = regional(fed, breakers=breakers)
    try:
        assert outcomes(region)["heyuan"] == "unavailable"
        assert breakers.state("heyuan") is CircuitState.CLOSED and circuit("heyuan") == 0
        assert outcomes(region)["heyuan"] == "unavailable"
        assert breakers.state("heyuan") is CircuitState.OPEN and circuit("heyuan") == 2
        sent = len(fed.ledger_entries("shenzhen", last=1000))
        skipped = fed.run(consolidated_report(region, subject, **PROCUREMENT))
        (heyuan,) = [m for m in skipped["members"] if m["member"] == "heyuan"]
        assert heyuan["status"] == "skipped" and heyuan["elapsed_ms"] == 0
        assert "circuit is open" in heyuan["reason"]
        # nothing was sent to heyuan: shenzhen recorded one OUTGOING entry per other member
        assert len(fed.ledger_entries("shenzhen", last=1000)) - sent == len(OTHERS) - 1

        clock.now += 31  # the cool-down is over, heyuan still down: the probe fails
        assert breakers.state("heyuan") is CircuitState.HALF_OPEN
        assert circuit("heyuan") == 1  # so says the gauge too, before any call is made
        assert outcomes(region)["heyuan"] == "unavailable"
        assert breakers.state("heyuan") is CircuitState.OPEN and circuit("heyuan") == 2

        fed.start("heyuan")  # back: the next probe closes the breaker
        clock.now += 31
        fed.run(asyncio.wait_for(region.client.channel("heyuan").channel_ready(), 15))
        assert outcomes(region)["heyuan"] == "answered"
        assert breakers.state("heyuan") is CircuitState.CLOSED and circuit("heyuan") == 0
        assert (
            'credit_node_member_circuit{member="huizhou"} 0.0'
            in generate_latest(metrics.registry).decode()
        )
    finally:
        close(fed, region)
        if "heyuan" not in fed.servers:
            fed.start("heyuan")


def test_a_probe_that_fails_reopens_and_a_forgotten_probe_does_not_hold_the_door() -> None:
    clock = Clock()
    metrics = Metrics()
    breakers = Breakers(
        failure_threshold=1, cool_down_s=10, clock=clock, gauge=metrics.member_circuit
    )
    breakers.failed("x")
    assert not breakers.admit("x")
    clock.now += 10
    assert breakers.admit("x") and not breakers.admit("x")  # one probe at a time
    sample = metrics.registry.get_sample_value("credit_node_member_circuit", {"member": "x"})
    assert sample == int(CircuitState.HALF_OPEN) == 1
    clock.now += 10  # the probe's caller never reported
    assert breakers.admit("x")
    breakers.failed("x")
    assert breakers.state("x") is CircuitState.OPEN and not breakers.admit("x")
    breakers.succeeded("x")
    assert breakers.state("x") is CircuitState.CLOSED and breakers.admit("x")


# --- verification ----------------------------------------------------------------------


def _answer_of(report: dict[str, Any], member: str) -> dict[str, Any]:
    return next(a for a in report["answers"] if a["member"] == member)


def _envelope(entry: dict[str, Any]) -> exchange_pb2.Envelope:
    return exchange_pb2.Envelope.FromString(base64.b64decode(entry["envelope"]))


def _store(entry: dict[str, Any], envelope: exchange_pb2.Envelope) -> None:
    entry["envelope"] = base64.b64encode(envelope.SerializeToString()).decode()


def _edit_answer(
    report: dict[str, Any],
    member: str,
    edit: Callable[[exchange_pb2.Answer], None],
    seal_with: nacl.signing.SigningKey | None = None,
) -> None:
    """Edit ``member``'s embedded answer; its signature then fails, unless it is sealed again
    with ``seal_with`` (the member's own key: a lie only the receipt can show)."""
    entry = _answer_of(report, member)
    envelope = _envelope(entry)
    answer = exchange_pb2.Answer.FromString(envelope.payload)
    edit(answer)
    envelope.payload = answer.SerializeToString()
    if seal_with is not None:
        envelope = seal(ANSWER, envelope.payload, seal_with)
    _store(entry, envelope)


def _alter_a_value(answer: exchange_pb2.Answer) -> None:
    body = exchange_pb2.AnswerBody.FromString(answer.body)
    theme = next(t for t in body.subjects[0].themes if t.records)
    theme.records[0].status = "repaired"
    answer.body = body.SerializeToString()


def _remove_signatures(report: dict[str, Any]) -> None:
    entry = _answer_of(report, "huizhou")
    envelope = _envelope(entry)
    del envelope.signatures[:]
    _store(entry, envelope)


def _receipt_from_customs(report: dict[str, Any]) -> None:
    foreign = exchange_pb2.Answer.FromString(_envelope(_answer_of(report, "customs")).payload)
    _edit_answer(report, "huizhou", lambda a: a.receipt.CopyFrom(foreign.receipt))


def _cosign_huizhou(report: dict[str, Any], fed: Federation, *, forged: bool) -> None:
    """dongguan's witness cosignature (or a forgery of it) on huizhou's checkpoint, in the
    receipt, the answer sealed again by huizhou: only the cosignature can be wrong."""
    name = witness_name("dongguan", "3plus2")
    key = fed.signing_key("dongguan")

    def cosign(answer: exchange_pb2.Answer) -> None:
        body = answer.receipt.checkpoint.split("\n\n")[0] + "\n"
        cosignature = Cosigner(name, key).cosign(body)
        if forged:
            cosignature = dataclasses.replace(cosignature, signature=os.urandom(64))
        answer.receipt.cosignatures.append(cosignature.line())

    _edit_answer(report, "huizhou", cosign, seal_with=fed.signing_key("huizhou"))


def _edit_a_table(report: dict[str, Any]) -> None:
    record = next(r for s in report["sections"] for r in s["records"] if r["member"] == "huizhou")
    record["fields"][0]["value"] = "edited"


def _drop_a_record(report: dict[str, Any]) -> None:
    for section in report["sections"]:
        section["records"] = [r for r in section["records"] if r["theme"] != "admin_license"]


def _another_request(report: dict[str, Any]) -> None:
    _answer_of(report, "huizhou")["request_digest"] = "00" * 32


def _say_huizhou_denied(report: dict[str, Any]) -> None:
    entry = next(m for m in report["members"] if m["member"] == "huizhou")
    entry["status"] = "denied"


def _leave_out_a_member(report: dict[str, Any]) -> None:
    """Everything of one member asked taken out of the report: its line, answer, records."""
    gone = next(m["member"] for m in report["members"] if m["status"] != "own")
    report["members"] = [m for m in report["members"] if m["member"] != gone]
    report["answers"] = [a for a in report["answers"] if a["member"] != gone]
    for section in report["sections"]:
        section["records"] = [r for r in section["records"] if r["member"] != gone]


def _a_day_later(issued_at: str) -> str:
    return (dt.datetime.fromisoformat(issued_at) + dt.timedelta(days=1)).isoformat()


TAMPERING: list[tuple[str, Callable[[dict[str, Any], Federation], None], bool, list[str]]] = [
    # (what, how, re-signed by the issuer afterwards, what the problems must say)
    ("an answer altered", lambda r, f: _edit_answer(r, "huizhou", _alter_a_value), True,
     ["the answer of huizhou is not signed by huizhou", "does not verify",
      "does not record this request and this answer (answer digest differ)",
      "differs from huizhou's signed answer: status 'active' (signed: 'repaired')"]),
    ("an answer's signature removed", lambda r, f: _remove_signatures(r), True,
     ["the answer of huizhou is not signed by huizhou: the envelope carries no signature"]),
    ("the report's signature removed", lambda r, f: r.pop("signature"), False,
     ["the report carries no signature of its issuer shenzhen"]),
    ("anything changed after signing", lambda r, f: r["request"].update(officer="mallory"),
     False, ["the issuer's signature (shenzhen, key"]),
    ("a receipt from another log", lambda r, f: _receipt_from_customs(r), True,
     ["the receipt in the answer of huizhou: its checkpoint is not signed by huizhou's log"]),
    ("a cosignature forged", lambda r, f: _cosign_huizhou(r, f, forged=True), True,
     ["the receipt in the answer of huizhou: cosignature 1 on huizhou's checkpoint is forged"]),
    ("a receipt from another log, sealed again by the member",
     lambda r, f: _edit_answer(r, "huizhou", lambda a: a.receipt.CopyFrom(
         exchange_pb2.Answer.FromString(_envelope(_answer_of(r, "customs")).payload).receipt),
         seal_with=f.signing_key("huizhou")), True,
     ["its checkpoint is not signed by huizhou's log",
      "its audit entry does not record this request and this answer (request digest, answer "
      "digest, provider differ)"]),
    ("a table edited, and re-signed by the issuer", lambda r, f: _edit_a_table(r), True,
     ["of huizhou (theme", "differs from huizhou's signed answer: field"]),
    ("a record dropped, and re-signed by the issuer", lambda r, f: _drop_a_record(r), True,
     ["huizhou's signed answer holds record", "which section licensing_and_management does "
      "not show"]),
    ("the case reference restated, and re-signed by the issuer",
     lambda r, f: r["request"].update(case_reference="CG-2026-9999"), True,
     ["the receipt in the answer of huizhou: its audit entry does not record this request and "
      "this answer (case reference differ)"]),
    ("the issue time moved a day on, and re-signed by the issuer",
     lambda r, f: r.update(issued_at=_a_day_later(r["issued_at"])), True,
     ["the receipt in the answer of huizhou: it was recorded at", "an answer to an earlier "
      "request"]),
    ("a member left out, and re-signed by the issuer",
     lambda r, f: _leave_out_a_member(r), True, ["but the report does not list it"]),
    ("an answer bound to another request", lambda r, f: _another_request(r), True,
     ["the answer of huizhou is bound to request"]),
    ("an answer kept while the member is marked denied", lambda r, f: _say_huizhou_denied(r),
     True, ["the report embeds an answer of huizhou but marks it denied"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("how", "resign", "expected"),
    [pytest.param(how, resign, expected, id=what) for what, how, resign, expected in TAMPERING],
)
def test_verification_names_each_tampering(
    fed: Federation,
    report: dict[str, Any],
    catalog: Catalog,
    how: Callable[[dict[str, Any], Federation], None],
    resign: bool,
    expected: list[str],
) -> None:
    tampered = copy.deepcopy(report)
    how(tampered, fed)
    if resign:  # the issuer itself lying: only the members' signatures can show it
        key = load_signing_key(fed.nodes["shenzhen"].config.signing_key_path)
        tampered = sign_report(tampered, key)
    problems = verify_report(tampered, installed(fed), catalog)
    text_of = "\n".join(problems)
    for phrase in expected:
        assert phrase in text_of, problems
    if resign:
        assert not any("issuer's signature" in p for p in problems)


def test_a_genuine_cosignature_in_a_receipt_verifies(
    fed: Federation, report: dict[str, Any], catalog: Catalog
) -> None:
    cosigned = copy.deepcopy(report)
    _cosign_huizhou(cosigned, fed, forged=False)
    cosigned = sign_report(cosigned, fed.signing_key("shenzhen"))
    assert verify_report(cosigned, installed(fed), catalog) == []


def test_a_report_verifies_against_its_memorandum_file_and_not_against_another(
    fed: Federation, report: dict[str, Any], catalog: Catalog, tmp_path: Path
) -> None:
    current = fed.nodes["shenzhen"].config.policy_dir / "current.json"
    assert verify_report(report, TrustedMemorandum.from_file(current), catalog) == []
    other = copy.deepcopy(report)
    other["memorandum"]["version"] = 2
    problems = verify_report(other, TrustedMemorandum.from_file(current), catalog)
    assert any("issued under memorandum version 2" in p for p in problems)
    assert verify_report({"format": "something else"}, installed(fed), catalog) == [
        "not a consolidated report (creditexchange.report/v1): its format is 'something else', "
        "not 'creditexchange.report/v1'"
    ]


# --- the command line ----------------------------------------------------------------------

runner = CliRunner()


def test_report_and_report_verify_on_the_command_line(fed: Federation, tmp_path: Path) -> None:
    home = fed.nodes["shanwei"].home
    fed.stop("shanwei")  # the command line is then the only writer of shanwei's ledger
    try:
        out = tmp_path / "report.json"
        result = runner.invoke(
            app,
            [
                "report", showcase_subject("huizhou", 2026), "--purpose", "public_procurement",
                "--legal-basis", "政府采购法第二十二条", "--case", "CG-9", "--officer", "li",
                "--out", str(out), "--home", str(home),
            ],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert "huizhou" in result.output and "answered" in result.output
        assert "written to" in result.output
        written = json.loads(out.read_text("utf-8"))
        assert written["issuer"] == "shanwei" and written["request"]["officer"] == "li"

        pdf = tmp_path / "report.pdf"
        printed = runner.invoke(
            app,
            [
                "report", showcase_subject("huizhou", 2026), "--purpose", "public_procurement",
                "--legal-basis", "政府采购法第二十二条", "--case", "CG-9", "--officer", "li",
                "--check", "--out", str(pdf), "--home", str(home),
            ],
        )  # fmt: skip
        assert printed.exit_code == 0, printed.output
        assert pdf.read_bytes().startswith(b"%PDF-")
        beside = json.loads(pdf.with_suffix(".json").read_text("utf-8"))  # what the PDF names
        assert beside["request"]["mode"] == "check"
        assert f"{pdf.with_suffix('.json')} and {pdf}" in " ".join(printed.output.split())

        verified = runner.invoke(app, ["report", "verify", str(out), "--home", str(home)])
        assert verified.exit_code == 0, verified.output
        assert "verified" in verified.output
        version, digest = written["memorandum"]["version"], written["memorandum"]["hash"]
        assert f"against memorandum version {version} (SHA-256 {digest})" in verified.output

        written["sections"][1]["records"][0]["record_key"] = "假的"
        out.write_text(json.dumps(written, ensure_ascii=False), "utf-8")
        failed = runner.invoke(
            app,
            ["report", "verify", str(out), "--memorandum", str(home / "policy" / "current.json")],
        )
        assert failed.exit_code == 1
        assert "✗ the issuer's signature (shanwei" in failed.output
        assert "the tables were edited" in failed.output
    finally:
        fed.start("shanwei")


def test_check_writes_one_row_per_bidder_and_a_column_per_member_and_theme(
    fed: Federation, tmp_path: Path
) -> None:
    penalised = _subjects(
        fed,
        "huizhou",
        "SELECT DISTINCT r.subject_id FROM records r JOIN subjects s ON s.subject_id = "
        "r.subject_id WHERE r.theme = 'admin_penalty' AND s.subject_type = 'enterprise' "
        f"AND {PUBLIC} LIMIT 2",
    )
    clean = _subjects(
        fed,
        "dongguan",
        "SELECT subject_id FROM subjects WHERE subject_type = 'enterprise' AND subject_id NOT IN "
        "(SELECT subject_id FROM records WHERE theme NOT IN ('registration', 'admin_license', "
        "'credit_commitment', 'credit_rating', 'honours')) LIMIT 1",
    )
    bidders = tmp_path / "bidders.csv"
    bidders.write_text(
        "subject_id,name\n"
        + "".join(f"{s},x\n" for s in [*penalised, "91441300MA4W7K3P2X", *clean]),
        "utf-8",
    )
    result_file = tmp_path / "result.csv"
    home = fed.nodes["shanwei"].home
    fed.stop("shanwei")
    try:
        result = runner.invoke(
            app,
            [
                "check", str(bidders), "--purpose", "public_procurement",
                "--legal-basis", "政府采购法第二十二条", "--case", "ZB-2026-3",
                "--officer", "bidding", "--out", str(result_file), "--home", str(home),
            ],
        )  # fmt: skip
    finally:
        fed.start("shanwei")
    assert result.exit_code == 0, result.output
    with result_file.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["subject_id"] for r in rows] == [*penalised, "91441300MA4W7K3P2X", *clean]
    for row in rows[: len(penalised)]:
        assert row["found"] == "true" and row["huizhou:admin_penalty"].startswith("hit")
        assert "huizhou:admin_penalty" in row["hits"].split()
        assert row["huizhou:status"] == "answered" and row["shanwei:status"] == "own"
    invalid = rows[len(penalised)]
    assert "not asked" in invalid["error"] and "check character" in invalid["error"]
    assert rows[-1]["huizhou:admin_penalty"] == "no hit"
    assert {"customs:status", "dongguan:status", "heyuan:status"} <= set(rows[0])


def test_print_everyone_prints_one_line_per_member(
    fed: Federation, capsys: pytest.CaptureFixture[str]
) -> None:
    fed.stop("shanwei")
    try:
        print_everyone(
            fed.nodes["shanwei"].config,
            showcase_subject("huizhou", 2026),
            purpose="public_procurement",
            legal_basis="政府采购法第二十二条",
            case_reference="CG-10",
            officer="li",
            check=True,
        )
    finally:
        fed.start("shanwei")
    lines = [line for line in capsys.readouterr().out.splitlines() if "answered" in line]
    assert len(lines) == 5 and all("hit(s)" in line for line in lines)

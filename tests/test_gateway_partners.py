"""The partner routes of the REST gateway, over real HTTP, on a real federation on loopback.

shenzhen serves the gateway; huizhou, dongguan and customs answer over real mutual TLS
under the real memorandum and record in their real ledgers. Each lookup must name the
partner and the officer in every entry it causes, on shenzhen and on every member asked;
each refusal must answer a problem document that says what was wrong and write nothing.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fedharness import Federation
from gatewayharness import GatewayHarness
from sqlalchemy import Engine, text

from creditexchange.devtools.sample import showcase_subject
from creditexchange.gateway.context import GatewayLimits
from creditexchange.node.app.wiring import federation_view, open_audit_log
from creditexchange.node.database import open_database
from creditexchange.node.federation.report import report_digest
from creditexchange.node.federation.report_verify import verify_report
from creditexchange.node.ledger.entries import decode

pytestmark = pytest.mark.slow

MEMBERS = ("huizhou", "shenzhen", "dongguan", "customs")
PROVIDERS = ("huizhou", "dongguan", "customs")  # as shenzhen asks them
PURPOSES = ["public_procurement", "land_auction", "fiscal_funds"]
PROCUREMENT = {
    "purpose": "public_procurement",
    "legal_basis": "政府采购法第二十二条",
    "case": "CG-7",
}
PROBLEM = "application/problem+json"


class Region:
    """The federation, shenzhen's gateway, a partner's key and every member's ledger."""

    def __init__(self, root: Path) -> None:
        self.fed = Federation(root, MEMBERS, {}, subjects=20)
        self.gw = GatewayHarness(self.fed, "shenzhen")
        self.key = self.gw.partner("land-centre", PURPOSES)
        self.engines: dict[str, Engine] = {
            m: open_database(self.fed.nodes[m].config.database_url) for m in MEMBERS
        }
        self.http = httpx.Client(base_url=self.gw.url, timeout=30)

    def close(self) -> None:
        self.http.close()
        for engine in self.engines.values():
            engine.dispose()
        self.gw.close()
        self.fed.close()

    def headers(self, key: str | None = None, **more: str) -> dict[str, Any]:
        return self.gw.headers(key or self.key, officer="HZ-LAND-0042", **more)

    def sizes(self) -> dict[str, int]:
        return {
            m: open_audit_log(self.fed.nodes[m].config, engine).size()
            for m, engine in self.engines.items()
        }

    def entries_since(self, before: dict[str, int]) -> dict[str, list[dict[str, Any]]]:
        """Every member's entries appended since ``before`` (their sizes), decoded."""
        found = {}
        for m, engine in self.engines.items():
            log = open_audit_log(self.fed.nodes[m].config, engine)
            found[m] = [decode(e.body) for e in log.entries(before[m], log.size()) if e.body]
        return found

    def subjects(self, member: str, sql: str) -> list[str]:
        with self.engines[member].connect() as conn:
            return [row[0] for row in conn.execute(text(sql))]


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Region]:
    running = Region(tmp_path_factory.mktemp("gateway-partners"))
    try:
        yield running
    finally:
        running.close()


def problem_of(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    """The problem document of ``response``, checked: status, media type, kind, a detail."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["type"] == f"urn:credit-exchange:problem:{slug}", body
    assert body["status"] == status and body["title"] and len(body["detail"]) > 20, body
    return body


def assert_named_everywhere(entries: dict[str, list[dict[str, Any]]], officer: str) -> None:
    """Every entry written names the partner and the officer."""
    written = [e for found in entries.values() for e in found]
    assert written
    for entry in written:
        assert (entry.get("partner"), entry.get("officer")) == ("land-centre", officer), entry


# --- the report -----------------------------------------------------------------------------


def test_a_report_is_signed_and_every_member_asked_records_the_partner_and_officer(
    region: Region,
) -> None:
    subject = showcase_subject("huizhou", 2026)
    before = region.sizes()
    response = region.http.get(
        f"/v1/subjects/{subject}/report", params=PROCUREMENT, headers=region.headers()
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    report = response.json()
    assert response.headers["x-report-digest"] == report_digest(report)
    assert report["issuer"] == "shenzhen" and report["subject"]["id"] == subject
    assert report["request"]["partner"] == "land-centre"
    assert report["request"]["officer"] == "HZ-LAND-0042"
    assert {m["member"]: m["status"] for m in report["members"]} == {
        "shenzhen": "own",
        **dict.fromkeys(PROVIDERS, "answered"),
    }
    catalog = region.gw.region.catalog
    installed = federation_view(region.fed.nodes["shenzhen"].config, catalog).current()
    assert verify_report(report, installed, catalog) == []

    entries = region.entries_since(before)
    assert_named_everywhere(entries, "HZ-LAND-0042")
    for provider in PROVIDERS:
        (incoming,) = entries[provider]
        assert (incoming["direction"], incoming["requester"]) == ("INCOMING", "shenzhen")
        assert incoming["case_reference"] == "CG-7"
    outgoing = {e["responder"] for e in entries["shenzhen"] if e["direction"] == "OUTGOING"}
    assert outgoing == set(PROVIDERS)


def test_a_report_is_a_pdf_when_asked_and_refused_in_a_form_it_does_not_have(
    region: Region,
) -> None:
    subject = showcase_subject("huizhou", 2026)
    response = region.http.get(
        f"/v1/subjects/{subject}/report",
        params=PROCUREMENT,
        headers=region.headers(Accept="text/html;q=0.9, application/pdf"),
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf"
    assert response.content.startswith(b"%PDF-")
    disposition = response.headers["content-disposition"]
    assert disposition.startswith("attachment;") and disposition.endswith('.pdf"')

    before = region.sizes()
    refused = region.http.get(
        f"/v1/subjects/{subject}/report",
        params=PROCUREMENT,
        headers=region.headers(Accept="text/html, application/xml"),
    )
    assert "application/pdf" in problem_of(refused, 406, "not-acceptable")["detail"]
    assert region.sizes() == before


# --- this city's own records ------------------------------------------------------------


def test_own_records_are_this_citys_alone_and_the_lookup_is_recorded(region: Region) -> None:
    held = region.subjects(
        "shenzhen",
        "SELECT s.subject_id FROM subjects s JOIN records r ON r.subject_id = s.subject_id "
        "WHERE s.subject_type = 'enterprise' AND r.theme = 'admin_license' LIMIT 1",
    )[0]
    before = region.sizes()
    response = region.http.get(f"/v1/subjects/{held}", params=PROCUREMENT, headers=region.headers())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["member"] == "shenzhen" and body["subject"]["id"] == held
    assert body["mode"] == "full" and body["reason"] == ""
    records = body["records"]
    assert records and {r["member"] for r in records} == {"shenzhen"}
    licence = next(r for r in records if r["theme"] == "admin_license")
    assert licence["section"] == "licensing_and_management"
    masked = next(f for f in licence["fields"] if f["name"] == "legal_rep_id_number")
    assert masked["masked"] and "********" in masked["value"]

    entries = region.entries_since(before)
    assert all(not entries[m] for m in PROVIDERS)  # no other member was asked
    (entry,) = entries["shenzhen"]
    assert (entry["direction"], entry["kind"]) == ("LOCAL", "API_CALL")
    assert (entry["purpose"], entry["case_reference"]) == ("public_procurement", "CG-7")
    assert entry["subject_hmac"] and held not in json.dumps(entry)
    assert_named_everywhere(entries, "HZ-LAND-0042")


def test_own_records_of_an_individual_are_list_hits_only_and_masked(region: Region) -> None:
    person = region.subjects(
        "shenzhen", "SELECT subject_id FROM subjects WHERE subject_type = 'individual' LIMIT 1"
    )[0]
    fiscal = {**PROCUREMENT, "purpose": "fiscal_funds"}
    response = region.http.get(f"/v1/subjects/{person}", params=fiscal, headers=region.headers())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["mode"] == "check" and "********" in body["subject"]["id"]
    assert person not in response.text
    assert body["records"] and all(r["hit"] in (True, False) for r in body["records"])
    assert all(not r["fields"] for r in body["records"])

    uncovered = region.http.get(
        f"/v1/subjects/{person}", params=PROCUREMENT, headers=region.headers()
    )
    assert uncovered.status_code == 200, uncovered.text
    assert uncovered.json()["records"] == [] and "does not cover" in uncovered.json()["reason"]


def test_a_subject_that_does_not_exist_is_404_and_only_the_lookup_is_recorded(
    region: Region,
) -> None:
    absent = showcase_subject("huizhou", 2026)  # held in huizhou, not in shenzhen
    before = region.sizes()
    response = region.http.get(
        f"/v1/subjects/{absent}", params=PROCUREMENT, headers=region.headers()
    )
    assert "no subject" in problem_of(response, 404, "no-such-subject")["detail"]
    entries = region.entries_since(before)
    assert all(not entries[m] for m in PROVIDERS)
    (entry,) = entries["shenzhen"]
    assert entry["kind"] == "API_CALL" and entry["outcome"]["status"] == "NOT_FOUND"
    assert_named_everywhere(entries, "HZ-LAND-0042")


# --- checks ---------------------------------------------------------------------------------


def test_a_check_answers_hit_or_no_hit_per_subject_in_the_order_asked(region: Region) -> None:
    rich = showcase_subject("huizhou", 2026)
    others = region.subjects(
        "dongguan", "SELECT subject_id FROM subjects WHERE subject_type = 'enterprise' LIMIT 3"
    )
    asked = [rich, *others, rich.lower()]
    before = region.sizes()
    response = region.http.post(
        "/v1/checks",
        json={
            "purpose": "land_auction",
            "legal_basis": "《招标拍卖挂牌出让国有建设用地使用权规定》",
            "case_reference": "TD-2026-017",
            "subjects": asked,
        },
        headers=region.headers(),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["complete"] is True
    assert [m["status"] for m in body["members"]] == ["own", "answered", "answered", "answered"]
    assert [s["subject"] for s in body["subjects"]] == [rich, *others, rich]
    first, *_, last = body["subjects"]
    assert first == last and first["found"] and first["hits"]
    checked = {(c["member"], c["theme"]) for c in body["checked"]}
    for result in body["subjects"]:
        assert result["found"] == bool(result["hits"])
        assert {(h["member"], h["theme"]) for h in result["hits"]} <= checked

    entries = region.entries_since(before)
    assert_named_everywhere(entries, "HZ-LAND-0042")
    for provider in PROVIDERS:
        (incoming,) = entries[provider]
        assert incoming["kind"] == "BATCH_CHECK" and int(incoming["subject_count"]) == 4


def test_a_check_of_more_subjects_than_the_node_takes_is_refused_before_anything_is_sent(
    region: Region,
) -> None:
    subjects = [showcase_subject("huizhou", 2026)] * 1001
    body = {"purpose": "land_auction", "legal_basis": "x", "case_reference": "c"}
    before = region.sizes()
    response = region.http.post(
        "/v1/checks", json={**body, "subjects": subjects}, headers=region.headers()
    )
    detail = problem_of(response, 422, "invalid-request")
    assert detail["errors"][0]["where"] == "body.subjects"
    small = GatewayHarness(region.fed, "shenzhen", limits=GatewayLimits(max_subjects=3))
    try:
        response = httpx.post(
            small.url + "/v1/checks",
            json={**body, "subjects": subjects[:4]},
            headers=region.headers(small.partner("small", ["land_auction"])),
        )
        assert "at most 3" in problem_of(response, 413, "too-many-subjects")["detail"]
    finally:
        small.close()
    assert region.sizes() == before


# --- verification ---------------------------------------------------------------------------


def test_a_report_handed_in_is_verified_and_a_tampered_one_is_not(region: Region) -> None:
    subject = showcase_subject("huizhou", 2026)
    report = region.http.get(
        f"/v1/subjects/{subject}/report", params=PROCUREMENT, headers=region.headers()
    ).json()
    before = region.sizes()
    response = region.http.post("/v1/reports/verify", json=report, headers=region.headers())
    assert response.status_code == 200, response.text
    assert response.json() == {
        "valid": True,
        "digest": report_digest(report),
        "report_id": report["report_id"],
        "problems": [],
    }
    entries = region.entries_since(before)
    assert all(not entries[m] for m in PROVIDERS)
    (entry,) = entries["shenzhen"]
    assert entry["kind"] == "API_CALL" and report["report_id"] in entry["note"]
    assert_named_everywhere(entries, "HZ-LAND-0042")

    tampered = copy.deepcopy(report)
    tampered["subject"]["name"] = "某某清白有限公司"
    verdict = region.http.post("/v1/reports/verify", json=tampered, headers=region.headers())
    assert verdict.status_code == 200 and verdict.json()["valid"] is False
    assert any("signature" in p for p in verdict.json()["problems"])

    stranger = region.http.post("/v1/reports/verify", json={"a": 1}, headers=region.headers())
    assert stranger.json()["valid"] is False
    assert stranger.json()["problems"][0].startswith("not a consolidated report")


@pytest.mark.parametrize(
    ("content", "slug"),
    [
        (b'{"format": "creditexchange.report/v1",', "invalid-request"),  # cut short
        (b"[1, 2, 3]", "invalid-request"),  # not an object
        (b'{"a":' * 200 + b"1" + b"}" * 200, "not-a-report"),  # nested to exhaust a reader
    ],
    ids=["truncated", "a-list", "deeply-nested"],
)
def test_a_body_that_is_not_a_report_is_refused_and_nothing_is_written(
    region: Region, content: bytes, slug: str
) -> None:
    before = region.sizes()
    response = region.http.post(
        "/v1/reports/verify",
        content=content,
        headers=region.headers(**{"Content-Type": "application/json"}),
    )
    problem_of(response, 422, slug)
    assert region.sizes() == before


# --- refusals ---------------------------------------------------------------------------------


def _report_call(region: Region, key: str | None = None, **params: str) -> httpx.Response:
    subject = params.pop("subject", showcase_subject("huizhou", 2026))
    headers = region.headers(key)
    if params.pop("officer", None) == "":
        del headers["X-Officer"]
    return region.http.get(
        f"/v1/subjects/{subject}/report", params={**PROCUREMENT, **params}, headers=headers
    )


def test_a_purpose_not_registered_is_403_naming_those_that_are(region: Region) -> None:
    before = region.sizes()
    body = problem_of(_report_call(region, purpose="bank_credit"), 403, "purpose-not-registered")
    assert body["registered_purposes"] == PURPOSES and "bank_credit" in body["detail"]
    assert region.sizes() == before


def test_a_revoked_or_unknown_key_is_401(region: Region) -> None:
    key = region.gw.partner("revoked-bank", ["public_procurement"])
    assert _report_call(region, key, subject="91441300MA4W7K3P2X").status_code == 400  # it works
    region.gw.keys.revoke("revoked-bank")
    before = region.sizes()
    revoked = problem_of(_report_call(region, key), 401, "unauthenticated")
    assert "revoked" in revoked["detail"]
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    assert (
        "unknown key" in problem_of(_report_call(region, forged), 401, "unauthenticated")["detail"]
    )
    missing = region.http.get(f"/v1/subjects/{showcase_subject('huizhou', 2026)}/report")
    assert problem_of(missing, 401, "unauthenticated")
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert region.sizes() == before


def test_an_auditors_key_is_refused_on_a_partner_route(region: Region) -> None:
    auditor = region.gw.auditor("audit-office")
    before = region.sizes()
    body = problem_of(_report_call(region, auditor), 403, "wrong-role")
    assert "auditor" in body["detail"]
    checks = region.http.post(
        "/v1/checks",
        json={"purpose": "land_auction", "legal_basis": "x", "case_reference": "c",
              "subjects": ["91441300MA4W7K3P2D"]},
        headers=region.headers(auditor),
    )  # fmt: skip
    problem_of(checks, 403, "wrong-role")
    assert region.sizes() == before


def test_a_partners_key_is_refused_on_an_auditor_route(region: Region) -> None:
    paths = region.http.get("/openapi.json").json()["paths"]
    audit = sorted(p for p, ops in paths.items() if "auditors" in str(ops) and "{" not in p)
    audit = [p for p in audit if "get" in paths[p]]
    if not audit:
        pytest.skip("the auditors' routes are not in this build's API yet")
    before = region.sizes()
    problem_of(region.http.get(audit[0], headers=region.headers()), 403, "wrong-role")
    assert region.sizes() == before


def test_a_missing_or_invalid_officer_is_400(region: Region) -> None:
    before = region.sizes()
    missing = problem_of(_report_call(region, officer=""), 400, "officer-required")
    assert "X-Officer" in missing["detail"]
    for officer, says in (("o" * 129, "at most 128"), ("\x7f-9", "control or format")):
        refused = region.http.get(
            f"/v1/subjects/{showcase_subject('huizhou', 2026)}/report",
            params=PROCUREMENT,
            headers=region.gw.headers(region.key, officer=officer),
        )
        assert says in problem_of(refused, 400, "officer-required")["detail"]
    assert region.sizes() == before


@pytest.mark.parametrize(
    ("params", "status", "slug", "says"),
    [
        ({"subject": "91441300MA4W7K3P2X"}, 400, "request-refused", "not a valid identifier"),
        ({"subject": "441302198506123315"}, 400, "request-refused", "not a valid identifier"),
        ({"legal_basis": " \u3000 "}, 400, "texts-required", "legal_basis"),
        ({"case": "CG\u202e7"}, 400, "request-refused", "control or format character"),
        ({"mode": "everything"}, 422, "invalid-request", "mode"),
        ({"purpose": ""}, 422, "invalid-request", "purpose"),
    ],
    ids=["bad-check-character", "bad-id-number", "blank-basis", "bidi-case", "mode", "purpose"],
)
def test_a_request_a_member_would_refuse_is_refused_before_anything_is_sent(
    region: Region, params: dict[str, str], status: int, slug: str, says: str
) -> None:
    before = region.sizes()
    for route in ("/report", ""):
        subject = params.get("subject", showcase_subject("huizhou", 2026))
        response = region.http.get(
            f"/v1/subjects/{subject}{route}",
            params={**PROCUREMENT, **{k: v for k, v in params.items() if k != "subject"}},
            headers=region.headers(),
        )
        assert says in problem_of(response, status, slug)["detail"]
    assert region.sizes() == before


def test_a_subject_type_not_registered_is_403(region: Region) -> None:
    key = region.gw.partner("org-only", ["fiscal_funds"], subject_types=["enterprise"])
    person = region.subjects(
        "shenzhen", "SELECT subject_id FROM subjects WHERE subject_type = 'individual' LIMIT 1"
    )[0]
    before = region.sizes()
    response = region.http.get(
        f"/v1/subjects/{person}",
        params={**PROCUREMENT, "purpose": "fiscal_funds"},
        headers=region.headers(key),
    )
    body = problem_of(response, 403, "subject-type-not-registered")
    assert person not in json.dumps(body)
    assert region.sizes() == before


def test_an_oversized_or_malformed_check_is_refused_and_nothing_is_written(
    region: Region,
) -> None:
    before = region.sizes()
    malformed = region.http.post(
        "/v1/checks",
        content=b'{"purpose": "land_auction", "subjects": [',
        headers=region.headers(**{"Content-Type": "application/json"}),
    )
    problem_of(malformed, 422, "invalid-request")
    unknown = region.http.post(
        "/v1/checks",
        json={"purpose": "land_auction", "legal_basis": "x", "case_reference": "c",
              "subjects": ["91441300MA4W7K3P2D"], "officer": "someone-else"},
        headers=region.headers(),
    )  # fmt: skip
    assert "officer" in problem_of(unknown, 422, "invalid-request")["detail"]
    small = GatewayHarness(region.fed, "shenzhen", limits=GatewayLimits(max_body_bytes=2048))
    try:
        key = small.partner("tight", ["land_auction"])
        body = {"purpose": "land_auction", "legal_basis": "x", "case_reference": "c"}
        oversized = httpx.post(
            small.url + "/v1/checks",
            json={**body, "subjects": ["91441300MA4W7K3P2D"] * 200},
            headers=region.headers(key),
        )
        assert "2048 bytes" in problem_of(oversized, 413, "body-too-large")["detail"]

        def streamed() -> Iterator[bytes]:  # no Content-Length: refused as it grows
            yield json.dumps(body)[:-1].encode() + b', "subjects": ['
            for _ in range(200):
                yield b'"91441300MA4W7K3P2D",'
            yield b'"91441300MA4W7K3P2D"]}'

        chunked = httpx.post(
            small.url + "/v1/checks",
            content=streamed(),
            headers=region.headers(key, **{"Content-Type": "application/json"}),
        )
        problem_of(chunked, 413, "body-too-large")
    finally:
        small.close()
    assert region.sizes() == before


def test_a_partner_over_its_rate_is_429_with_retry_after(region: Region) -> None:
    key = region.gw.partner("slow-bank", ["public_procurement"], rate_per_min=1)
    before = region.sizes()
    answered = [
        _report_call(region, key, subject="91441300MA4W7K3P2X").status_code for _ in range(5)
    ]
    assert answered == [400] * 5  # the burst: refused for the identifier, not for the rate
    over = _report_call(region, key)
    body = problem_of(over, 429, "rate-limited")
    assert int(over.headers["retry-after"]) >= 1 and "1 calls a minute" in body["detail"]
    assert region.sizes() == before
    other = _report_call(region, subject="91441300MA4W7K3P2X")  # another partner's bucket
    assert other.status_code == 400

"""Joint reward and punishment screening through the REST gateway, on a real federation.

huizhou serves the gateway; shenzhen holds a blacklisted and a red-list enterprise,
customs a seriously dishonest customs grade, huizhou itself an abnormal-operation
listing — each imported from a department file through the real importer. Every
call goes over real HTTP to the gateway, and from there over real mutual TLS to
the members, under the real memorandum.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fedharness import Federation
from gatewayharness import GatewayHarness
from sqlalchemy import func, select
from typer.testing import CliRunner

from creditexchange.clock import china_today
from creditexchange.identifiers import resident_id_check_character, uscc_check_character
from creditexchange.node.catalog import load_catalog
from creditexchange.node.cli import app
from creditexchange.node.database import open_database
from creditexchange.node.database.models import SCREENING_FEEDBACK, SCREENINGS
from creditexchange.node.federation.screening import measures_report
from creditexchange.node.records.importer import import_file

pytestmark = [pytest.mark.slow]

MEMBERS = ("huizhou", "shenzhen", "customs")
TODAY = china_today()


def uscc(body: str) -> str:
    """A unified social credit code from its first 17 characters."""
    return body + uscc_check_character(body)


BLACKLISTED = uscc("91440300MA5FXK0Q8")  # a Shenzhen enterprise on the black list
HONOURED = uscc("91440300MA5GRED18")  # a Shenzhen enterprise on the red list
CLEAN = uscc("91441300MA4W7K3P2")  # nothing anywhere
LIST_DOCUMENT = "深发改信〔2026〕12号"
PERSON = "44030119900101123" + resident_id_check_character("44030119900101123")


def _ago(days: int) -> str:
    return (TODAY - dt.timedelta(days=days)).isoformat()


def _import(
    fed: Federation, member: str, theme: str, rows: list[dict[str, Any]], tmp: Path
) -> None:
    node = fed.nodes[member]
    path = tmp / f"{member}-{theme}.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    engine = open_database(node.config.database_url)
    try:
        summary = import_file(engine, load_catalog(), path, theme, reject_dir=tmp / "rejects")
    finally:
        engine.dispose()
    assert (summary.inserted, summary.rejected) == (len(rows), 0), summary


def _subject(code: str, name: str) -> dict[str, str]:
    return {"subject_id": code, "subject_type": "enterprise", "subject_name": name}


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("screening")
    federation = Federation(root, MEMBERS, {}, subjects=4)
    try:
        files = root / "files"
        files.mkdir()
        black = _subject(BLACKLISTED, "深圳市失信建设有限公司")
        red = _subject(HONOURED, "深圳市守信科技有限公司")
        _import(
            federation,
            "shenzhen",
            "serious_dishonesty",
            [
                {
                    **black,
                    "record_key": LIST_DOCUMENT,
                    "list_name": "严重失信主体名单",
                    "list_authority": "深圳市发展和改革委员会",
                    "inclusion_document_number": LIST_DOCUMENT,
                    "inclusion_reason": "拒不履行法定义务，严重影响司法机关公信力",
                    "inclusion_date": _ago(60),
                    "legal_basis": "《失信行为纠正后的信用信息修复管理办法（试行）》",
                }
            ],
            files,
        )
        _import(
            federation,
            "shenzhen",
            "serious_dishonesty",
            [
                {
                    "subject_id": PERSON,
                    "subject_type": "individual",
                    "subject_name": "张三丰",
                    "record_key": "深发改信〔2026〕31号",
                    "list_name": "严重失信主体名单",
                    "list_authority": "深圳市发展和改革委员会",
                    "inclusion_reason": "虚假承诺",
                    "inclusion_date": _ago(45),
                    "legal_basis": "国办发〔2020〕49号",
                }
            ],
            files,
        )
        _import(
            federation,
            "shenzhen",
            "honours",
            [
                {
                    **red,
                    "record_key": "深府〔2026〕7号-3",
                    "honour_name": "守合同重信用企业",
                    "honour_level": "provincial",
                    "awarding_authority": "广东省市场监督管理局",
                    "document_number": "粤市监〔2026〕7号",
                    "award_date": _ago(30),
                    "valid_until": (TODAY + dt.timedelta(days=700)).isoformat(),
                }
            ],
            files,
        )
        _import(
            federation,
            "customs",
            "customs_credit_grade",
            [
                {
                    **black,
                    "record_key": "SZHG-XY-2026-0042",
                    "regime": "order_282",
                    "grade": "seriously_dishonest",
                    "customs_code": "4403960ABC",
                    "decision_number": "深关信〔2026〕42号",
                    "decision_date": _ago(20),
                    "source_customs": "深圳海关",
                },
                {  # a grade since replaced: it triggers nothing
                    **red,
                    "record_key": "SZHG-XY-2025-0007",
                    "regime": "order_282",
                    "grade": "seriously_dishonest",
                    "customs_code": "4403960RED",
                    "decision_date": _ago(400),
                    "source_customs": "深圳海关",
                },
                {
                    **red,
                    "record_key": "SZHG-AEO-2026-0101",
                    "regime": "order_282",
                    "grade": "advanced_certified",
                    "customs_code": "4403960RED",
                    "decision_date": _ago(10),
                    "source_customs": "深圳海关",
                },
            ],
            files,
        )
        _import(
            federation,
            "huizhou",
            "abnormal_operation",
            [
                {
                    **black,
                    "record_key": "惠市监异〔2026〕88号",
                    "inclusion_reason": "no_annual_report",
                    "inclusion_decision_number": "惠市监异〔2026〕88号",
                    "inclusion_date": _ago(90),
                    "inclusion_authority": "惠州市市场监督管理局",
                }
            ],
            files,
        )
        yield federation
    finally:
        federation.close()


@pytest.fixture(scope="module")
def gw(fed: Federation) -> Iterator[GatewayHarness]:
    harness = GatewayHarness(fed, "huizhou")
    try:
        yield harness
    finally:
        harness.close()


@pytest.fixture(scope="module")
def land(gw: GatewayHarness) -> str:
    return gw.partner("land-centre", ["land_auction"])


@pytest.fixture(scope="module")
def fiscal(gw: GatewayHarness) -> str:
    return gw.partner("fiscal-bureau", ["fiscal_funds"])


def post(gw: GatewayHarness, key: str, path: str, body: Any, **headers: str) -> httpx.Response:
    return httpx.post(gw.url + path, json=body, headers=gw.headers(key, **headers), timeout=30)


def screen(gw: GatewayHarness, key: str, scene: str, subjects: list[str]) -> httpx.Response:
    return post(
        gw,
        key,
        "/v1/screenings",
        {"scene": scene, "subjects": subjects, "case_reference": "HZ-TD-2026-018"},
    )


@pytest.fixture(scope="module")
def auction(gw: GatewayHarness, land: str) -> dict[str, Any]:
    """The land-auction screening of three bidders: blacklisted, honoured, clean."""
    response = screen(gw, land, "land_auction", [BLACKLISTED, HONOURED, CLEAN])
    assert response.status_code == 201, response.text
    document: dict[str, Any] = response.json()
    return document


def by_measure(subject: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["measure"]: m for m in subject["measures"]}


def test_a_blacklisted_enterprise_is_kept_out_of_a_land_auction_with_its_record_and_basis(
    auction: dict[str, Any],
) -> None:
    assert auction["complete"] is True
    assert auction["scene"]["purpose"] == "land_auction"
    blacklisted = auction["subjects"][0]
    assert blacklisted["subject"] == BLACKLISTED
    assert blacklisted["name"] == "深圳市失信建设有限公司"
    measures = by_measure(blacklisted)
    barred = measures["serious_dishonesty_list"]
    assert barred["kind"] == "prohibit"
    assert barred["binding"] is True
    assert "国发〔2016〕33号" in barred["legal_basis"]
    (record,) = barred["records"]
    assert record["member"] == "shenzhen"
    assert record["detail"] == "record"
    assert record["record_key"] == LIST_DOCUMENT
    assert record["decision_date"] == _ago(60)
    assert record["source_department"] == "development_reform"


def test_a_grade_triggers_only_the_measure_its_value_names(auction: dict[str, Any]) -> None:
    measures = by_measure(auction["subjects"][0])
    graded = measures["customs_seriously_dishonest"]
    assert graded["kind"] == "restrict"
    (record,) = graded["records"]
    assert record["member"] == "customs"
    assert record["condition"] == {"field": "grade", "value": "seriously_dishonest"}
    assert "customs_dishonest" not in measures  # the grade is seriously dishonest, not dishonest


def test_the_own_store_is_screened_too(auction: dict[str, Any]) -> None:
    abnormal = by_measure(auction["subjects"][0])["abnormal_operation"]
    (record,) = abnormal["records"]
    assert record["member"] == "huizhou"
    assert record["record_key"] == "惠市监异〔2026〕88号"


def test_a_clean_bidder_has_no_measure_and_a_complete_screening(auction: dict[str, Any]) -> None:
    honoured, clean = auction["subjects"][1:]
    assert clean["measures"] == [] and clean["undetermined"] == []
    assert clean["complete"] is True
    assert honoured["measures"] == []  # the land auction has no reward for the red list
    assert honoured["undetermined"] == []
    assert auction["summary"] == {
        "subjects": 3,
        "with_measures": 1,
        "measures": 3,
        "by_kind": {"prohibit": 1, "restrict": 2, "heightened_supervision": 0, "facilitate": 0},
    }


def test_the_screening_is_in_the_ledger_with_partner_officer_and_hashed_subjects(
    fed: Federation, gw: GatewayHarness, auction: dict[str, Any]
) -> None:
    entry = fed.entry_at("huizhou", auction["ledger_entry"])
    assert entry.kind == 8  # SCREENING
    assert entry.partner == "land-centre"
    assert entry.officer == "officer-9"
    assert entry.purpose == "land_auction"
    assert entry.subject_count == 3
    assert auction["id"] in entry.note
    assert BLACKLISTED not in str(entry)
    asked = [
        e
        for e in fed.ledger_entries("shenzhen", last=40)
        if e.get("partner") == "land-centre" and e.get("case_reference") == "HZ-TD-2026-018"
    ]
    # the provider recorded the partner too; it was asked one batch check of all three
    # bidders, then the record of the one theme that hit, for the one bidder that hit it
    assert sorted(
        (e.get("direction"), e.get("subject_count"), tuple(e.get("themes_asked", ())))
        for e in asked
    ) == [
        ("INCOMING", 1, ("serious_dishonesty",)),
        (
            "INCOMING",
            3,
            (
                "serious_dishonesty",
                "dishonest_debtor",
                "abnormal_operation",
                "customs_credit_grade",
            ),
        ),
    ]


def test_a_red_list_enterprise_is_given_its_facilitation(gw: GatewayHarness, fiscal: str) -> None:
    response = screen(gw, fiscal, "fiscal_funds", [HONOURED, BLACKLISTED])
    assert response.status_code == 201, response.text
    honoured, blacklisted = response.json()["subjects"]
    green = by_measure(honoured)["red_list"]
    assert green["kind"] == "facilitate"
    assert green["binding"] is False
    (record,) = green["records"]
    assert (record["member"], record["theme"]) == ("shenzhen", "honours")
    veto = by_measure(blacklisted)["serious_dishonesty_list"]
    assert veto["kind"] == "prohibit"  # the one-vote veto of fiscal funds


def test_an_individual_is_screened_hit_only_and_masked(fed: Federation, gw: GatewayHarness) -> None:
    hiring = gw.partner("civil-service-bureau", ["civil_service_hiring"])
    response = screen(gw, hiring, "civil_service_hiring", [PERSON])
    assert response.status_code == 201, response.text
    assert PERSON not in response.text
    (person,) = response.json()["subjects"]
    assert person["subject"] == PERSON[:6] + "********" + PERSON[14:]
    barred = by_measure(person)["serious_dishonesty_list"]
    assert (barred["kind"], barred["binding"]) == ("prohibit", True)
    assert "公务员法" in barred["legal_basis"]
    (record,) = barred["records"]
    assert (record["member"], record["detail"], record["record_key"]) == (
        "shenzhen",
        "hit_only",
        "",
    )
    kinds = [
        e.get("kind")
        for e in fed.ledger_entries("shenzhen", last=20)
        if e.get("partner") == "civil-service-bureau"
    ]
    assert kinds == ["CHECK"]  # asked hit / no-hit, never in full


def test_only_the_latest_grade_counts(gw: GatewayHarness) -> None:
    bank = gw.partner("bank-huizhou", ["bank_credit"])
    response = screen(gw, bank, "bank_credit", [HONOURED])
    assert response.status_code == 201, response.text
    (honoured,) = response.json()["subjects"]
    measures = by_measure(honoured)
    assert measures["customs_certified"]["kind"] == "facilitate"
    (record,) = measures["customs_certified"]["records"]
    assert record["record_key"] == "SZHG-AEO-2026-0101"
    assert record["condition"] == {"field": "grade", "value": "advanced_certified"}


def test_feedback_is_recorded_and_counted(
    fed: Federation, gw: GatewayHarness, land: str, auction: dict[str, Any]
) -> None:
    path = f"/v1/screenings/{auction['id']}/feedback"
    response = post(
        gw,
        land,
        path,
        {
            "items": [
                {
                    "subject": BLACKLISTED,
                    "measure": "serious_dishonesty_list",
                    "outcome": "applied",
                },
                {
                    "subject": BLACKLISTED,
                    "measure": "customs_seriously_dishonest",
                    "outcome": "not_applied",
                    "reason": "海关失信等级不属于土地竞买资格的法定禁止情形",
                },
            ]
        },
    )
    assert response.status_code == 201, response.text
    answer = response.json()
    assert (answer["recorded"], answer["applied"], answer["not_applied"]) == (2, 1, 1)
    entry = fed.entry_at("huizhou", answer["ledger_entry"])
    assert (entry.kind, entry.partner, entry.case_reference) == (9, "land-centre", "HZ-TD-2026-018")

    stored = httpx.get(
        gw.url + f"/v1/screenings/{auction['id']}", headers=gw.headers(land), timeout=10
    )
    assert stored.status_code == 200
    assert [(f["measure"], f["outcome"]) for f in stored.json()["feedback"]] == [
        ("serious_dishonesty_list", "applied"),
        ("customs_seriously_dishonest", "not_applied"),
    ]

    counts = {(c.scene, c.department): c for c in measures_report(gw.database)}
    land_counts = counts[("land_auction", "land-centre")]
    assert (land_counts.triggers, land_counts.applied, land_counts.not_applied) == (3, 1, 1)
    assert land_counts.pending == 1
    assert land_counts.by_kind["prohibit"] == 1

    result = CliRunner().invoke(
        app,
        ["measures", "report", "--home", str(fed.nodes["huizhou"].home), "--json"],
    )
    assert result.exit_code == 0, result.output
    rows = {(r["scene"], r["department"]): r for r in json.loads(result.output)}
    assert rows[("land_auction", "land-centre")]["applied"] == 1
    assert rows[("land_auction", "land-centre")]["pending"] == 1
    tomorrow = (TODAY + dt.timedelta(days=1)).isoformat()
    later = CliRunner().invoke(
        app,
        ["measures", "report", "--home", str(fed.nodes["huizhou"].home), "--from", tomorrow],
    )
    assert later.exit_code == 0 and "no screening" in later.output


# --- refusals: the right status, a problem document, nothing written -------------------------


def _written(gw: GatewayHarness) -> tuple[int, int, int]:
    with gw.database.connect() as conn:
        screenings = conn.execute(select(func.count()).select_from(SCREENINGS)).scalar_one()
        feedback = conn.execute(select(func.count()).select_from(SCREENING_FEEDBACK)).scalar_one()
    return gw.gateway.log.size(), screenings, feedback


def _refused(gw: GatewayHarness, response: httpx.Response, status: int, slug: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == f"urn:credit-exchange:problem:{slug}"
    assert problem["status"] == status and problem["title"] and problem["detail"]
    return str(problem["detail"])


INDIVIDUAL = "44130219850612331" + "4"


@pytest.mark.parametrize(
    ("body", "status", "slug", "says"),
    [
        (
            {"scene": "fiscal_funds", "subjects": [CLEAN], "case_reference": "C-1"},
            403,
            "purpose-not-registered",
            "fiscal_funds",
        ),
        (
            {"scene": "moon_landing", "subjects": [CLEAN], "case_reference": "C-1"},
            422,
            "unknown-scene",
            "land_auction",
        ),
        (
            {"scene": "land_auction", "subjects": [CLEAN[:-1] + "0"], "case_reference": "C-1"},
            400,
            "request-refused",
            "check character",
        ),
        (
            {"scene": "land_auction", "subjects": [CLEAN, CLEAN], "case_reference": "C-1"},
            422,
            "invalid-screening",
            "repeats subject 1",
        ),
        (
            {"scene": "land_auction", "subjects": [INDIVIDUAL], "case_reference": "C-1"},
            422,
            "invalid-screening",
            "individual",
        ),
        (
            {"scene": "land_auction", "subjects": [], "case_reference": "C-1"},
            422,
            "invalid-request",
            "subjects",
        ),
        (
            {"scene": "land_auction", "subjects": [CLEAN] * 1001, "case_reference": "C-1"},
            422,
            "invalid-request",
            "1000",
        ),
        (
            {"scene": "land_auction", "subjects": [CLEAN], "case_reference": "C-1", "x": 1},
            422,
            "invalid-request",
            "x",
        ),
        ({"scene": "land_auction", "subjects": [CLEAN]}, 422, "invalid-request", "case_reference"),
    ],
    ids=[
        "purpose-not-registered",
        "unknown-scene",
        "bad-check-character",
        "subject-twice",
        "individual-in-land-auction",
        "no-subject",
        "too-many-subjects",
        "unknown-key",
        "no-case",
    ],
)
def test_a_screening_refused_says_why_and_writes_nothing(
    gw: GatewayHarness, land: str, body: dict[str, Any], status: int, slug: str, says: str
) -> None:
    before = _written(gw)
    detail = _refused(gw, post(gw, land, "/v1/screenings", body), status, slug)
    assert says in detail
    assert _written(gw) == before


def test_malformed_and_oversized_bodies_are_refused_before_anything_is_done(
    gw: GatewayHarness, land: str
) -> None:
    before = _written(gw)
    headers = {**gw.headers(land), "Content-Type": "application/json"}
    garbage = httpx.post(
        gw.url + "/v1/screenings", content=b'{"scene": "land_auction", ', headers=headers
    )
    _refused(gw, garbage, 422, "invalid-request")
    huge = b'{"scene": "land_auction", "subjects": ["' + b"9" * (2 << 20) + b'"]}'
    oversized = httpx.post(gw.url + "/v1/screenings", content=huge, headers=headers, timeout=30)
    assert "split the request" in _refused(gw, oversized, 413, "body-too-large")
    assert _written(gw) == before


def test_an_unknown_screening_is_not_found(gw: GatewayHarness, land: str) -> None:
    before = _written(gw)
    for screening_id in ("0" * 32, "not-an-id"):
        got = httpx.get(gw.url + f"/v1/screenings/{screening_id}", headers=gw.headers(land))
        _refused(gw, got, 404, "screening-not-found")
        item = {"subject": CLEAN, "measure": "serious_dishonesty_list", "outcome": "applied"}
        fed_back = post(gw, land, f"/v1/screenings/{screening_id}/feedback", {"items": [item]})
        _refused(gw, fed_back, 404, "screening-not-found")
    assert _written(gw) == before


def test_another_partner_may_neither_read_nor_answer_a_screening(
    gw: GatewayHarness, fiscal: str, auction: dict[str, Any]
) -> None:
    before = _written(gw)
    item = {"subject": BLACKLISTED, "measure": "serious_dishonesty_list", "outcome": "applied"}
    fed_back = post(gw, fiscal, f"/v1/screenings/{auction['id']}/feedback", {"items": [item]})
    assert "another partner" in _refused(gw, fed_back, 403, "not-your-screening")
    got = httpx.get(gw.url + f"/v1/screenings/{auction['id']}", headers=gw.headers(fiscal))
    _refused(gw, got, 403, "not-your-screening")
    assert _written(gw) == before


@pytest.mark.parametrize(
    ("item", "status", "slug", "says"),
    [
        (
            {"subject": uscc("91441300MA4W7K3P9"), "measure": "abnormal_operation"},
            422,
            "not-screened",
            "was not screened",
        ),
        (
            {"subject": CLEAN, "measure": "serious_dishonesty_list"},
            422,
            "not-screened",
            "no measure",
        ),
        (
            {"subject": BLACKLISTED, "measure": "red_list"},
            422,
            "not-screened",
            "serious_dishonesty_list",
        ),
        (
            {"subject": BLACKLISTED, "measure": "abnormal_operation", "outcome": "not_applied"},
            422,
            "invalid-request",
            "reason",
        ),
        (
            {"subject": CLEAN[:-1] + "0", "measure": "abnormal_operation"},
            400,
            "invalid-identifier",
            "check character",
        ),
    ],
    ids=["subject-not-screened", "clean-subject", "measure-not-found", "no-reason", "bad-id"],
)
def test_feedback_outside_the_screening_is_refused_and_writes_nothing(
    gw: GatewayHarness,
    land: str,
    auction: dict[str, Any],
    item: dict[str, str],
    status: int,
    slug: str,
    says: str,
) -> None:
    before = _written(gw)
    body = {"items": [{"outcome": "applied", **item}]}
    response = post(gw, land, f"/v1/screenings/{auction['id']}/feedback", body)
    assert says in _refused(gw, response, status, slug)
    assert _written(gw) == before


def test_a_member_that_does_not_answer_makes_the_screening_incomplete_never_clean(
    fed: Federation, gw: GatewayHarness, land: str
) -> None:
    fed.stop("customs")
    try:
        response = screen(gw, land, "land_auction", [CLEAN])
    finally:
        fed.start("customs")
    assert response.status_code == 201, response.text
    document = response.json()
    assert document["complete"] is False
    assert document["subjects"][0]["complete"] is False
    assert "customs" in document["incomplete_reason"]
    status = {m["member"]: m["status"] for m in document["members"]}
    assert status["customs"] in {"unavailable", "timed_out"}
    assert status["shenzhen"] == "answered"
    entry = fed.entry_at("huizhou", document["ledger_entry"])
    assert entry.outcome.status == "INCOMPLETE"


def test_the_description_covers_the_screening_routes_in_both_languages(
    gw: GatewayHarness,
) -> None:
    described = httpx.get(gw.url + "/openapi.json", timeout=10).json()
    paths = described["paths"]
    for path, method, ok in (
        ("/v1/screenings", "post", "201"),
        ("/v1/screenings/{screening_id}", "get", "200"),
        ("/v1/screenings/{screening_id}/feedback", "post", "201"),
    ):
        operation = paths[path][method]
        assert operation["tags"] == ["screenings"]
        text = operation["description"]
        assert any("\u4e00" <= c <= "\u9fff" for c in text) and " the " in text
        assert {ok, "401", "403", "422", "429"} <= set(operation["responses"])
        assert list(operation["responses"]["403"]["content"]) == ["application/problem+json"]
    models = described["components"]["schemas"]
    for name in ("ScreeningRequest", "FeedbackRequest", "ScreeningAnswer"):
        assert models[name].get("examples"), name
    for name in (
        "ScreeningRequest",
        "ScreeningAnswer",
        "StoredScreening",
        "ScreenedSubject",
        "AppliedMeasure",
        "TriggeringRecord",
        "FeedbackRequest",
        "FeedbackItemIn",
        "FeedbackAnswer",
    ):
        for field, spec in models[name]["properties"].items():
            assert spec.get("description") or "$ref" in spec or "allOf" in spec, (name, field)

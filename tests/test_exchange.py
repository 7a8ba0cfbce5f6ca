"""Signed cross-city queries on a real three-node federation on loopback.

huizhou and shenzhen keep their stores in SQLite, customs in PostgreSQL. Every
call goes through real mutual TLS, the real memorandum, the real ledgers.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import postgres_schema
from fedharness import Federation
from sqlalchemy import text

from creditexchange.devtools.sample import showcase_subject
from creditexchange.errors import ExchangeError, QueryRefused
from creditexchange.node.catalog import load_catalog
from creditexchange.node.database import open_database
from creditexchange.node.exchange.answer_view import distinct_reasons, instead_of, refusal_json
from creditexchange.node.ledger import merkle
from creditexchange.v1 import audit_pb2, exchange_pb2, exchange_pb2_grpc

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

MEMBERS = ("huizhou", "shenzhen", "customs")
PUBLIC = "r.status <> 'expired' AND (r.publicity_end IS NULL OR r.publicity_end >= CURRENT_DATE)"
ENTERPRISE = showcase_subject("huizhou", 2026)
PERSON = "441302198506123314"  # a valid resident identity number
PENALTY_TYPES = load_catalog().theme("admin_penalty").field_by_name["penalty_type"].codes or {}
PROCUREMENT = {
    "purpose": "public_procurement",
    "legal_basis": "政府采购法第二十二条",
    "case_reference": "CG-2026-0001",
    "officer": "officer-7",
}


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    with postgres_schema() as pg_url:
        federation = Federation(tmp_path_factory.mktemp("federation"), MEMBERS, {"customs": pg_url})
        try:
            yield federation
        finally:
            federation.close()


def _subjects(fed: Federation, member: str, sql: str) -> list[str]:
    database = open_database(fed.nodes[member].config.database_url)
    try:
        with database.connect() as conn:
            return [row[0] for row in conn.execute(text(sql))]
    finally:
        database.dispose()


def test_query_answer_is_verified_filtered_and_recorded_on_both_sides(fed: Federation) -> None:
    subject = showcase_subject("huizhou", 2026)
    answer = fed.ask("shenzhen", subject, to="huizhou", **PROCUREMENT)

    (shown,) = answer.subjects
    assert shown.subject_id == subject and shown.found and shown.subject_type == "enterprise"
    themes = {t.theme: t for t in shown.themes}
    assert themes["registration"].allowed and themes["registration"].records
    licence = themes["admin_license"]
    assert "legal_rep_id_number" in licence.masked_fields
    for record in licence.records:
        value = record.fields.get("legal_rep_id_number")
        if value:
            assert "********" in value  # masked, never in clear
    assert all(t.allowed for t in shown.themes)  # no theme asked: only what the policy allows
    assert len(answer.checks) == 4

    # the provider recorded exactly this request and this answer, at the receipt's index
    provided = fed.entry_at("huizhou", answer.receipt.leaf_index)
    assert provided.SerializeToString(deterministic=True) == answer.receipt.entry
    assert provided.direction == audit_pb2.INCOMING and provided.requester == "shenzhen"
    assert provided.request_digest == answer.request_digest
    assert (
        provided.answer_digest
        == hashlib.sha256(
            exchange_pb2.Answer(body=answer.body.SerializeToString(deterministic=True)).body
        ).digest()
    )
    assert provided.case_reference == "CG-2026-0001" and provided.officer == "officer-7"
    assert subject.encode() not in answer.receipt.entry  # the subject only as an HMAC

    # and the requester recorded its outgoing query with the provider's receipt
    own = fed.entry_at("shenzhen", answer.own_receipt.index)
    assert own.direction == audit_pb2.OUTGOING and own.responder == "huizhou"
    assert own.remote_receipt.leaf_index == answer.receipt.leaf_index
    assert own.remote_receipt.checkpoint == answer.receipt.checkpoint
    assert own.outcome.status == "OK"


def test_check_on_an_individual_says_hit_and_nothing_more(fed: Federation) -> None:
    listed = _subjects(
        fed,
        "huizhou",
        "SELECT s.subject_id FROM subjects s JOIN records r ON r.subject_id = s.subject_id "
        "WHERE s.subject_type = 'individual' AND r.theme = 'dishonest_debtor' "
        f"AND {PUBLIC} LIMIT 1",
    )
    assert listed, "the sample has an individual on the dishonest debtor list"
    answer = fed.ask(
        "shenzhen",
        listed[0],
        to="huizhou",
        purpose="civil_service_hiring",
        legal_basis="公务员法第二十六条",
        case_reference="GWY-2026-17",
        officer="hr-3",
        check=True,
        themes=["dishonest_debtor"],
    )
    (shown,) = answer.subjects
    assert shown.subject_id != listed[0] and "********" in shown.subject_id
    assert not shown.name and shown.found  # found: on a list checked, nothing more
    assert not answer.body.subjects[0].found  # the provider says nothing else of the person
    (theme,) = shown.themes
    assert theme.allowed and theme.hit and not theme.records and theme.mode == "check"
    assert not theme.revealed_fields and not theme.masked_fields


def test_individual_in_full_mode_is_refused_and_recorded(fed: Federation) -> None:
    individual = _subjects(
        fed, "huizhou", "SELECT subject_id FROM subjects WHERE subject_type = 'individual' LIMIT 1"
    )[0]
    with pytest.raises(QueryRefused) as refused:
        fed.ask(
            "shenzhen",
            individual,
            to="huizhou",
            purpose="civil_service_hiring",
            legal_basis="公务员法第二十六条",
            case_reference="GWY-2026-17",
            officer="hr-3",
            themes=["serious_dishonesty"],
        )
    assert refused.value.status == "PERMISSION_DENIED"
    (entry,) = fed.ledger_entries("huizhou")
    assert entry["outcome"]["status"] == "PERMISSION_DENIED"
    assert entry["requester"] == "shenzhen"
    (own,) = fed.ledger_entries("shenzhen")
    assert own["outcome"]["status"] == "PERMISSION_DENIED" and own["direction"] == "OUTGOING"


def test_batch_check_answers_every_subject_in_order(fed: Federation) -> None:
    listed = _subjects(
        fed,
        "huizhou",
        "SELECT DISTINCT r.subject_id FROM records r JOIN subjects s ON s.subject_id = "
        "r.subject_id WHERE r.theme = 'admin_penalty' AND s.subject_type = 'enterprise' "
        f"AND {PUBLIC} LIMIT 3",
    )
    clean = _subjects(
        fed,
        "huizhou",
        "SELECT subject_id FROM subjects WHERE subject_type = 'enterprise' AND subject_id NOT IN "
        "(SELECT subject_id FROM records WHERE theme = 'admin_penalty') LIMIT 3",
    )
    subjects = [*listed, *clean]
    answer = fed.run(
        fed.client("shenzhen").batch_check(
            subjects,
            to="huizhou",
            purpose="land_auction",
            legal_basis="招标拍卖挂牌出让国有建设用地使用权规定",
            case_reference="TD-2026-08",
            officer="auction-system",
            themes=["admin_penalty"],
        )
    )
    assert [s.subject_id for s in answer.subjects] == subjects
    hits = [s.themes[0].hit for s in answer.subjects]
    assert hits[: len(listed)] == [True] * len(listed)
    assert hits[len(listed) :] == [False] * len(clean)
    # found: true exactly for the subjects with a hit, in Python and in JSON alike
    assert [s.found for s in answer.subjects] == hits
    assert [s["found"] for s in answer.to_json()["subjects"]] == hits
    entry = fed.entry_at("huizhou", answer.receipt.leaf_index)
    assert entry.kind == audit_pb2.BATCH_CHECK and len(entry.subject_hmacs) == len(subjects)


def test_customs_on_postgres_answers_the_cities(fed: Federation) -> None:
    graded = _subjects(
        fed,
        "customs",
        "SELECT subject_id FROM records WHERE theme = 'customs_credit_grade' LIMIT 1",
    )[0]
    answer = fed.ask(
        "huizhou",
        graded,
        to="customs",
        purpose="bank_credit",
        legal_basis="海关注册登记和备案企业信用管理办法",
        case_reference="LOAN-2026-55",
        officer="bank-review",
        themes=["customs_credit_grade"],
    )
    assert answer.subjects[0].themes[0].records
    assert fed.entry_at("customs", answer.receipt.leaf_index).requester == "huizhou"


def test_audit_service_proves_inclusion_and_consistency(fed: Federation) -> None:
    first = fed.ask("shenzhen", showcase_subject("huizhou", 2026), to="huizhou", **PROCUREMENT)
    second = fed.ask("shenzhen", showcase_subject("huizhou", 2026), to="huizhou", **PROCUREMENT)

    async def audit() -> tuple[Any, Any, Any]:
        stub = exchange_pb2_grpc.AuditStub(fed.client("shenzhen").channel("huizhou"))
        checkpoint = await stub.GetCheckpoint(exchange_pb2.GetCheckpointRequest())
        size = int(checkpoint.checkpoint.split("\n")[1])
        inclusion = await stub.GetInclusionProof(
            exchange_pb2.GetInclusionProofRequest(
                leaf_index=first.receipt.leaf_index, tree_size=size
            )
        )
        consistency = await stub.GetConsistencyProof(
            exchange_pb2.GetConsistencyProofRequest(
                first=_size(first.receipt.checkpoint), second=size
            )
        )
        return checkpoint, inclusion, consistency

    checkpoint, inclusion, consistency = fed.run(audit())
    size, root = _size(checkpoint.checkpoint), _root(checkpoint.checkpoint)
    assert size >= second.receipt.leaf_index + 1 and inclusion.tree_size == size
    merkle.verify_inclusion(
        first.receipt.leaf_hash, first.receipt.leaf_index, size, list(inclusion.hashes), root
    )
    merkle.verify_consistency(
        _size(first.receipt.checkpoint),
        size,
        _root(first.receipt.checkpoint),
        root,
        list(consistency.hashes),
    )


def _size(note: str) -> int:
    return int(note.split("\n")[1])


def _root(note: str) -> bytes:
    return base64.b64decode(note.split("\n")[2])


def test_get_memorandum_returns_the_installed_version(fed: Federation) -> None:
    response = fed.run(fed.client("huizhou").memorandum("shenzhen"))
    assert response.version == 1
    path: Path = fed.nodes["shenzhen"].config.policy_dir / "current.json"
    assert response.envelope_json == path.read_bytes()


def test_health_reflection_and_metrics_are_served(fed: Federation) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
    from prometheus_client import generate_latest

    fed.ask("shenzhen", showcase_subject("huizhou", 2026), to="huizhou", **PROCUREMENT)
    with pytest.raises(QueryRefused):
        fed.ask(
            "shenzhen",
            showcase_subject("huizhou", 2026),
            to="huizhou",
            themes=["customs_credit_grade"],  # no rule covers it: the provider refuses
            **PROCUREMENT,
        )

    async def probe() -> tuple[Any, list[str]]:
        channel = fed.client("shenzhen").channel("huizhou")
        health = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="creditexchange.v1.CreditExchange")
        )
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        names: list[str] = []
        async for reply in stub.ServerReflectionInfo(iter([request])):
            names += [s.name for s in reply.list_services_response.service]
        return health, names

    health, services = fed.run(probe())
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert {"creditexchange.v1.CreditExchange", "creditexchange.v1.Audit"} <= set(services)

    text = generate_latest(fed.servers["huizhou"].metrics.registry).decode()
    assert 'credit_node_queries_total{decision="allow",method="Query",purpose=' in text
    assert 'requester="shenzhen"' in text and 'status="PERMISSION_DENIED"' in text
    assert 'credit_node_refusals_total{reason="policy"}' in text
    assert "credit_node_ledger_batch_entries_count" in text


def test_logs_are_json_and_never_carry_a_subject(
    fed: Federation, caplog: pytest.LogCaptureFixture
) -> None:
    import json

    from creditexchange.node.app.logs import JsonFormatter

    subject = showcase_subject("huizhou", 2026)
    with caplog.at_level("INFO", logger="node.exchange"):
        fed.ask("shenzhen", subject, to="huizhou", **PROCUREMENT)
    lines = [JsonFormatter().format(r) for r in caplog.records if r.name == "node.exchange"]
    assert lines
    for line in lines:
        data = json.loads(line)
        assert data["requester"] == "shenzhen" and data["status"] == "OK"
        assert subject not in line


def test_a_record_under_objection_is_marked_in_full_and_check_answers(fed: Federation) -> None:
    from creditexchange.node.records.objections import (
        ObjectionOutcome,
        close_objection,
        open_objection,
    )

    subject = showcase_subject("huizhou", 2026)
    (record_key,) = _subjects(
        fed,
        "huizhou",
        f"SELECT record_key FROM records r WHERE subject_id = '{subject}' "
        f"AND theme = 'admin_penalty' AND {PUBLIC} LIMIT 1",
    )
    database = open_database(fed.nodes["huizhou"].config.database_url)
    try:
        case = open_objection(
            database,
            "admin_penalty",
            [record_key],
            reason="the company says it paid",
            applicant="the company",
            channel="online",
        )
        full = fed.ask("shenzhen", subject, to="huizhou", themes=["admin_penalty"], **PROCUREMENT)
        check = fed.ask(
            "shenzhen", subject, to="huizhou", themes=["admin_penalty"], check=True, **PROCUREMENT
        )
        close_objection(database, case.number, ObjectionOutcome.CONFIRMED)
    finally:
        database.dispose()
    (theme,) = full.subjects[0].themes
    (marked,) = [r for r in theme.records if r.record_key == record_key]
    assert marked.under_objection and marked.status == "objection" and theme.under_objection
    (checked,) = check.subjects[0].themes
    assert checked.hit and checked.under_objection


# -- the requester's interface ---------------------------------------------------------------


def test_an_answer_in_json_has_the_python_names_numbers_modes_and_labels(fed: Federation) -> None:
    subject = showcase_subject("huizhou", 2026)
    answer = fed.ask("shenzhen", subject, to="huizhou", themes=["admin_penalty"], **PROCUREMENT)
    data = json.loads(json.dumps(answer.to_json(), ensure_ascii=False))

    assert data["outcome"] == "answered" and data["status"] == "OK"
    assert data["provider"] == answer.provider == "huizhou"
    assert data["requester"] == answer.requester == "shenzhen"
    assert data["receipt"]["leaf_index"] == answer.receipt.leaf_index
    assert data["own_receipt"]["index"] == answer.own_receipt.index
    assert (
        data["memorandum_version"] == 1
        and data["memorandum_hash"] == answer.body.memorandum_hash.hex()
    )
    assert data["checks"] == list(answer.checks) and len(data["checks"]) == 4
    assert dt.datetime.fromisoformat(data["answered_at"]).utcoffset() == dt.timedelta(hours=8)

    (shown,) = data["subjects"]
    assert shown["subject_id"] == subject and shown["found"] is True
    (theme,) = shown["themes"]
    assert theme == answer.subjects[0].themes[0].to_json()  # one name for each thing
    assert theme["mode"] == "full" and theme["theme_name"] == "行政处罚信息（双公示）"
    assert theme["hit"] is True and theme["records"]
    assert theme["field_labels"]["fine_amount"] == "罚款金额（万元）"
    assert theme["field_labels"]["legal_rep_id_number"] in theme["field_labels"].values()
    for record in theme["records"]:
        for date in (record["decision_date"], record["valid_until"], record["publicity_end"]):
            assert date is None or dt.date.fromisoformat(date)
        fine = record["fields"].get("fine_amount")
        assert fine is None or isinstance(fine, int | float), fine  # a number, not text
        assert record["value_labels"].get("penalty_type") in (None, *PENALTY_TYPES.values())
    fines = [r["fields"].get("fine_amount") for r in theme["records"]]
    assert any(isinstance(f, float) for f in fines), "the showcase subject has a fine"
    penalty = theme["records"][0]
    assert (
        penalty["value_labels"]["penalty_type"] == PENALTY_TYPES[penalty["fields"]["penalty_type"]]
    )


def test_the_python_api_requires_legal_basis_case_and_officer(fed: Federation) -> None:
    client = fed.client("shenzhen")
    subject = showcase_subject("huizhou", 2026)
    before = _sizes(fed)
    with pytest.raises(TypeError, match="officer"):
        fed.run(
            client.query(  # type: ignore[call-arg]
                subject, to="huizhou", purpose="public_procurement", legal_basis="政府采购法",
                case_reference="C-1",
            )
        )  # fmt: skip
    with pytest.raises(TypeError, match="legal_basis"):
        fed.run(
            client.batch_check(  # type: ignore[call-arg]
                [subject], to="huizhou", purpose="land_auction", case_reference="C-1", officer="o"
            )
        )
    with pytest.raises(TypeError, match="case_reference"):
        fed.run(
            client.query(  # type: ignore[call-arg]
                subject, to="huizhou", purpose="public_procurement", legal_basis="政府采购法",
                officer="o",
            )
        )  # fmt: skip
    assert _sizes(fed) == before


def test_an_empty_case_reference_is_sent_for_the_policy_to_judge(fed: Federation) -> None:
    subject = showcase_subject("huizhou", 2026)
    with pytest.raises(QueryRefused) as refused:
        fed.ask("shenzhen", subject, to="huizhou", **{**PROCUREMENT, "case_reference": ""})
    assert refused.value.status == "FAILED_PRECONDITION"
    assert "requires a case reference" in refused.value.detail
    assert instead_of(refused.value) is None  # the reason says what to fix
    (theirs,) = fed.ledger_entries("huizhou")
    assert theirs["outcome"]["status"] == "FAILED_PRECONDITION"
    assert theirs["officer"] == "officer-7" and not theirs.get("case_reference")  # sent empty


def _sizes(fed: Federation) -> dict[str, int]:
    return {m: _ledger_size(fed, m) for m in ("huizhou", "shenzhen")}


def _ledger_size(fed: Federation, member: str) -> int:
    return fed.servers[member].ledger.log.size()


@pytest.mark.parametrize(
    ("subjects", "says"),
    [
        pytest.param(["91441300MA4W7K3P2X"], "the subject is not a valid identifier: check "
                     "character is 'X', expected 'D'", id="a-credit-code"),
        pytest.param(["441302198506123315"], "check character is '5', expected '4'",
                     id="an-identity-number"),
        pytest.param([showcase_subject("huizhou", 2026), "91441300MA4W7K3P2X"],
                     "subject 2 is not a valid identifier", id="the-second-of-a-batch"),
    ],
)  # fmt: skip
def test_a_subject_failing_its_check_character_is_refused_before_anything_is_sent(
    fed: Federation, subjects: list[str], says: str
) -> None:
    before = _sizes(fed)
    client = fed.client("shenzhen")
    texts: dict[str, Any] = {**PROCUREMENT, "purpose": "land_auction"}
    with pytest.raises(ExchangeError, match="nothing was sent") as refused:
        if len(subjects) == 1:
            fed.run(client.query(subjects[0], to="huizhou", check=True, **texts))
        else:
            fed.run(client.batch_check(subjects, to="huizhou", **texts))
    assert not isinstance(refused.value, QueryRefused)
    assert says in str(refused.value)
    assert _sizes(fed) == before  # nothing sent, nothing recorded on either side


@pytest.mark.parametrize(
    ("subject", "purpose", "says"),
    [
        pytest.param(
            ENTERPRISE, "tax_refund",
            ["purpose 'tax_refund' is not in memorandum version 1 (its purposes: fiscal_funds",
             "huizhou may be asked about enterprise subjects for purpose fiscal_funds, "
             "land_auction, public_procurement"],
            id="a-purpose-not-in-the-memorandum",
        ),
        pytest.param(
            ENTERPRISE, "customs_clearance",
            ["no rule of memorandum version 1 lets shenzhen ask huizhou about enterprise "
             "subjects for purpose customs_clearance",
             "huizhou may be asked about enterprise subjects for purpose fiscal_funds"],
            id="a-purpose-no-rule-lets-this-node-ask-that-provider-for",
        ),
        pytest.param(
            PERSON, "bank_credit",
            ["purpose bank_credit does not cover individual subjects in memorandum version 1 "
             "(it covers enterprise, individual_business)",
             "huizhou may be asked about individual subjects for purpose "],
            id="a-purpose-that-does-not-cover-the-subject-type",
        ),
    ],
)  # fmt: skip
def test_a_purpose_the_memorandum_rules_out_is_refused_before_anything_is_sent(
    fed: Federation, subject: str, purpose: str, says: list[str]
) -> None:
    before = _sizes(fed)
    with pytest.raises(ExchangeError, match="nothing was sent") as refused:
        fed.ask("shenzhen", subject, to="huizhou", **{**PROCUREMENT, "purpose": purpose})
    assert not isinstance(refused.value, QueryRefused)
    for sentence in says:
        assert sentence in str(refused.value)
    assert _sizes(fed) == before


def test_a_refusal_in_full_mode_says_once_to_retry_with_check(fed: Federation) -> None:
    with pytest.raises(QueryRefused) as refused:
        fed.ask(
            "shenzhen",
            PERSON,
            to="huizhou",
            purpose="civil_service_hiring",
            legal_basis="公务员法第二十六条",
            case_reference="GWY-2026-17",
            officer="hr-3",
        )
    assert refused.value.verified and refused.value.status == "PERMISSION_DENIED"
    assert refused.value.__notes__ == [
        "allowed instead: retry with --check: memorandum version 1 allows check mode for "
        "serious_dishonesty, honours, dishonest_debtor"
    ]
    data = refusal_json(refused.value)
    assert data == {
        "outcome": "refused",
        "status": "PERMISSION_DENIED",
        "provider": "huizhou",
        "reason": refused.value.detail,
        "reasons": [refused.value.detail],  # the same forbid for every theme: one reason
        "leaf_index": _ledger_size(fed, "huizhou") - 1,
        "verified": True,
        "instead": refused.value.__notes__[0].removeprefix("allowed instead: "),
    }
    # and with --check, the memorandum's suggestion is answered
    answer = fed.ask(
        "shenzhen",
        PERSON,
        to="huizhou",
        purpose="civil_service_hiring",
        legal_basis="公务员法第二十六条",
        case_reference="GWY-2026-17",
        officer="hr-3",
        check=True,
    )
    themes = {t.theme for t in answer.subjects[0].themes}
    assert themes == {"serious_dishonesty", "honours", "dishonest_debtor"}


def test_a_refusal_names_each_distinct_reason_once_and_the_themes_allowed(fed: Federation) -> None:
    with pytest.raises(QueryRefused) as refused:
        fed.ask(
            "shenzhen",
            ENTERPRISE,
            to="huizhou",
            themes=["customs_credit_grade", "customs_case"],
            **PROCUREMENT,
        )
    detail = refused.value.detail
    assert detail.count("denied by default") == 2  # the provider's signed text: one per theme
    (reason,) = distinct_reasons(detail)
    assert reason == (
        "denied by default: no rule of memorandum version 1 lets shenzhen ask huizhou about "
        "enterprise records of themes customs_credit_grade, customs_case for purpose "
        "public_procurement in full mode"
    )
    assert refused.value.__notes__ == [
        "allowed instead: ask without --theme (every theme allowed is answered): memorandum "
        "version 1 allows full mode for registration, admin_license, admin_penalty, "
        "serious_dishonesty, honours, abnormal_operation, dishonest_debtor, credit_commitment, "
        "credit_rating"
    ]

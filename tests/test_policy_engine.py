"""The decision engine: the "3+2" corpus, each semantic rule as a table, and properties.

* The corpus ``policy/corpus-3plus2.yaml`` runs case by case and covers every
  rule of the shipped memorandum.
* Table tests use small memoranda written here, one semantic per test.
* Property tests (hypothesis) check the engine against a plain reference
  evaluator written from the module's invariants, and the promises that hold for
  any request: fields only from applying permits, a matching forbid always
  denies, unknown names are always denied, ``decide`` never raises, check mode
  never reveals.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import hashlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from creditexchange.clock import CST
from creditexchange.errors import CorpusError, PolicyError
from creditexchange.node.catalog import Catalog, load_catalog
from creditexchange.policy.canonical import canonical_json
from creditexchange.policy.corpus import (
    check_case,
    load_corpus,
    load_memorandum,
    request_of,
    run_corpus,
)
from creditexchange.policy.document import Effect, Memorandum, Mode, Period
from creditexchange.policy.document import parse_memorandum as parse
from creditexchange.policy.engine import Decision, DecisionRequest, PolicyEngine, quota_period_start
from creditexchange.subjects import SUBJECT_TYPES

ROOT = Path(__file__).resolve().parent.parent
MEMORANDUM = ROOT / "policy" / "memorandum-3plus2.yaml"
CORPUS = ROOT / "policy" / "corpus-3plus2.yaml"
NOW = dt.datetime(2026, 11, 27, 2, 0, tzinfo=dt.UTC)
HASH = hashlib.sha256(b"test memorandum").digest()
CATALOG = load_catalog()


def shipped() -> tuple[Memorandum, bytes]:
    return load_memorandum(MEMORANDUM)


SHIPPED, SHIPPED_HASH = shipped()
SHIPPED_ENGINE = PolicyEngine(SHIPPED, SHIPPED_HASH, CATALOG)


def request(**overrides: Any) -> DecisionRequest:
    fields: dict[str, Any] = {
        "requester": "beta",
        "provider": "alpha",
        "purpose": "procurement",
        "subject_type": "enterprise",
        "theme": "admin_penalty",
        "mode": Mode.FULL,
        "time": NOW,
        "case_reference": "CASE-1",
        "officer": "officer-1",
    }
    fields.update(overrides)
    return DecisionRequest(**fields)


def rule(rule_id: str, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": rule_id,
        "effect": "permit",
        "intent": f"test rule {rule_id}",
        "providers": ["alpha"],
        "requesters": ["beta"],
        "purposes": ["procurement"],
        "subject_types": ["enterprise"],
        "themes": ["admin_penalty"],
        "modes": ["full", "check"],
    }
    data.update(overrides)
    return data


def memo_data(*rules: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "federation": "test",
        "title_zh": "测试备忘录",
        "title_en": "Test memorandum",
        "version": 7,
        "expires": "2027-12-31T16:00:00Z",
        "threshold": 1,
        "members": [
            {
                "id": member,
                "name_zh": member,
                "name_en": member,
                "role": "city",
                "region": "441300",
                "endpoint": f"{member}.test:7443",
            }
            for member in ("alpha", "beta", "gamma")
        ],
        "purposes": [
            {
                "code": "procurement",
                "name_zh": "政府采购",
                "name_en": "Procurement",
                "legal_basis": "《政府采购法》第二十二条",
                "subject_types": ["enterprise", "individual_business"],
            },
            {
                "code": "hiring",
                "name_zh": "公务员招录",
                "name_en": "Hiring",
                "legal_basis": "《公务员法》第二十六条",
                "subject_types": ["individual"],
            },
        ],
        "rules": list(rules) or [rule("p")],
    }
    data.update(overrides)
    return data


def engine(*rules: dict[str, Any], **overrides: Any) -> PolicyEngine:
    return PolicyEngine(parse(memo_data(*rules, **overrides), "test"), HASH, CATALOG)


def fields_of(theme: str) -> frozenset[str]:
    return frozenset(f.name for f in CATALOG.theme(theme).fields)


# --------------------------------------------------------------------------- the corpus

CORPUS_CASES = load_corpus(CORPUS)[0].cases


@pytest.mark.parametrize("case", CORPUS_CASES, ids=[c.name for c in CORPUS_CASES])
def test_corpus_case(case: Any) -> None:
    result = check_case(SHIPPED_ENGINE, case)
    assert result.passed, result.message


def test_run_corpus_passes_every_case(catalog: Catalog) -> None:
    results = run_corpus(CORPUS, catalog)
    assert len(results) >= 80
    assert [r.name for r in results if not r.passed] == []


def test_the_corpus_covers_every_rule_of_the_memorandum() -> None:
    named = {rule_id for case in CORPUS_CASES for rule_id in case.expect.rule_ids}
    assert {r.id for r in SHIPPED.rules} - named == set()
    statuses = {case.expect.status for case in CORPUS_CASES}
    assert statuses == {
        "OK",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "INVALID_ARGUMENT",
    }


def test_the_corpus_hash_is_sha256_of_the_canonical_json() -> None:
    memorandum, digest = load_memorandum(MEMORANDUM)
    assert digest == hashlib.sha256(canonical_json(memorandum.model_dump(mode="json"))).digest()
    assert (
        SHIPPED_ENGINE.decide(
            DecisionRequest(
                "shenzhen",
                "huizhou",
                "fiscal_funds",
                "enterprise",
                "registration",
                Mode.FULL,
                NOW,
                "c",
                "o",
            )
        ).memorandum_hash
        == digest
    )


def write_corpus(tmp_path: Path, cases: list[dict[str, Any]]) -> Path:
    target = tmp_path / "memorandum.yaml"
    target.write_text(yaml.safe_dump(memo_data(), allow_unicode=True), "utf-8")
    path = tmp_path / "corpus.yaml"
    path.write_text(
        yaml.safe_dump({"memorandum": "memorandum.yaml", "cases": cases}, allow_unicode=True),
        "utf-8",
    )
    return path


def a_case(name: str = "one", **expect: Any) -> dict[str, Any]:
    want = {"allowed": True, "status": "OK", "rule_ids": ["p"]}
    want.update(expect)
    return {
        "name": name,
        "request": {
            "requester": "beta",
            "provider": "alpha",
            "purpose": "procurement",
            "subject_type": "enterprise",
            "theme": "admin_penalty",
            "mode": "full",
            "time": NOW,
            "case_reference": "c",
            "officer": "o",
        },
        "expect": want,
    }


def test_a_corpus_case_that_fails_says_what_differed(tmp_path: Path, catalog: Catalog) -> None:
    path = write_corpus(
        tmp_path,
        [
            a_case("ok", reveal=[]),
            a_case("wrong", allowed=False, status="PERMISSION_DENIED", rule_ids=["x"]),
        ],
    )
    ok, wrong = run_corpus(path, catalog)
    assert ok.passed and ok.message == ""
    assert not wrong.passed
    assert "allowed: expected False, got True" in wrong.message
    assert "status: expected PERMISSION_DENIED, got OK" in wrong.message
    assert "rule_ids: missing ['x'], unexpected ['p']" in wrong.message


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: c["request"].update(colour="red"), "cases[1](second).request.colour"),
        (lambda c: c["expect"].update(reveals=[]), "cases[1](second).expect.reveals"),
        (lambda c: c.update(note="x"), "cases[1](second).note"),
        (lambda c: c["request"].pop("theme"), "cases[1](second).request.theme"),
        (
            lambda c: c["request"].update(time=dt.datetime(2026, 1, 1)),
            "cases[1](second).request: time must carry a time zone",
        ),
        (
            lambda c: c["expect"].update(allowed=False),
            "cases[1](second).expect: allowed False contradicts status OK",
        ),
        (lambda c: c["expect"].update(status="DENIED"), "cases[1](second).expect.status"),
        (lambda c: c.update(name="first"), "case name 'first' is used twice"),
    ],
)
def test_the_corpus_schema_is_strict_and_names_the_case(
    tmp_path: Path, catalog: Catalog, mutate: Any, expected: str
) -> None:
    second = a_case("second")
    mutate(second)
    path = write_corpus(tmp_path, [a_case("first"), second])
    with pytest.raises(CorpusError) as caught:
        run_corpus(path, catalog)
    assert expected in str(caught.value)


def test_a_corpus_naming_a_missing_memorandum_says_so(tmp_path: Path, catalog: Catalog) -> None:
    path = tmp_path / "corpus.yaml"
    path.write_text(yaml.safe_dump({"memorandum": "nowhere.yaml", "cases": [a_case()]}), "utf-8")
    with pytest.raises(CorpusError, match="cannot read memorandum"):
        run_corpus(path, catalog)


# --------------------------------------------------------------------------- compiling


@pytest.mark.parametrize(
    ("bad_rule", "expected"),
    [
        (
            rule("p", themes=["social_security"]),
            "rules[0](p).themes: theme 'social_security' is not in the catalog",
        ),
        (
            rule("p", fields={"admin_penalty": {"reveal": ["decision_number", "shoe_size"]}}),
            "rules[0](p).fields.admin_penalty.reveal: field(s) ['shoe_size'] are not in theme",
        ),
        (
            rule("p", fields={"admin_penalty": {"mask": ["list_name"]}}),
            "rules[0](p).fields.admin_penalty.mask: field(s) ['list_name']",
        ),
        (
            rule("p", fields={"admin_penalty": {"reveal": ["legal_rep_id_number"]}}),
            "rules[0](p).fields.admin_penalty.reveal: sensitive field(s) ['legal_rep_id_number']",
        ),
        (
            rule("f", effect="forbid", conditions={"officer_required": True}),
            "rules[0](f).conditions: a forbid applies unconditionally",
        ),
    ],
)
def test_the_engine_refuses_what_the_catalog_does_not_back(
    bad_rule: dict[str, Any], expected: str
) -> None:
    with pytest.raises(PolicyError) as caught:
        engine(bad_rule)
    assert expected in str(caught.value)


def test_the_shipped_memorandum_compiles_and_names_its_federation() -> None:
    assert {m.id for m in SHIPPED.members} == {
        "huizhou",
        "shenzhen",
        "dongguan",
        "heyuan",
        "shanwei",
        "customs",
    }
    assert SHIPPED.threshold == 4 and SHIPPED.version == 1
    assert SHIPPED.expires == dt.datetime(2027, 12, 31, 16, tzinfo=dt.UTC)
    assert sum(r.effect is Effect.FORBID for r in SHIPPED.rules) >= 2
    for r in SHIPPED.rules:
        assert r.intent.strip()
        if "individual" in r.subject_types and r.effect is Effect.PERMIT:
            assert r.modes == [Mode.CHECK], r.id
            assert set(r.themes) <= {"serious_dishonesty", "dishonest_debtor", "honours"}


# --------------------------------------------------------------------------- semantics


def test_deny_by_default() -> None:
    decision = engine(rule("p", requesters=["gamma"])).decide(request())
    assert not decision.allowed
    assert decision.status == "PERMISSION_DENIED"
    assert decision.rule_ids == () and decision.mode is None
    assert decision.reason.startswith("denied by default: no rule of memorandum version 7")
    assert decision.withhold == fields_of("admin_penalty")
    assert decision.reveal == decision.mask == frozenset()


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"requester": "omega"}, "unknown requester 'omega': not a member of federation test"),
        ({"provider": "omega"}, "unknown provider 'omega'"),
        ({"purpose": "marketing"}, "unknown purpose 'marketing'"),
        ({"theme": "social_security"}, "unknown theme 'social_security'"),
        ({"subject_type": "robot"}, "unknown subject type 'robot'"),
        ({"mode": "bulk"}, "unknown mode 'bulk'"),
        ({"time": dt.datetime(2026, 11, 27)}, "is not a datetime with a time zone"),
        ({"time": "2026-11-27T00:00:00Z"}, "is not a datetime with a time zone"),
        ({"requester": "alpha"}, "requester and provider are both 'alpha'"),
        ({"theme": "customs_light_status", "subject_type": "individual_business"}, "holds no"),
    ],
)
def test_malformed_requests_are_invalid_arguments(overrides: dict[str, Any], reason: str) -> None:
    decision = engine().decide(request(**overrides))
    assert (decision.allowed, decision.status) == (False, "INVALID_ARGUMENT")
    assert reason in decision.reason


def test_a_purpose_covers_only_its_subject_types() -> None:
    e = engine(rule("p", subject_types=["enterprise", "institution"]))
    decision = e.decide(request(subject_type="institution"))
    assert decision.status == "PERMISSION_DENIED"
    assert "purpose procurement does not cover subject type institution" in decision.reason
    assert e.decide(request()).allowed


def test_an_expired_memorandum_denies_everything_from_its_expiry_on() -> None:
    e = engine()
    expires = dt.datetime(2027, 12, 31, 16, tzinfo=dt.UTC)
    assert e.decide(request(time=expires - dt.timedelta(microseconds=1))).allowed
    for when in (expires, expires + dt.timedelta(days=400)):
        decision = e.decide(request(time=when))
        assert decision.status == "FAILED_PRECONDITION"
        assert decision.reason.startswith("memorandum version 7 expired on 2027-12-31T16:00:00Z")
    # before anything else is looked at
    assert e.decide(request(time=expires, purpose="nope")).status == "FAILED_PRECONDITION"


def test_a_rule_matches_on_every_dimension() -> None:
    e = engine(rule("p", modes=["check"]))
    assert e.decide(request(mode=Mode.CHECK)).allowed
    assert e.decide(request(mode="check")).allowed  # the plain string works as well
    full = e.decide(request())
    assert not full.allowed and "rule p allows check mode" in full.reason
    for overrides in (
        {"requester": "gamma"},
        {"provider": "gamma"},
        {"purpose": "hiring", "subject_type": "individual", "theme": "serious_dishonesty"},
        {"subject_type": "individual_business"},
        {"theme": "admin_license"},
    ):
        decision = e.decide(request(mode=Mode.CHECK, **overrides))
        assert not decision.allowed and decision.status == "PERMISSION_DENIED", overrides


@pytest.mark.parametrize(
    ("when", "allowed"),
    [
        (dt.datetime(2026, 6, 30, 23, 59, 59, tzinfo=CST), False),
        (dt.datetime(2026, 6, 30, 16, 0, tzinfo=dt.UTC), True),  # 07-01 00:00 CST
        (dt.datetime(2026, 7, 1, 0, 0, tzinfo=CST), True),
        (dt.datetime(2026, 9, 30, 23, 59, 59, 999999, tzinfo=CST), True),
        (dt.datetime(2026, 9, 30, 16, 0, tzinfo=dt.UTC), False),  # 10-01 00:00 CST
        (dt.datetime(2026, 9, 30, 20, 0, tzinfo=dt.UTC), False),  # still 09-30 in UTC
    ],
)
def test_validity_dates_are_inclusive_china_standard_time_days(
    when: dt.datetime, allowed: bool
) -> None:
    e = engine(rule("p", valid_from="2026-07-01", valid_until="2026-09-30"))
    decision = e.decide(request(time=when))
    assert decision.allowed is allowed
    if not allowed:
        assert "valid from 2026-07-01 to 2026-09-30 (China Standard Time" in decision.reason


def test_open_ended_windows() -> None:
    e = engine(
        rule("from", valid_from="2026-12-01"),
        rule("until", valid_until="2026-11-30", themes=["admin_license"]),
    )
    assert not e.decide(request()).allowed
    assert e.decide(request(time=dt.datetime(2026, 12, 1, tzinfo=CST))).allowed
    assert e.decide(request(theme="admin_license")).allowed
    assert not e.decide(
        request(theme="admin_license", time=dt.datetime(2026, 12, 1, tzinfo=CST))
    ).allowed


def test_a_forbid_beats_every_permit_and_names_itself() -> None:
    e = engine(
        rule("p1"),
        rule("p2", fields={"admin_penalty": {"reveal": ["decision_number"]}}),
        rule("f1", effect="forbid", intent="Never. Really."),
        rule("f2", effect="forbid", modes=["full"]),
        rule("f3", effect="forbid", modes=["check"]),
    )
    decision = e.decide(request())
    assert (decision.allowed, decision.status) == (False, "PERMISSION_DENIED")
    assert decision.rule_ids == ("f1", "f2")
    assert decision.reason == "denied: rule f1 forbids it: Never; rule f2 forbids it: test rule f2"
    assert decision.reveal == frozenset()


def test_a_forbid_outside_its_window_does_not_apply() -> None:
    e = engine(rule("p"), rule("f", effect="forbid", valid_until="2026-01-31"))
    assert e.decide(request()).allowed
    early = e.decide(request(time=dt.datetime(2026, 1, 31, 12, tzinfo=CST)))
    assert early.rule_ids == ("f",)


def test_a_forbid_wins_even_when_the_permit_s_conditions_fail() -> None:
    e = engine(rule("p", conditions={"case_reference_required": True}), rule("f", effect="forbid"))
    assert e.decide(request(case_reference="")).status == "PERMISSION_DENIED"


@pytest.mark.parametrize(
    ("overrides", "missing"),
    [
        ({"case_reference": ""}, "rule p requires a case reference (case_reference_required)"),
        ({"case_reference": " \t"}, "rule p requires a case reference"),
        ({"officer": ""}, "rule p requires the requesting officer (officer_required)"),
        (
            {"officer": "", "case_reference": ""},
            "rule p requires a case reference (case_reference_required) and the requesting "
            "officer (officer_required)",
        ),
    ],
)
def test_failed_conditions_deny_with_failed_precondition(
    overrides: dict[str, Any], missing: str
) -> None:
    e = engine(rule("p", conditions={"case_reference_required": True, "officer_required": True}))
    decision = e.decide(request(**overrides))
    assert (decision.allowed, decision.status) == (False, "FAILED_PRECONDITION")
    assert decision.rule_ids == ("p",)
    assert decision.reason.startswith(f"denied: {missing}")


def test_a_permit_without_conditions_applies_when_another_s_fail() -> None:
    e = engine(
        rule(
            "strict",
            conditions={"case_reference_required": True},
            fields={"admin_penalty": {"reveal": ["decision_number", "fine_amount"]}},
        ),
        rule("plain", fields={"admin_penalty": {"reveal": ["decision_number"]}}),
    )
    decision = e.decide(request(case_reference=""))
    assert decision.allowed and decision.rule_ids == ("plain",)
    assert decision.reveal == {"decision_number"}
    both = e.decide(request())
    assert both.rule_ids == ("strict", "plain")
    assert both.reveal == {"decision_number", "fine_amount"}


@pytest.mark.parametrize(
    ("used", "allowed"), [({}, True), ({"q": 0}, True), ({"q": 2}, True), ({"q": 3}, False)]
)
def test_quotas_at_the_limit_and_below(used: dict[str, int], allowed: bool) -> None:
    e = engine(rule("q", quota={"limit": 3, "period": "day"}))
    decision = e.decide(request(quota_used=used))
    assert decision.allowed is allowed
    if allowed:
        assert decision.quota_rules == ("q",)
    else:
        assert decision.status == "RESOURCE_EXHAUSTED"
        assert decision.rule_ids == ("q",)
        assert decision.reason == (
            "denied: quota of 3 per day exceeded for requester beta under rule q"
        )


def test_a_quota_deny_names_each_requester() -> None:
    e = engine(rule("q", requesters=["beta", "gamma"], quota={"limit": 1, "period": "month"}))
    for requester in ("beta", "gamma", "beta"):
        decision = e.decide(request(requester=requester, quota_used={"q": 1}))
        assert f"quota of 1 per month exceeded for requester {requester} " in decision.reason


def test_an_exhausted_quota_leaves_other_permits_applying() -> None:
    e = engine(
        rule("q", quota={"limit": 1, "period": "day"}),
        rule("unlimited", themes=["admin_penalty", "admin_license"]),
    )
    decision = e.decide(request(quota_used={"q": 1}))
    assert decision.allowed and decision.rule_ids == ("unlimited",)
    assert decision.quota_rules == ()
    assert e.decide(request()).quota_rules == ("q",)


def test_conditions_are_reported_before_exhausted_quotas() -> None:
    e = engine(
        rule("cond", conditions={"officer_required": True}),
        rule("quota", quota={"limit": 5, "period": "day"}),
    )
    decision = e.decide(request(officer="", quota_used={"quota": 5}))
    assert decision.status == "FAILED_PRECONDITION"
    assert decision.rule_ids == ("cond", "quota")
    assert "rule cond requires the requesting officer" in decision.reason
    assert "quota of 5 per day exceeded for requester beta under rule quota" in decision.reason


def test_full_mode_field_handling_is_privacy_minimal() -> None:
    e = engine(
        rule(
            "a",
            fields={
                "admin_penalty": {
                    "reveal": ["decision_number", "fine_amount", "legal_representative"],
                    "mask": ["legal_rep_id_number"],
                }
            },
        ),
        rule(
            "b",
            fields={
                "admin_penalty": {
                    "reveal": ["decision_number", "violation_type"],
                    "mask": ["legal_representative"],
                }
            },
        ),
        rule("c"),  # no fields entry: reveals nothing, but still applies
    )
    decision = e.decide(request())
    assert decision.allowed and decision.mode is Mode.FULL
    assert decision.rule_ids == ("a", "b", "c")
    assert decision.mask == {"legal_rep_id_number", "legal_representative"}  # a mask wins
    assert decision.reveal == {"decision_number", "fine_amount", "violation_type"}
    assert decision.withhold == fields_of("admin_penalty") - decision.reveal - decision.mask
    assert "remarks" in decision.withhold


def test_a_permit_without_field_handling_reveals_nothing() -> None:
    decision = engine(rule("p")).decide(request())
    assert decision.allowed and decision.reveal == decision.mask == frozenset()
    assert decision.withhold == fields_of("admin_penalty")


def test_check_mode_reveals_no_field() -> None:
    e = engine(rule("p", fields={"admin_penalty": {"reveal": ["decision_number"]}}))
    decision = e.decide(request(mode=Mode.CHECK))
    assert decision.allowed and decision.mode is Mode.CHECK
    assert decision.reveal == decision.mask == frozenset()
    assert decision.withhold == fields_of("admin_penalty")
    assert decision.reason == "allowed by rule p (check mode)"


def individual(**overrides: Any) -> DecisionRequest:
    return request(
        purpose="hiring", subject_type="individual", theme="serious_dishonesty", **overrides
    )


def test_individuals_in_full_mode_need_a_permit_that_says_so() -> None:
    check_only = engine(
        rule(
            "p",
            purposes=["hiring"],
            subject_types=["individual"],
            themes=["serious_dishonesty"],
            modes=["check"],
        )
    )
    assert check_only.decide(individual(mode=Mode.CHECK)).allowed
    full = check_only.decide(individual())
    assert not full.allowed and full.status == "PERMISSION_DENIED"
    assert "rule p allows check mode" in full.reason
    # a permit covering organisations in full does not cover individuals
    organisations = engine(
        rule("p", purposes=["procurement", "hiring"], themes=["serious_dishonesty"])
    )
    assert not organisations.decide(individual()).allowed
    assert "individuals are answered in check mode" in organisations.decide(individual()).reason
    explicit = engine(
        rule(
            "p",
            purposes=["hiring"],
            subject_types=["individual"],
            themes=["serious_dishonesty"],
            modes=["full"],
            fields={"serious_dishonesty": {"reveal": ["list_name"]}},
        )
    )
    decision = explicit.decide(individual())
    assert decision.allowed and decision.reveal == {"list_name"}


def test_the_shipped_memorandum_never_answers_an_individual_in_full() -> None:
    for requester in ("huizhou", "shenzhen", "dongguan", "heyuan", "shanwei", "customs"):
        for provider in ("huizhou", "shenzhen", "dongguan", "heyuan", "shanwei", "customs"):
            for purpose in SHIPPED.purpose_by_code:
                for theme in CATALOG.theme_by_code:
                    decision = SHIPPED_ENGINE.decide(
                        DecisionRequest(
                            requester,
                            provider,
                            purpose,
                            "individual",
                            theme,
                            Mode.FULL,
                            NOW,
                            "case",
                            "officer",
                        )
                    )
                    assert not decision.allowed, (requester, provider, purpose, theme)


def test_decisions_carry_the_memorandum_version_and_hash() -> None:
    e = engine()
    for r in (request(), request(purpose="nope"), request(time=dt.datetime(2030, 1, 1))):
        decision = e.decide(r)
        assert (decision.memorandum_version, decision.memorandum_hash) == (7, HASH)


class Exploding(Mapping[str, int]):
    def __getitem__(self, key: str) -> int:
        raise RuntimeError("quota store is down")

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


@pytest.mark.parametrize(
    "overrides",
    [
        {"quota_used": Exploding()},
        {"quota_used": {"q": -1}},
        {"quota_used": {"q": "many"}},
        {"case_reference": None},
        {"officer": 17},
        {"theme": ["admin_penalty"]},
        {"mode": {"full": 1}},
    ],
)
def test_an_error_in_evaluation_is_a_deny(overrides: dict[str, Any]) -> None:
    e = engine(rule("q", quota={"limit": 3, "period": "day"}))
    decision = e.decide(request(**overrides))
    assert not decision.allowed
    assert decision.status == "PERMISSION_DENIED"
    assert decision.reason.startswith("evaluation error: ")


def test_compiling_lazily_or_eagerly_gives_the_same_decisions() -> None:
    lazy = PolicyEngine(SHIPPED, SHIPPED_HASH, CATALOG)
    eager = PolicyEngine(SHIPPED, SHIPPED_HASH, CATALOG)
    for member in SHIPPED.member_by_id:
        eager.prepare(member)
    for case in [c for c in CORPUS_CASES if c.request is not None][::3]:
        assert lazy.decide(request_of(case)) == eager.decide(request_of(case))


def test_cached_decisions_are_not_shared_wrongly() -> None:
    """The same slot asked with different missing conditions or requesters."""
    e = engine(
        rule(
            "p",
            requesters=["beta", "gamma"],
            quota={"limit": 1, "period": "day"},
            conditions={"case_reference_required": True, "officer_required": True},
        ),
    )
    for _ in range(2):
        assert "case reference" in e.decide(request(case_reference="")).reason
        assert "case reference" not in e.decide(request(officer="")).reason
        assert "requester gamma" in e.decide(request(requester="gamma", quota_used={"p": 1})).reason
        assert "requester beta" in e.decide(request(quota_used={"p": 1})).reason


def test_requests_naming_unknown_things_are_remembered_in_a_bounded_cache() -> None:
    e = engine()
    for n in range(5000):
        decision = e.decide(request(purpose=f"purpose-{n}"))
        assert f"unknown purpose 'purpose-{n}'" in decision.reason
    assert len(e._unknown) <= 4096
    assert e.decide(request()).allowed


def test_a_federation_of_300_members_compiles_only_the_providers_asked() -> None:
    members = [f"city{n:03d}" for n in range(300)]
    data = memo_data(
        rule(
            "everyone",
            providers=members,
            requesters=members,
            purposes=["procurement", "hiring"],
            subject_types=list(SUBJECT_TYPES),
            themes=sorted(CATALOG.theme_by_code),
        ),
    )
    data["members"] = [{**data["members"][0], "id": m, "endpoint": f"{m}:7443"} for m in members]
    e = PolicyEngine(parse(data, "test"), HASH, CATALOG)
    assert e.decide(request(requester="city007", provider="city123")).allowed
    assert e.decide(request(requester="city299", provider="city000", mode=Mode.CHECK)).allowed
    assert not e.decide(request(requester="city123", provider="city123")).allowed
    assert e._prepared == {"city123", "city000"}
    # one provider: its 299 requesters x (purpose, subject type, theme) pairs x 2 modes
    assert len(e._index) < 2 * 299 * 2 * len(SUBJECT_TYPES) * len(CATALOG.themes) * 2


@pytest.mark.parametrize(
    ("period", "time", "start"),
    [
        (Period.DAY, "2026-11-27T02:00:00+00:00", "2026-11-26T16:00:00+00:00"),
        (Period.DAY, "2026-11-27T15:59:59+00:00", "2026-11-26T16:00:00+00:00"),
        (Period.DAY, "2026-11-27T16:00:00+00:00", "2026-11-27T16:00:00+00:00"),
        (Period.DAY, "2026-11-28T00:30:00+08:00", "2026-11-27T16:00:00+00:00"),
        (Period.MONTH, "2026-11-27T02:00:00+00:00", "2026-10-31T16:00:00+00:00"),
        (Period.MONTH, "2026-11-30T16:00:00+00:00", "2026-11-30T16:00:00+00:00"),
        (Period.MONTH, "2027-01-01T00:00:00+08:00", "2026-12-31T16:00:00+00:00"),
    ],
)
def test_quota_periods_are_china_standard_time_days_and_months(
    period: Period, time: str, start: str
) -> None:
    got = quota_period_start(period, dt.datetime.fromisoformat(time))
    assert got == dt.datetime.fromisoformat(start)
    assert got.utcoffset() == dt.timedelta(0)


def test_quota_period_start_wants_a_time_zone() -> None:
    with pytest.raises(ValueError, match="time zone"):
        quota_period_start(Period.DAY, dt.datetime(2026, 11, 27))


# --------------------------------------------------------------------------- properties

MEMBERS = sorted(SHIPPED.member_by_id)
PURPOSES = sorted(SHIPPED.purpose_by_code)
THEMES = sorted(CATALOG.theme_by_code)
QUOTA_RULES = sorted(r.id for r in SHIPPED.rules if r.quota)

times = st.datetimes(
    min_value=dt.datetime(2025, 12, 1),
    max_value=dt.datetime(2028, 3, 1),
    timezones=st.sampled_from([dt.UTC, CST, dt.timezone(dt.timedelta(hours=-5))]),
)
valid_requests = st.builds(
    DecisionRequest,
    requester=st.sampled_from(MEMBERS),
    provider=st.sampled_from(MEMBERS),
    purpose=st.sampled_from(PURPOSES),
    subject_type=st.sampled_from(SUBJECT_TYPES),
    theme=st.sampled_from(THEMES),
    mode=st.sampled_from(list(Mode)),
    time=times,
    case_reference=st.sampled_from(["", " ", "CASE-2026-1"]),
    officer=st.sampled_from(["", "officer-9"]),
    quota_used=st.dictionaries(
        st.sampled_from(QUOTA_RULES),
        st.sampled_from([0, 1, 499, 500, 1999, 2000, 4999, 5000, 19999, 20000, 49999, 50000]),
    ),
)


def in_window(r: Any, time: dt.datetime) -> bool:
    if r.valid_from and time.astimezone(CST).date() < r.valid_from:
        return False
    return not (r.valid_until and time.astimezone(CST).date() > r.valid_until)


def reference(m: Memorandum, catalog: Catalog, q: DecisionRequest) -> tuple[Any, ...]:
    """A plain, slow evaluator written from the engine's invariants, for well-formed requests."""
    fields = frozenset(f.name for f in catalog.theme(q.theme).fields)
    if q.time >= m.expires:
        return (False, "FAILED_PRECONDITION", (), frozenset(), frozenset())
    if q.requester == q.provider:
        return (False, "INVALID_ARGUMENT", (), frozenset(), frozenset())
    if q.subject_type not in m.purpose_by_code[q.purpose].subject_types:
        return (False, "PERMISSION_DENIED", (), frozenset(), frozenset())
    if q.subject_type not in catalog.theme(q.theme).subject_types:
        return (False, "INVALID_ARGUMENT", (), frozenset(), frozenset())
    matching = [
        r
        for r in m.rules
        if q.provider in r.providers
        and q.requester in r.requesters
        and q.purpose in r.purposes
        and q.subject_type in r.subject_types
        and q.theme in r.themes
        and q.mode in r.modes
        and in_window(r, q.time)
    ]
    forbids = [r.id for r in matching if r.effect is Effect.FORBID]
    if forbids:
        return (False, "PERMISSION_DENIED", tuple(forbids), frozenset(), frozenset())
    applying, failed, exhausted = [], [], []
    for r in matching:
        conditions_hold = (
            not r.conditions.case_reference_required or q.case_reference.strip()
        ) and (not r.conditions.officer_required or q.officer.strip())
        if not conditions_hold:
            failed.append(r)
        elif r.quota and q.quota_used.get(r.id, 0) >= r.quota.limit:
            exhausted.append(r)
        else:
            applying.append(r)
    if applying:
        if q.mode is Mode.CHECK:
            return (True, "OK", tuple(r.id for r in applying), frozenset(), frozenset())
        mask = frozenset(n for r in applying if q.theme in r.fields for n in r.fields[q.theme].mask)
        reveal = (
            frozenset(n for r in applying if q.theme in r.fields for n in r.fields[q.theme].reveal)
            - mask
        )
        assert (reveal | mask) <= fields
        return (True, "OK", tuple(r.id for r in applying), reveal, mask)
    not_applying = tuple(r.id for r in matching if r in failed or r in exhausted)
    if failed:
        return (False, "FAILED_PRECONDITION", not_applying, frozenset(), frozenset())
    if exhausted:
        return (False, "RESOURCE_EXHAUSTED", not_applying, frozenset(), frozenset())
    return (False, "PERMISSION_DENIED", (), frozenset(), frozenset())


def summary(d: Decision) -> tuple[Any, ...]:
    return (d.allowed, d.status, d.rule_ids, d.reveal, d.mask)


@settings(max_examples=600)
@given(valid_requests)
def test_the_engine_agrees_with_the_reference_evaluator(q: DecisionRequest) -> None:
    assert summary(SHIPPED_ENGINE.decide(q)) == reference(SHIPPED, CATALOG, q)


SMALL_THEMES = ["admin_penalty", "admin_license", "serious_dishonesty"]
DATES = [None, "2026-11-26", "2026-11-27", "2026-11-28"]


def subset(items: list[str]) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(items), min_size=1, max_size=len(items), unique=True)


@st.composite
def random_rules(draw: st.DrawFn, n: int) -> dict[str, Any]:
    effect = draw(st.sampled_from(["permit", "permit", "forbid"]))
    themes = draw(subset(SMALL_THEMES))
    data = rule(
        f"r{n}",
        effect=effect,
        providers=draw(subset(["alpha", "beta", "gamma"])),
        requesters=draw(subset(["alpha", "beta", "gamma"])),
        purposes=draw(subset(["procurement", "hiring"])),
        subject_types=draw(subset(list(SUBJECT_TYPES))),
        themes=themes,
        modes=draw(subset(["full", "check"])),
    )
    start, end = draw(st.sampled_from(DATES)), draw(st.sampled_from(DATES))
    if start and end and start > end:
        start, end = end, start
    if start:
        data["valid_from"] = start
    if end:
        data["valid_until"] = end
    if effect == "permit":
        fields: dict[str, Any] = {}
        for theme in draw(st.lists(st.sampled_from(themes), unique=True)):
            names = sorted(fields_of(theme))
            mask = draw(st.lists(st.sampled_from(names), unique=True, max_size=4))
            sensitive = {f.name for f in CATALOG.theme(theme).fields if f.sensitive}
            open_names = [x for x in names if x not in mask and x not in sensitive]
            reveal = draw(st.lists(st.sampled_from(open_names), unique=True, max_size=8))
            fields[theme] = {"reveal": reveal, "mask": mask}
        data["fields"] = fields
        if draw(st.booleans()):
            data["quota"] = {"limit": draw(st.integers(1, 3)), "period": "day"}
        data["conditions"] = {
            "case_reference_required": draw(st.booleans()),
            "officer_required": draw(st.booleans()),
        }
    return data


@st.composite
def memoranda_and_requests(draw: st.DrawFn) -> tuple[Memorandum, list[DecisionRequest]]:
    count = draw(st.integers(1, 6))
    memorandum = parse(memo_data(*(draw(random_rules(n)) for n in range(count))), "random")
    ids = [r.id for r in memorandum.rules]
    requests = draw(
        st.lists(
            st.builds(
                DecisionRequest,
                requester=st.sampled_from(["alpha", "beta", "gamma"]),
                provider=st.sampled_from(["alpha", "beta", "gamma"]),
                purpose=st.sampled_from(["procurement", "hiring"]),
                subject_type=st.sampled_from(SUBJECT_TYPES),
                theme=st.sampled_from(SMALL_THEMES),
                mode=st.sampled_from(list(Mode)),
                time=st.sampled_from(
                    [
                        NOW,
                        NOW - dt.timedelta(days=1),
                        NOW + dt.timedelta(days=1),
                        dt.datetime(2026, 11, 27, 23, 59, tzinfo=CST),
                        dt.datetime(2026, 11, 28, 0, 0, tzinfo=CST),
                    ]
                ),
                case_reference=st.sampled_from(["", "CASE"]),
                officer=st.sampled_from(["", "officer"]),
                quota_used=st.dictionaries(st.sampled_from(ids), st.integers(0, 4)),
            ),
            min_size=1,
            max_size=20,
        )
    )
    return memorandum, requests


@settings(max_examples=300, deadline=None)
@given(memoranda_and_requests())
def test_the_engine_agrees_with_the_reference_on_random_memoranda(
    drawn: tuple[Memorandum, list[DecisionRequest]],
) -> None:
    memorandum, requests = drawn
    e = PolicyEngine(memorandum, HASH, CATALOG)
    for q in requests:
        assert summary(e.decide(q)) == reference(memorandum, CATALOG, q), q


@settings(max_examples=400)
@given(valid_requests)
def test_fields_come_only_from_applying_permits_and_partition_the_theme(
    q: DecisionRequest,
) -> None:
    """(a) nothing is revealed or masked that no applying permit reveals or masks."""
    decision = SHIPPED_ENGINE.decide(q)
    by_id = {r.id: r for r in SHIPPED.rules}
    handlings = [
        by_id[i].fields[q.theme]
        for i in decision.rule_ids
        if decision.allowed and q.theme in by_id[i].fields
    ]
    assert decision.reveal <= {n for h in handlings for n in h.reveal}
    assert decision.mask <= {n for h in handlings for n in h.mask}
    assert not decision.reveal & decision.mask
    assert not (decision.reveal | decision.mask) & decision.withhold
    assert decision.reveal | decision.mask | decision.withhold == fields_of(q.theme)
    sensitive = {f.name for f in CATALOG.theme(q.theme).fields if f.sensitive}
    assert not decision.reveal & sensitive
    if decision.allowed:
        assert all(by_id[i].effect is Effect.PERMIT for i in decision.rule_ids)
        assert decision.mode == q.mode


def forbid_for(q: DecisionRequest) -> dict[str, Any]:
    return {
        "id": "forbid-under-test",
        "effect": "forbid",
        "intent": "a forbid matching exactly this request",
        "providers": [q.provider],
        "requesters": [q.requester],
        "purposes": [q.purpose],
        "subject_types": [q.subject_type],
        "themes": [q.theme],
        "modes": [q.mode.value],
    }


SHIPPED_DATA = SHIPPED.model_dump(mode="json")


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_requests)
def test_adding_a_matching_forbid_always_denies(q: DecisionRequest) -> None:
    """(b) whatever the permits say, a forbid matching the request turns it into a deny."""
    data = copy.deepcopy(SHIPPED_DATA)
    data["rules"].append(forbid_for(q))
    with_forbid = PolicyEngine(parse(data, "test"), HASH, CATALOG)
    before = SHIPPED_ENGINE.decide(q)
    after = with_forbid.decide(q)
    assert not after.allowed
    if before.allowed:
        assert after.status == "PERMISSION_DENIED"
        assert "forbid-under-test" in after.rule_ids


unknown_names = st.text(min_size=0, max_size=20)


@given(
    valid_requests,
    st.sampled_from(["requester", "provider", "purpose", "theme", "subject_type"]),
    unknown_names,
)
def test_unknown_names_are_always_denied(q: DecisionRequest, which: str, name: str) -> None:
    """(c) an unknown purpose, member, theme or subject type never gets an answer."""
    known = {
        "requester": MEMBERS,
        "provider": MEMBERS,
        "purpose": PURPOSES,
        "theme": THEMES,
        "subject_type": SUBJECT_TYPES,
    }[which]
    assume(name not in known)
    changed = dataclasses.replace(q, **cast(dict[str, Any], {which: name}))
    decision = SHIPPED_ENGINE.decide(changed)
    assert not decision.allowed
    assert decision.status in {"INVALID_ARGUMENT", "FAILED_PRECONDITION"}
    assert decision.reveal == decision.mask == frozenset()


anything = st.one_of(
    st.text(), st.none(), st.integers(), st.binary(), st.lists(st.text(), max_size=2)
)


@settings(max_examples=500)
@given(
    requester=st.one_of(st.sampled_from(MEMBERS), anything),
    provider=st.one_of(st.sampled_from(MEMBERS), anything),
    purpose=st.one_of(st.sampled_from(PURPOSES), anything),
    subject_type=st.one_of(st.sampled_from(SUBJECT_TYPES), anything),
    theme=st.one_of(st.sampled_from(THEMES), anything),
    mode=st.one_of(st.sampled_from(list(Mode)), anything),
    time=st.one_of(times, st.datetimes(), anything),
    case_reference=st.one_of(st.text(), anything),
    officer=st.one_of(st.text(), anything),
    quota_used=st.one_of(
        st.dictionaries(st.text(), st.integers()),
        st.dictionaries(st.sampled_from(QUOTA_RULES), st.one_of(st.integers(), st.text())),
    ),
)
def test_decide_never_raises(**fields: Any) -> None:
    """(d) arbitrary values anywhere in the request give a decision, never an exception."""
    decision = SHIPPED_ENGINE.decide(DecisionRequest(**fields))
    assert isinstance(decision, Decision)
    assert decision.allowed == (decision.status == "OK")
    assert decision.reason


@settings(max_examples=400)
@given(valid_requests)
def test_check_mode_never_reveals_a_field(q: DecisionRequest) -> None:
    """(e) hit / no-hit only."""
    checked = dataclasses.replace(q, mode=Mode.CHECK)
    decision = SHIPPED_ENGINE.decide(checked)
    assert decision.reveal == decision.mask == frozenset()
    assert decision.withhold == fields_of(q.theme)

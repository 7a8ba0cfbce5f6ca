"""Feeds in the memorandum: who publishes which themes as a change feed, who may sync them.

* The schema: ``feeds:`` is optional (a memorandum written before feeds parses),
  strict, and refuses a dangling or self-serving feed naming ``feeds[i](id)``.
* The engine: :meth:`PolicyEngine.may_sync` denies by default and names the feed
  that allows a sync; :meth:`published_themes` and :meth:`subscriptions` list a
  member's two sides in memorandum order, once each; all three honour the feeds'
  inclusive China Standard Time dates and stop when the memorandum expires.
* The corpus: ``sync:`` cases, their strict schema, and the shipped corpus
  naming every feed of the shipped memorandum.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_policy_engine import memo_data, rule

from creditexchange.errors import CorpusError, PolicyError
from creditexchange.node.catalog import Catalog, load_catalog
from creditexchange.policy.corpus import load_corpus, load_memorandum, run_corpus
from creditexchange.policy.document import parse_memorandum
from creditexchange.policy.engine import PolicyEngine
from creditexchange.policy.trust import to_json_data

ROOT = Path(__file__).resolve().parent.parent
MEMORANDUM = ROOT / "policy" / "memorandum-3plus2.yaml"
CORPUS = ROOT / "policy" / "corpus-3plus2.yaml"
HASH = hashlib.sha256(b"test memorandum").digest()
CATALOG = load_catalog()
TODAY = dt.date(2026, 11, 27)
CITIES = ["huizhou", "shenzhen", "dongguan", "heyuan", "shanwei"]
CUSTOMS_THEMES = ["customs_credit_grade", "customs_case", "customs_light_status"]


def feed(feed_id: str, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": feed_id,
        "intent": f"test feed {feed_id}",
        "publisher": "alpha",
        "subscribers": ["beta"],
        "themes": ["customs_credit_grade"],
    }
    data.update(overrides)
    return data


def with_feeds(*feeds: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return memo_data(feeds=list(feeds), **overrides)


def engine_with(*feeds: dict[str, Any], **overrides: Any) -> PolicyEngine:
    return PolicyEngine(parse_memorandum(with_feeds(*feeds, **overrides), "test"), HASH, CATALOG)


SHIPPED, SHIPPED_HASH = load_memorandum(MEMORANDUM)
SHIPPED_ENGINE = PolicyEngine(SHIPPED, SHIPPED_HASH, CATALOG)


# --------------------------------------------------------------------------- the schema


def test_a_memorandum_without_feeds_still_parses_and_lets_nobody_sync() -> None:
    data = memo_data()
    assert "feeds" not in data
    memorandum = parse_memorandum(data, "older")
    assert memorandum.feeds == []
    e = PolicyEngine(memorandum, HASH, CATALOG)
    assert e.may_sync("beta", "alpha", "customs_credit_grade", TODAY) is None
    assert e.published_themes("alpha", TODAY) == []
    assert e.subscriptions("beta", TODAY) == []


def test_the_signed_form_carries_the_feeds_and_parses_back_the_same() -> None:
    signed = to_json_data(SHIPPED)
    assert [f["id"] for f in signed["feeds"]][:2] == ["customs-feed", "huizhou-light-status-feed"]
    assert parse_memorandum(copy.deepcopy(signed), "signed") == SHIPPED


def test_a_feed_with_dates_parses_them_as_dates() -> None:
    parsed = parse_memorandum(
        with_feeds(feed("f", valid_from="2026-07-01", valid_until="2027-06-30")), "t"
    )
    assert (parsed.feeds[0].valid_from, parsed.feeds[0].valid_until) == (
        dt.date(2026, 7, 1),
        dt.date(2027, 6, 30),
    )


MUTATIONS: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    (
        "unknown publisher",
        lambda d: d["feeds"][0].update(publisher="omega"),
        "feeds[0](f).publisher: unknown member 'omega'",
    ),
    (
        "unknown subscriber",
        lambda d: d["feeds"][0].update(subscribers=["beta", "omega"]),
        "feeds[0](f).subscribers: unknown member(s) ['omega']",
    ),
    (
        "a publisher subscribing to itself",
        lambda d: d["feeds"][0].update(subscribers=["beta", "alpha"]),
        "feeds[0](f): publisher 'alpha' is among its own subscribers",
    ),
    (
        "no subscribers is not 'everyone'",
        lambda d: d["feeds"][0].update(subscribers=[]),
        "feeds[0](f).subscribers: List should have at least 1",
    ),
    (
        "no themes is not 'every theme'",
        lambda d: d["feeds"][0].update(themes=[]),
        "feeds[0](f).themes: List should have at least 1",
    ),
    (
        "an empty intent",
        lambda d: d["feeds"][0].update(intent=""),
        "feeds[0](f).intent: String should have at least 1",
    ),
    (
        "a missing intent",
        lambda d: d["feeds"][0].pop("intent"),
        "feeds[0](f).intent: Field required",
    ),
    (
        "an id that is not a code",
        lambda d: d["feeds"][0].update(id="Customs Feed"),
        "feeds[0](Customs Feed).id: String should match pattern",
    ),
    (
        "an unknown key",
        lambda d: d["feeds"][0].update(wildcard=True),
        "feeds[0](f).wildcard: Extra inputs",
    ),
    (
        "dates the wrong way round",
        lambda d: d["feeds"][0].update(valid_from="2027-01-01", valid_until="2026-12-31"),
        "feeds[0](f): valid_from is after valid_until",
    ),
    (
        "a feed id that is a rule id",
        lambda d: d["feeds"][0].update(id="p"),
        "feeds[0](p).id: 'p' is already the id of rules[0]; rules and feeds share one set of ids",
    ),
    (
        "two feeds with one id",
        lambda d: d["feeds"].append(feed("f", publisher="beta", subscribers=["alpha"])),
        "feeds[1](f).id: 'f' is already the id of feeds[0]",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "named"), [(m, n) for _, m, n in MUTATIONS], ids=[i for i, _, _ in MUTATIONS]
)
def test_a_bad_feed_is_refused_naming_the_place(
    mutate: Callable[[dict[str, Any]], None], named: str
) -> None:
    data = with_feeds(feed("f"))
    mutate(data)
    with pytest.raises(PolicyError) as caught:
        parse_memorandum(data, "test")
    assert named in str(caught.value)


def test_the_engine_refuses_a_feed_theme_the_catalog_lacks() -> None:
    with pytest.raises(PolicyError) as caught:
        engine_with(feed("ok"), feed("f", themes=["customs_credit_grade", "customs_rumours"]))
    assert "feeds[1](f).themes: theme 'customs_rumours' is not in the catalog 2024.1" in str(
        caught.value
    )


def test_rule_themes_are_still_checked_with_the_same_message() -> None:
    with pytest.raises(PolicyError, match=r"rules\[0\]\(p\)\.themes: theme 'x' is not in"):
        engine_with(rules=[rule("p", themes=["x"])])


# --------------------------------------------------------------------------- may_sync


def test_may_sync_names_the_feed_and_denies_everything_else() -> None:
    e = engine_with(
        feed("grades", subscribers=["beta", "gamma"], themes=["customs_credit_grade"]),
        feed("light", publisher="beta", subscribers=["alpha"], themes=["customs_light_status"]),
        rules=[rule("p", themes=["customs_case"], providers=["alpha"], requesters=["beta"])],
    )
    allowed = e.may_sync("gamma", "alpha", "customs_credit_grade", TODAY)
    assert allowed is not None and allowed.id == "grades"
    light = e.may_sync("alpha", "beta", "customs_light_status", TODAY)
    assert light is not None and light.id == "light"
    for subscriber, publisher, theme in [
        ("beta", "alpha", "customs_light_status"),  # a theme alpha does not publish
        ("gamma", "beta", "customs_light_status"),  # not a subscriber of beta's feed
        ("alpha", "alpha", "customs_credit_grade"),  # its own feed
        ("beta", "alpha", "customs_case"),  # a query rule covers it: no sync
        ("omega", "alpha", "customs_credit_grade"),  # not a member
        ("beta", "omega", "customs_credit_grade"),
        ("beta", "alpha", "customs_rumours"),  # not in the catalog
        ("Beta", "alpha", "customs_credit_grade"),  # ids are case-sensitive
    ]:
        assert e.may_sync(subscriber, publisher, theme, TODAY) is None, (subscriber, theme)


def test_the_first_feed_in_memorandum_order_is_named() -> None:
    e = engine_with(
        feed("later-window", valid_from="2027-01-01"),
        feed("always"),
        feed("also-always"),
    )
    first = e.may_sync("beta", "alpha", "customs_credit_grade", TODAY)
    assert first is not None and first.id == "always"
    then = e.may_sync("beta", "alpha", "customs_credit_grade", dt.date(2027, 1, 1))
    assert then is not None and then.id == "later-window"


@pytest.mark.parametrize(
    ("today", "allowed"),
    [
        (dt.date(2026, 6, 30), False),
        (dt.date(2026, 7, 1), True),
        (dt.date(2026, 9, 30), True),
        (dt.date(2026, 10, 1), False),
    ],
)
def test_feed_dates_are_inclusive(today: dt.date, allowed: bool) -> None:
    e = engine_with(feed("f", valid_from="2026-07-01", valid_until="2026-09-30"))
    assert (e.may_sync("beta", "alpha", "customs_credit_grade", today) is not None) is allowed
    assert (e.published_themes("alpha", today) == ["customs_credit_grade"]) is allowed
    assert (e.subscriptions("beta", today) == [("alpha", "customs_credit_grade")]) is allowed


@pytest.mark.parametrize(
    ("expires", "last_day"),
    [
        ("2027-12-31T16:00:00Z", dt.date(2027, 12, 31)),  # 2028-01-01 00:00 CST
        ("2027-12-31T12:00:00Z", dt.date(2027, 12, 30)),  # 20:00 CST: its last day is partial
        ("2028-01-01T00:00:00+08:00", dt.date(2027, 12, 31)),
    ],
)
def test_feeds_stop_on_the_first_day_the_memorandum_is_not_in_force_all_day(
    expires: str, last_day: dt.date
) -> None:
    e = engine_with(feed("f"), expires=expires)
    after = last_day + dt.timedelta(days=1)
    assert e.may_sync("beta", "alpha", "customs_credit_grade", last_day) is not None
    assert e.may_sync("beta", "alpha", "customs_credit_grade", after) is None
    assert e.published_themes("alpha", after) == []
    assert e.subscriptions("beta", after) == []


@pytest.mark.parametrize(
    "today", [dt.datetime(2026, 11, 27, 2, tzinfo=dt.UTC), "2026-11-27", None], ids=repr
)
def test_today_must_be_a_date(today: Any) -> None:
    e = engine_with(feed("f"))
    for call in (
        lambda: e.may_sync("beta", "alpha", "customs_credit_grade", today),
        lambda: e.may_sync("omega", "alpha", "customs_rumours", today),
        lambda: e.published_themes("alpha", today),
        lambda: e.subscriptions("beta", today),
    ):
        with pytest.raises(TypeError, match="today must be a date"):
            call()


# --------------------------------------------------------------------------- both sides


def test_published_themes_are_in_memorandum_order_once_each() -> None:
    e = engine_with(
        feed("a", themes=["customs_case", "customs_credit_grade"]),
        feed("b", publisher="beta", subscribers=["alpha"], themes=["customs_light_status"]),
        feed("c", subscribers=["gamma"], themes=["customs_light_status", "customs_case"]),
        feed("d", themes=["admin_penalty"], valid_until="2026-01-31"),
    )
    assert e.published_themes("alpha", TODAY) == [
        "customs_case",
        "customs_credit_grade",
        "customs_light_status",
    ]
    assert e.published_themes("alpha", dt.date(2026, 1, 31))[-1] == "admin_penalty"
    assert e.published_themes("beta", TODAY) == ["customs_light_status"]
    assert e.published_themes("gamma", TODAY) == []
    assert e.published_themes("omega", TODAY) == []


def test_subscriptions_are_in_memorandum_order_once_each() -> None:
    e = engine_with(
        feed("a", subscribers=["beta", "gamma"], themes=["customs_case"]),
        feed("b", publisher="gamma", subscribers=["beta"], themes=["customs_light_status"]),
        feed("c", subscribers=["beta"], themes=["customs_credit_grade", "customs_case"]),
    )
    assert e.subscriptions("beta", TODAY) == [
        ("alpha", "customs_case"),
        ("gamma", "customs_light_status"),
        ("alpha", "customs_credit_grade"),
    ]
    assert e.subscriptions("gamma", TODAY) == [("alpha", "customs_case")]
    assert e.subscriptions("alpha", TODAY) == []
    assert e.subscriptions("omega", TODAY) == []


def test_every_subscription_is_a_sync_the_engine_allows() -> None:
    for member in SHIPPED.member_by_id:
        for publisher, theme in SHIPPED_ENGINE.subscriptions(member, TODAY):
            assert SHIPPED_ENGINE.may_sync(member, publisher, theme, TODAY) is not None
            assert theme in SHIPPED_ENGINE.published_themes(publisher, TODAY)


# --------------------------------------------------------------------------- the shipped feeds


def test_customs_publishes_its_three_themes_to_the_five_cities() -> None:
    assert SHIPPED_ENGINE.published_themes("customs", TODAY) == CUSTOMS_THEMES
    for city in CITIES:
        assert SHIPPED_ENGINE.subscriptions(city, TODAY)[:3] == [
            ("customs", t) for t in CUSTOMS_THEMES
        ]


def test_each_city_publishes_its_light_status_to_customs_and_the_other_cities() -> None:
    for city in CITIES:
        assert SHIPPED_ENGINE.published_themes(city, TODAY) == ["customs_light_status"]
        readers = [
            m
            for m in SHIPPED.member_by_id
            if SHIPPED_ENGINE.may_sync(m, city, "customs_light_status", TODAY)
        ]
        assert readers == [m for m in SHIPPED.member_by_id if m != city]
    assert SHIPPED_ENGINE.subscriptions("customs", TODAY) == [
        (city, "customs_light_status") for city in CITIES
    ]


def test_every_shipped_feed_has_an_intent() -> None:
    assert SHIPPED.feeds and all(f.intent.strip() for f in SHIPPED.feeds)


# --------------------------------------------------------------------------- the corpus


def test_the_shipped_corpus_covers_every_feed_and_both_outcomes() -> None:
    cases = [c for c in load_corpus(CORPUS)[0].cases if c.sync is not None]
    named = {rule_id for case in cases for rule_id in case.expect.rule_ids}
    assert {f.id for f in SHIPPED.feeds} <= named
    assert {c.expect.allowed for c in cases} == {True, False}


def write_corpus(tmp_path: Path, cases: list[dict[str, Any]]) -> Path:
    (tmp_path / "memorandum.yaml").write_text(
        yaml.safe_dump(with_feeds(feed("f")), allow_unicode=True), "utf-8"
    )
    path = tmp_path / "corpus.yaml"
    path.write_text(
        yaml.safe_dump({"memorandum": "memorandum.yaml", "cases": cases}, allow_unicode=True),
        "utf-8",
    )
    return path


def sync_case(name: str = "one", **expect: Any) -> dict[str, Any]:
    want: dict[str, Any] = {"allowed": True, "status": "OK", "rule_ids": ["f"]}
    want.update(expect)
    return {
        "name": name,
        "sync": {
            "subscriber": "beta",
            "publisher": "alpha",
            "theme": "customs_credit_grade",
            "today": TODAY,
        },
        "expect": want,
    }


def test_a_sync_case_that_fails_says_what_differed(tmp_path: Path, catalog: Catalog) -> None:
    denied = sync_case("denied", allowed=False, status="PERMISSION_DENIED", rule_ids=[])
    denied["sync"]["subscriber"] = "gamma"
    wrong = sync_case("wrong", allowed=False, status="PERMISSION_DENIED", rule_ids=[])
    ok, no, bad = run_corpus(write_corpus(tmp_path, [sync_case("ok"), denied, wrong]), catalog)
    assert ok.passed and no.passed and ok.message == ""
    assert ok.decision is None
    assert not bad.passed
    assert "allowed: expected False, got True" in bad.message
    assert "rule_ids: expected [], got ['f']" in bad.message
    assert "(feed f lets beta sync customs_credit_grade of alpha on 2026-11-27)" in bad.message


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda c: c.update(request={}),
            "cases[1](second).request.requester: Field required",
        ),
        (
            lambda c: c.pop("sync"),
            "cases[1](second): a case has either `request` (a query) or `sync` (a feed)",
        ),
        (
            lambda c: c["expect"].update(reveal=[]),
            "cases[1](second): a sync case expects allowed, status and rule_ids, not ['reveal']",
        ),
        (
            lambda c: c["expect"].update(allowed=False, status="RESOURCE_EXHAUSTED"),
            "a sync case's status is OK or PERMISSION_DENIED, not RESOURCE_EXHAUSTED",
        ),
        (
            lambda c: c["expect"].update(rule_ids=["f", "g"]),
            "rule_ids names at most one",
        ),
        (
            lambda c: c["sync"].update(today=dt.datetime(2026, 11, 27, tzinfo=dt.UTC)),
            "cases[1](second).sync: today is a date (China Standard Time)",
        ),
        (lambda c: c["sync"].update(today="tomorrow"), "cases[1](second).sync.today"),
        (lambda c: c["sync"].update(colour="red"), "cases[1](second).sync.colour"),
        (lambda c: c["sync"].pop("theme"), "cases[1](second).sync.theme"),
    ],
)
def test_the_sync_case_schema_is_strict_and_names_the_case(
    tmp_path: Path, catalog: Catalog, mutate: Any, expected: str
) -> None:
    second = sync_case("second")
    mutate(second)
    with pytest.raises(CorpusError) as caught:
        run_corpus(write_corpus(tmp_path, [sync_case("first"), second]), catalog)
    assert expected in str(caught.value)

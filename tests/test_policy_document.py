"""The memorandum's schema refuses anything off, naming the exact place."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from creditexchange.errors import PolicyError
from creditexchange.policy.document import parse_memorandum

SHIPPED = yaml.safe_load(
    (Path(__file__).resolve().parent.parent / "policy" / "memorandum-3plus2.yaml").read_text(
        "utf-8"
    )
)


def rule(data: dict[str, Any], rule_id: str) -> dict[str, Any]:
    return next(r for r in data["rules"] if r["id"] == rule_id)


def test_the_shipped_memorandum_parses() -> None:
    memorandum = parse_memorandum(copy.deepcopy(SHIPPED), "shipped")
    assert memorandum.federation == "3plus2" and len(memorandum.members) == 6
    assert all(r.intent for r in memorandum.rules)


MUTATIONS: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("unknown top-level key", lambda d: d.update(colour="red"), "colour: Extra inputs"),
    (
        "unknown key in a rule",
        lambda d: rule(d, "core-records").update(wildcard=True),
        "rules[0](core-records).wildcard: Extra inputs",
    ),
    ("wrong type", lambda d: d.update(threshold="four"), "threshold:"),
    (
        "rule naming an unknown requester",
        lambda d: rule(d, "regional-lists").update(requesters=["heyuan", "hefei"]),
        "rules[2](regional-lists).requesters: unknown member(s) ['hefei']",
    ),
    (
        "rule naming an unknown purpose",
        lambda d: rule(d, "core-records").update(purposes=["gossip"]),
        "rules[0](core-records).purposes: unknown purpose(s) ['gossip']",
    ),
    (
        "empty requesters is not 'everyone'",
        lambda d: rule(d, "core-records").update(requesters=[]),
        "requesters: List should have at least 1",
    ),
    (
        "unknown subject type",
        lambda d: rule(d, "core-records").update(subject_types=["robot"]),
        "unknown subject type(s) ['robot']",
    ),
    (
        "field handling for a theme the rule does not cover",
        lambda d: rule(d, "core-records")["fields"].update(
            customs_case={"reveal": ["case_number"]}
        ),
        "field handling for theme(s) ['customs_case']",
    ),
    (
        "a field both revealed and masked",
        lambda d: rule(d, "core-records")["fields"]["admin_license"].update(
            mask=["certificate_name"]
        ),
        "both revealed and masked",
    ),
    (
        "threshold above the members",
        lambda d: d.update(threshold=7),
        "threshold 7 is more than the 6 members",
    ),
    (
        "expiry without a time zone",
        lambda d: d.update(expires="2027-12-31T00:00:00"),
        "expires must carry a time zone",
    ),
    (
        "duplicate member",
        lambda d: d["members"].append(copy.deepcopy(d["members"][0])),
        "member 'huizhou' is listed twice",
    ),
    (
        "a forbid with a quota",
        lambda d: rule(d, "forbid-individual-full").update(quota={"limit": 1, "period": "day"}),
        "a forbid rule has no field handling or quota",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "named"), [(m, n) for _, m, n in MUTATIONS], ids=[i for i, _, _ in MUTATIONS]
)
def test_a_bad_memorandum_is_refused_naming_the_place(
    mutate: Callable[[dict[str, Any]], None], named: str
) -> None:
    data = copy.deepcopy(SHIPPED)
    mutate(data)
    with pytest.raises(PolicyError) as caught:
        parse_memorandum(data, "test")
    assert named in str(caught.value)

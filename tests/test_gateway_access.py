"""The gateway's callers: keys kept as hashes, revocation and rotation, made-up keys,
and the rate (a batch weighs more than one call)."""

from __future__ import annotations

from pathlib import Path

import pytest

from creditexchange.errors import AccessError
from creditexchange.gateway.access import KeyRegistry, RateLimiter, Role
from creditexchange.node.database import create_database_engine, upgrade
from creditexchange.node.database.models import API_KEYS

PURPOSES = ["land_auction", "public_procurement", "bank_credit"]


@pytest.fixture
def registry(tmp_path: Path) -> KeyRegistry:
    engine = create_database_engine(f"sqlite:///{tmp_path / 'node.db'}")
    upgrade(engine)
    return KeyRegistry(engine)


def test_a_key_is_shown_once_and_kept_only_as_its_hash(registry: KeyRegistry) -> None:
    caller, key = registry.add(
        "land-centre", Role.PARTNER, purposes=["land_auction"], known_purposes=PURPOSES
    )
    assert registry.authenticate(key) == caller
    with registry.engine.connect() as conn:
        stored = [tuple(map(str, row)) for row in conn.execute(API_KEYS.select())]
    assert stored and all(key.split(".")[2] not in cell for row in stored for cell in row)


def test_a_revoked_or_rotated_key_stops_at_once_and_a_made_up_one_never_works(
    registry: KeyRegistry,
) -> None:
    _, first = registry.add("bank", Role.PARTNER, purposes=["bank_credit"], known_purposes=PURPOSES)
    registry.authenticate(first)  # cached now
    _, second = registry.rotate("bank")
    with pytest.raises(AccessError, match="unknown key"):
        registry.authenticate(first)
    assert registry.authenticate(second).name == "bank"
    registry.revoke("bank")
    with pytest.raises(AccessError, match="revoked"):
        registry.authenticate(second)
    forged = second[:-1] + ("A" if second[-1] != "A" else "B")
    with pytest.raises(AccessError):
        registry.authenticate(forged)
    for i in range(3000):  # made-up key ids are remembered apart, bounded
        with pytest.raises(AccessError, match="unknown key"):
            registry.authenticate(f"cx1.{i:016d}.{'x' * 43}")
    assert len(registry._unknown) <= 1024


@pytest.mark.parametrize(
    ("args", "wrong"),
    [
        ({"name": "X", "role": Role.PARTNER, "purposes": ["land_auction"]}, "not a caller name"),
        ({"name": "p1", "role": Role.PARTNER, "purposes": []}, "at least one purpose"),
        ({"name": "p1", "role": Role.PARTNER, "purposes": ["nope"]}, "unknown purpose"),
        (
            {"name": "p1", "role": Role.PARTNER, "purposes": ["land_auction"],
             "subject_types": ["martian"]},
            "unknown subject type",
        ),
        ({"name": "a1", "role": Role.AUDITOR, "purposes": ["land_auction"]}, "ledger only"),
        (
            {"name": "p1", "role": Role.PARTNER, "purposes": ["land_auction"], "rate_per_min": 0},
            "1 to 1000000",
        ),
    ],
)  # fmt: skip
def test_a_registration_that_makes_no_sense_is_refused_saying_why(
    registry: KeyRegistry, args: dict[str, object], wrong: str
) -> None:
    name, role = str(args.pop("name")), args.pop("role")
    assert isinstance(role, Role)
    with pytest.raises(AccessError, match=wrong):
        registry.add(name, role, known_purposes=PURPOSES, **args)  # type: ignore[arg-type]
    assert registry.list() == []


def test_a_batch_weighs_more_on_the_rate_than_one_call(registry: KeyRegistry) -> None:
    caller, _ = registry.add(
        "auction", Role.PARTNER, purposes=["land_auction"], known_purposes=PURPOSES,
        rate_per_min=60,
    )  # fmt: skip
    limiter = RateLimiter()
    assert limiter.take(caller, 1 + 5) == 0  # a 500-subject check empties the burst of 6
    wait = limiter.take(caller)
    assert 0.9 <= wait <= 1.1  # one call a second refills

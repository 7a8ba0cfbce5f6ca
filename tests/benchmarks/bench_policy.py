"""Policy decisions against a plain dict lookup of precomputed answers.

In one run, over the same deterministic mix of realistic requests (``--requests``
N, default 10,000) built for the shipped "3+2" memorandum and the default
catalog:

* project: ``PolicyEngine.decide`` on every request, ``--passes`` times over (after
  one warm-up pass, as a running node would be);
* baseline: the answer each request got, precomputed into a dict keyed by the
  request tuple (every field of the request, the quota counts as a frozenset),
  looked up for every request the same number of times: the least any policy
  layer could cost.

Then the latency of single calls (p50 and p99 over every request, timed one by
one with ``perf_counter_ns``) for both. The mix is printed: allowed, denied by
forbids, by default, quotas used up, missing conditions, individuals, malformed
requests. The last line printed is one JSON object with ``ratio`` (decisions/s
over baseline lookups/s) and ``p99_ratio`` (the engine's p99 over the
baseline's).

    python tests/benchmarks/bench_policy.py --quick
    python tests/benchmarks/bench_policy.py --requests 100000 --passes 50
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import gc
import json
import random
import statistics
import sys
import time
from collections.abc import Hashable
from pathlib import Path

from creditexchange.node.catalog import load_catalog
from creditexchange.policy.corpus import load_memorandum
from creditexchange.policy.document import Mode
from creditexchange.policy.engine import Decision, DecisionRequest, PolicyEngine

ROOT = Path(__file__).resolve().parents[2]
MEMORANDUM = ROOT / "policy" / "memorandum-3plus2.yaml"
START = dt.datetime(2026, 11, 27, 0, 0, tzinfo=dt.UTC)

CORE = ["huizhou", "shenzhen", "dongguan"]
PLUS2 = ["heyuan", "shanwei"]
CITIES = CORE + PLUS2
# Who asks, weighted by a city's volume (Shenzhen's banks dwarf Shanwei's).
REQUESTERS = {
    "shenzhen": 40,
    "dongguan": 20,
    "huizhou": 15,
    "heyuan": 5,
    "shanwei": 5,
    "customs": 15,
}
ORG_PURPOSES = {
    "bank_credit": 50,
    "public_procurement": 12,
    "fiscal_funds": 8,
    "land_auction": 5,
    "grain_procurement": 5,
    "admin_licensing": 12,
    "commendation": 8,
}
PERSON_PURPOSES = {"civil_service_hiring": 40, "admin_licensing": 30, "commendation": 15,
                   "fiscal_funds": 10, "bank_credit": 5}  # fmt: skip
ORG_THEMES = {
    "admin_penalty": 25,
    "serious_dishonesty": 20,
    "dishonest_debtor": 15,
    "abnormal_operation": 10,
    "credit_rating": 10,
    "registration": 8,
    "admin_license": 5,
    "honours": 4,
    "credit_commitment": 3,
}
PERSON_THEMES = {"serious_dishonesty": 45, "dishonest_debtor": 40, "honours": 10,
                 "admin_penalty": 5}  # fmt: skip
CUSTOMS_THEMES = {"customs_credit_grade": 50, "customs_case": 30, "customs_light_status": 20}
LIMITS = {
    "core-bank-credit-records": 20000,
    "core-bank-credit": 20000,
    "plus2-bank-credit": 2000,
    "regional-land-auction": 500,
    "individual-lists-check": 2000,
    "customs-bank-credit": 5000,
    "huizhou-to-customs": 50000,
}


def pick(rng: random.Random, weights: dict[str, int]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def make_requests(n: int, seed: int = 7) -> list[DecisionRequest]:
    """A deterministic mix: mostly lawful lookups, with the denials a real node sees."""
    rng = random.Random(seed)
    requests = []
    for _ in range(n):
        requester = pick(rng, REQUESTERS)
        roll = rng.random()
        mode = Mode.FULL if rng.random() < 0.7 else Mode.CHECK
        if requester == "customs":
            provider = "huizhou" if rng.random() < 0.9 else rng.choice(CORE)
            purpose = "customs_clearance" if rng.random() < 0.95 else "public_procurement"
            subject = "enterprise" if rng.random() < 0.8 else "individual_business"
            theme = pick(rng, ORG_THEMES)
        elif roll < 0.12:  # individuals: mostly checks, some asking for full records
            provider = rng.choice([c for c in CITIES if c != requester])
            purpose = pick(rng, PERSON_PURPOSES)
            subject = "individual"
            theme = pick(rng, PERSON_THEMES)
            mode = Mode.CHECK if rng.random() < 0.8 else Mode.FULL
        elif roll < 0.22:  # customs data for the cities
            provider = "customs"
            purpose = pick(rng, ORG_PURPOSES)
            subject = "enterprise"
            theme = pick(rng, CUSTOMS_THEMES)
        else:
            provider = rng.choice([c for c in CITIES if c != requester])
            purpose = pick(rng, ORG_PURPOSES)
            subject = rng.choices(
                ["enterprise", "individual_business", "institution", "social_org"],
                weights=[70, 20, 5, 5],
            )[0]
            theme = pick(rng, ORG_THEMES)
        if rng.random() < 0.01:  # malformed: a purpose or theme the memorandum lacks
            if rng.random() < 0.5:
                purpose = "loan_marketing"
            else:
                theme = "social_security"
        when = START + dt.timedelta(seconds=rng.randrange(86400))
        if rng.random() < 0.005:
            when = dt.datetime(2028, 1, 2, tzinfo=dt.UTC)  # after the memorandum expired
        quota_used = {}
        for rule_id, limit in LIMITS.items():
            if rng.random() < 0.3:
                # mostly well inside the limit; now and then at or past it
                quota_used[rule_id] = (
                    rng.randrange(limit) if rng.random() < 0.95 else limit + rng.randrange(3)
                )
        requests.append(
            DecisionRequest(
                requester=requester,
                provider=provider,
                purpose=purpose,
                subject_type=subject,
                theme=theme,
                mode=mode,
                time=when,
                case_reference=""
                if rng.random() < 0.04
                else f"CASE-2026-{rng.randrange(10**6):06d}",
                officer="" if rng.random() < 0.01 else f"officer-{rng.randrange(500)}",
                quota_used=quota_used,
            )
        )
    return requests


def key_of(r: DecisionRequest) -> Hashable:
    return (
        r.requester,
        r.provider,
        r.purpose,
        r.subject_type,
        r.theme,
        r.mode,
        r.time,
        r.case_reference,
        r.officer,
        frozenset(r.quota_used.items()),
    )


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def describe(decisions: list[Decision], requests: list[DecisionRequest]) -> str:
    kinds: collections.Counter[str] = collections.Counter()
    for d, r in zip(decisions, requests, strict=True):
        if d.allowed:
            kinds["allowed " + ("check" if d.mode is Mode.CHECK else "full")] += 1
        elif d.status == "PERMISSION_DENIED":
            kinds["forbid" if d.rule_ids else "denied by default"] += 1
        else:
            kinds[d.status] += 1
        if r.subject_type == "individual":
            kinds["(individuals asked)"] += 1
    return ", ".join(f"{k} {v / len(decisions):.1%}" for k, v in sorted(kinds.items()))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--passes", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="20 passes: a few seconds")
    args = parser.parse_args()
    passes = 20 if args.quick else args.passes

    memorandum, digest = load_memorandum(MEMORANDUM)
    catalog = load_catalog()
    start = time.perf_counter()
    engine = PolicyEngine(memorandum, digest, catalog)
    for member in memorandum.member_by_id:
        engine.prepare(member)
    print(
        f"engine built for {len(memorandum.rules)} rules, {len(memorandum.members)} members "
        f"in {(time.perf_counter() - start) * 1000:.1f} ms",
        file=sys.stderr,
    )
    requests = make_requests(args.requests)
    decisions = [engine.decide(r) for r in requests]  # warm-up
    print(f"mix of {len(requests)} requests: {describe(decisions, requests)}", file=sys.stderr)
    answers = {key_of(r): d for r, d in zip(requests, decisions, strict=True)}
    assert all(answers[key_of(r)] == engine.decide(r) for r in requests)

    decide = engine.decide
    gc.collect()
    start = time.perf_counter()
    for _ in range(passes):
        for r in requests:
            decide(r)
    project_seconds = time.perf_counter() - start

    get = answers.__getitem__
    gc.collect()
    start = time.perf_counter()
    for _ in range(passes):
        for r in requests:
            get(key_of(r))
    baseline_seconds = time.perf_counter() - start

    clock = time.perf_counter_ns
    project_ns: list[float] = []
    baseline_ns: list[float] = []
    for _ in range(max(1, min(passes, 5))):
        for r in requests:
            t = clock()
            decide(r)
            project_ns.append(clock() - t)
        for r in requests:
            t = clock()
            get(key_of(r))
            baseline_ns.append(clock() - t)

    total = passes * len(requests)
    decisions_per_s = total / project_seconds
    baseline_per_s = total / baseline_seconds
    p50 = statistics.median(project_ns) / 1000
    p99 = pct(project_ns, 99) / 1000
    baseline_p99 = pct(baseline_ns, 99) / 1000
    print(
        f"decide: {decisions_per_s:,.0f}/s, p50 {p50:.2f} us, p99 {p99:.2f} us; "
        f"dict lookup: {baseline_per_s:,.0f}/s, p50 {statistics.median(baseline_ns) / 1000:.2f} "
        f"us, p99 {baseline_p99:.2f} us ({passes} passes over {len(requests)} requests)",
        file=sys.stderr,
    )
    result = {
        "benchmark": "policy",
        "decisions_per_s": round(decisions_per_s),
        "baseline_per_s": round(baseline_per_s),
        "ratio": round(decisions_per_s / baseline_per_s, 3),
        "p50_us": round(p50, 3),
        "p99_us": round(p99, 3),
        "baseline_p99_us": round(baseline_p99, 3),
        "p99_ratio": round(p99 / baseline_p99, 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

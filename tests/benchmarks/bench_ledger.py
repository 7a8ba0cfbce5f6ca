"""Durable audit-ledger appends against raw SQL inserts of the same bytes.

In one run:

* project: ``--entries`` N realistic audit entries appended by ``--concurrency`` C
  asyncio tasks through ``Ledger.append`` (group commit, hashing, tree nodes, a
  signed checkpoint per batch, durable before acknowledged), into a node home in
  ``--home`` DIR (kept there for ``credit-node audit … --home DIR``);
* baseline: the same bytes inserted into a plain (index, body) table with raw SQL
  in the very batch sizes the ledger used, one commit (flush) per batch, no hashing.

Then: ``audit verify`` over the whole log, one inclusion proof (p50 over many),
and the bytes stored per entry beyond its body. The last line printed is one JSON
object with ``ratio`` (project appends/s over baseline) and ``p99_ratio``
(project p99 append latency over the baseline's p99 batch commit time).

    python tests/benchmarks/bench_ledger.py --quick
    python tests/benchmarks/bench_ledger.py --entries 1000000 --concurrency 256 --home /tmp/ledger
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

from creditexchange.node.app.config import load_config
from creditexchange.node.app.home import create_home
from creditexchange.node.app.keys import load_signing_key
from creditexchange.node.database import create_database_engine, upgrade
from creditexchange.node.ledger import AuditLog, Ledger, entries, verify
from creditexchange.node.ledger.log import origin_for
from creditexchange.node.ledger.note import Signer
from creditexchange.v1 import audit_pb2


def make_bodies(n: int) -> list[bytes]:
    rng = random.Random(5)
    secret = bytes(32)
    members = ["shenzhen", "dongguan", "heyuan", "shanwei", "customs"]
    return [
        entries.encode(
            entries.AuditEntry(
                time_unix_micros=1_790_000_000_000_000 + i,
                requester=rng.choice(members),
                responder="huizhou",
                direction=entries.Direction.INCOMING,
                kind=entries.Kind.QUERY,
                nonce=rng.randbytes(16),
                request_digest=rng.randbytes(32),
                purpose="bank_credit",
                legal_basis="《广东省社会信用条例》第二十九条",
                case_reference=f"LOAN-2026-{i:08d}",
                officer=f"officer-{rng.randrange(500)}",
                subject_hmac=entries.subject_hmac(secret, f"subject-{rng.randrange(10**6)}"),
                themes_asked=["admin_penalty", "serious_dishonesty"],
                themes_answered=["admin_penalty"],
                decision=audit_pb2.Decision(
                    allowed=True,
                    mode="full",
                    rule_ids=["core-enterprise-bank"],
                    memorandum_version=3,
                    memorandum_hash=rng.randbytes(32),
                ),
                masked_fields=["legal_rep_id_number"],
                outcome=audit_pb2.Outcome(status="OK"),
                answer_digest=rng.randbytes(32),
            )
        )
        for i in range(n)
    ]


def pct(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]


async def run_project(
    store: AuditLog, bodies: list[bytes], concurrency: int, max_batch: int
) -> tuple[float, list[float], list[int]]:
    latencies: list[float] = []
    position = 0
    async with Ledger(store, max_batch=max_batch) as ledger:
        ledger.batches.clear()
        batches: list[int] = []

        async def worker() -> None:
            nonlocal position
            while position < len(bodies):
                body = bodies[position]
                position += 1
                start = time.perf_counter()
                await ledger.append(body)
                latencies.append(time.perf_counter() - start)
                if len(ledger.batches) > 500:
                    batches.extend(ledger.batches)
                    ledger.batches.clear()

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
        batches.extend(ledger.batches)
    return elapsed, latencies, batches


def run_baseline(url: str, bodies: list[bytes], batches: list[int]) -> tuple[float, list[float]]:
    engine = create_database_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE plain_log (idx INTEGER PRIMARY KEY, body BLOB NOT NULL)")
    durations: list[float] = []
    with engine.connect() as conn:
        position = 0
        start = time.perf_counter()
        for size in batches:
            t = time.perf_counter()
            conn.exec_driver_sql(
                "INSERT INTO plain_log (idx, body) VALUES (?, ?)",
                [(position + i, bodies[position + i]) for i in range(size)],
            )
            conn.commit()
            durations.append(time.perf_counter() - t)
            position += size
        elapsed = time.perf_counter() - start
    engine.dispose()
    return elapsed, durations


def stored_bytes(store: AuditLog) -> int:
    with store.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
        size = conn.exec_driver_sql("PRAGMA page_size").scalar_one()
        records = conn.exec_driver_sql(
            "SELECT COALESCE(SUM(LENGTH(fields)), 0) + COUNT(*) * 200 FROM records"
        ).scalar_one()
    return int(pages * size - records)


def big_log_proofs(scratch: Path, size: int, proofs: int) -> dict[str, Any]:
    """Inclusion proof time in a log of ``size`` entries, built with large direct commits."""
    engine = create_database_engine(f"sqlite:///{scratch / 'big.db'}")
    upgrade(engine)
    store = AuditLog(engine, Signer("bench/big/audit", SigningKey(bytes(range(32)))))
    start = time.perf_counter()
    step = 200_000
    for first in range(0, size, step):
        store.commit([i.to_bytes(8, "big") for i in range(first, min(size, first + step))])
    built = time.perf_counter() - start
    rng = random.Random(9)
    times = []
    for _ in range(proofs):
        index = rng.randrange(size)
        t = time.perf_counter()
        store.inclusion_proof(index, size)
        times.append(time.perf_counter() - t)
    return {
        "big_log_entries": size,
        "big_log_build_s": round(built, 1),
        "big_log_proof_p50_ms": round(pct(times, 50) * 1000, 3),
        "big_log_proof_p99_ms": round(pct(times, 99) * 1000, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--max-batch", type=int, default=1024)
    parser.add_argument("--home", type=Path, help="node home to create and keep the ledger in")
    parser.add_argument("--quick", action="store_true", help="20,000 entries: under a minute")
    parser.add_argument("--proofs", type=int, default=2000)
    parser.add_argument(
        "--proof-size",
        type=int,
        default=0,
        help="also build a log of this many small entries (direct batch commits) and time "
        "inclusion proofs in it, e.g. 10000000",
    )
    args = parser.parse_args()
    n = 20_000 if args.quick else args.entries

    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as scratch:
        home = args.home or Path(scratch) / "node"
        config = (
            create_home(home, "huizhou") if not (home / "node.toml").exists() else load_config(home)
        )
        signer = Signer(origin_for(config.member_id), load_signing_key(config.signing_key_path))
        store = AuditLog(create_database_engine(config.database_url), signer)
        if store.size():
            sys.exit(f"{home} already holds a ledger of {store.size()} entries; use a new --home")
        bodies = make_bodies(n)
        body_bytes = sum(map(len, bodies))
        print(f"{n} entries, {body_bytes / n:.0f} bytes each on average", file=sys.stderr)

        elapsed, latencies, batches = asyncio.run(
            run_project(store, bodies, args.concurrency, args.max_batch)
        )
        base_elapsed, base_durations = run_baseline(
            f"sqlite:///{Path(scratch) / 'baseline.db'}", bodies, batches
        )

        start = time.perf_counter()
        report = verify(store, signer.verifier())
        verify_seconds = time.perf_counter() - start
        assert report.ok, report.problems

        rng = random.Random(3)
        proof_times = []
        for _ in range(args.proofs):
            index = rng.randrange(n)
            t = time.perf_counter()
            store.inclusion_proof(index, n)
            proof_times.append(time.perf_counter() - t)
        overhead = (stored_bytes(store) - body_bytes) / n
        big = big_log_proofs(Path(scratch), args.proof_size, args.proofs) if args.proof_size else {}

    result: dict[str, Any] = {
        "benchmark": "ledger",
        "entries": n,
        "concurrency": args.concurrency,
        "appends_per_s": round(n / elapsed),
        "baseline_appends_per_s": round(n / base_elapsed),
        "ratio": round(base_elapsed / elapsed, 3),
        "p50_ms": round(pct(latencies, 50) * 1000, 3),
        "p99_ms": round(pct(latencies, 99) * 1000, 3),
        "baseline_p50_ms": round(pct(base_durations, 50) * 1000, 3),
        "baseline_p99_ms": round(pct(base_durations, 99) * 1000, 3),
        "p99_ratio": round(pct(latencies, 99) / pct(base_durations, 99), 3),
        "mean_batch": round(n / len(batches), 1),
        "verify_s": round(verify_seconds, 3),
        "proof_p50_ms": round(pct(proof_times, 50) * 1000, 3),
        "proof_p99_ms": round(pct(proof_times, 99) * 1000, 3),
        "bytes_per_entry_beyond_body": round(overhead, 1),
        "home": str(home) if args.home else None,
        **big,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

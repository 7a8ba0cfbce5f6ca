"""A report across the region: its latency against the slowest single member, and a dead member.

In one run, on a six-member federation on loopback (five providers each served by
its own ``credit-node serve`` process, shenzhen asking from this process with
its own ledger):

* **single**: ``--queries`` N sequential queries from shenzhen to each of the five
  other members alone, through the same client a report uses (signed, sealed,
  verified, recorded); p50 per member;
* **report**: N sequential consolidated reports (``federation.report``) across the
  five, full mode; p50 and p99;
* **black-holed**: ``--dead-reports`` reports while one member (heyuan) is
  black-holed — its endpoint is a TCP listener that accepts and never answers
  (the requester's ``peers`` override points there) — with ``--deadline`` S, each
  from a new client (a new connection, no breaker history), so every report pays
  the dead member in full.

The last line printed is one JSON object: per-member single p50s, the report's
p50 and p99, ``ratio`` (report p50 over the slowest member's single p50; the aim
is at most 1.3) and ``deadline_ratio`` (the median time of a report with a
black-holed member over the deadline; the aim is at most 1.1), and where the
time goes: the requester's CPU per single query and per report, the providers'
CPU per report, and the machine's CPUs. Everything runs on one machine, so a
report's five providers and its requester share its cores; on one core per
member the report's latency is the slowest answer plus the requester's CPU.
``cpu_floor_ratio`` is the ratio no scheduling could beat on this machine: all the CPU
a report costs (requester and providers) spread evenly over its cores, over the slowest
single member's p50. A single query's latency on loopback is its CPU, so a report of
five costs about five times that, and on two cores the floor is about 2.5.

    python tests/benchmarks/bench_federation.py --quick
    python tests/benchmarks/bench_federation.py --queries 300 --deadline 5
    python tests/benchmarks/bench_federation.py --quick --profile /tmp/report.pstats
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text

from creditexchange.devtools.provision import provision, set_settings
from creditexchange.node.app.config import NodeConfig
from creditexchange.node.app.wiring import open_regional_client
from creditexchange.node.database import open_database
from creditexchange.node.federation.fanout import Outcome
from creditexchange.node.federation.report import consolidated_report

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the other benchmarks
from bench_exchange import cpu_seconds, serving

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the tests' helpers

MEMBERS = ("huizhou", "shenzhen", "dongguan", "heyuan", "shanwei", "customs")
REQUESTER = "shenzhen"
PROVIDERS = tuple(m for m in MEMBERS if m != REQUESTER)
BLACK_HOLED = "heyuan"
PROCUREMENT: dict[str, Any] = {
    "purpose": "public_procurement",
    "legal_basis": "《政府采购法》第二十二条",
    "case_reference": "BENCH-1",
    "officer": "bench",
}


class BlackHole:
    """A TCP listener that accepts every connection and never says a word."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(64)
        self.port: int = self.socket.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.socket.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.socket.close()
        for connection in self.held:
            connection.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q * len(ordered)) - 1))]


async def measure(
    config: NodeConfig, subjects: list[str], args: argparse.Namespace, servers: list[int]
) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    async with open_regional_client(config) as region:
        for member in PROVIDERS:  # connect and warm up every channel
            await region.client.query(subjects[0], to=member, **PROCUREMENT)
        cpu = time.process_time()
        for member in PROVIDERS:
            latencies = []
            for i in range(args.queries):
                started = time.perf_counter()
                await region.client.query(subjects[i % len(subjects)], to=member, **PROCUREMENT)
                latencies.append(time.perf_counter() - started)
            figures[member] = latencies
            print(f"  single {member}: p50 {statistics.median(latencies) * 1000:.2f} ms",
                  file=sys.stderr)  # fmt: skip
        figures["cpu_query"] = (time.process_time() - cpu) / (args.queries * len(PROVIDERS))
        reports = []
        profile = cProfile.Profile() if args.profile else None
        cpu, served = time.process_time(), sum(cpu_seconds(pid) for pid in servers)
        for i in range(args.queries):
            started = time.perf_counter()
            if profile:
                profile.enable()
            report = await consolidated_report(
                region, subjects[i % len(subjects)], deadline_s=args.deadline, **PROCUREMENT
            )
            if profile:
                profile.disable()
            reports.append(time.perf_counter() - started)
            failed = [m for m in report["members"] if m["status"] not in ("answered", "own")]
            if failed:
                raise SystemExit(f"a member did not answer in a healthy federation: {failed}")
        figures["cpu_report"] = (time.process_time() - cpu) / args.queries
        figures["cpu_providers"] = (sum(cpu_seconds(p) for p in servers) - served) / args.queries
        if profile:
            profile.dump_stats(args.profile)
        figures["report"] = reports
        print(f"  report: p50 {statistics.median(reports) * 1000:.2f} ms", file=sys.stderr)
    return figures


async def measure_dead(
    config: NodeConfig, subjects: list[str], args: argparse.Namespace
) -> list[float]:
    """Reports from ``config``'s node, whose peers send heyuan's calls into a black hole.

    Each report opens a new client, so each meets the black hole with a new connection:
    the worst case. (A client that lives on sees gRPC give up the handshake after 20 s
    and then fail the member fast, as ``unavailable``; its breaker then skips it.)
    """
    times = []
    for i in range(args.dead_reports):
        async with open_regional_client(config) as dead:
            started = time.perf_counter()
            report = await consolidated_report(
                dead, subjects[i % len(subjects)], deadline_s=args.deadline, **PROCUREMENT
            )
            times.append(time.perf_counter() - started)
        (dark,) = [m for m in report["members"] if m["member"] == BLACK_HOLED]
        if dark["status"] != Outcome.TIMED_OUT:
            raise SystemExit(
                f"the black-holed member was {dark['status']}, not timed out: {dark['reason']}"
            )
    print(f"  black-holed: median {statistics.median(times):.3f} s", file=sys.stderr)
    return times


def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(args.home or tempfile.mkdtemp(prefix="bench-federation-"))
    from ports import free_ports  # tests/ports.py, on the path as the tests' helpers

    nodes = provision(
        root,
        members=MEMBERS,
        ports=free_ports(len(MEMBERS)),
        subjects=args.subjects,
        say=lambda line: print(f"  {line}", file=sys.stderr),
    )
    for node in nodes.values():
        set_settings(node.home, request_window_s=3600)
    database = open_database(nodes["huizhou"].config.database_url)
    with database.connect() as conn:
        subjects = [
            row[0]
            for row in conn.execute(
                text("SELECT subject_id FROM subjects WHERE subject_type = 'enterprise' LIMIT 50")
            )
        ]
    database.dispose()
    config = nodes[REQUESTER].config
    with serving(nodes[m] for m in PROVIDERS) as servers:
        figures = asyncio.run(measure(config, subjects, args, servers))
        hole = BlackHole()
        peers = {**config.settings.peers, BLACK_HOLED: f"127.0.0.1:{hole.port}"}
        set_settings(nodes[REQUESTER].home, peers=peers)
        try:
            dead = asyncio.run(measure_dead(nodes[REQUESTER].config, subjects, args))
        finally:
            hole.close()
    single = {m: statistics.median(figures[m]) * 1000 for m in PROVIDERS}
    slowest = max(single.values())
    report_p50 = statistics.median(figures["report"]) * 1000
    return {
        "single_p50_ms": {m: round(v, 3) for m, v in single.items()},
        "slowest_single_p50_ms": round(slowest, 3),
        "report_p50_ms": round(report_p50, 3),
        "report_p99_ms": round(percentile(figures["report"], 0.99) * 1000, 3),
        "ratio": round(report_p50 / slowest, 3),
        "deadline_s": args.deadline,
        "black_holed_report_s": round(statistics.median(dead), 3),
        "deadline_ratio": round(statistics.median(dead) / args.deadline, 3),
        "requester_cpu_ms_per_query": round(figures["cpu_query"] * 1000, 2),
        "requester_cpu_ms_per_report": round(figures["cpu_report"] * 1000, 2),
        "providers_cpu_ms_per_report": round(figures["cpu_providers"] * 1000, 2),
        "cpu_floor_ratio": round(
            (figures["cpu_report"] + figures["cpu_providers"])
            * 1000
            / (os.cpu_count() or 1)
            / slowest,
            3,
        ),
        "cpus": os.cpu_count(),
        "queries": args.queries,
        "members": len(PROVIDERS),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small run, under a minute")
    parser.add_argument("--queries", type=int, default=300, help="per member, and reports")
    parser.add_argument("--dead-reports", type=int, default=5)
    parser.add_argument("--deadline", type=float, default=5.0, help="seconds")
    parser.add_argument("--subjects", type=int, default=200)
    parser.add_argument("--home", help="keep the provisioned nodes here")
    parser.add_argument("--profile", help="cProfile the reports (this process) into this file")
    args = parser.parse_args()
    if args.quick:
        args.queries, args.dead_reports, args.deadline, args.subjects = 40, 3, 2.0, 60
    print(json.dumps(run(args)))


if __name__ == "__main__":
    main()

"""Lookups through the REST gateway against the same lookups through the Python client.

In one run, on a three-member federation on loopback (each member served by its own
``credit-node serve`` process; shenzhen's serves its REST gateway beside its node):

* **direct**: this process asks through shenzhen's own Python client
  (``open_regional_client``: signed, sealed, verified, recorded in shenzhen's ledger),
  ``--concurrency`` lookups at a time;
* **gateway**: this process asks shenzhen's gateway over HTTP as a registered partner
  (key and officer), the same lookups, as many at a time; the gateway runs them through
  the same client path inside shenzhen's node process. The load generator is a minimal
  keep-alive HTTP/1.1 client (one connection per worker, as ``wrk`` does), so that what
  is measured is the gateway, not a client library's own CPU on the shared cores.

Two lookups are measured, each with both paths in alternating rounds (so drift of
the machine falls on both): the consolidated **report** on one subject across the
region (``GET /v1/subjects/{id}/report`` against ``consolidated_report``), and a
**check** of one subject at every member (``POST /v1/checks`` against
``check_everyone``).

The last line printed is one JSON object: ``ratio`` (the gateway's report lookups per
second over the direct path's; the aim is at least 0.6), ``p99_ratio`` (the
gateway's p99 latency over the direct path's), the same for checks, and the absolute
figures. Everything shares the machine's cores: the load generator, the three nodes.

    python tests/benchmarks/bench_gateway.py --quick
    python tests/benchmarks/bench_gateway.py --lookups 400 --concurrency 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import text

from creditexchange.devtools.provision import ProvisionedNode, provision, set_settings
from creditexchange.gateway.access import KeyRegistry, Role
from creditexchange.node.app.wiring import open_regional_client
from creditexchange.node.database import open_database
from creditexchange.node.federation.report import check_everyone, consolidated_report

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the other benchmarks
from bench_exchange import serving

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the tests' helpers

MEMBERS = ("huizhou", "shenzhen", "dongguan")
REQUESTER = "shenzhen"
ASKED: dict[str, Any] = {
    "purpose": "public_procurement",
    "legal_basis": "《政府采购法》第二十二条",
    "case_reference": "BENCH-GW-1",
}
OFFICER = "bench-officer"


class Connection:
    """One keep-alive HTTP/1.1 connection: a request, and its whole response read."""

    def __init__(self, port: int, headers: dict[str, str]) -> None:
        self.port = port
        self.head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def request(self, method: str, target: str, body: bytes = b"") -> tuple[int, bytes]:
        if self.streams is None:
            self.streams = await asyncio.open_connection("127.0.0.1", self.port)
        reader, writer = self.streams
        extra = f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        writer.write(
            f"{method} {target} HTTP/1.1\r\nHost: gateway\r\n{self.head}{extra}\r\n".encode() + body
        )
        status_line = await reader.readline()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return int(status_line.split()[1]), await reader.readexactly(length)

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q * len(ordered)) - 1))]


async def drive(
    lookup: Callable[[int], Awaitable[None]], count: int, concurrency: int
) -> tuple[float, list[float]]:
    """``count`` lookups, ``concurrency`` at a time: (lookups per second, latencies)."""
    latencies: list[float] = []
    queue = iter(range(count))

    async def worker() -> None:
        for i in queue:
            started = time.perf_counter()
            await lookup(i)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count / (time.perf_counter() - started), latencies


async def measure(
    nodes: dict[str, ProvisionedNode], key: str, subjects: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    node = nodes[REQUESTER]
    headers = {"Authorization": f"Bearer {key}", "X-Officer": OFFICER}
    idle = [Connection(node.gateway_port, headers) for _ in range(args.concurrency)]
    figures: dict[str, dict[str, list[float]]] = {
        kind: {"direct_rate": [], "gateway_rate": [], "direct_lat": [], "gateway_lat": []}
        for kind in ("report", "check")
    }

    async def http(method: str, target: str, body: bytes = b"") -> tuple[int, bytes]:
        connection = idle.pop()
        try:
            return await connection.request(method, target, body)
        finally:
            idle.append(connection)

    async with open_regional_client(node.config) as region:

        async def direct_report(i: int) -> None:
            report = await consolidated_report(
                region, subjects[i % len(subjects)], officer=OFFICER, **ASKED
            )
            assert report["signature"]

        query = urllib.parse.urlencode(
            {
                "purpose": ASKED["purpose"],
                "legal_basis": ASKED["legal_basis"],
                "case": ASKED["case_reference"],
            }
        )

        async def gateway_report(i: int) -> None:
            target = f"/v1/subjects/{subjects[i % len(subjects)]}/report?{query}"
            status, body = await http("GET", target)
            if status != 200:
                raise SystemExit(f"gateway report: {status} {body[:500]!r}")

        async def direct_check(i: int) -> None:
            await check_everyone(region, [subjects[i % len(subjects)]], officer=OFFICER, **ASKED)

        async def gateway_check(i: int) -> None:
            body = json.dumps({**ASKED, "subjects": [subjects[i % len(subjects)]]}).encode()
            status, answer = await http("POST", "/v1/checks", body)
            if status != 200:
                raise SystemExit(f"gateway check: {status} {answer[:500]!r}")

        paths = {
            "report": (direct_report, gateway_report),
            "check": (direct_check, gateway_check),
        }
        for direct, gateway in paths.values():  # warm up both paths and every channel
            await drive(direct, args.concurrency, args.concurrency)
            await drive(gateway, args.concurrency, args.concurrency)
        per_round = max(1, args.lookups // args.rounds)
        for round_ in range(args.rounds):
            for kind, (direct, gateway) in paths.items():
                order = [("direct", direct), ("gateway", gateway)]
                for name, lookup in order if round_ % 2 == 0 else reversed(order):
                    rate, latencies = await drive(lookup, per_round, args.concurrency)
                    figures[kind][f"{name}_rate"].append(rate)
                    figures[kind][f"{name}_lat"].extend(latencies)
    for connection in idle:
        connection.close()
    result: dict[str, Any] = {}
    for kind, f in figures.items():
        direct_rate, gateway_rate = (
            statistics.median(f["direct_rate"]),
            statistics.median(f["gateway_rate"]),
        )
        direct_p99, gateway_p99 = (
            percentile(f["direct_lat"], 0.99),
            percentile(f["gateway_lat"], 0.99),
        )
        print(
            f"  {kind}: direct {direct_rate:.1f}/s p99 {direct_p99 * 1000:.1f} ms, "
            f"gateway {gateway_rate:.1f}/s p99 {gateway_p99 * 1000:.1f} ms",
            file=sys.stderr,
        )
        result[kind] = {
            "direct_per_s": round(direct_rate, 2),
            "gateway_per_s": round(gateway_rate, 2),
            "direct_p50_ms": round(statistics.median(f["direct_lat"]) * 1000, 2),
            "gateway_p50_ms": round(statistics.median(f["gateway_lat"]) * 1000, 2),
            "direct_p99_ms": round(direct_p99 * 1000, 2),
            "gateway_p99_ms": round(gateway_p99 * 1000, 2),
            "ratio": round(gateway_rate / direct_rate, 3),
            "p99_ratio": round(gateway_p99 / direct_p99, 3),
        }
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ports import free_ports  # tests/ports.py, on the path as the tests' helpers

    root = Path(args.home or tempfile.mkdtemp(prefix="bench-gateway-"))
    ports = free_ports(len(MEMBERS) * 2)
    nodes = provision(
        root,
        members=MEMBERS,
        ports=ports[: len(MEMBERS)],
        subjects=args.subjects,
        say=lambda line: print(f"  {line}", file=sys.stderr),
    )
    for node in nodes.values():
        set_settings(node.home, request_window_s=3600)
    requester = nodes[REQUESTER]
    set_settings(requester.home, gateway_port=ports[-1], gateway_deadline_s=10.0)
    nodes[REQUESTER] = ProvisionedNode(
        requester.member, requester.home, requester.port, 0, ports[-1]
    )
    config = nodes[REQUESTER].config
    database = open_database(config.database_url)
    purposes = [ASKED["purpose"]]
    _, key = KeyRegistry(database).add(
        "bench-partner", Role.PARTNER, purposes=purposes, known_purposes=purposes,
        rate_per_min=1_000_000,
    )  # fmt: skip
    database.dispose()
    huizhou = open_database(nodes["huizhou"].config.database_url)
    with huizhou.connect() as conn:
        subjects = [
            row[0]
            for row in conn.execute(
                text("SELECT subject_id FROM subjects WHERE subject_type = 'enterprise' LIMIT 50")
            )
        ]
    huizhou.dispose()
    with serving(nodes.values()):
        figures = asyncio.run(measure(nodes, key, subjects, args))
    report, check = figures["report"], figures["check"]
    return {
        "ratio": report["ratio"],
        "p99_ratio": report["p99_ratio"],
        "check_ratio": check["ratio"],
        "check_p99_ratio": check["p99_ratio"],
        "report": report,
        "check": check,
        "concurrency": args.concurrency,
        "lookups_per_path": args.lookups,
        "members": len(MEMBERS),
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small run, under a minute")
    parser.add_argument("--lookups", type=int, default=400, help="per path and kind")
    parser.add_argument("--rounds", type=int, default=4, help="alternations of the two paths")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--subjects", type=int, default=100)
    parser.add_argument("--home", help="keep the provisioned nodes here")
    args = parser.parse_args()
    if args.quick:
        args.lookups, args.rounds, args.subjects = 80, 2, 40
    print(json.dumps(run(args)))


if __name__ == "__main__":
    main()

"""Cross-city queries over mutual TLS: a real node against a bare gRPC server, same load.

In one run, with the same load generator (``--concurrency`` C asyncio callers on
one mutual-TLS channel, each sending the next of ``--requests`` N pre-signed
Query envelopes from shenzhen to huizhou):

* baseline: a bare ``grpc.aio`` server with the node's own certificate and mutual
  TLS, in its own process, that answers every call with one fixed answer
  envelope (a real answer, so the bytes on the wire are the same size);
* project: the huizhou node (``credit-node serve``) in its own process doing the
  whole path — peer certificate, revocation list, signature, replay guard (in the
  store), memorandum check, policy decision, store read, redaction, quota count,
  durable ledger append with its inclusion proof, signed answer.

The provider's store is SQLite in its home, or with ``--postgres URL`` a fresh
schema in that PostgreSQL database (created for the run, dropped after it).

The load generator does not verify answers (it would cost both sides the same).
The last line printed is one JSON object: ``queries_per_s`` and latencies of
both, ``ratio`` (project throughput over the baseline's), ``p99_ratio``
(project p99 over the baseline's p99) and ``store`` (``sqlite`` or ``postgresql``);
``server_cpu_ms_per_query`` is the node's CPU time per query (all its threads),
``server_main_thread_cpu_ms_per_query`` that of its event loop's thread alone, and
``ledger_commits`` the number of transactions the ledger's entries took.

On a shared machine one run says little: ``--rounds R`` measures the node and the
bare server R times each, alternately (both stay up; each round sends fresh
requests), and reports the median of each figure, ``ratio`` and ``p99_ratio``
being medians of the rounds' own ratios.

    python tests/benchmarks/bench_exchange.py --quick
    python tests/benchmarks/bench_exchange.py --quick --rounds 5
    python tests/benchmarks/bench_exchange.py --quick --workers 2 --postgres postgresql+psycopg://postgres@127.0.0.1:5432/test
    python tests/benchmarks/bench_exchange.py --requests 20000 --concurrency 64
    python tests/benchmarks/bench_exchange.py --quick --postgres postgresql+psycopg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
from sqlalchemy import text

from creditexchange.certs.identity import member_dns_name
from creditexchange.devtools.provision import ProvisionedNode, provision, set_settings
from creditexchange.node.database import open_database
from creditexchange.v1 import exchange_pb2, exchange_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the tests' helpers

THEMES = ["registration", "admin_penalty", "admin_license"]


# --- the bare server (run as a child process) --------------------------------------


class _Fixed(exchange_pb2_grpc.CreditExchangeServicer):
    def __init__(self, answer: exchange_pb2.Envelope) -> None:
        self.answer = answer

    async def Query(self, request: Any, context: Any) -> Any:
        return self.answer


async def bare_server(home: Path, port: int, answer_file: Path, concurrency: int) -> None:
    tls = home / "tls"
    answer = exchange_pb2.Envelope()
    answer.ParseFromString(answer_file.read_bytes())
    server = grpc.aio.server(
        maximum_concurrent_rpcs=max(256, concurrency * 2),
        options=[("grpc.so_reuseport", 1)],  # --workers: several bare servers share the port
    )
    exchange_pb2_grpc.add_CreditExchangeServicer_to_server(_Fixed(answer), server)
    credentials = grpc.ssl_server_credentials(
        [((tls / "node.key").read_bytes(), (tls / "node.crt").read_bytes())],
        root_certificates=(tls / "ca.crt").read_bytes(),
        require_client_auth=True,
    )
    server.add_secure_port(f"127.0.0.1:{port}", credentials)
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


# --- the load generator ----------------------------------------------------------------


def requests(
    node: ProvisionedNode, provider: ProvisionedNode, subjects: list[str], n: int
) -> list[Any]:
    """``n`` signed queries from ``node`` to ``provider``, sealed to its key as a client does."""
    from signedqueries import signed_queries  # tests/signedqueries.py, beside the helpers

    return signed_queries(
        node,
        provider,
        subjects,
        n,
        purpose="public_procurement",
        themes=THEMES,
        legal_basis="《政府采购法》第二十二条",
        officer="bench",
    )


async def drive(
    requester: ProvisionedNode,
    provider: str,
    port: int,
    envelopes: list[Any],
    concurrency: int,
    connections: int = 1,
) -> dict[str, float]:
    """Send ``envelopes`` with ``concurrency`` callers over ``connections`` TCP connections
    (more than one lets the kernel spread them over processes sharing the port)."""
    tls = requester.home / "tls"
    credentials = grpc.ssl_channel_credentials(
        (tls / "ca.crt").read_bytes(),
        (tls / "node.key").read_bytes(),
        (tls / "node.crt").read_bytes(),
    )
    latencies: list[float] = []
    failures: dict[str, int] = {}
    async with contextlib.AsyncExitStack() as stack:
        stubs = []
        for n in range(connections):
            channel = await stack.enter_async_context(
                grpc.aio.secure_channel(
                    f"127.0.0.1:{port}",
                    credentials,
                    options=[
                        ("grpc.ssl_target_name_override", member_dns_name(provider)),
                        ("grpc.use_local_subchannel_pool", 1),  # a connection of its own
                        ("bench.connection", n),
                    ],
                )
            )
            stubs.append(exchange_pb2_grpc.CreditExchangeStub(channel))
        for stub, envelope in zip(stubs, envelopes, strict=False):
            await stub.Query(envelope, timeout=30)  # connect and warm up (one nonce each)
        queue = iter(envelopes[connections:])

        async def caller(stub: Any) -> None:
            for envelope in queue:
                started = time.perf_counter()
                try:
                    await stub.Query(envelope, timeout=30)
                except grpc.aio.AioRpcError as exc:
                    failures[exc.code().name] = failures.get(exc.code().name, 0) + 1
                    continue
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(caller(stubs[i % connections]) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
    if failures:
        print(f"  failures: {failures}", file=sys.stderr)
    latencies.sort()
    return {
        "queries_per_s": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "failed": sum(failures.values()),
    }


def workers_of(pid: int) -> list[int]:
    """The processes a ``serve --workers`` supervisor started (none for a single node)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in children.read_text().split()] if children.exists() else []


def cpu_of(pids: list[int], main_thread: bool = False) -> float:
    """CPU seconds of these processes (of their main threads only, with ``main_thread``)."""
    return sum(cpu_seconds(pid, pid if main_thread else None) for pid in pids)


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """User and system CPU time a process (or one of its threads) has used so far (Linux
    /proc)."""
    stat = Path(f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat")
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_ready(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    import socket

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited: {log.read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                time.sleep(0.3)
                return
        time.sleep(0.1)
    raise SystemExit("server did not start")


@contextlib.contextmanager
def serving(nodes: Iterable[ProvisionedNode]) -> Iterator[list[int]]:
    """Each of ``nodes`` as its own ``credit-node serve`` process, ready (its gRPC port and,
    when it has one, its gateway's); their process ids. Stopped with SIGINT at the end."""
    processes = []
    try:
        for node in nodes:
            log = node.home / "serve.log"
            command = [sys.executable, "-m", "creditexchange.node.cli", "serve"]
            command += ["--home", str(node.home), "--log-level", "WARNING"]
            process = subprocess.Popen(command, stdout=log.open("ab"), stderr=subprocess.STDOUT)
            processes.append((process, node, log))
        for process, node, log in processes:
            wait_ready(process, node.port, log)
            if node.gateway_port:
                wait_ready(process, node.gateway_port, log)
        yield [process.pid for process, _, _ in processes]
    finally:
        for process, _, _ in processes:
            process.send_signal(signal.SIGINT)
        for process, _, _ in processes:
            process.wait(60)


@contextlib.contextmanager
def postgres_schema(url: str) -> Iterator[str]:
    """``url`` with its search_path on a fresh schema, dropped when the block ends."""
    if not url.startswith("postgresql+psycopg://"):
        raise SystemExit(f"--postgres takes a postgresql+psycopg:// URL, not {url!r}")
    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        separator = "&" if "?" in url else "?"
        yield f"{url}{separator}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def run(args: argparse.Namespace) -> dict[str, Any]:
    with _home(args.home) as root:
        if args.postgres:
            with postgres_schema(args.postgres) as url:
                return run_on(args, root, url)
        return run_on(args, root, None)


@contextlib.contextmanager
def _home(kept: str | None) -> Iterator[Path]:
    """Where the nodes are provisioned: ``kept`` (``--home``), or a temporary folder removed
    after the run."""
    if kept:
        yield Path(kept)
        return
    root = Path(tempfile.mkdtemp(prefix="bench-exchange-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_on(args: argparse.Namespace, root: Path, provider_url: str | None) -> dict[str, Any]:
    """One run, the nodes in ``root``; the provider's store is ``provider_url``
    (PostgreSQL), else SQLite."""
    from ports import free_ports  # tests/ports.py, on the path as the tests' helpers

    ports = free_ports(3)
    nodes = provision(
        root,
        members=("huizhou", "shenzhen"),
        ports=ports[:2],
        database_urls={"huizhou": provider_url} if provider_url else None,
        subjects=args.subjects,
        say=lambda line: print(f"  {line}", file=sys.stderr),
    )
    provider, requester = nodes["huizhou"], nodes["shenzhen"]
    set_settings(
        provider.home, request_window_s=3600, max_concurrent_calls=max(256, args.concurrency * 2)
    )
    database = open_database(provider.config.database_url)
    with database.connect() as conn:
        subjects = [
            row[0]
            for row in conn.execute(
                text("SELECT subject_id FROM subjects WHERE subject_type = 'enterprise'")
            )
        ]
    database.dispose()
    total, rounds = args.requests, args.rounds
    print(f"  signing {2 * total * rounds} requests", file=sys.stderr)
    for_node = [requests(requester, provider, subjects, total) for _ in range(rounds)]
    for_bare = [requests(requester, provider, subjects, total) for _ in range(rounds)]

    log = provider.home / "serve.log"
    command = [
        sys.executable,
        "-m",
        "creditexchange.node.cli",
        "serve",
        "--home",
        str(provider.home),
    ]
    command += ["--log-level", "WARNING"]
    if args.workers > 1:
        command += ["--workers", str(args.workers)]
    if args.profile:  # cProfile of the node under load (pstats file)
        command[1:1] = ["-m", "cProfile", "-o", args.profile]
    if os.environ.get("BENCH_NODE_COMMAND"):
        command = [sys.executable, *os.environ["BENCH_NODE_COMMAND"].split(), str(provider.home)]
    projects: list[dict[str, float]] = []
    baselines: list[dict[str, float]] = []
    node = subprocess.Popen(command, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    try:
        wait_ready(node, provider.port, log)
        if args.workers > 1:
            time.sleep(2)  # every worker listening, not only the first
        servers = [node.pid, *workers_of(node.pid)] if args.workers > 1 else [node.pid]
        # one real answer, for the bare server to send back
        answer = asyncio.run(_one(requester, provider.port, for_node[0][0]))
        answer_file = root / "answer.bin"
        answer_file.write_bytes(answer.SerializeToString())
        bares = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--bare-server",
                    str(provider.home),
                    "--port",
                    str(ports[2]),
                    "--answer",
                    str(answer_file),
                    "--concurrency",
                    str(args.concurrency),
                ],
                stdout=subprocess.PIPE,
            )
            for _ in range(args.workers)  # the same number of processes as the node
        ]
        bare_pids = [bare.pid for bare in bares]
        connections = 4 * args.workers if args.workers > 1 else 1
        try:
            for bare in bares:
                wait_ready(bare, ports[2], log)
            for n in range(rounds):
                envelopes = for_node[n][1:] if n == 0 else for_node[n]
                print(f"  project: {len(envelopes)} queries, C={args.concurrency}", file=sys.stderr)
                before = cpu_of(servers), cpu_of(servers, main_thread=True)
                project = asyncio.run(
                    drive(
                        requester,
                        "huizhou",
                        provider.port,
                        envelopes,
                        args.concurrency,
                        connections,
                    )
                )
                project["cpu_ms"] = (cpu_of(servers) - before[0]) * 1000 / len(envelopes)
                main = cpu_of(servers, main_thread=True) - before[1]
                project["main_cpu_ms"] = main * 1000 / len(envelopes)
                projects.append(project)
                print(f"  baseline: {total} queries, C={args.concurrency}", file=sys.stderr)
                before = cpu_of(bare_pids), 0.0
                baseline = asyncio.run(
                    drive(
                        requester, "huizhou", ports[2], for_bare[n], args.concurrency, connections
                    )
                )
                baseline["cpu_ms"] = (cpu_of(bare_pids) - before[0]) * 1000 / total
                baselines.append(baseline)
                print(
                    f"  round {n + 1}: project {project['queries_per_s']:.0f} q/s "
                    f"(p99 {project['p99_ms']:.1f} ms, {project['cpu_ms']:.3f} ms CPU a query, "
                    f"{project['main_cpu_ms']:.3f} on the event loop's thread), baseline "
                    f"{baseline['queries_per_s']:.0f} q/s (p99 {baseline['p99_ms']:.1f} ms, "
                    f"{baseline['cpu_ms']:.3f} ms CPU)",
                    file=sys.stderr,
                )
        finally:
            for bare in bares:
                bare.terminate()
                bare.wait(30)
    finally:
        node.send_signal(signal.SIGINT)  # a clean stop: the profile is written
        node.wait(60)
    database = open_database(provider.config.database_url)
    with database.connect() as conn:
        entries = conn.execute(text("SELECT count(*) FROM ledger_entries")).scalar_one()
        commits = conn.execute(text("SELECT count(*) FROM ledger_checkpoints")).scalar_one()
    database.dispose()
    project, baseline = _median(projects), _median(baselines)
    rounds_run = list(zip(projects, baselines, strict=True))
    ratios = [p["queries_per_s"] / b["queries_per_s"] for p, b in rounds_run]
    p99_ratios = [p["p99_ms"] / b["p99_ms"] for p, b in rounds_run]
    return {
        "queries_per_s": round(project["queries_per_s"], 1),
        "p50_ms": round(project["p50_ms"], 3),
        "p99_ms": round(project["p99_ms"], 3),
        "baseline_queries_per_s": round(baseline["queries_per_s"], 1),
        "baseline_p50_ms": round(baseline["p50_ms"], 3),
        "baseline_p99_ms": round(baseline["p99_ms"], 3),
        "ratio": round(statistics.median(ratios), 3),
        "p99_ratio": round(statistics.median(p99_ratios), 3),
        "server_cpu_ms_per_query": round(project["cpu_ms"], 3),
        "server_main_thread_cpu_ms_per_query": round(project["main_cpu_ms"], 3),
        "baseline_server_cpu_ms_per_query": round(baseline["cpu_ms"], 3),
        "concurrency": args.concurrency,
        "requests": total,
        "rounds": rounds,
        "workers": args.workers,
        "store": "postgresql" if provider_url else "sqlite",
        "failed": sum(p["failed"] for p in projects) + sum(b["failed"] for b in baselines),
        "ledger_entries": entries,
        "ledger_commits": commits,
        "answer_bytes": answer.ByteSize(),
    }


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's median over the rounds."""
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


async def _one(requester: ProvisionedNode, port: int, envelope: Any) -> Any:
    tls = requester.home / "tls"
    credentials = grpc.ssl_channel_credentials(
        (tls / "ca.crt").read_bytes(),
        (tls / "node.key").read_bytes(),
        (tls / "node.crt").read_bytes(),
    )
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{port}",
        credentials,
        options=[("grpc.ssl_target_name_override", member_dns_name("huizhou"))],
    ) as channel:
        return await exchange_pb2_grpc.CreditExchangeStub(channel).Query(envelope, timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small run, under a minute")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure the node and the bare server this many times each, alternately, "
        "and report medians",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="serve the node with this many processes (serve --workers N) and run as many "
        "bare servers on one port",
    )
    parser.add_argument("--subjects", type=int, default=500)
    parser.add_argument("--home", help="keep the provisioned nodes here")
    parser.add_argument("--profile", help="profile the node with cProfile into this pstats file")
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="put the provider's store in a fresh schema of this PostgreSQL database "
        "(postgresql+psycopg://…), dropped after the run",
    )
    parser.add_argument("--bare-server", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--answer", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_server:
        asyncio.run(
            bare_server(Path(args.bare_server), args.port, Path(args.answer), args.concurrency)
        )
        return
    if args.quick:
        args.requests, args.subjects = 3000, 200
    print(json.dumps(run(args)))


if __name__ == "__main__":
    main()

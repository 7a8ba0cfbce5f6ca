"""Several processes serving one node: replays, quotas and the ledger stay right.

A node's provider runs as several real ``credit-node serve`` processes sharing one
database — two "pods" on one PostgreSQL (each its own process and port), and
``serve --workers 2`` on one port (PostgreSQL and SQLite). A requester sends them,
all at once, signed queries of two kinds: requests under no quota, each sent twice
at the same moment (to both pods, or on two connections), and requests under a
quota nearly used up, each sent once. Then:

* no nonce is answered twice: of each twice-sent request, one send is answered and
  the other refused as a replay;
* the quota is not exceeded (at most what was left is answered, and counted);
* ``credit-node audit verify`` passes on the provider's ledger (gap-free indices,
  every checkpoint consistent, every signature);
* every receipt's leaf (answers and signed refusals) is in the ledger at its index.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import postgres_schema
from ports import free_port_block, free_ports
from signedqueries import signed_queries
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from creditexchange.certs.identity import member_dns_name
from creditexchange.devtools.provision import ProvisionedNode, provision, set_settings
from creditexchange.node.cli import app
from creditexchange.node.database import open_database
from creditexchange.node.exchange.protocol import REFUSAL_TRAILER
from creditexchange.policy.document import Period
from creditexchange.policy.engine import quota_period_start
from creditexchange.v1 import exchange_pb2, exchange_pb2_grpc

RULE = "regional-land-auction"  # 500 a day per requester
LIMIT = 500
LEFT = 6  # queries left in the period when the load starts
REPLAYED = 12  # requests under no quota, each sent twice at once
REQUESTS = 24  # requests under the quota, each sent once


def _requests(
    requester: ProvisionedNode, provider: ProvisionedNode, subject: str, n: int, purpose: str
) -> list[Any]:
    """``n`` signed queries for ``purpose`` (land_auction counts against a quota,
    public_procurement does not)."""
    return signed_queries(
        requester,
        provider,
        [subject],
        n,
        purpose=purpose,
        themes=["admin_penalty"],
        legal_basis="《招标投标法》",
        officer="officer-7",
    )


def _channel(requester: ProvisionedNode, port: int, n: int) -> grpc.aio.Channel:
    tls = requester.home / "tls"
    credentials = grpc.ssl_channel_credentials(
        (tls / "ca.crt").read_bytes(),
        (tls / "node.key").read_bytes(),
        (tls / "node.crt").read_bytes(),
    )
    return grpc.aio.secure_channel(
        f"127.0.0.1:{port}",
        credentials,
        options=[
            ("grpc.ssl_target_name_override", member_dns_name("huizhou")),
            ("grpc.use_local_subchannel_pool", 1),  # a connection of its own
            ("credit-node.test-channel", n),  # distinct args: not shared with another channel
        ],
    )


Outcome = tuple[str, int | None, bytes | None]  # status, leaf index, leaf hash


async def _send(stub: Any, envelope: Any) -> Outcome:
    try:
        sealed = await stub.Query(envelope, timeout=60)
    except grpc.aio.AioRpcError as exc:
        trailers = dict(exc.trailing_metadata() or ())
        refusal_bytes = trailers.get(REFUSAL_TRAILER)
        if refusal_bytes is None:
            return exc.code().name, None, None
        refusal_envelope = exchange_pb2.Envelope.FromString(refusal_bytes)
        refusal = exchange_pb2.Refusal.FromString(refusal_envelope.payload)
        return refusal.status, refusal.receipt.leaf_index, refusal.receipt.leaf_hash
    answer = exchange_pb2.Answer.FromString(sealed.payload)
    return "OK", answer.receipt.leaf_index, answer.receipt.leaf_hash


async def _load(
    requester: ProvisionedNode, ports: list[int], replayed: list[Any], counted: list[Any]
) -> tuple[list[list[Outcome]], list[Outcome]]:
    """All at once: each of ``replayed`` twice, on two different connections (to two ports
    when two are given), and each of ``counted`` once, spread over the connections."""
    channels = [_channel(requester, ports[i % len(ports)], i) for i in range(8)]
    try:
        stubs = [exchange_pb2_grpc.CreditExchangeStub(c) for c in channels]
        for c in channels:
            await asyncio.wait_for(c.channel_ready(), 30)

        async def twice(i: int, envelope: Any) -> list[Outcome]:
            first, second = stubs[(2 * i) % 8], stubs[(2 * i + 1) % 8]
            return list(await asyncio.gather(_send(first, envelope), _send(second, envelope)))

        pairs, singles = await asyncio.gather(
            asyncio.gather(*(twice(i, e) for i, e in enumerate(replayed))),
            asyncio.gather(*(_send(stubs[i % 8], e) for i, e in enumerate(counted))),
        )
        return list(pairs), list(singles)
    finally:
        for c in channels:
            await c.close()


def _wait_serving(processes: list[subprocess.Popen[bytes]], ports: list[int], log: Path) -> None:
    import socket

    deadline = time.monotonic() + 90
    for port in ports:
        while True:
            for process in processes:
                if process.poll() is not None:
                    pytest.fail(f"a serving process exited: {log.read_text()[-3000:]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"port {port} never opened: {log.read_text()[-3000:]}")
            time.sleep(0.1)
    time.sleep(1.0)  # every worker up, not only the first that bound the port


def _serve(home: Path, *args: str, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "creditexchange.node.cli", "serve", "--home", str(home)]
    return subprocess.Popen(
        [*command, "--log-level", "WARNING", *args], stdout=log.open("ab"), stderr=subprocess.STDOUT
    )


def _stop(processes: list[subprocess.Popen[bytes]]) -> list[int]:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    return [process.wait(60) for process in processes]


def _use_up_quota(engine: Engine, requester: str) -> None:
    now = dt.datetime.now(dt.UTC)
    starts = {quota_period_start(Period.DAY, now + dt.timedelta(minutes=m)) for m in (0, 5)}
    with engine.begin() as conn:
        for start in starts:
            conn.execute(
                text(
                    "INSERT INTO quota_usage (requester, rule_id, period_start, used) "
                    "VALUES (:r, :rule, :start, :used)"
                ),
                {
                    "r": requester,
                    "rule": RULE,
                    "start": int(start.timestamp()),
                    "used": LIMIT - LEFT,
                },
            )


def _federation(root: Path, url: str | None) -> dict[str, ProvisionedNode]:
    ports = free_ports(2)
    nodes = provision(
        root,
        members=("huizhou", "shenzhen"),
        ports=ports,
        database_urls={"huizhou": url} if url else None,
        subjects=20,
    )
    set_settings(nodes["huizhou"].home, request_window_s=3600)
    return nodes


def _subject(engine: Engine) -> str:
    with engine.connect() as conn:
        return str(
            conn.execute(
                text("SELECT subject_id FROM subjects WHERE subject_type = 'enterprise' LIMIT 1")
            ).scalar_one()
        )


def _check(
    nodes: dict[str, ProvisionedNode], pairs: list[list[Outcome]], singles: list[Outcome]
) -> None:
    provider = nodes["huizhou"]
    # no nonce answered twice: of each request sent twice at once, one send is answered
    # and the other refused as a replay (by the store, when the two reached two processes)
    statuses = [sorted(status for status, _, _ in pair) for pair in pairs]
    assert all(pair == ["OK", "UNAUTHENTICATED"] for pair in statuses), statuses
    # the quota: never more answered than was left (each process alone would have answered
    # all of it)
    counted = [status for status, _, _ in singles]
    assert set(counted) <= {"OK", "RESOURCE_EXHAUSTED"}, counted
    answered = counted.count("OK")
    assert 0 < answered <= LEFT, counted
    engine = open_database(provider.config.database_url)
    try:
        with engine.connect() as conn:
            used = conn.execute(
                text(
                    "SELECT max(used) FROM quota_usage "
                    "WHERE requester = 'shenzhen' AND rule_id = :r"
                ),
                {"r": RULE},
            ).scalar_one()
            rows = conn.execute(text("SELECT idx, leaf_hash FROM ledger_entries")).all()
            leaves: dict[int, bytes] = {int(i): bytes(h) for i, h in rows}
            nonces = conn.execute(
                text("SELECT count(*) FROM request_nonces WHERE requester = 'shenzhen'")
            ).scalar_one()
    finally:
        engine.dispose()
    assert used == LIMIT - LEFT + answered
    assert nonces == REPLAYED + REQUESTS
    # every receipt's leaf is in the ledger, at its index; indices are gap-free
    outcomes = [*(o for pair in pairs for o in pair), *singles]
    receipts = [(i, h) for _, i, h in outcomes if i is not None]
    assert len(receipts) == 2 * REPLAYED + REQUESTS
    assert len({i for i, _ in receipts}) == len(receipts)
    for index, leaf in receipts:
        assert bytes(leaves[index]) == leaf
    assert sorted(leaves) == list(range(len(leaves)))
    result = CliRunner().invoke(app, ["audit", "verify", "--home", str(provider.home)])
    assert result.exit_code == 0, result.output


@pytest.fixture
def pg_url() -> Iterator[str]:
    with postgres_schema() as url:
        yield url


@pytest.mark.postgres
def test_two_pods_on_one_postgres_answer_each_request_once_within_the_quota(
    tmp_path: Path, pg_url: str
) -> None:
    nodes = _federation(tmp_path, pg_url)
    provider, requester = nodes["huizhou"], nodes["shenzhen"]
    set_settings(provider.home, metrics_port=0, gateway_port=0)
    engine = open_database(provider.config.database_url)
    subject = _subject(engine)
    _use_up_quota(engine, requester.member)
    engine.dispose()
    replayed = _requests(requester, provider, subject, REPLAYED, "public_procurement")
    counted = _requests(requester, provider, subject, REQUESTS, "land_auction")
    second_port = free_ports(1)[0]
    log = tmp_path / "pods.log"
    pods = [
        _serve(provider.home, log=log),
        _serve(provider.home, "--port", str(second_port), log=log),
    ]
    try:
        _wait_serving(pods, [provider.port, second_port], log)
        pairs, singles = asyncio.run(
            _load(requester, [provider.port, second_port], replayed, counted)
        )
    finally:
        codes = _stop(pods)
    assert codes == [0, 0], log.read_text()[-3000:]
    _check(nodes, pairs, singles)


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_serve_workers_share_one_port_and_answer_each_request_once(
    tmp_path: Path, store: str
) -> None:
    if store == "postgres":
        with postgres_schema() as url:
            _workers_run(tmp_path, url)
    else:
        _workers_run(tmp_path, None)


def _workers_run(tmp_path: Path, url: str | None) -> None:
    nodes = _federation(tmp_path, url)
    provider, requester = nodes["huizhou"], nodes["shenzhen"]
    set_settings(provider.home, gateway_port=0, metrics_port=free_port_block(2))
    engine = open_database(provider.config.database_url)
    subject = _subject(engine)
    _use_up_quota(engine, requester.member)
    engine.dispose()
    replayed = _requests(requester, provider, subject, REPLAYED, "public_procurement")
    counted = _requests(requester, provider, subject, REQUESTS, "land_auction")
    log = tmp_path / "workers.log"
    supervisor = _serve(provider.home, "--workers", "2", log=log)
    metrics_port = provider.config.settings.metrics_port
    try:
        _wait_serving([supervisor], [provider.port, metrics_port, metrics_port + 1], log)
        pairs, singles = asyncio.run(_load(requester, [provider.port], replayed, counted))
        served = [_queries_served(port) for port in (metrics_port, metrics_port + 1)]
    finally:
        codes = _stop([supervisor])
    assert codes == [0], log.read_text()[-3000:]
    assert all(n > 0 for n in served), f"calls per worker: {served}"  # both workers answered
    _check(nodes, pairs, singles)


def _queries_served(port: int) -> float:
    """Calls a worker answered or refused, from its own metrics endpoint."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        lines = response.read().decode().splitlines()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith("credit_node_queries_total{")
    )


def test_a_second_node_on_a_taken_port_fails_without_workers(tmp_path: Path) -> None:
    nodes = _federation(tmp_path, None)
    provider = nodes["huizhou"]
    set_settings(provider.home, metrics_port=0, gateway_port=0)
    log = tmp_path / "serve.log"
    first = _serve(provider.home, log=log)
    try:
        _wait_serving([first], [provider.port], log)
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "creditexchange.node.cli",
                "serve",
                "--home",
                str(provider.home),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        _stop([first])
    assert second.returncode != 0
    assert "cannot listen" in second.stderr and "is the port free?" in second.stderr

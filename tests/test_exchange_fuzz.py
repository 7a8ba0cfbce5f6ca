"""Fuzzing a running provider through a raw gRPC channel.

Random bytes and mutations of genuine sealed requests go to every method of a
real node (huizhou on SQLite, shenzhen on PostgreSQL), with a member's
certificate, so they reach the node's own code. Whatever arrives, the node
answers with one of its documented statuses — never ``UNKNOWN``, never
``INTERNAL`` — keeps serving, and its audit log still verifies afterwards.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from conftest import postgres_schema
from fedharness import Federation
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from creditexchange.certs.identity import member_dns_name
from creditexchange.devtools.sample import showcase_subject
from creditexchange.node.app.wiring import open_audit_log
from creditexchange.node.database import open_database
from creditexchange.node.exchange.protocol import BATCH_CHECK_REQUEST, CHECK_REQUEST, QUERY_REQUEST
from creditexchange.node.ledger.verify import verify
from creditexchange.v1 import exchange_pb2

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

MEMBERS = ("huizhou", "shenzhen")

DOCUMENTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.OUT_OF_RANGE,
}

SIGNED = {"Query": QUERY_REQUEST, "Check": CHECK_REQUEST, "BatchCheck": BATCH_CHECK_REQUEST}
SIDE = [
    "/creditexchange.v1.CreditExchange/GetMemorandum",
    "/creditexchange.v1.Audit/GetCheckpoint",
    "/creditexchange.v1.Audit/GetInclusionProof",
    "/creditexchange.v1.Audit/GetConsistencyProof",
    "/creditexchange.v1.Audit/AddCosignature",
    "/creditexchange.v1.Audit/GetWitnessed",
    "/creditexchange.v1.Audit/ListEntries",
    "/grpc.health.v1.Health/Check",
]


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    with postgres_schema() as pg_url:
        federation = Federation(
            tmp_path_factory.mktemp("fuzz"), MEMBERS, {"shenzhen": pg_url}, subjects=20
        )
        try:
            yield federation
        finally:
            federation.close()


def _send(fed: Federation, provider: str, path: str, data: bytes) -> grpc.StatusCode:
    async def call() -> grpc.StatusCode:
        target = f"127.0.0.1:{fed.nodes[provider].port}"
        options = [("grpc.ssl_target_name_override", member_dns_name(provider))]
        requester = "shenzhen" if provider == "huizhou" else "huizhou"
        async with grpc.aio.secure_channel(
            target, fed.credentials(requester), options=options
        ) as channel:
            method: Any = channel.unary_unary(path)
            try:
                await method(data, timeout=10)
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

    return fed.run(call())


def _genuine(fed: Federation, provider: str, method: str) -> bytes:
    requester = "shenzhen" if provider == "huizhou" else "huizhou"
    header = fed.header(requester, provider)
    subject = showcase_subject(provider, 2026)
    if method == "BatchCheck":
        request: Any = exchange_pb2.BatchCheckRequest(header=header, subject_ids=[subject] * 3)
    elif method == "Check":
        request = exchange_pb2.CheckRequest(header=header, subject_id=subject)
    else:
        request = exchange_pb2.QueryRequest(header=header, subject_id=subject)
    envelope = fed.envelope(SIGNED[method], request.SerializeToString(), requester)
    return bytes(fed.sealed(envelope, provider).SerializeToString())


def _mutate(data: bytes, seed: int) -> bytes:
    rng = random.Random(seed)
    changed = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        what = rng.choice(("flip", "insert", "delete", "truncate"))
        at = rng.randrange(len(changed)) if changed else 0
        if what == "flip" and changed:
            changed[at] ^= 1 << rng.randrange(8)
        elif what == "insert":
            changed[at:at] = rng.randbytes(rng.randint(1, 8))
        elif what == "delete" and changed:
            del changed[at : at + rng.randint(1, 8)]
        else:
            del changed[rng.randint(0, len(changed)) :]
    return bytes(changed)


_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@_SETTINGS
@given(
    provider=st.sampled_from(MEMBERS),
    path=st.sampled_from([f"/creditexchange.v1.CreditExchange/{m}" for m in SIGNED] + SIDE),
    data=st.binary(max_size=2048),
)
def test_random_bytes_get_a_documented_status(
    fed: Federation, provider: str, path: str, data: bytes
) -> None:
    assert _send(fed, provider, path, data) in DOCUMENTED


@_SETTINGS
@given(
    provider=st.sampled_from(MEMBERS),
    method=st.sampled_from(sorted(SIGNED)),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_mutated_sealed_requests_get_a_documented_status(
    fed: Federation, provider: str, method: str, seed: int
) -> None:
    data = _mutate(_genuine(fed, provider, method), seed)
    assert _send(fed, provider, f"/creditexchange.v1.CreditExchange/{method}", data) in DOCUMENTED


@pytest.mark.parametrize("provider", MEMBERS, ids=["sqlite", "postgres"])
def test_after_the_fuzzing_the_node_serves_and_its_log_verifies(
    fed: Federation, provider: str
) -> None:
    """Runs after the fuzz tests (file order): the node is healthy and its log intact."""
    health = _send(
        fed,
        provider,
        "/grpc.health.v1.Health/Check",
        health_pb2.HealthCheckRequest(service="").SerializeToString(),
    )
    assert health == grpc.StatusCode.OK
    config = fed.nodes[provider].config
    database = open_database(config.database_url)
    try:
        log = open_audit_log(config, database)
        assert log.size() > 30, "the fuzzing reached the node's code and was recorded"
        report = verify(log, log.signer.verifier())
        assert report.ok, report.problems
    finally:
        database.dispose()

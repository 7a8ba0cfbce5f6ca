"""Witnessing on a real five-member federation on loopback: the members' ledgers watch
each other (C2SP tlog-cosignature), and a forked or rolled-back log is caught.

huizhou, shenzhen and dongguan keep their stores in SQLite, heyuan and customs in
PostgreSQL. A fork and a rollback are each made on a SQLite and on a PostgreSQL
node, the way an operator with database access would: the node's database is
copied, and later restored from the copy (a rollback), or restored and given other
entries signed with the node's own key (a fork). shenzhen stays honest throughout
and is the witness whose findings the tests read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import postgres_schema
from fedharness import Federation
from sqlalchemy import Engine, insert, select
from typer.testing import CliRunner

from creditexchange.clock import now_us
from creditexchange.devtools.sample import showcase_subject
from creditexchange.errors import AnswerRejected, ProofError, QueryRefused
from creditexchange.node.app.server import NodeServer
from creditexchange.node.app.wiring import open_audit_log
from creditexchange.node.cli import app
from creditexchange.node.database import open_database
from creditexchange.node.database.models import Base
from creditexchange.node.exchange.provider import _receipt
from creditexchange.node.federation.witness import PeerResult, witness_verifiers
from creditexchange.node.ledger import AuditLog, Receipt, entries, merkle
from creditexchange.node.ledger.cosignature import Cosigner, verify_cosignatures, witness_name
from creditexchange.node.ledger.entries import decode
from creditexchange.node.ledger.note import Checkpoint, Signer, open_note, sign_note
from creditexchange.node.ledger.witnessing import (
    RECEIPT,
    CosignatureBook,
    ReceiptCheckpoints,
    SeenCheckpoint,
    WitnessRecords,
)
from creditexchange.v1 import exchange_pb2, exchange_pb2_grpc

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

MEMBERS = ("huizhou", "shenzhen", "dongguan", "heyuan", "customs")
ON_POSTGRES = ("heyuan", "customs")
WITNESS = "shenzhen"
BANK = {
    "purpose": "bank_credit",
    "legal_basis": "《征信业管理条例》第十四条",
    "case_reference": "LOAN-2026-0042",
    "officer": "credit-review-3",
}
runner = CliRunner()


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    with postgres_schema() as heyuan_url, postgres_schema() as customs_url:
        mp = pytest.MonkeyPatch()
        mp.setenv("CREDIT_NODE_WITNESS_INTERVAL_S", "0")  # rounds only when a test asks
        try:
            federation = Federation(
                tmp_path_factory.mktemp("witness"),
                MEMBERS,
                {"heyuan": heyuan_url, "customs": customs_url},
                subjects=20,
            )
        finally:
            mp.undo()
        try:
            yield federation
        finally:
            federation.close()


# --- helpers ----------------------------------------------------------------------------------


def witness_round(fed: Federation, member: str = WITNESS) -> dict[str, PeerResult]:
    results = fed.run(fed.servers[member].witness.round())
    return {r.peer: r for r in results}


def every_round(fed: Federation) -> None:
    for member in MEMBERS:
        witness_round(fed, member)


def grow(fed: Federation, member: str, calls: int = 2) -> None:
    """Make ``member``'s log grow: shenzhen asks it (an answer or a refusal, both recorded)."""
    for _ in range(calls):
        with contextlib.suppress(QueryRefused):
            fed.ask(WITNESS, showcase_subject(member, 2026), to=member, **BANK)


def engine_of(fed: Federation, member: str) -> Engine:
    return open_database(fed.nodes[member].config.database_url)


def log_of(fed: Federation, member: str) -> AuditLog:
    config = fed.nodes[member].config
    return open_audit_log(config, open_database(config.database_url))


Snapshot = dict[str, list[dict[str, Any]]]


def copy_database(fed: Federation, member: str) -> Snapshot:
    """Every row of every table of ``member``'s database: a backup copy."""
    engine = engine_of(fed, member)
    try:
        with engine.connect() as conn:
            return {
                t.name: [dict(row._mapping) for row in conn.execute(select(t))]
                for t in Base.metadata.sorted_tables
            }
    finally:
        engine.dispose()


def restore_database(fed: Federation, member: str, copy: Snapshot) -> None:
    """Put ``member``'s database back to ``copy`` (the node is stopped)."""
    engine = engine_of(fed, member)
    try:
        with engine.begin() as conn:
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())
            for table in Base.metadata.sorted_tables:
                if copy[table.name]:
                    conn.execute(insert(table), copy[table.name])
    finally:
        engine.dispose()


def alarms_counted(fed: Federation, peer: str, kind: str) -> float:
    registry = fed.servers[WITNESS].metrics.registry
    value = registry.get_sample_value(
        "credit_node_witness_alarms_total", {"peer": peer, "kind": kind}
    )
    return value or 0.0


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def warnings() -> Iterator[list[logging.LogRecord]]:
    handler = Captured()
    logger = logging.getLogger("node.witness")
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)


def size_of(note: str) -> int:
    return int(note.split("\n")[1])


def body_of(note: str) -> str:
    """The checkpoint body of a signed note (its text, up to the blank line)."""
    return note.split("\n\n")[0] + "\n"


# --- a healthy federation ---------------------------------------------------------------------


def test_after_a_round_every_node_serves_its_checkpoint_with_every_peers_cosignature(
    fed: Federation,
) -> None:
    for member in MEMBERS[:1] + MEMBERS[2:]:
        grow(fed, member, 1)
    every_round(fed)  # no round appends to a ledger: every head stays where it was cosigned
    client = fed.client(WITNESS)
    federation = client.federation
    for member in MEMBERS:
        served = fed.run(client.checkpoint(member))
        text, _ = open_note(served.checkpoint, [log_of(fed, member).signer.verifier()])
        peers = [m for m in MEMBERS if m != member]
        verifiers = [v for p in peers for v in witness_verifiers(federation, p)]
        found = verify_cosignatures(text, list(served.cosignatures), verifiers)
        assert sorted(c.name for c in found) == sorted(witness_name(p) for p in peers), member

    status = runner.invoke(
        app, ["audit", "witness-status", "--json", "--home", str(fed.nodes[WITNESS].home)]
    )
    assert status.exit_code == 0, status.output
    rows = {row["peer"]: row for row in json.loads(status.output)}
    assert sorted(rows) == sorted(m for m in MEMBERS if m != WITNESS)
    for member, row in rows.items():
        assert row["size"] == log_of(fed, member).size() and row["cosigned"] and not row["alarms"]
    registry = fed.servers[WITNESS].metrics.registry
    assert registry.get_sample_value("credit_node_witness_size", {"peer": "huizhou"}) == float(
        rows["huizhou"]["size"]
    )


def test_a_receipt_carries_the_cosignatures_held_on_exactly_its_checkpoint(
    fed: Federation,
) -> None:
    first = fed.ask(WITNESS, showcase_subject("huizhou", 2026), to="huizhou", **BANK)
    assert not first.receipt.cosignatures  # its checkpoint is new: no witness has seen it yet
    every_round(fed)
    client = fed.client(WITNESS)
    latest = fed.run(client.checkpoint("huizhou"))
    assert latest.checkpoint == first.receipt.checkpoint  # witnessing appends nothing
    assert len(latest.cosignatures) == len(MEMBERS) - 1

    # the receipt the provider gives on that checkpoint carries them all ...
    book = CosignatureBook(WitnessRecords(engine_of(fed, "huizhou")))
    book.load()
    entry = fed.entry_at("huizhou", first.receipt.leaf_index).SerializeToString()
    index, leaf = first.receipt.leaf_index, first.receipt.leaf_hash
    proof = tuple(first.receipt.inclusion_proof)
    given = _receipt(Receipt(index, leaf, first.receipt.checkpoint, proof), entry, book)
    assert list(given.cosignatures) == list(latest.cosignatures)
    # ... and one on a later checkpoint, which no witness has seen, none of them
    second = fed.ask(WITNESS, showcase_subject("huizhou", 2026), to="huizhou", **BANK)
    assert second.receipt.checkpoint != first.receipt.checkpoint
    assert not second.receipt.cosignatures

    # an auditor turns the first receipt into a witnessed one: its entry proved in the
    # latest checkpoint, which comes with the cosignatures held on it
    every_round(fed)

    async def prove() -> exchange_pb2.GetInclusionProofResponse:
        stub = exchange_pb2_grpc.AuditStub(client.channel("huizhou"))
        request = exchange_pb2.GetInclusionProofRequest(leaf_index=index)
        response: exchange_pb2.GetInclusionProofResponse = await stub.GetInclusionProof(request)
        return response

    witnessed = fed.run(prove())
    assert witnessed.checkpoint == second.receipt.checkpoint
    assert len(witnessed.cosignatures) == len(MEMBERS) - 1
    root = Checkpoint.parse(witnessed.checkpoint.split("\n\n")[0] + "\n").root_hash
    merkle.verify_inclusion(leaf, index, witnessed.tree_size, list(witnessed.hashes), root)


def test_a_round_over_an_unchanged_log_cosigns_it_again_and_raises_nothing(
    fed: Federation,
) -> None:
    before = witness_round(fed)
    again = witness_round(fed)
    sound = [peer for peer, result in before.items() if result.outcome != "alarm"]
    assert sound  # (the peers a test below forked or rolled back stay alarmed)
    for peer in sound:
        assert again[peer].outcome == "unchanged" and again[peer].delivered, again[peer]
        assert again[peer].size == before[peer].size


# --- a fork and a rollback ------------------------------------------------------------------


def _alarm_entry(fed: Federation, peer: str, kind: str) -> dict[str, Any]:
    recorded = [
        e
        for e in fed.ledger_entries(WITNESS, last=50)
        if e.get("kind") == "WITNESS" and e.get("responder") == peer
    ]
    assert len(recorded) == 1, recorded  # raised once, however many rounds saw it
    assert recorded[0]["direction"] == "LOCAL" and recorded[0]["note"].startswith(f"{kind}: ")
    return recorded[0]


@pytest.mark.parametrize("victim", ["huizhou", "heyuan"], ids=["sqlite", "postgres"])
def test_a_forked_log_raises_one_alarm_with_both_checkpoints_kept_as_evidence(
    fed: Federation, victim: str, warnings: list[logging.LogRecord]
) -> None:
    grow(fed, victim, 1)
    witness_round(fed)
    copy = copy_database(fed, victim)  # the copy the history is forked from
    grow(fed, victim, 3)
    seen = witness_round(fed)[victim]
    assert seen.outcome == "cosigned", seen
    cosigned = log_of(fed, victim).latest_checkpoint()

    fed.stop(victim)
    restore_database(fed, victim, copy)
    forked = log_of(fed, victim)  # other entries, signed with the node's own key
    extra = size_of(cosigned) - forked.size() + 1
    forked.commit(
        [entries.maintenance(f"another history {i}", victim, now_us()) for i in range(extra)]
    )
    fed.start(victim)

    results = [witness_round(fed)[victim] for _ in range(2)]
    for result in results:
        assert result.outcome == "alarm" and result.alarm is not None, result
        assert result.alarm.kind == "fork" and "its log is forked" in result.detail
    assert alarms_counted(fed, victim, "fork") == 1.0
    logged = [r.__dict__["data"] for r in warnings if r.getMessage() == "witness alarm"]
    assert [d["kind"] for d in logged if d["peer"] == victim] == ["fork"]
    _alarm_entry(fed, victim, "fork")

    alarm = results[0].alarm
    assert alarm is not None
    verifier = log_of(fed, victim).signer.verifier()
    earlier, _ = open_note(alarm.earlier_note, [verifier])  # both signed by the victim
    later, _ = open_note(alarm.later_note, [verifier])
    assert alarm.earlier_note == cosigned and size_of(later) == size_of(earlier) + 1

    # the fork is no longer cosigned: shenzhen's cosignature is not served with it
    served = fed.run(fed.client(WITNESS).checkpoint(victim))
    assert not any(witness_name(WITNESS) in line for line in served.cosignatures)

    # the operator looks into it (every member knows the victim was restored) and resets
    home = str(fed.nodes[WITNESS].home)
    refused = runner.invoke(
        app, ["audit", "witness-reset", victim, "--reason", " ", "--home", home]
    )
    assert refused.exit_code == 2 and "say why" in refused.output
    reset = runner.invoke(
        app, ["audit", "witness-reset", victim, "--reason", "restored, ticket 7", "--home", home]
    )
    assert reset.exit_code == 0, reset.output
    assert witness_round(fed)[victim].outcome == "cosigned"  # from the restored log on
    status = runner.invoke(app, ["audit", "witness-status", "--json", "--home", home])
    (shown,) = [p for p in json.loads(status.output) if p["peer"] == victim]
    assert [(a["kind"], a["resolution"]) for a in shown["alarms"]] == [
        ("fork", "restored, ticket 7")
    ]
    witness_log = log_of(fed, WITNESS)
    stored = witness_log.entries(0, witness_log.size())
    recorded = [decode(e.body) for e in stored if e.body is not None]
    assert any(
        e["kind"] == "WITNESS" and e["outcome"]["status"] == "RESET" and e["responder"] == victim
        for e in recorded
    )


@pytest.mark.parametrize("victim", ["dongguan", "customs"], ids=["sqlite", "postgres"])
def test_a_rolled_back_log_is_caught_by_the_witnesses_the_requesters_and_its_own_verify(
    fed: Federation, victim: str, warnings: list[logging.LogRecord]
) -> None:
    copy = copy_database(fed, victim)  # last night's backup
    grow(fed, victim, 3)
    every_round(fed)  # every peer vouches for the log as it grew
    witness_round(fed)  # (the victim's own alarms about the forks above grew its log)
    cosigned = log_of(fed, victim).latest_checkpoint()

    fed.stop(victim)
    restore_database(fed, victim, copy)  # the operator "restores" the log to an earlier state
    fed.start(victim)
    home = str(fed.nodes[victim].home)
    assert runner.invoke(app, ["audit", "verify", "--home", home]).exit_code == 0  # looks fine

    result = witness_round(fed)[victim]
    assert result.outcome == "alarm" and result.alarm is not None
    assert result.alarm.kind == "rollback"
    shown = size_of(result.alarm.later_note)
    assert f"shows a tree of {shown} entries after one of {size_of(cosigned)}" in result.detail
    assert result.alarm.earlier_note == cosigned
    assert alarms_counted(fed, victim, "rollback") == 1.0
    logged = [r.__dict__["data"] for r in warnings if r.getMessage() == "witness alarm"]
    assert [d["kind"] for d in logged if d["peer"] == victim] == ["rollback"]
    _alarm_entry(fed, victim, "rollback")

    # a requester checks the receipt's checkpoint against the largest it saw: refused
    with pytest.raises((AnswerRejected, QueryRefused)) as refused:
        fed.ask(WITNESS, showcase_subject(victim, 2026), to=victim, **BANK)
    if isinstance(refused.value, QueryRefused):
        assert not refused.value.verified  # a refusal whose receipt is not consistent
    last = fed.ledger_entries(WITNESS)[-1]
    assert "rolled back or forked" in last["outcome"]["message"]

    # the rolled-back node's own verify, asked to, checks its head against its peers
    checked = runner.invoke(app, ["audit", "verify", "--witnessed", "--home", home])
    assert checked.exit_code == 1, checked.output
    assert "was rolled back to an earlier state" in checked.output
    assert f"cosigned a checkpoint of {size_of(cosigned)} entries" in checked.output

    status = runner.invoke(
        app, ["audit", "witness-status", "--json", "--home", str(fed.nodes[WITNESS].home)]
    )
    (row,) = [r for r in json.loads(status.output) if r["peer"] == victim]
    (shown,) = [a for a in row["alarms"] if a["kind"] == "rollback"]
    assert shown["earlier_checkpoint"] == cosigned
    assert size_of(shown["later_checkpoint"]) < size_of(cosigned)
    assert row["size"] == size_of(cosigned)  # it still holds the last good checkpoint
    text = runner.invoke(app, ["audit", "witness-status", "--home", str(fed.nodes[WITNESS].home)])
    assert "ALARM rollback" in text.output

    # the command's round finds the alarm standing: exit 1, and nothing recorded again
    entries_before = len(fed.ledger_entries(WITNESS, last=1000))
    again = runner.invoke(
        app, ["audit", "witness", "--json", "--home", str(fed.nodes[WITNESS].home)]
    )
    assert again.exit_code == 1, again.output
    (found,) = [r for r in json.loads(again.output) if r["peer"] == victim]
    assert (found["outcome"], found["alarm"]) == ("alarm", "rollback")
    assert len(fed.ledger_entries(WITNESS, last=1000)) == entries_before


def test_an_honest_node_passes_the_witnessed_verify(fed: Federation) -> None:
    every_round(fed)
    home = str(fed.nodes[WITNESS].home)
    checked = runner.invoke(app, ["audit", "verify", "--witnessed", "--json", "--home", home])
    data = json.loads(checked.output)
    assert checked.exit_code == 0 and data["ok"], data
    assert sorted(data["witnessed"]["witnesses"]) == sorted(m for m in MEMBERS if m != WITNESS)


# --- AddCosignature: only the caller's cosignature on this log as it stands -------------------


def _add(fed: Federation, to: str, caller: str, checkpoint: str, line: str) -> grpc.StatusCode:
    client = fed.client(caller)  # (opened on the federation's loop: outside the coroutine)

    async def call() -> grpc.StatusCode:
        try:
            await client.add_cosignature(to, checkpoint, line)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    return fed.run(call())


def test_a_cosignature_is_kept_only_when_it_is_the_callers_on_this_log_as_it_stands(
    fed: Federation,
) -> None:
    to, caller = "huizhou", WITNESS
    grow(fed, to, 1)  # a checkpoint no witness has cosigned yet (a cosigned one costs no check)
    log = log_of(fed, to)
    note = log.latest_checkpoint()
    body = body_of(note)
    key = fed.signing_key(caller)
    own = Cosigner(witness_name(caller), key)
    another_key = Cosigner(witness_name(caller), fed.signing_key("customs"))
    another_name = Cosigner(witness_name("customs"), key)
    not_signed = sign_note(body, Signer(log.origin, key))  # the right text, not its signature
    # signed by the node, but not of its log as it stands (what a rollback leaves behind)
    beyond = sign_note(Checkpoint(log.origin, log.size() + 5, bytes(32)).body(), log.signer)
    in_an_hour = now_us() // 1_000_000 + 3600
    refused = {
        "garbage": (note, "not a cosignature", grpc.StatusCode.INVALID_ARGUMENT),
        "another key": (note, another_key.cosign(body).line(), grpc.StatusCode.UNAUTHENTICATED),
        "another name": (note, another_name.cosign(body).line(), grpc.StatusCode.UNAUTHENTICATED),
        "another checkpoint": (
            note,
            own.cosign(body.replace("\n", "x\n", 1)).line(),
            grpc.StatusCode.UNAUTHENTICATED,
        ),
        "in the future": (
            note,
            own.cosign(body, in_an_hour).line(),
            grpc.StatusCode.UNAUTHENTICATED,
        ),
        "not the node's": (not_signed, own.cosign(body).line(), grpc.StatusCode.INVALID_ARGUMENT),
        "not the log's": (
            beyond,
            own.cosign(body_of(beyond)).line(),
            grpc.StatusCode.FAILED_PRECONDITION,
        ),
    }
    for case, (checkpoint, line, status) in refused.items():
        before = log.size()
        assert _add(fed, to, caller, checkpoint, line) == status, case
        recorded = fed.ledger_entries(to)[-1]  # every refusal is on the record
        assert log.size() == before + 1 and recorded["kind"] == "SERVICE_CALL", case
        assert recorded["note"].endswith("AddCosignature") and recorded["requester"] == caller
    held = {h.line for h in WitnessRecords(engine_of(fed, to)).cosignatures("received")}
    assert not held & {line for _, line, _ in refused.values()}

    now = log.latest_checkpoint()
    accepted = own.cosign(body_of(now)).line()
    assert _add(fed, to, caller, now, accepted) == grpc.StatusCode.OK
    assert log.latest_checkpoint() == now  # an accepted cosignature is not recorded
    served = fed.run(fed.client("customs").checkpoint(to))
    assert served.checkpoint == now and list(served.cosignatures) == [accepted]


def test_garbage_sent_to_the_witnessing_methods_gets_a_documented_status(
    fed: Federation,
) -> None:
    documented = {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
    rng = random.Random(11)
    note = log_of(fed, "huizhou").latest_checkpoint()
    payloads = [rng.randbytes(rng.randint(0, 300)) for _ in range(20)] + [
        exchange_pb2.AddCosignatureRequest(
            checkpoint=rng.choice([note, note[:-3], "x\n\n— a b\n", "\u202e" * 50]),
            cosignature=rng.choice(["— a AAAA", "— " + "b" * 5000 + " AAAA", "", "—  ="]),
        ).SerializeToString()
        for _ in range(20)
    ]
    paths = ["/creditexchange.v1.Audit/AddCosignature", "/creditexchange.v1.Audit/GetWitnessed"]
    channel = fed.client(WITNESS).channel("huizhou")

    async def send(path: str, data: bytes) -> grpc.StatusCode:
        call: Any = channel.unary_unary(path)
        try:
            await call(data, timeout=10)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    for path in paths:
        for data in payloads:
            assert fed.run(send(path, data)) in documented, (path, data[:60])


# --- the serving node witnesses on its own ---------------------------------------------------


def test_a_serving_node_witnesses_its_peers_every_interval(fed: Federation) -> None:
    member = "dongguan"
    fed.stop(member)
    config = fed.nodes[member].config
    quick = type(config)(
        config.home, config.settings.model_copy(update={"witness_interval_s": 0.2})
    )
    server = NodeServer(quick)
    fed.run(server.start())
    fed.servers[member] = server
    try:
        registry = server.metrics.registry

        async def rounds_seen() -> float:
            for _ in range(100):
                done = (
                    registry.get_sample_value(
                        "credit_node_witness_rounds_total",
                        {"peer": "shenzhen", "outcome": "cosigned"},
                    )
                    or 0.0
                )
                unchanged = (
                    registry.get_sample_value(
                        "credit_node_witness_rounds_total",
                        {"peer": "shenzhen", "outcome": "unchanged"},
                    )
                    or 0.0
                )
                if done + unchanged >= 2:
                    return done + unchanged
                await asyncio.sleep(0.1)
            return 0.0

        assert fed.run(rounds_seen()) >= 2
    finally:
        fed.restart(member)


# --- the requester's check of receipts, on its own ---------------------------------------------


def test_an_older_receipt_checkpoint_must_be_proved_consistent_with_the_largest_seen(
    engine: Engine, tmp_path: Path
) -> None:
    import nacl.signing

    signer = Signer("credit-exchange/3plus2/huizhou/audit", nacl.signing.SigningKey(bytes(32)))
    log = AuditLog(engine, signer)
    small = log.commit([entries.maintenance(f"e{i}", "huizhou", i + 1) for i in range(5)])[1]
    large = log.commit([entries.maintenance(f"f{i}", "huizhou", i + 9) for i in range(5)])[1]
    records = WitnessRecords(engine)

    async def honest(first: int, second: int) -> list[bytes]:
        return log.consistency_proof(first, second)["proof"]

    async def run() -> None:
        seen = ReceiptCheckpoints(records)
        writes = await seen.check("huizhou", large, honest)
        assert writes  # the largest so far: recorded with the requester's entry
        with engine.begin() as conn:
            cursor = conn.connection.cursor()
            for w in writes:
                w.write(cursor, conn.dialect)
        assert await seen.check("huizhou", small, honest) == []  # older, and proved

        fresh = ReceiptCheckpoints(records)  # a new process reads the largest from the store
        other = sign_note(Checkpoint(signer.name, 5, bytes(32)).body(), signer)
        with pytest.raises(ProofError, match="is not a prefix of the one of 10 entries"):
            await fresh.check("huizhou", other, honest)
        forked = sign_note(Checkpoint(signer.name, 10, bytes(32)).body(), signer)
        with pytest.raises(ProofError, match="signed two different trees of 10 entries"):
            await fresh.check("huizhou", forked, honest)

        async def cannot(first: int, second: int) -> list[bytes]:
            raise RuntimeError(f"size {second} is outside the log")

        with pytest.raises(ProofError, match="rolled back or forked"):
            await fresh.check("huizhou", small, cannot)

    asyncio.run(run())
    recorded = records.seen("huizhou", RECEIPT)
    assert isinstance(recorded, SeenCheckpoint) and recorded.size == 10

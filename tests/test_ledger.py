"""The audit ledger: durable group-committed appends, proofs, verification, tampering,
pruning and crashes. Runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from nacl.signing import SigningKey
from sqlalchemy import Engine, event, inspect
from typer.testing import CliRunner

from creditexchange.clock import now_us
from creditexchange.errors import LedgerError
from creditexchange.node.app.home import create_home
from creditexchange.node.cli import app
from creditexchange.node.database import create_database_engine
from creditexchange.node.ledger import (
    MAX_ENTRY_BYTES,
    AuditLog,
    Ledger,
    Receipt,
    VerifyReport,
    Vouched,
    entries,
    merkle,
    verify,
    verify_witnessed,
)
from creditexchange.node.ledger.cosignature import CosignatureVerifier, Cosigner, witness_name
from creditexchange.node.ledger.note import Checkpoint, Signer, Verifier, open_note, sign_note

SEED = bytes(range(32))
ORIGIN = "credit-exchange/3plus2/huizhou/audit"


@pytest.fixture
def store(engine: Engine) -> AuditLog:
    return AuditLog(engine, Signer(ORIGIN, SigningKey(SEED)))


def append_all(store: AuditLog, bodies: list[bytes], **options: float) -> list[Receipt]:
    async def run() -> list[Receipt]:
        async with Ledger(store, **options) as ledger:  # type: ignore[arg-type]
            return await asyncio.gather(*(ledger.append(b) for b in bodies))

    return asyncio.run(run())


YEAR_US = 365 * 86_400_000_000


def bodies(n: int, tag: str = "e", at: int = 1_700_000_000_000_000) -> list[bytes]:
    """``n`` incoming query entries, recorded from ``at`` (µs since the epoch) on."""
    return [
        entries.encode(
            entries.AuditEntry(
                time_unix_micros=at + i,
                requester="shenzhen",
                responder="huizhou",
                direction=entries.Direction.INCOMING,
                kind=entries.Kind.QUERY,
                purpose="bank_credit",
                case_reference=f"{tag}-{i}",
                subject_hmac=entries.subject_hmac(b"k" * 32, "91441300MA4W7K3P2D"),
            )
        )
        for i in range(n)
    ]


def sql(store: AuditLog, statement: str, *params: object) -> None:
    """Tamper with the ledger's tables directly, as someone with access to the database."""
    with store.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            statement = statement.replace("?", "%s")
        conn.exec_driver_sql(statement, params)


def test_concurrent_appends_get_consecutive_indices_and_verifiable_receipts(
    store: AuditLog,
) -> None:
    receipts = append_all(store, bodies(300))
    assert sorted(r.index for r in receipts) == list(range(300))
    verifier = store.signer.verifier()
    for r in random.Random(1).sample(receipts, 25):
        text, _ = open_note(r.checkpoint, [verifier])
        cp = Checkpoint.parse(text)
        assert cp.origin == ORIGIN and cp.size > r.index
        proof = store.inclusion_proof(r.index, cp.size)
        merkle.verify_inclusion(r.leaf_hash, r.index, cp.size, proof["proof"], cp.root_hash)


def test_appends_are_group_committed_within_the_batch_limit(store: AuditLog) -> None:
    async def run() -> list[int]:
        async with Ledger(store, max_batch=16) as ledger:
            await asyncio.gather(*(ledger.append(b) for b in bodies(200)))
            return ledger.batches

    batches = asyncio.run(run())
    assert sum(batches) == 200
    assert max(batches) == 16  # they queued together and were committed 16 at a time
    with store.engine.connect() as conn:
        count = conn.exec_driver_sql("SELECT COUNT(*) FROM ledger_checkpoints").scalar_one()
    assert count == len(batches)  # one signed checkpoint per transaction


def test_every_entry_survives_a_new_process_and_proofs_span_checkpoints(
    store: AuditLog, database_url: str
) -> None:
    first = append_all(store, bodies(37, "a"))
    second = append_all(store, bodies(58, "b"))
    reopened = AuditLog(create_database_engine(database_url), store.signer)
    assert reopened.size() == 95
    old = Checkpoint.parse(open_note(first[-1].checkpoint, [store.signer.verifier()])[0])
    new = Checkpoint.parse(open_note(second[-1].checkpoint, [store.signer.verifier()])[0])
    proof = reopened.consistency_proof(old.size, new.size)
    merkle.verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof["proof"])
    assert reopened.root(new.size) == (new.size, new.root_hash)
    assert verify(reopened, store.signer.verifier()).ok


def test_a_second_writer_appends_on_top_of_the_real_head(
    store: AuditLog, database_url: str
) -> None:
    other = AuditLog(create_database_engine(database_url), store.signer)
    assert other.frontier().size == 0
    store.commit(bodies(3, "x"))
    index, note = other.commit(bodies(2, "y"))  # its frontier was stale: read again, locked
    assert index == 3
    assert Checkpoint.parse(open_note(note, [store.signer.verifier()])[0]).size == 5
    store.commit(bodies(1, "z"))  # and the first writer, stale in turn, goes on top of it
    assert store.size() == 6
    assert verify(store, store.signer.verifier()).ok


def test_the_checkpoint_is_a_c2sp_signed_note_readable_with_the_vkey(store: AuditLog) -> None:
    append_all(store, bodies(5))
    note = store.latest_checkpoint()
    lines = note.split("\n")
    assert lines[0] == ORIGIN and lines[1] == "5" and lines[3] == ""
    assert lines[4].startswith(f"— {ORIGIN} ")
    vkey = store.signer.vkey()
    name, key_id, _key = vkey.split("+", 2)
    assert name == ORIGIN and len(key_id) == 8
    open_note(note, [Verifier.from_vkey(vkey)])


def test_an_empty_log_has_a_signed_checkpoint_of_size_zero(store: AuditLog) -> None:
    cp = Checkpoint.parse(open_note(store.latest_checkpoint(), [store.signer.verifier()])[0])
    assert (cp.size, cp.root_hash) == (0, merkle.EMPTY_ROOT)
    assert verify(store, store.signer.verifier()).ok


def _alter_body(s: AuditLog) -> None:
    sql(s, "UPDATE ledger_entries SET body = ? WHERE idx = 7", b"forged")


def _delete_entry(s: AuditLog) -> None:
    sql(s, "DELETE FROM ledger_entries WHERE idx = 7")


def _swap_entries(s: AuditLog) -> None:
    sql(s, "UPDATE ledger_entries SET idx = -1 WHERE idx = 6")
    sql(s, "UPDATE ledger_entries SET idx = 6 WHERE idx = 9")
    sql(s, "UPDATE ledger_entries SET idx = 9 WHERE idx = -1")


def _truncate_tail(s: AuditLog) -> None:
    sql(s, "DELETE FROM ledger_entries WHERE idx >= 17")


def _truncate_tail_and_head(s: AuditLog) -> None:
    sql(s, "DELETE FROM ledger_entries WHERE idx >= 17")
    sql(s, "UPDATE ledger_head SET size = 17")


def _replace_checkpoint(s: AuditLog) -> None:
    forger = Signer(ORIGIN, SigningKey(bytes(32)))
    root = merkle.root_from_leaf_hashes([merkle.leaf_hash(b"x")] * 10)
    note = sign_note(Checkpoint(ORIGIN, 10, root).body(), forger)
    sql(s, "UPDATE ledger_checkpoints SET note = ?, root_hash = ? WHERE size = 10", note, root)


def _rewrite_checkpoint_root(s: AuditLog) -> None:
    root = merkle.root_from_leaf_hashes([merkle.leaf_hash(b"x")] * 10)
    note = sign_note(Checkpoint(ORIGIN, 10, root).body(), s.signer)  # even with the real key
    sql(s, "UPDATE ledger_checkpoints SET note = ?, root_hash = ? WHERE size = 10", note, root)


def _alter_tree_node(s: AuditLog) -> None:
    sql(s, "UPDATE ledger_nodes SET hash = ? WHERE level = 2 AND idx = 1", bytes(32))


def _append_by_sql(s: AuditLog, frontier: merkle.Frontier, new: list[bytes]) -> None:
    """What someone with database access but not the node's key can write: entries,
    a correctly recomputed tree and head, and no checkpoint signed by the node."""
    leaves = [merkle.leaf_hash(b) for b in new]
    grown, nodes = merkle.extend(frontier, leaves)
    for offset, (leaf, body) in enumerate(zip(leaves, new, strict=True)):
        sql(
            s,
            "INSERT INTO ledger_entries (idx, leaf_hash, body) VALUES (?, ?, ?)",
            frontier.size + offset,
            leaf,
            body,
        )
    for level, idx, h in nodes:
        if level:
            sql(s, "INSERT INTO ledger_nodes (level, idx, hash) VALUES (?, ?, ?)", level, idx, h)
    sql(s, "UPDATE ledger_head SET size = ?, root_hash = ?", grown.size, grown.root())


def _forge_appended_entry(s: AuditLog) -> None:
    _append_by_sql(s, AuditLog(s.engine, s.signer).frontier(), bodies(1, "forged"))


def _rewrite_all_rows(s: AuditLog) -> None:
    for table in ("ledger_entries", "ledger_nodes", "ledger_checkpoints"):
        sql(s, f"DELETE FROM {table}")
    _append_by_sql(s, merkle.Frontier(0, ()), bodies(20, "rewritten"))


def _drop_head_checkpoint(s: AuditLog) -> None:
    sql(s, "DELETE FROM ledger_checkpoints WHERE size = 20")


@pytest.mark.parametrize(
    ("tamper", "named"),
    [
        (_alter_body, "entry 7: its stored bytes hash to"),
        (_delete_entry, "entry 7 is missing"),
        (_swap_entries, "entries 6-7 do not match the stored tree node"),
        (_truncate_tail, "entries 17-19 are missing (tail truncated)"),
        (
            _truncate_tail_and_head,
            "checkpoint at size 20: it commits to 20 entries, the log has 17",
        ),
        (_replace_checkpoint, "checkpoint at size 10: its signature does not verify"),
        (_rewrite_checkpoint_root, "checkpoint at size 10: its root"),
        (_alter_tree_node, "entries 4-7 do not match the stored tree node (level 2, index 1)"),
        (
            _forge_appended_entry,
            "the head (21 entries) has no checkpoint signed by the node at its size "
            "(the nearest is at size 20)",
        ),
        (
            _rewrite_all_rows,
            "the head (20 entries) has no checkpoint signed by the node at its size "
            "(none is stored at all)",
        ),
        (
            _drop_head_checkpoint,
            "the head (20 entries) has no checkpoint signed by the node at its size "
            "(the nearest is at size 10)",
        ),
    ],
)
def test_audit_verify_catches_tampering_and_names_where(
    store: AuditLog, tamper: Callable[[AuditLog], None], named: str
) -> None:
    for chunk in (bodies(10, "a"), bodies(10, "b")):  # checkpoints at sizes 10 and 20
        store.commit(chunk)
    assert verify(store, store.signer.verifier()).ok
    tamper(store)
    report = verify(store, store.signer.verifier())
    assert not report.ok
    assert any(named in p for p in report.problems), report.problems
    if tamper not in (_replace_checkpoint, _rewrite_checkpoint_root, _truncate_tail_and_head):
        assert named in report.problems[0], report.problems


def test_verify_reads_one_snapshot_while_another_connection_appends(
    store: AuditLog, database_url: str
) -> None:
    store.commit(bodies(10, "a"))
    writer = AuditLog(create_database_engine(database_url), store.signer)
    appended: list[int] = []

    def append_right_after_the_head_is_read(*args: object) -> None:
        if not appended and "FROM ledger_head" in str(args[2]):
            appended.append(writer.commit(bodies(7, "b"))[0])

    event.listen(store.engine, "after_cursor_execute", append_right_after_the_head_is_read)
    try:
        report = verify(store, store.signer.verifier(), page=4)
    finally:
        event.remove(store.engine, "after_cursor_execute", append_right_after_the_head_is_read)
    assert appended == [10]  # the append committed while verify was reading
    assert report.ok, report.problems
    assert (report.size, report.checkpoints) == (10, 1)  # the log as it was when verify began
    later = verify(store, store.signer.verifier())
    assert later.ok and later.size == 17


def test_verify_stays_ok_while_a_thread_keeps_appending(store: AuditLog, database_url: str) -> None:
    store.commit(bodies(5, "a"))
    writer = AuditLog(create_database_engine(database_url), store.signer)
    stop = threading.Event()
    failures: list[BaseException] = []

    def keep_appending() -> None:
        try:
            for n in itertools.count():
                if stop.is_set():
                    return
                writer.commit(bodies(3, f"t{n}"))
        except BaseException as exc:  # reported below, not lost in the thread
            failures.append(exc)

    thread = threading.Thread(target=keep_appending)
    thread.start()
    reports: list[VerifyReport] = []
    try:
        # until verify has seen the log at several sizes: it really ran during appends
        while len({r.size for r in reports}) < 4 and len(reports) < 2000 and not failures:
            reports.append(verify(store, store.signer.verifier(), page=4))
    finally:
        stop.set()
        thread.join()
    assert failures == []
    assert len({r.size for r in reports}) >= 4
    assert [r.problems for r in reports if not r.ok] == []


def test_the_ledger_retries_a_batch_once_when_another_process_advanced_the_log(
    store: AuditLog, database_url: str
) -> None:
    pruner = AuditLog(create_database_engine(database_url), store.signer)

    async def run() -> tuple[int, int]:
        async with Ledger(store) as ledger:
            first = await ledger.append(b"before")
            # 'audit prune' in another process records itself in the same log
            pruner.commit([entries.maintenance("pruned nothing", "huizhou", 1)])
            second = await ledger.append(b"after")
            return first.index, second.index

    assert asyncio.run(run()) == (0, 2)
    report = verify(store, store.signer.verifier())
    assert report.ok and report.size == 3, report.problems


def test_pruning_drops_old_bodies_keeps_proofs_and_records_itself(store: AuditLog) -> None:
    store.commit(bodies(12, "old", at=now_us() - 4 * YEAR_US))
    receipt_root = store.root()[1]
    store.commit(bodies(5, "new", at=now_us()))
    pruned = store.prune(now_us() - 3 * YEAR_US, "huizhou")
    assert pruned is not None
    assert (pruned.count, pruned.first, pruned.last) == (12, 0, 11)
    proof = store.inclusion_proof(3, 12)
    leaf = next(store.entries(3, 4))
    assert leaf.body is None
    merkle.verify_inclusion(leaf.leaf_hash, 3, 12, proof["proof"], receipt_root)
    (record,) = store.entries(pruned.recorded_as, pruned.recorded_as + 1)
    assert record.body is not None
    assert entries.decode(record.body)["note"].startswith("pruned the bodies of 12 entries (0-11)")
    assert store.prune(now_us() - 3 * YEAR_US, "huizhou") is None
    report = verify(store, store.signer.verifier())
    # the 5 new bodies and the prune's own entry are checked; nothing else was dropped
    assert report.ok and report.pruned_bodies == 12 and report.checked_bodies == 6


def test_prune_goes_by_the_time_inside_each_entry_and_keeps_what_it_cannot_date(
    store: AuditLog,
) -> None:
    old, recent = now_us() - 4 * YEAR_US, now_us() - YEAR_US
    store.commit(bodies(4, "old", at=old))  # 0-3
    store.commit(bodies(1, "recent", at=recent))  # 4: recent, between old ones
    store.commit([b"not an audit entry", entries.maintenance("undated", "huizhou", 0)])  # 5, 6
    store.commit(bodies(3, "older", at=old - YEAR_US))  # 7-9
    store.commit(bodies(2, "now", at=now_us()))  # 10, 11
    pruned = store.prune(now_us() - 3 * YEAR_US, "huizhou", page=3)  # several pages
    assert pruned is not None
    assert (pruned.count, pruned.first, pruned.last) == (7, 0, 9)
    kept = {e.index for e in store.entries(0, 12) if e.body is not None}
    assert kept == {4, 5, 6, 10, 11}
    assert pruned.note.startswith("pruned the bodies of 7 entries (0-9) recorded before ")
    report = verify(store, store.signer.verifier())
    assert report.ok and report.pruned_bodies == 7, report.problems


def test_the_entries_table_holds_only_what_the_leaf_hash_covers(store: AuditLog) -> None:
    # An entry's age, which decides what a prune drops, is inside the hashed body: no
    # column beside it (that could be edited without breaking a hash) exists to go by.
    columns = {c["name"] for c in inspect(store.engine).get_columns("ledger_entries")}
    assert columns == {"idx", "leaf_hash", "body"}


def entry_of_size(size: int) -> bytes:
    """A real audit entry of exactly ``size`` bytes (its note padded)."""
    pad = size
    while True:
        body = entries.maintenance("x" * pad, "huizhou", now_us())
        if len(body) == size:
            return body
        pad -= len(body) - size


def test_an_entry_of_the_maximum_size_commits_and_one_byte_more_is_refused(
    store: AuditLog,
) -> None:
    largest = entry_of_size(MAX_ENTRY_BYTES)
    index, _ = store.commit([largest])
    assert next(store.entries(index, index + 1)).body == largest
    with pytest.raises(LedgerError) as refused:
        store.commit([bodies(1)[0], entry_of_size(MAX_ENTRY_BYTES + 1)])
    assert (
        f"the audit entry is {MAX_ENTRY_BYTES + 1} bytes, over the ledger's limit of "
        f"{MAX_ENTRY_BYTES} bytes" in str(refused.value)
    )
    assert store.size() == 1  # the batch was refused whole: nothing of it was written
    assert verify(store, store.signer.verifier()).ok


def test_an_oversized_append_is_refused_and_the_batch_it_would_have_joined_commits(
    store: AuditLog,
) -> None:
    oversized = entry_of_size(MAX_ENTRY_BYTES + 1)
    others = bodies(20, "concurrent")

    async def run() -> tuple[list[Receipt | BaseException], list[int]]:
        async with Ledger(store, max_batch=64) as ledger:
            appends = [ledger.append(b) for b in others[:10]]
            appends.append(ledger.append(oversized))
            appends.extend(ledger.append(b) for b in others[10:])
            results = await asyncio.gather(*appends, return_exceptions=True)
            return results, ledger.batches

    results, batches = asyncio.run(run())
    refused = results.pop(10)
    assert isinstance(refused, LedgerError)
    assert f"{MAX_ENTRY_BYTES + 1} bytes, over the ledger's limit of {MAX_ENTRY_BYTES}" in str(
        refused
    )
    receipts = [r for r in results if isinstance(r, Receipt)]
    assert sorted(r.index for r in receipts) == list(range(20))
    assert batches == [20]  # the others were committed together, as one batch
    assert store.size() == 20
    stored = [e.body for e in store.entries(0, 20)]
    assert sorted(b for b in stored if b is not None) == sorted(others)
    assert verify(store, store.signer.verifier()).ok


def test_subject_is_recorded_as_a_keyed_hmac_never_in_clear() -> None:
    body = bodies(1)[0]
    assert b"91441300MA4W7K3P2D" not in body
    decoded = entries.decode(body)
    assert decoded["requester"] == "shenzhen" and decoded["direction"] == "INCOMING"
    assert entries.subject_hmac(b"k" * 32, "91441300ma4w7k3p2d") == entries.subject_hmac(
        b"k" * 32, "91441300MA4W7K3P2D"
    )


def test_a_crashed_appender_loses_no_acknowledged_entry(database_url: str, tmp_path: Path) -> None:
    engine = create_database_engine(database_url)
    from creditexchange.node.database import upgrade

    upgrade(engine)
    store = AuditLog(engine, Signer("crash-test/audit", SigningKey(SEED)))
    child = Path(__file__).with_name("crash_appender.py")
    rng = random.Random(7)
    acknowledged = -1
    for round_ in range(6):
        proc = subprocess.Popen(
            [sys.executable, str(child), database_url, SEED.hex(), "8"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + rng.uniform(0.3, 1.2)
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acknowledged = max(acknowledged, int(line))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        for line in proc.stdout:  # acknowledged before the kill, still in the pipe
            acknowledged = max(acknowledged, int(line))
        assert acknowledged >= 0, proc.stderr.read() if proc.stderr else ""
        size = store.size()
        assert size > acknowledged, f"round {round_}: acknowledged {acknowledged}, log has {size}"
        report = verify(store, store.signer.verifier())
        assert report.ok, report.problems
    engine.dispose()


runner = CliRunner()


def test_the_audit_commands_serve_an_auditor(tmp_path: Path) -> None:
    config = create_home(tmp_path / "hz", "huizhou")
    home = ["--home", str(config.home)]
    signer_cmd = runner.invoke(app, ["audit", "vkey", *home])
    assert signer_cmd.exit_code == 0, signer_cmd.output
    vkey = signer_cmd.output.strip()
    assert vkey.startswith("credit-exchange/3plus2/huizhou/audit+")
    engine = create_database_engine(config.database_url)
    store = AuditLog(
        engine,
        Signer(
            vkey.split("+")[0],
            SigningKey(bytes.fromhex(config.signing_key_path.read_text().strip())),
        ),
    )
    recorded = now_us()
    store.commit(bodies(6, at=recorded))  # recent: within the retention period
    store.commit(bodies(3, "b", at=recorded))

    result = runner.invoke(app, ["audit", "checkpoint", *home])
    assert result.exit_code == 0
    text, _ = open_note(result.output, [Verifier.from_vkey(vkey)])
    cp = Checkpoint.parse(text)
    assert cp.size == 9

    result = runner.invoke(app, ["audit", "entries", "--from", "2", "--to", "3", "--json", *home])
    rows = json.loads(result.output)
    assert [r["index"] for r in rows] == [2, 3]
    assert rows[0]["entry"]["case_reference"] == "e-2"
    assert (
        rows[0]["recorded"] == dt.datetime.fromtimestamp((recorded + 2) / 1e6, dt.UTC).isoformat()
    )

    result = runner.invoke(app, ["audit", "proof", "4", "--json", *home])
    p = json.loads(result.output)
    import base64

    merkle.verify_inclusion(
        base64.b64decode(p["leaf_hash"]),
        p["index"],
        p["size"],
        [base64.b64decode(h) for h in p["proof"]],
        cp.root_hash,
    )
    result = runner.invoke(app, ["audit", "consistency", "6", "9", "--json", *home])
    c = json.loads(result.output)
    merkle.verify_consistency(
        6,
        9,
        base64.b64decode(c["old_root"]),
        cp.root_hash,
        [base64.b64decode(h) for h in c["proof"]],
    )
    result = runner.invoke(app, ["audit", "verify", *home])
    assert result.exit_code == 0 and "ledger verified: 9 entries" in result.output
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE ledger_entries SET body = X'00' WHERE idx = 5")
    result = runner.invoke(app, ["audit", "verify", *home])
    assert result.exit_code == 1 and "entry 5" in result.output
    result = runner.invoke(app, ["audit", "prune", *home])
    assert result.exit_code == 0 and "nothing to prune" in result.output
    result = runner.invoke(app, ["audit", "proof", "99", *home])
    assert result.exit_code == 2 and "entry 99 is not in a log of size 9" in result.output


def test_a_nodes_ledger_takes_its_origin_key_and_batching_from_the_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from creditexchange.node.app.config import load_config
    from creditexchange.node.app.wiring import open_ledger

    create_home(tmp_path / "sz", "shenzhen")
    monkeypatch.setenv("CREDIT_NODE_LEDGER_MAX_BATCH", "8")
    monkeypatch.setenv("CREDIT_NODE_FEDERATION", "gd21")
    config = load_config(tmp_path / "sz")
    ledger = open_ledger(config, create_database_engine(config.database_url))
    assert ledger.max_batch == 8
    assert ledger.log.origin == "credit-exchange/gd21/shenzhen/audit"

    async def run() -> list[int]:
        async with ledger:
            await asyncio.gather(*(ledger.append(b) for b in bodies(40)))
            return ledger.batches

    assert max(asyncio.run(run())) == 8
    signing = SigningKey(bytes.fromhex(config.signing_key_path.read_text().strip()))
    assert ledger.log.signer.public_key == bytes(signing.verify_key)


# --- every problem once, root causes first ----------------------------------------------------


def test_two_entries_altered_far_apart_are_two_root_causes_and_their_consequences_one_line(
    store: AuditLog,
) -> None:
    for start in range(0, 1000, 10):  # a checkpoint every 10 entries: 100 of them
        store.commit(bodies(10, f"batch-{start}"))
    sql(store, "UPDATE ledger_entries SET body = ? WHERE idx = 7", b"forged")
    sql(store, "UPDATE ledger_entries SET body = ? WHERE idx = 900", b"forged again")

    report = verify(store, store.signer.verifier())

    assert report.root_causes == 2 and len(report.problems) == 3, report.problems
    first, second, consequences = report.problems
    assert first.startswith("entry 7: its stored bytes hash to") and "altered" in first
    assert second.startswith("entry 900: its stored bytes hash to")
    assert consequences.startswith("because of the problems above: ")
    assert "100 checkpoint(s) at sizes 10, 20, … 1000 no longer match" in consequences
    assert not any(p.startswith("checkpoint at size") for p in report.problems)


def test_a_deleted_entry_does_not_hide_an_altered_one_after_it(store: AuditLog) -> None:
    for chunk in (bodies(10, "a"), bodies(10, "b")):
        store.commit(chunk)
    sql(store, "DELETE FROM ledger_entries WHERE idx BETWEEN 3 AND 4")
    sql(store, "UPDATE ledger_entries SET body = ? WHERE idx = 15", b"forged")

    report = verify(store, store.signer.verifier())

    assert report.root_causes == 2, report.problems
    assert report.problems[0].startswith("entries 3-4 are missing: the log jumps from entry 2 to 5")
    assert report.problems[1].startswith("entry 15: its stored bytes hash to")
    assert report.problems[2] == (
        "because of the problems above: 2 checkpoint(s) at sizes 10 and 20 cannot be checked "
        "past the missing entries"
    )


def test_the_audit_command_lists_every_root_cause_once(tmp_path: Path) -> None:
    config = create_home(tmp_path / "hz", "huizhou")
    engine = create_database_engine(config.database_url)
    key = SigningKey(bytes.fromhex(config.signing_key_path.read_text().strip()))
    store = AuditLog(engine, Signer(ORIGIN, key))
    for start in range(0, 40, 10):
        store.commit(bodies(10, f"c{start}", at=now_us()))
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE ledger_entries SET body = X'00' WHERE idx IN (2, 33)")
    result = runner.invoke(app, ["audit", "verify", "--home", str(config.home)])
    assert result.exit_code == 1
    first, *also = " ".join(result.output.split()).split(" also: ")  # as wrapped to the terminal
    assert first.startswith("ledger verification failed: entry 2:")
    assert len(also) == 2 and also[0].startswith("entry 33:")
    assert also[1].startswith("because of the problems above:")


# --- the head against what the witnesses cosigned ----------------------------------------------

WITNESS_KEYS = {"shenzhen": SigningKey(bytes([7]) * 32), "customs": SigningKey(bytes([9]) * 32)}


def vouch(
    store: AuditLog, witness: str, note: str | None = None, *, key: SigningKey | None = None
) -> Vouched:
    """``witness``'s cosignature on ``note`` (the latest checkpoint by default)."""
    note = store.latest_checkpoint() if note is None else note
    text, _ = open_note(note, [store.signer.verifier()])
    name = witness_name(witness)
    line = Cosigner(name, key or WITNESS_KEYS[witness]).cosign(text).line()
    verifier = CosignatureVerifier.for_key(name, bytes(WITNESS_KEYS[witness].verify_key))
    return Vouched(witness, note, line, (verifier,))


def roll_back(store: AuditLog, size: int) -> None:
    """Put the ledger tables back as they were at ``size`` entries (a restored backup)."""
    _, root = store.root(size)
    sql(store, "DELETE FROM ledger_entries WHERE idx >= ?", size)
    for level in range(1, 64):
        sql(store, "DELETE FROM ledger_nodes WHERE level = ? AND idx >= ?", level, size >> level)
    sql(store, "DELETE FROM ledger_checkpoints WHERE size > ?", size)
    sql(store, "UPDATE ledger_head SET size = ?, root_hash = ?", size, root)


def test_a_log_holding_what_its_witnesses_cosigned_passes_the_witnessed_check(
    store: AuditLog,
) -> None:
    store.commit(bodies(10, "a"))
    earlier = vouch(store, "customs")
    store.commit(bodies(10, "b"))
    report = verify_witnessed(store, [earlier, vouch(store, "shenzhen")])
    assert report.ok, report.problems
    assert sorted(report.witnesses) == ["customs", "shenzhen"] and report.largest == 20


def test_a_log_rolled_back_below_a_cosigned_checkpoint_fails_once_naming_its_witnesses(
    store: AuditLog,
) -> None:
    store.commit(bodies(10, "a"))
    store.commit(bodies(10, "b"))
    witnessed = [vouch(store, "shenzhen"), vouch(store, "customs")]
    roll_back(store, 10)
    assert verify(store, store.signer.verifier()).ok  # the log alone cannot tell

    report = verify_witnessed(store, witnessed)

    (problem,) = report.problems
    assert problem.startswith(
        "the log has 10 entries, but customs and shenzhen cosigned a checkpoint of 20 entries"
    )
    assert "rolled back to an earlier state" in problem


def test_a_log_rewritten_under_a_cosigned_checkpoint_fails_the_witnessed_check(
    store: AuditLog,
) -> None:
    store.commit(bodies(10, "a"))
    witnessed = vouch(store, "shenzhen")
    roll_back(store, 5)
    reopened = AuditLog(store.engine, store.signer)  # as the node, restarted on the backup
    reopened.commit(bodies(6, "rewritten"))  # 11 entries, the first 10 not the ones cosigned
    report = verify_witnessed(store, [witnessed])
    (problem,) = report.problems
    assert problem.startswith("the log's first 10 entries no longer hash to the root")
    assert "rewritten after the witnesses saw it" in problem


def test_a_cosignature_that_does_not_verify_counts_for_nothing(store: AuditLog) -> None:
    store.commit(bodies(10, "a"))
    forged = vouch(store, "shenzhen", key=SigningKey(bytes(32)))  # not shenzhen's key
    foreign = Signer("credit-exchange/3plus2/heyuan/audit", SigningKey(bytes([3]) * 32))
    other_log = sign_note(Checkpoint(foreign.name, 50, bytes(32)).body(), foreign)
    report = verify_witnessed(
        store, [forged, Vouched("customs", other_log, forged.cosignature, ())]
    )
    assert report.witnesses == [] and len(report.problems) == 2, report.problems
    assert "shenzhen's cosignature is not by a key the memorandum lists for it" in report.problems
    assert report.problems[1].startswith("customs vouches for a checkpoint that does not verify")


def test_a_log_no_witness_vouches_for_does_not_pass_the_witnessed_check(store: AuditLog) -> None:
    """A restored database whose peers cannot be reached shows nothing against a rollback."""
    store.commit([b"an entry"])
    report = verify_witnessed(store, [])
    assert not report.problems and not report.witnesses
    assert not report.ok

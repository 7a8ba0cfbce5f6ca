"""The exchange's small parts on their own: the DSSE envelope, the replay guard, the quota counter.

The replay guard and the quota counter run against both stores (the ``engine``
fixture is SQLite and PostgreSQL). What they spend or count becomes durable in
the transaction of the call's audit entry, so the tests persist it the way a node
does: through a real ledger append carrying their side writes. A "restart" is a
new object on the same database, as a restarted node process builds it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import nacl.signing
import pytest
from sqlalchemy import Engine, text

from creditexchange.clock import now_us
from creditexchange.devtools.sample import write_sample
from creditexchange.errors import AnswerRejected, EnvelopeError
from creditexchange.identifiers import mask_identifier
from creditexchange.node.catalog import Catalog
from creditexchange.node.database import create_database_engine, upgrade
from creditexchange.node.exchange.client import _check_subjects
from creditexchange.node.exchange.envelope import digest, open_envelope, pae, seal
from creditexchange.node.exchange.protocol import ANSWER, QUERY_REQUEST, subject_tag
from creditexchange.node.exchange.quotas import QuotaCounter
from creditexchange.node.exchange.readers import PostgresReader
from creditexchange.node.exchange.replay import ReplayGuard
from creditexchange.node.ledger import AuditLog, Ledger, SideWrite
from creditexchange.node.ledger.note import Signer
from creditexchange.node.records.importer import import_file
from creditexchange.node.records.repository import SubjectRecords, read_subjects
from creditexchange.policy.trust import key_id
from creditexchange.v1 import exchange_pb2
from creditexchange.v1.exchange_pb2 import Envelope

# -- the envelope ----------------------------------------------------------------------


def test_pae_is_the_dsse_pre_authentication_encoding() -> None:
    # the example of the DSSE specification (protocol.md)
    assert (
        pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )
    assert pae("", b"") == b"DSSEv1 0  0 "
    # lengths count bytes, not characters
    assert pae("类型", b"\x00") == b"DSSEv1 6 \xe7\xb1\xbb\xe5\x9e\x8b 1 \x00"


KEY = nacl.signing.SigningKey(bytes(range(32)))
OTHER = nacl.signing.SigningKey(bytes(range(1, 33)))
KEYS = {key_id(bytes(KEY.verify_key)): KEY.verify_key}


def test_sealed_envelope_opens_with_its_signers_key() -> None:
    envelope = seal(QUERY_REQUEST, b"payload", KEY)
    assert open_envelope(envelope, QUERY_REQUEST, KEYS) == key_id(bytes(KEY.verify_key))
    assert digest(envelope) == hashlib.sha256(pae(QUERY_REQUEST, b"payload")).digest()
    del envelope.signatures[:]
    assert digest(envelope) == digest(seal(QUERY_REQUEST, b"payload", OTHER))  # signatures aside


def _unsigned() -> Envelope:
    envelope = seal(QUERY_REQUEST, b"payload", KEY)
    del envelope.signatures[:]
    return envelope


def _altered() -> Envelope:
    envelope = seal(QUERY_REQUEST, b"payload", KEY)
    envelope.payload = b"payloaD"
    return envelope


def _signature_of_another_key_under_this_key_id() -> Envelope:
    envelope = seal(QUERY_REQUEST, b"payload", KEY)
    envelope.signatures[0].sig = seal(QUERY_REQUEST, b"payload", OTHER).signatures[0].sig
    return envelope


@pytest.mark.parametrize(
    ("envelope", "expected_type", "says"),
    [
        pytest.param(
            lambda: seal(ANSWER, b"payload", KEY), QUERY_REQUEST, "payload type", id="wrong-type"
        ),
        pytest.param(_unsigned, QUERY_REQUEST, "carries no signature", id="no-signature"),
        pytest.param(
            lambda: seal(QUERY_REQUEST, b"payload", OTHER),
            QUERY_REQUEST,
            "that the memorandum does not list",
            id="unknown-key",
        ),
        pytest.param(_altered, QUERY_REQUEST, "does not verify", id="payload-altered"),
        pytest.param(
            _signature_of_another_key_under_this_key_id,
            QUERY_REQUEST,
            "does not verify",
            id="signature-by-another-key",
        ),
    ],
)
def test_envelope_that_does_not_verify_is_refused(
    envelope: Callable[[], Envelope], expected_type: str, says: str
) -> None:
    with pytest.raises(EnvelopeError, match=says):
        open_envelope(envelope(), expected_type, KEYS)


# -- persisting as a node does ---------------------------------------------------------


def _record(engine: Engine, *calls: Sequence[SideWrite] | None) -> None:
    """One audit entry per call, appended together (one batch), each with its side writes."""

    async def append() -> None:
        signer = Signer("units.example/audit", KEY)
        async with Ledger(AuditLog(engine, signer)) as ledger:
            await asyncio.gather(*(ledger.append(b"entry", writes or ()) for writes in calls))

    asyncio.run(append())


def _count(engine: Engine, sql: str, **params: object) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(sql), params).scalar_one())


# -- the replay guard ------------------------------------------------------------------

WINDOW_S = 300.0


def _now_us() -> int:
    return now_us()


def _guard(engine: Engine) -> ReplayGuard:
    """A guard as a starting node builds it: with the nonces the store holds."""
    guard = ReplayGuard(engine, WINDOW_S)
    guard.load()
    return guard


def test_nonce_is_spent_once_also_across_a_restart(engine: Engine) -> None:
    nonce, created = os.urandom(32), _now_us()
    guard = _guard(engine)
    fresh = guard.claim("shenzhen", nonce, created)
    assert fresh is not None
    assert guard.claim("shenzhen", nonce, created) is None  # spent at once, before any write
    other_requester = guard.claim("dongguan", nonce, created)  # nonces are per requester
    assert other_requester is not None
    _record(engine, fresh, other_requester)

    restarted = _guard(engine)
    assert restarted.claim("shenzhen", nonce, created) is None
    assert restarted.claim("dongguan", nonce, created) is None
    assert restarted.claim("shenzhen", os.urandom(32), created) is not None


def test_nonce_of_a_call_never_recorded_is_not_spent_after_a_restart(engine: Engine) -> None:
    # nothing was answered or refused on the record, so nothing needs refusing later
    nonce, created = os.urandom(32), _now_us()
    assert _guard(engine).claim("heyuan", nonce, created) is not None
    assert _guard(engine).claim("heyuan", nonce, created) is not None


def test_calls_racing_with_one_nonce_in_one_batch_let_it_through_once(engine: Engine) -> None:
    nonce, created = os.urandom(32), _now_us()
    guard = _guard(engine)
    claims = [guard.claim("shanwei", nonce, created) for _ in range(5)]
    assert [c is not None for c in claims] == [True, False, False, False, False]
    _record(engine, *claims)
    assert _guard(engine).claim("shanwei", nonce, created) is None
    sql = "SELECT count(*) FROM request_nonces WHERE requester = 'shanwei' AND nonce = :n"
    assert _count(engine, sql, n=nonce) == 1


def test_one_nonce_written_twice_in_one_batch_does_not_fail_it(engine: Engine) -> None:
    # two guards (two processes' views) both spending it: the store keeps one row
    nonce, created = os.urandom(32), _now_us()
    first, second = _guard(engine), _guard(engine)
    _record(engine, first.claim("heyuan", nonce, created), second.claim("heyuan", nonce, created))
    sql = "SELECT count(*) FROM request_nonces WHERE requester = 'heyuan' AND nonce = :n"
    assert _count(engine, sql, n=nonce) == 1


@pytest.mark.parametrize(
    ("skew_s", "problem"),
    [
        pytest.param(-600, "created 600 s old", id="stale"),
        pytest.param(600, "created 600 s in the future", id="future"),
        pytest.param(-299, None, id="just-inside-the-past"),
        pytest.param(299, None, id="just-inside-the-future"),
        pytest.param(0, None, id="now"),
    ],
)
def test_time_outside_the_window_is_a_problem(
    engine: Engine, skew_s: int, problem: str | None
) -> None:
    guard = ReplayGuard(engine, WINDOW_S)
    now = _now_us()
    found = guard.time_problem(now + skew_s * 1_000_000, now)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found and "±300 s" in found


# -- the quota counter -----------------------------------------------------------------

DAY = dt.datetime(2026, 11, 26, 16, tzinfo=dt.UTC)  # 2026-11-27 00:00 China Standard Time


def _charge_and_record(
    engine: Engine, counter: QuotaCounter, requester: str, rules: Sequence[str], times: int = 1
) -> None:
    writes, charged = counter.charge(
        requester, dict.fromkeys(rules, DAY), dict.fromkeys(rules, times)
    )
    _record(engine, writes)
    counter.settled(charged, committed=True)


def test_quota_count_persists_for_the_next_process(engine: Engine) -> None:
    counter = QuotaCounter(engine)
    _charge_and_record(engine, counter, "shenzhen", ["regional-land-auction"])
    _charge_and_record(engine, counter, "shenzhen", ["regional-land-auction"], times=5)
    assert counter.used("shenzhen", "regional-land-auction", DAY) == 6
    assert QuotaCounter(engine).used("shenzhen", "regional-land-auction", DAY) == 6


def test_a_charge_counts_at_once_and_is_dropped_if_its_entry_is_not_recorded(
    engine: Engine,
) -> None:
    counter = QuotaCounter(engine)
    assert counter.used("dongguan", "core-bank-credit", DAY) == 0
    _, charged = counter.charge("dongguan", {"core-bank-credit": DAY}, {"core-bank-credit": 3})
    assert counter.used("dongguan", "core-bank-credit", DAY) == 3  # the next decision sees it
    counter.settled(charged, committed=False)
    assert counter.used("dongguan", "core-bank-credit", DAY) == 0
    assert QuotaCounter(engine).used("dongguan", "core-bank-credit", DAY) == 0


def test_quota_counts_are_per_requester_rule_and_period(engine: Engine) -> None:
    counter = QuotaCounter(engine)
    _charge_and_record(engine, counter, "heyuan", ["plus2-bank-credit", "regional-lists"], 3)
    fresh = QuotaCounter(engine)
    assert fresh.used("heyuan", "plus2-bank-credit", DAY) == 3
    assert fresh.used("heyuan", "regional-lists", DAY) == 3
    assert fresh.used("shanwei", "plus2-bank-credit", DAY) == 0
    assert fresh.used("heyuan", "plus2-bank-credit", DAY + dt.timedelta(days=1)) == 0


def test_two_counters_on_one_database_see_each_others_counts(engine: Engine) -> None:
    first, second = QuotaCounter(engine, refresh_s=0.2), QuotaCounter(engine, refresh_s=0.2)
    assert first.used("shanwei", "core-bank-credit", DAY) == 0
    _charge_and_record(engine, second, "shanwei", ["core-bank-credit"], times=4)
    time.sleep(0.25)  # past first's refresh interval
    assert first.used("shanwei", "core-bank-credit", DAY) == 4
    _charge_and_record(engine, first, "shanwei", ["core-bank-credit"])
    assert first.used("shanwei", "core-bank-credit", DAY) == 5
    time.sleep(0.25)
    assert second.used("shanwei", "core-bank-credit", DAY) == 5


def test_two_people_whose_masked_ids_coincide_cannot_be_swapped_in_an_answer() -> None:
    """Both mask to 441302********3312: only the tags under the request's key tell them apart."""
    first, second = "441302198001013312", "441302198001283312"
    key = os.urandom(32)
    body = exchange_pb2.AnswerBody()
    for person in (second, first):  # swapped
        body.subjects.add(
            subject_id=mask_identifier(person, "individual"),
            subject_type="individual",
            subject_tag=subject_tag(key, person),
        )
    assert body.subjects[0].subject_id == body.subjects[1].subject_id
    with pytest.raises(AnswerRejected, match="about another subject"):
        _check_subjects(body, [first, second], key)
    body.subjects[0].subject_tag, body.subjects[1].subject_tag = (
        subject_tag(key, first),
        subject_tag(key, second),
    )
    _check_subjects(body, [first, second], key)  # in order, they pass


# -- the provider's PostgreSQL reader ---------------------------------------------------------


@pytest.mark.postgres
def test_reads_made_together_give_each_caller_what_its_own_read_gives(
    postgres_url: str, catalog: Catalog, tmp_path: Path
) -> None:
    """While one read is under way the others wait and are made as one query; each caller
    still gets its own subjects (unknown ones left out) and their records in its own
    themes, in the order a read of its own gives them."""
    engine = create_database_engine(postgres_url)
    upgrade(engine)
    try:
        for path in write_sample(catalog, "huizhou", 30, 7, tmp_path / "in"):
            theme = path.name.split(".")[0]
            import_file(engine, catalog, path, theme, reject_dir=tmp_path)
        with engine.connect() as conn:
            ids = sorted(
                str(s) for s in conn.execute(text("SELECT subject_id FROM subjects")).scalars()
            )
        themes = [t.code for t in catalog.themes]
        today = dt.date(2026, 12, 1)
        asked = [
            ([ids[n % len(ids)], ids[(n * 7) % len(ids)]] if n % 3 else [ids[n % len(ids)]], {t})
            for n, t in enumerate(themes * 4)
        ]
        asked.append(([ids[0], "91440000MA00000000"], set(themes)))  # one unknown subject
        reader = PostgresReader(engine)

        async def read_all() -> list[SubjectRecords]:
            return list(await asyncio.gather(*(reader.read(s, t, today) for s, t in asked)))

        try:
            together = asyncio.run(read_all())
        finally:
            reader.close()
        with engine.connect() as conn:
            driver = conn.connection.driver_connection
            alone = [read_subjects(driver, engine.dialect, s, t, today) for s, t in asked]
        assert together == alone
        assert any(r.records for r in together)
    finally:
        engine.dispose()

"""The gauges a node reads from its database when scraped: quota use per requester and
rule, and the audit ledger's size and last checkpoint.

They must say what the database holds — whichever process counted a query or appended
an entry — never what one process remembers; a scrape storm must not turn into database
load; and a read that fails must leave its gauges out of the scrape, not fail the scrape
or leak the driver's message. Run on SQLite and on the real PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from nacl.signing import SigningKey
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import Engine

from creditexchange.clock import CST, now_us
from creditexchange.node.catalog import Catalog
from creditexchange.node.database import create_database_engine
from creditexchange.node.exchange.federation import Federation, FederationView
from creditexchange.node.exchange.metrics import (
    LedgerGauges,
    LedgerHead,
    Metrics,
    QuotaGauges,
    QuotaUse,
    ledger_head,
    quota_uses,
)
from creditexchange.node.exchange.quotas import count
from creditexchange.node.ledger import AuditLog
from creditexchange.node.ledger.note import Signer
from creditexchange.policy.document import Period, parse_memorandum
from creditexchange.policy.engine import PolicyEngine, quota_period_start
from creditexchange.policy.trust import TrustStore

POLICY = Path(__file__).parent.parent / "policy" / "memorandum-3plus2.yaml"
ME = "huizhou"
NOW = dt.datetime(2026, 12, 3, 9, 30, tzinfo=CST)
TODAY = quota_period_start(Period.DAY, NOW)
YESTERDAY = quota_period_start(Period.DAY, NOW - dt.timedelta(days=1))


@pytest.fixture(scope="module")
def federation(catalog: Catalog) -> Federation:
    """The shipped "3+2" memorandum, compiled as a node compiles it."""
    memorandum = parse_memorandum(yaml.safe_load(POLICY.read_text("utf-8")), str(POLICY))
    digest = bytes(32)
    return Federation(memorandum, digest, PolicyEngine(memorandum, digest, catalog), {}, {})


def uses_by_key(uses: list[QuotaUse]) -> dict[tuple[str, str], tuple[int, int]]:
    return {(u.requester, u.rule): (u.used, u.limit) for u in uses}


# --- quota use ---------------------------------------------------------------------------


def test_quota_use_is_what_the_database_counted_in_the_current_period(
    engine: Engine, database_url: str, federation: Federation
) -> None:
    """Counts made by another process (another engine on the same database, counting as
    the provider does: an upsert in the database) are what the gauges show; yesterday's
    count is not this period's."""
    other_process = create_database_engine(database_url)
    try:
        for _ in range(3):
            count(other_process, "shenzhen", {"core-bank-credit-records": TODAY})
        count(other_process, "shenzhen", {"core-bank-credit-records": YESTERDAY})
        count(other_process, "customs", {"huizhou-to-customs": TODAY})
    finally:
        other_process.dispose()
    uses = uses_by_key(quota_uses(engine, federation, ME, NOW))
    assert uses[("shenzhen", "core-bank-credit-records")] == (3, 20000)
    assert uses[("customs", "huizhou-to-customs")] == (1, 50000)
    assert uses[("dongguan", "core-bank-credit-records")] == (0, 20000)  # none yet: 0
    assert uses[("heyuan", "plus2-bank-credit")] == (0, 2000)


def test_quota_use_lists_only_the_quotas_set_on_this_nodes_data(
    engine: Engine, federation: Federation
) -> None:
    pairs = set(uses_by_key(quota_uses(engine, federation, ME, NOW)))
    assert all(requester != ME for requester, _ in pairs)  # a member never asks itself
    rules = {rule for _, rule in pairs}
    assert "cities-to-customs" not in rules  # customs asks the other cities under it
    assert "customs-bank-credit" not in rules  # customs' data, not huizhou's
    assert "core-records" not in rules  # no quota
    assert ("shanwei", "core-bank-credit-records") not in pairs  # not a requester of it
    assert ("shanwei", "plus2-bank-credit") in pairs
    # a rule with one quota keeps it for every requester it names
    assert {r for r, rule in pairs if rule == "regional-land-auction"} == {
        "shenzhen",
        "dongguan",
        "heyuan",
        "shanwei",
    }


# --- reading when scraped ------------------------------------------------------------------


def test_a_scrape_storm_reads_the_database_once_per_max_age() -> None:
    reads: list[float] = []
    now = [100.0]

    def read() -> list[QuotaUse]:
        reads.append(now[0])
        time.sleep(0.05)  # a slow database: the other scrapes arrive meanwhile
        return [QuotaUse("shenzhen", "core-bank-credit", 3, 20000)]

    registry = CollectorRegistry()
    registry.register(QuotaGauges(read, max_age_s=5.0, clock=lambda: now[0]))
    with ThreadPoolExecutor(16) as pool:
        texts = list(pool.map(lambda _: generate_latest(registry).decode(), range(64)))
    assert len(reads) == 1
    for text in texts:
        assert 'credit_node_quota_used{requester="shenzhen",rule="core-bank-credit"} 3.0' in text
        assert (
            'credit_node_quota_limit{requester="shenzhen",rule="core-bank-credit"} 20000.0' in text
        )
    now[0] = 104.9
    generate_latest(registry)
    assert len(reads) == 1
    now[0] = 105.0
    generate_latest(registry)
    assert reads == [100.0, 105.0]


def test_a_failed_read_leaves_its_gauges_out_waits_its_max_age_and_leaks_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = []
    broken = [True]
    now = [0.0]

    def read() -> LedgerHead:
        calls.append(now[0])
        if broken[0]:
            raise RuntimeError("connection to postgresql://credit:secret@db failed")
        return LedgerHead(7, 1_700_000_000_000_000)

    metrics = Metrics()
    metrics.registry.register(LedgerGauges(read, max_age_s=5.0, clock=lambda: now[0]))
    metrics.refusals.labels("policy").inc()
    with caplog.at_level(logging.WARNING, logger="node.metrics"):
        text = generate_latest(metrics.registry).decode()
        assert "credit_node_ledger_size " not in text
        assert 'credit_node_refusals_total{reason="policy"} 1.0' in text  # the rest is scraped
        generate_latest(metrics.registry)  # within max_age: the database is left alone
    assert calls == [0.0]
    assert "ledger metrics not read: RuntimeError" in caplog.text
    assert "secret" not in caplog.text
    broken[0] = False
    now[0] = 5.0
    assert metrics.registry.get_sample_value("credit_node_ledger_size") == 7.0
    assert (
        metrics.registry.get_sample_value("credit_node_ledger_last_checkpoint_timestamp_seconds")
        == 1_700_000_000.0
    )


# --- the ledger's head ---------------------------------------------------------------------


def test_the_ledger_gauges_are_the_head_in_the_database_whoever_appended(
    engine: Engine, database_url: str
) -> None:
    registry = CollectorRegistry()
    registry.register(LedgerGauges(lambda: ledger_head(engine)))
    assert ledger_head(engine) == LedgerHead(0, None)
    assert registry.get_sample_value("credit_node_ledger_size") == 0.0
    assert registry.get_sample_value("credit_node_ledger_last_checkpoint_timestamp_seconds") is None

    other_process = create_database_engine(database_url)  # another node process, one database
    try:
        log = AuditLog(
            other_process, Signer(f"credit-exchange/3plus2/{ME}/audit", SigningKey(bytes(32)))
        )
        before = now_us()
        log.commit([b"first", b"second"])
        log.commit([b"third"])
        after = now_us()
        size = log.size()
    finally:
        other_process.dispose()
    head = ledger_head(engine)
    assert head.size == size == 3
    assert head.signed_us is not None and before <= head.signed_us <= after
    assert registry.get_sample_value("credit_node_ledger_size") == 3.0
    assert registry.get_sample_value(
        "credit_node_ledger_last_checkpoint_timestamp_seconds"
    ) == pytest.approx(head.signed_us / 1e6)


def test_a_node_exports_its_ledger_even_while_its_quotas_cannot_be_read(
    engine: Engine, catalog: Catalog, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Registering asks the database nothing; each read fails on its own (here: no
    memorandum installed), and the store's gauges are registered once per registry."""
    metrics = Metrics()
    no_memorandum = FederationView(TrustStore(tmp_path / "policy"), catalog, ME)
    metrics.watch_store(engine, no_memorandum, ME)
    metrics.watch_store(engine, no_memorandum, ME)  # once per registry: no duplicate error
    with caplog.at_level(logging.WARNING, logger="node.metrics"):
        text = generate_latest(metrics.registry).decode()
    assert "credit_node_ledger_size 0.0" in text
    assert "credit_node_quota_used{" not in text
    assert "quota metrics not read: PolicyError" in caplog.text


def test_concurrent_scrapes_see_one_consistent_read() -> None:
    """Two gauges of one read never mix two reads (size and checkpoint time agree)."""
    head = [LedgerHead(1, 1_000_000)]
    gauges = LedgerGauges(lambda: head[0], max_age_s=0.0)
    registry = CollectorRegistry()
    registry.register(gauges)
    stop = threading.Event()

    def move() -> None:
        n = 1
        while not stop.is_set():
            n += 1
            head[0] = LedgerHead(n, n * 1_000_000)

    mover = threading.Thread(target=move)
    mover.start()
    try:
        for _ in range(200):
            families = {f.name: f for f in registry.collect()}
            size = families["credit_node_ledger_size"].samples[0].value
            signed = families["credit_node_ledger_last_checkpoint_timestamp_seconds"].samples[0]
            assert signed.value == size
    finally:
        stop.set()
        mover.join()

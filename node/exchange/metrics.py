"""Prometheus metrics of a serving node, on its own registry (several nodes may share a process).

Labels carry member ids, rule ids, purpose codes, decisions and gRPC status names only:
never a subject, never an identity number.

Two kinds of series live here. Counters, histograms and gauges that the code moves as
things happen (a call answered, a batch committed, a breaker opened) count what *this
process* did. Gauges read from the database when scraped (objections, quota use, the
audit ledger's head) say what the *node* holds, so every process serving one database
exports the same figures. A read at scrape time never fails the scrape: the gauges it
makes are left out of that scrape, and the failure is logged with its error type only
(a driver's message may carry a connection string). Reads that a scrape storm could
turn into load are reused for a few seconds (``max_age_s``), failures included.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, select

from creditexchange.clock import utc_now
from creditexchange.node.database.models import CHECKPOINTS, HEAD
from creditexchange.node.exchange.federation import Federation, FederationView
from creditexchange.node.exchange.quotas import usage_this_period
from creditexchange.policy.document import Quota

__all__ = [
    "DEFAULT_MAX_AGE_S",
    "LedgerGauges",
    "LedgerHead",
    "Metrics",
    "ObjectionGauges",
    "QuotaGauges",
    "QuotaUse",
    "ledger_head",
    "quota_uses",
]

log = logging.getLogger("node.metrics")

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

DEFAULT_MAX_AGE_S = 5.0
"""How long a quota or ledger read serves later scrapes before the database is asked again."""

T = TypeVar("T")


class _ReadWhenScraped(Collector, Generic[T]):
    """Gauges made from one read of the store, done when scraped.

    Subclasses name their gauges (:attr:`_GAUGES`: name, help, label names) and turn a
    read into samples (:meth:`_samples`). With ``max_age_s`` a read, or its failure,
    serves every scrape for that long; concurrent scrapes wait for the one read under
    way rather than each asking the database.
    """

    _GAUGES: tuple[tuple[str, str, tuple[str, ...]], ...] = ()
    _FAILED = "metrics not read"  # the log line of a failed read

    def __init__(
        self,
        read: Callable[[], T],
        *,
        max_age_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last: tuple[float, T | None] | None = None  # (read at, value; None: failed)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The gauges' names, so that registering them asks the database nothing."""
        for name, help_text, labels in self._GAUGES:
            yield GaugeMetricFamily(name, help_text, labels=labels)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        value = self._value()
        if value is None:
            return
        families = {
            name: GaugeMetricFamily(name, help_text, labels=labels)
            for name, help_text, labels in self._GAUGES
        }
        for name, labels, sample in self._samples(value):
            families[name].add_metric(list(labels), sample)
        yield from families.values()

    def _value(self) -> T | None:
        with self._lock:
            now = self._clock()
            if self._last is not None and now - self._last[0] < self._max_age_s:
                return self._last[1]
            value: T | None
            try:
                value = self._read()
            except Exception as exc:  # a database error of any driver: no metric, not no scrape
                log.warning("%s: %s", self._FAILED, type(exc).__name__)
                value = None
            self._last = (now, value)
            return value

    def _samples(self, value: T) -> Iterable[tuple[str, Sequence[str], float]]:
        """(gauge name, label values, value) of each sample ``value`` makes."""
        raise NotImplementedError


class ObjectionGauges(_ReadWhenScraped[tuple[int, int]]):
    """``credit_node_objections_open`` and ``credit_node_objections_overdue``, counted in
    the database at every scrape (one small query), from ``counts()`` = (open, overdue)."""

    _GAUGES = (
        ("credit_node_objections_open", "Objections (信用异议) not yet answered", ()),
        (
            "credit_node_objections_overdue",
            "Objections still open past their statutory answer deadline (in working days)",
            (),
        ),
    )
    _FAILED = "objection metrics not counted"

    def _samples(self, value: tuple[int, int]) -> Iterable[tuple[str, Sequence[str], float]]:
        open_, overdue = value
        yield "credit_node_objections_open", (), open_
        yield "credit_node_objections_overdue", (), overdue


@dataclass(frozen=True)
class QuotaUse:
    """A requester's queries under a memorandum rule in the rule's current period, and
    the rule's limit per period."""

    requester: str
    rule: str
    used: int
    limit: int


def quota_uses(
    database: Engine, federation: Federation, member_id: str, now: dt.datetime
) -> list[QuotaUse]:
    """Every quota the memorandum ``federation`` sets on this node's data, per requester it
    names (a member never asks itself) and rule, with the queries counted in the store's
    ``quota_usage`` in the rule's current period (0 before the first): what the provider
    decides against, whichever process counted them. One query per requester."""
    quotas: dict[str, dict[str, Quota]] = {}  # requester -> rule id -> its quota
    for rule in federation.memorandum.rules:
        if rule.quota is None or member_id not in rule.providers:
            continue
        for requester in rule.requesters:
            if requester != member_id:
                quotas.setdefault(requester, {})[rule.id] = rule.quota
    uses = []
    for requester, rules in sorted(quotas.items()):
        used = usage_this_period(database, requester, rules, now)
        uses += [
            QuotaUse(requester, rule, used.get(rule, 0), quota.limit)
            for rule, quota in sorted(rules.items())
        ]
    return uses


class QuotaGauges(_ReadWhenScraped[Sequence[QuotaUse]]):
    """``credit_node_quota_used`` and ``credit_node_quota_limit`` per requester and rule,
    from ``read()`` (:func:`quota_uses`)."""

    _GAUGES = (
        (
            "credit_node_quota_used",
            "Queries a requester made under a rule of the memorandum in the rule's current "
            "quota period (China Standard Time day or month), as counted in the database",
            ("requester", "rule"),
        ),
        (
            "credit_node_quota_limit",
            "Queries a requester may make under a rule of the memorandum in force per "
            "quota period; a call that would pass it is refused RESOURCE_EXHAUSTED",
            ("requester", "rule"),
        ),
    )
    _FAILED = "quota metrics not read"

    def _samples(self, value: Sequence[QuotaUse]) -> Iterable[tuple[str, Sequence[str], float]]:
        for use in value:
            yield "credit_node_quota_used", (use.requester, use.rule), use.used
            yield "credit_node_quota_limit", (use.requester, use.rule), use.limit


@dataclass(frozen=True)
class LedgerHead:
    """The audit ledger as its head row says: entries, and when the checkpoint of exactly
    that size was signed (µs since the epoch; None before the first entry)."""

    size: int
    signed_us: int | None


_HEAD = (
    select(HEAD.c.size, CHECKPOINTS.c.signed_us)
    .select_from(HEAD.outerjoin(CHECKPOINTS, CHECKPOINTS.c.size == HEAD.c.size))
    .where(HEAD.c.id == 1)
)


def ledger_head(database: Engine) -> LedgerHead:
    """The ledger's head and its checkpoint's signing time, in one primary-key read: the
    head and its checkpoint commit in one transaction, so they always agree."""
    with database.connect() as conn:
        row = conn.execute(_HEAD).first()
    if row is None:
        return LedgerHead(0, None)
    size, signed_us = row
    return LedgerHead(int(size), None if signed_us is None else int(signed_us))


class LedgerGauges(_ReadWhenScraped[LedgerHead]):
    """``credit_node_ledger_size`` and ``credit_node_ledger_last_checkpoint_timestamp_seconds``
    from ``read()`` (:func:`ledger_head`)."""

    _GAUGES = (
        (
            "credit_node_ledger_size",
            "Entries in this node's audit ledger, as its head in the database says "
            "(the same for every process serving that database)",
            (),
        ),
        (
            "credit_node_ledger_last_checkpoint_timestamp_seconds",
            "When the checkpoint of the audit ledger's head was signed (Unix time); "
            "absent while the ledger is empty",
            (),
        ),
    )
    _FAILED = "ledger metrics not read"

    def _samples(self, value: LedgerHead) -> Iterable[tuple[str, Sequence[str], float]]:
        yield "credit_node_ledger_size", (), value.size
        if value.signed_us is not None:
            yield "credit_node_ledger_last_checkpoint_timestamp_seconds", (), value.signed_us / 1e6


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    _custom: list[Collector] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        r = self.registry
        self.queries = Counter(
            "credit_node_queries",
            "Cross-city calls answered or refused, by requester, method, purpose, decision, status",
            ["requester", "method", "purpose", "decision", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "credit_node_query_seconds",
            "Time to answer or refuse a call, from receipt to signed answer",
            ["method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ledger_append = Histogram(
            "credit_node_ledger_append_seconds",
            "Time for an audit entry to become durable",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ledger_batch = Histogram(
            "credit_node_ledger_batch_entries",
            "Audit entries per group commit",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.refusals = Counter(
            "credit_node_refusals",
            "Calls refused, by reason: certificate, member, signature, sealing, replay, time, "
            "memorandum, malformed, size, policy (the memorandum's rules and quotas), "
            "deadline, internal, overload (not recorded in the ledger)",
            ["reason"],
            registry=r,
        )
        self.member_circuit = Gauge(
            "credit_node_member_circuit",
            "Circuit breaker of each member this node asks in a fan-out: 0 closed, "
            "1 half-open (one probe let through), 2 open (skipped until its cool-down ends)",
            ["member"],
            registry=r,
        )
        self.witness_alarms = Counter(
            "credit_node_witness_alarms",
            "Peers' logs found forked (two checkpoints no append-only log can both have "
            "signed) or rolled back (a smaller tree than one shown before), by peer and kind",
            ["peer", "kind"],
            registry=r,
        )
        self.witness_size = Gauge(
            "credit_node_witness_size",
            "Size of the latest checkpoint of each peer's log this node verified and cosigned",
            ["peer"],
            registry=r,
        )
        self.witness_rounds = Counter(
            "credit_node_witness_rounds",
            "Witness checks of a peer's log, by peer and outcome: cosigned, unchanged, "
            "alarm, unreachable, invalid (its checkpoint or proof did not verify)",
            ["peer", "outcome"],
            registry=r,
        )

    def _watch(self, collector: _ReadWhenScraped[T]) -> None:
        """Register ``collector`` unless one of its kind is registered already."""
        if not any(type(c) is type(collector) for c in self._custom):
            self.registry.register(collector)
            self._custom.append(collector)

    def watch_objections(self, counts: Callable[[], tuple[int, int]]) -> None:
        """Export the open and overdue objections, as ``counts()`` gives them at each scrape
        (``records.objections.objection_counts``); once per registry."""
        self._watch(ObjectionGauges(counts))

    def watch_store(
        self,
        database: Engine,
        federation: FederationView,
        member_id: str,
        *,
        max_age_s: float = DEFAULT_MAX_AGE_S,
    ) -> None:
        """Export what the node's ``database`` holds, read when scraped and reused for
        ``max_age_s``: the audit ledger's size and last checkpoint (:func:`ledger_head`),
        and every requester's use of every quota the memorandum in force sets on this
        node's data (:func:`quota_uses`); once per registry."""
        self._watch(LedgerGauges(lambda: ledger_head(database), max_age_s=max_age_s))
        self._watch(
            QuotaGauges(
                lambda: quota_uses(database, federation.current(), member_id, utc_now()),
                max_age_s=max_age_s,
            )
        )

    def serve(self, port: int, host: str = "0.0.0.0") -> None:
        """Expose /metrics on ``host:port`` (a daemon thread)."""
        start_http_server(port, addr=host, registry=self.registry)

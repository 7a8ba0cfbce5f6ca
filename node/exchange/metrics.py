"""Prometheus metrics of a serving node, on its own registry (several nodes may share a process).

Labels carry member ids, purpose codes, decisions and gRPC status names only:
never a subject, never an identity number.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = [
    "Metrics",
    "ObjectionGauges",
]

log = logging.getLogger("node.metrics")

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ObjectionGauges(Collector):
    """``credit_node_objections_open`` and ``credit_node_objections_overdue``, counted in
    the database when scraped (one small query). A count that fails leaves both out of
    that scrape (logged), rather than failing every other metric with it."""

    _OPEN = ("credit_node_objections_open", "Objections (信用异议) not yet answered")
    _OVERDUE = (
        "credit_node_objections_overdue",
        "Objections still open past their statutory answer deadline (in working days)",
    )

    def __init__(self, counts: Callable[[], tuple[int, int]]) -> None:
        self._counts = counts

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The two gauges' names, so that registering them asks the database nothing."""
        yield GaugeMetricFamily(*self._OPEN)
        yield GaugeMetricFamily(*self._OVERDUE)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            open_, overdue = self._counts()
        except Exception as exc:  # a database error of any driver: no metric, not no scrape
            log.warning("objection metrics not counted: %s", type(exc).__name__)
            return
        yield GaugeMetricFamily(*self._OPEN, value=open_)
        yield GaugeMetricFamily(*self._OVERDUE, value=overdue)


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

    def watch_objections(self, counts: Callable[[], tuple[int, int]]) -> None:
        """Export the open and overdue objections, as ``counts()`` gives them at each scrape
        (``records.objections.objection_counts``); once per registry."""
        if not any(isinstance(c, ObjectionGauges) for c in self._custom):
            collector = ObjectionGauges(counts)
            self.registry.register(collector)
            self._custom.append(collector)

    def serve(self, port: int, host: str = "0.0.0.0") -> None:
        """Expose /metrics on ``host:port`` (a daemon thread)."""
        start_http_server(port, addr=host, registry=self.registry)

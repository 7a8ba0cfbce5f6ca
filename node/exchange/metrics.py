"""Prometheus metrics of a serving node, on its own registry (several nodes may share a process).

Labels carry member ids, purpose codes, decisions and gRPC status names only:
never a subject, never an identity number.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = [
    "Metrics",
]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

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

    def serve(self, port: int, host: str = "0.0.0.0") -> None:
        """Expose /metrics on ``host:port`` (a daemon thread)."""
        start_http_server(port, addr=host, registry=self.registry)

"""The gateway's own Prometheus metrics, on the node's registry when it serves beside
the node (one scrape), on its own when it runs alone.

Labels carry route templates, caller names (registered partners and auditors, never
a key), HTTP statuses and scenes: never a subject, never an identity number.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["GatewayMetrics"]

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class GatewayMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "credit_gateway_requests",
            "Gateway requests answered, by route template, method, caller and HTTP status",
            ["route", "method", "caller", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "credit_gateway_request_seconds",
            "Time to answer a gateway request, by route template",
            ["route"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.rate_limited = Counter(
            "credit_gateway_rate_limited",
            "Requests refused with 429 because their caller went over its rate",
            ["caller"],
            registry=r,
        )
        self.refused = Counter(
            "credit_gateway_refused",
            "Requests refused before any work, by reason: key, revoked, role, officer, "
            "purpose, subject_type, size",
            ["reason"],
            registry=r,
        )
        self.screening_triggers = Counter(
            "credit_gateway_screening_triggers",
            "Measures a screening found applying, by scene and measure kind",
            ["scene", "measure"],
            registry=r,
        )

"""Circuit breakers: a member that keeps failing is skipped fast until it recovers.

One breaker per member, in one of three states:

* **closed** — calls go through. ``failure_threshold`` consecutive failures open it.
* **open** — calls are skipped at once, without touching the network, for
  ``cool_down_s`` seconds after the failure that opened it.
* **half-open** — the cool-down is over: exactly one call, the probe, goes
  through; every other call is skipped while it is out. A probe that succeeds
  closes the breaker; one that fails opens it again for another cool-down. A
  probe nobody reported on within a cool-down (its caller was cancelled) no
  longer holds the door: the next call probes again.

What counts: a failure is a member that could not be reached or did not answer
in time (``unavailable``, ``timed_out``); a success is any answer or refusal the
member signed — a denial proves the member is up and speaking for itself. The
state of each member's breaker is the gauge ``credit_node_member_circuit{member}``
(0 closed, 1 half-open, 2 open) when a gauge is given, read at each scrape.

A breaker lives as long as whatever holds it (a serving node's regional client
keeps them between reports); a command that asks once starts with every breaker
closed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from prometheus_client import Gauge

__all__ = ["DEFAULT_COOL_DOWN_S", "DEFAULT_FAILURE_THRESHOLD", "Breakers", "CircuitState"]

DEFAULT_FAILURE_THRESHOLD = 3
"""Consecutive failures that open a member's breaker."""

DEFAULT_COOL_DOWN_S = 30.0
"""Seconds an open breaker skips its member before letting one probe through."""


class CircuitState(IntEnum):
    """A breaker's state; its value is what the gauge shows."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass
class _Breaker:
    state: CircuitState = CircuitState.CLOSED
    failures: int = 0  # consecutive
    opened_at: float = 0.0
    probe_since: float | None = None  # when the half-open probe went out


class Breakers:
    """The breakers of the members one node asks; safe to share between tasks and threads."""

    def __init__(
        self,
        *,
        failure_threshold: int = DEFAULT_FAILURE_THRESHOLD,
        cool_down_s: float = DEFAULT_COOL_DOWN_S,
        gauge: Gauge | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1, not {failure_threshold}")
        if cool_down_s <= 0:
            raise ValueError(f"cool_down_s must be positive, not {cool_down_s}")
        self.failure_threshold = failure_threshold
        self.cool_down_s = cool_down_s
        self._gauge = gauge
        self._clock = clock
        self._breakers: dict[str, _Breaker] = {}
        self._lock = threading.Lock()

    def state(self, member: str) -> CircuitState:
        """The member's state now (an open breaker past its cool-down reads half-open)."""
        with self._lock:
            breaker = self._breakers.get(member)
            if breaker is None:
                return CircuitState.CLOSED
            if breaker.state is CircuitState.OPEN and self._cooled(breaker):
                return CircuitState.HALF_OPEN
            return breaker.state

    def admit(self, member: str) -> bool:
        """Whether to call ``member`` now; False: skip it (its breaker is open, or a
        probe is already out). A True from a half-open breaker makes this call the probe."""
        with self._lock:
            breaker = self._get(member)
            now = self._clock()
            if breaker.state is CircuitState.CLOSED:
                return True
            if breaker.state is CircuitState.OPEN:
                if not self._cooled(breaker):
                    return False
                breaker.state = CircuitState.HALF_OPEN
            if breaker.probe_since is not None and now - breaker.probe_since < self.cool_down_s:
                return False  # one probe at a time
            breaker.probe_since = now
            return True

    def succeeded(self, member: str) -> None:
        """The member answered or signed a refusal: close its breaker."""
        with self._lock:
            breaker = self._get(member)
            breaker.failures = 0
            breaker.probe_since = None
            breaker.state = CircuitState.CLOSED

    def failed(self, member: str) -> None:
        """The member could not be reached or did not answer in time."""
        with self._lock:
            breaker = self._get(member)
            breaker.failures += 1
            if (
                breaker.state is CircuitState.HALF_OPEN
                or breaker.failures >= self.failure_threshold
            ):
                breaker.opened_at = self._clock()
                breaker.probe_since = None
                breaker.state = CircuitState.OPEN

    def _get(self, member: str) -> _Breaker:
        breaker = self._breakers.get(member)
        if breaker is None:
            breaker = self._breakers[member] = _Breaker()
            if self._gauge is not None:  # every member asked, read at each scrape: an open
                # breaker whose cool-down has ended shows half-open, even on an idle node
                self._gauge.labels(member=member).set_function(lambda: int(self.state(member)))
        return breaker

    def _cooled(self, breaker: _Breaker) -> bool:
        return self._clock() - breaker.opened_at >= self.cool_down_s

"""The node a city runs: its catalog, database and records, audit ledger, the exchange
with the other members, the application wiring and the ``credit-node`` command."""

from __future__ import annotations

__all__: list[str] = []

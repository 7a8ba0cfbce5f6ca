"""The federation layer, built on the signed query path (``node.exchange``):

* the consolidated report across every member a node may ask, and its offline
  verification;
* witnessing: the members' ledgers watch each other (C2SP cosignatures on each
  other's checkpoints; forks and rollbacks raise alarms);
* reconciliation of one node's OUTGOING entries with a peer's INCOMING ones.
"""

from __future__ import annotations

__all__: list[str] = []

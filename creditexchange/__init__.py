"""Credit Exchange Node: the one import root of the project, and its base layer.

The folders the project is known by are subpackages of this one through the
links beside this file (``node``, ``policy``, ``certs``, ``devtools``, and ``v1``
generated from ``proto/``), so an installed node puts a single name,
``creditexchange``, into site-packages. The layers, top to bottom; a module
imports only from its own layer or those below (``pyproject.toml``'s import
contracts, checked by the tests):

    devtools                  sample data, provisioning, the demo
    node.cli                  the ``credit-node`` command: parse, call, print
    node.app                  configuration, keys, opening and serving the node
    node.exchange             services: the signed queries between members
    node.records  node.ledger  policy  certs     the domain
    node.catalog  node.database                  the data catalog, the tables
    errors  subjects  identifiers  clock  v1      the base: vocabulary
"""

from __future__ import annotations

__all__: list[str] = []

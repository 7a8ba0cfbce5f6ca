"""The sharing memorandum: its document, signatures and trust rules, and the decision engine.

It depends on the base layer only (``creditexchange.errors``, ``subjects``,
``clock``): the engine takes any catalog of the ``engine.DataCatalog`` shape.
"""

from __future__ import annotations

__all__: list[str] = []

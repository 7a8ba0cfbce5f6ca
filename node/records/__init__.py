"""The city's credit records: what the node keeps and how it gets there.

``repository`` is the one place that reads and writes records (what may be
served, new versions, status changes); ``validation`` checks a department's row
against its catalog theme, ``publicity`` computes publicity periods,
``importer`` loads department files, ``objections`` marks records under
objection, and ``view`` shows a subject as an operator sees it.
"""

from __future__ import annotations

__all__: list[str] = []

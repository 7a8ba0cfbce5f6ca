"""The city's credit records: what the node keeps and how it gets there.

``repository`` is the one place that reads and writes records (what may be
served, new versions, status changes as events); ``validation`` checks a
department's row against its catalog theme, ``publicity`` computes publicity
periods. A department's file is read by ``sources`` (CSV, JSON Lines, Excel),
validated in chunks by ``reading`` (in a worker process for large files) and
written by ``importer``. ``history`` tells a record's versions and events,
``objections`` runs the objection workflow (信用异议), ``repair`` credit repair
(信用修复), ``reporting`` the departments' submission statistics, and ``view``
shows a subject as an operator sees it; ``spreadsheets`` keeps the CSV files the
node writes for people safe to open.
"""

from __future__ import annotations

__all__: list[str] = []

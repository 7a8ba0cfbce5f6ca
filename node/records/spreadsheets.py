"""Cells a spreadsheet shows as text, for the CSV files the node writes for people.

Reject reports and reporting statistics are opened in Excel or WPS, and their cells
carry text from departments' files. A cell that starts like a formula (``= + - @``,
tab, carriage return) would be run as one (CSV injection); it is written with a
leading ``'``, which the spreadsheet shows as text.
"""

from __future__ import annotations

__all__ = ["spreadsheet_text"]

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_text(cell: str) -> str:
    """``cell`` as a spreadsheet shows it as text: one starting like a formula gets a ``'``."""
    return "'" + cell if cell.startswith(_FORMULA_STARTS) else cell

"""Running Core statements on the DB-API cursor, for the paths a benchmark measures.

Every query of the node is a SQLAlchemy Core statement over the tables of
``models``. Most run through ``Connection.execute``. A few run for every query a
node answers or for every row it imports, where SQLAlchemy's execution layer
costs more than the statement itself (about 0.1 ms on SQLite, 0.2 ms on
PostgreSQL, per execution): those are :class:`Prepared` — the same Core
statement, compiled once per dialect to the driver's own SQL with positional
parameters, and run on the driver's cursor. Nothing here writes SQL by hand.

Values go to the driver as it takes them: dates as ISO text (``sql_date``),
timestamps as :func:`sql_stamp` gives them, bytes as bytes. What a driver gives
back is read with :func:`as_date`.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import itertools
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Dialect, Table, and_, bindparam, or_, select
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

__all__ = ["Prepared", "as_date", "padded", "select_keyed", "sql_date", "sql_stamp"]

Statement = ClauseElement | Callable[[str], ClauseElement]
"""A Core statement, or a function of the dialect's name that builds one (an upsert)."""


@dataclass(frozen=True, slots=True)
class _Form:
    sql: str
    order: tuple[str, ...]  # parameter names, in the statement's positional order
    defaults: Mapping[str, Any]  # the values of literals the compiler turned into parameters
    pick: Callable[[Mapping[str, Any]], tuple[Any, ...]]  # named values -> positional
    reorder: Callable[[Sequence[Any]], Sequence[Any]] | None  # ``row`` order -> positional


def _picker(order: tuple[str, ...]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """Named values -> the tuple of them in ``order`` (``itemgetter``: one C call)."""
    if not order:
        return lambda _values: ()
    getter = operator.itemgetter(*order)
    if len(order) == 1:
        return lambda values: (getter(values),)
    return getter


def _positional(dialect: Dialect) -> Dialect:
    """``dialect``, or a copy of it that writes positional parameters (``%s`` for psycopg),
    so that every statement takes a tuple, the cheapest thing to hand a driver."""
    if dialect.positional:
        return dialect
    positional = copy.copy(dialect)
    positional.paramstyle = "format"
    positional.positional = True
    return positional


class Prepared:
    """A Core statement compiled once per dialect and run on a DB-API cursor.

    ``execute(cursor, dialect, values)`` and ``executemany(cursor, dialect, rows)``
    take parameters by name; with ``row`` (the parameter names in the order a
    tuple gives them) ``executemany_rows`` takes plain tuples, which costs nothing
    per row when that is the statement's own order.
    """

    __slots__ = ("_forms", "_row", "_statement")

    def __init__(self, statement: Statement, *, row: tuple[str, ...] = ()) -> None:
        self._statement = statement
        self._row = row
        self._forms: dict[str, _Form] = {}

    def _form(self, dialect: Dialect) -> _Form:
        form = self._forms.get(dialect.name)
        if form is None:
            statement = self._statement
            if not isinstance(statement, ClauseElement):
                statement = statement(dialect.name)
            compiled = cast(SQLCompiler, statement.compile(dialect=_positional(dialect)))
            order = tuple(compiled.positiontup or ())
            reorder = None
            if self._row and order != self._row:
                if set(order) != set(self._row):
                    raise ValueError(f"row {self._row} does not name the parameters {order}")
                reorder = operator.itemgetter(*(self._row.index(name) for name in order))
            # the values of literals; a bindparam() left to the caller is required
            params = compiled.params
            defaults = {
                name: params[name]
                for name, bind in compiled.binds.items()
                if not bind.required and name in params
            }
            form = _Form(compiled.string, order, defaults, _picker(order), reorder)
            self._forms[dialect.name] = form
        return form

    def sql(self, dialect: Dialect) -> str:
        return self._form(dialect).sql

    def execute(
        self, cursor: Any, dialect: Dialect, values: Mapping[str, Any] | None = None
    ) -> Any:
        form = self._form(dialect)
        merged = {**form.defaults, **(values or {})} if form.defaults else (values or {})
        cursor.execute(form.sql, form.pick(merged))
        return cursor

    def executemany(self, cursor: Any, dialect: Dialect, rows: Iterable[Mapping[str, Any]]) -> None:
        form = self._form(dialect)
        if form.defaults:
            rows = ({**form.defaults, **row} for row in rows)
        cursor.executemany(form.sql, [form.pick(row) for row in rows])

    def executemany_rows(
        self, cursor: Any, dialect: Dialect, rows: Sequence[Sequence[Any]]
    ) -> None:
        """Run the statement for each row, a tuple of values in the order of ``row``."""
        form = self._form(dialect)
        if not self._row or form.defaults:
            raise ValueError("executemany_rows needs row= and a statement without literals")
        cursor.executemany(form.sql, rows if form.reorder is None else map(form.reorder, rows))


def padded(values: Sequence[Any], prefix: str) -> dict[str, Any]:
    """Parameters ``prefix0`` … for a list of ``values``, padded (by repeating the last) to
    a power of two: a statement is then compiled for a handful of list lengths, not one
    for every length. Only for lists whose repeats change nothing (``IN (…)``)."""
    n = len(values)
    names = _parameter_names(prefix, 1 << (n - 1).bit_length() if n > 1 else 1)
    if len(names) == n:
        return dict(zip(names, values, strict=True))
    return dict(zip(names, itertools.chain(values, itertools.repeat(values[-1])), strict=False))


@functools.lru_cache(maxsize=64)
def _parameter_names(prefix: str, size: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(size))


def select_keyed(
    cursor: Any,
    dialect: Dialect,
    table: Table,
    columns: tuple[str, ...],
    key: tuple[str, ...],
    keys: Sequence[Sequence[Any]],
) -> list[Any]:
    """The ``columns`` of the rows of ``table`` whose ``key`` columns equal one of ``keys``.

    The statement is ``(a = ? AND b = ?) OR …``, each term a whole key, so that SQLite
    looks each up in the index (a row-value ``IN`` of tuples it answers by scanning the
    table); the keys are padded to a power of two (:func:`padded`), so a statement is
    compiled for a handful of lengths only. No keys, no rows.
    """
    if not keys:
        return []
    values: dict[str, Any] = {}
    for row, value in enumerate(padded(keys, "k").values()):
        for position, part in enumerate(value):
            values[f"k{position}_{row}"] = part
    statement = _keyed_statement(table, columns, key, len(values) // len(key))
    return list(statement.execute(cursor, dialect, values).fetchall())


@functools.lru_cache(maxsize=128)
def _keyed_statement(
    table: Table, columns: tuple[str, ...], key: tuple[str, ...], n: int
) -> Prepared:
    c = table.c
    return Prepared(
        select(*(c[name] for name in columns)).where(
            or_(
                *(
                    and_(*(c[name] == bindparam(f"k{p}_{row}") for p, name in enumerate(key)))
                    for row in range(n)
                )
            )
        )
    )


def sql_date(day: dt.date | str | None) -> str | None:
    """A date as both drivers take it for a DATE column: ISO text."""
    if day is None or isinstance(day, str):
        return day
    return day.isoformat()


def sql_stamp(dialect: Dialect, moment: dt.datetime) -> str:
    """A UTC timestamp as the driver stores it for a ``DateTime(timezone=True)`` column,
    in the form SQLAlchemy writes and reads back (SQLite keeps no zone)."""
    text = moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return text + "+00:00" if dialect.name == "postgresql" else text


def as_date(value: object) -> dt.date | None:
    """A DATE column as a driver returns it: a date (psycopg) or ISO text (sqlite3)."""
    if value is None or isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value))

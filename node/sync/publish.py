"""Turning the changes of a published theme's records into its feed's next leaves.

:func:`publish_changes` compares the records of each published theme with what
the feed last said of each of them (``feed_published``) and appends one
``FeedChange`` leaf per change, in the order the changes were made.

Invariants this module keeps:

* **Every change, once.** A leaf and the ``feed_published`` row saying it was
  published commit in one transaction (:meth:`FeedLog.append` writes in the
  caller's), so running :func:`publish_changes` again appends nothing, and a run
  interrupted half-way is finished by the next. The feed's size is read before
  the records, and the append is refused if another publisher moved the feed
  meanwhile (then the theme is read again), so no change is published twice.
* **Every version, in order.** A record the feed already carries is published
  version by version: the data versions kept in ``record_versions`` since the one
  the feed last said, then its current state, each the change it made. A record
  the feed never carried enters at its current version (what it was before the
  feed carried it is not a change of the feed).
* **Every status, as it stands.** A status change (an objection opened or
  closed, a repair, a withdrawal) is an event of the record, not a version
  (``repository.set_status``): a carried record whose status differs from the one
  the feed last said is a change at the same version. Status changes between two
  runs are published as the status they left the record in.
* **What a change is** follows the records repository's rules, never a copy of
  them: a record is in the feed while ``repository.servable`` holds for it
  today. Entering it is ``NEW``; leaving it because its status took it out of
  publicity (``repository.WITHDRAWN``: ``expired``, withdrawn; ``repaired``, a
  credit repair ended its publication) is ``REMOVAL`` carrying that status (so is
  a record gone from the store): subscribers delete their copy. Leaving it because
  its publicity ended is ``PUBLICITY_ENDED``; any other change while in it is
  ``CORRECTION`` (new content, a grade change, an objection opened or closed —
  the copy then says 异议处理中 as the source does). ``REPAIR`` is not published:
  a repaired record is withdrawn. A version kept in ``record_versions`` is judged
  by its status alone: whether its publicity had ended is a question about
  today, asked of the current version only.
* **Deterministic leaves.** A leaf is the deterministic serialization of its
  ``FeedChange``; ``fields_json`` is canonical JSON (sorted keys, no spaces,
  UTF-8); the change's time is when the store recorded that version (a
  publicity end counts from the next China Standard Time midnight), kept
  non-decreasing per record, so two runs over the same store write the same bytes.
  A ``REMOVAL`` or ``PUBLICITY_ENDED`` names the record, its version and status,
  never its fields again.
* **Batched.** Per theme three queries read what changed (the store compares
  each record with its published state, so an unchanged record costs no Python
  work), and each transaction appends up to :data:`CHUNK` leaves with one
  ``executemany`` per table and one signed checkpoint.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import (
    ClauseElement,
    Connection,
    Engine,
    and_,
    bindparam,
    exists,
    not_,
    or_,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite

from creditexchange.clock import CST, now_us
from creditexchange.errors import ConcurrentWriter, LedgerError
from creditexchange.node.database.driver import Prepared, as_date, sql_date
from creditexchange.node.database.models import (
    FEED_PUBLISHED,
    RECORD_VERSIONS,
    RECORDS,
    SUBJECTS,
)
from creditexchange.node.records.repository import WITHDRAWN, servable
from creditexchange.node.sync.feed import FeedLog
from creditexchange.v1 import sync_pb2

__all__ = ["CHUNK", "FORMAT_VERSION", "canonical_fields", "publish_changes"]

FORMAT_VERSION = 1
CHUNK = 20_000
"""Most leaves appended in one transaction (one signed checkpoint each)."""

_ATTEMPTS = 3  # a theme is read again this often when another publisher moved its feed

_r, _p, _s, _v = RECORDS.c, FEED_PUBLISHED.c, SUBJECTS.c, RECORD_VERSIONS.c
_VISIBLE = servable(bindparam("today"))
_PUBLISHED = and_(_p.theme == _r.theme, _p.record_key == _r.record_key)

# Records whose feed state may differ from their state today: not carried but servable,
# or carried at another version or (still in the feed) another status, or carried while
# no longer servable (and the reverse).
_CHANGED = Prepared(
    select(
        _r.id,
        _r.record_key,
        _r.version,
        _r.status,
        _r.content_hash,
        _r.subject_id,
        _s.subject_type,
        _s.name,
        _r.source_department,
        _r.fields,
        _r.decision_date,
        _r.valid_until,
        _r.publicity_end,
        _r.updated_at,
        _VISIBLE,
        _p.version,
        _p.status,
        _p.present,
    )
    .select_from(
        RECORDS.outerjoin(SUBJECTS, _s.subject_id == _r.subject_id).outerjoin(
            FEED_PUBLISHED, _PUBLISHED
        )
    )
    .where(
        _r.theme == bindparam("theme"),
        or_(
            and_(_p.record_key.is_(None), _VISIBLE),
            and_(
                _p.record_key.is_not(None),
                or_(
                    _p.version != _r.version,
                    and_(_p.present, _p.status != _r.status),
                    and_(_p.present, not_(_VISIBLE)),
                    and_(not_(_p.present), _VISIBLE),
                ),
            ),
        ),
    )
)

# The versions a carried record went through since the one its feed last said.
_BETWEEN = Prepared(
    select(
        _v.record_id,
        _v.version,
        _v.status,
        _v.content_hash,
        _v.subject_id,
        _s.subject_type,
        _s.name,
        _v.source_department,
        _v.fields,
        _v.decision_date,
        _v.valid_until,
        _v.publicity_end,
        _v.valid_from,
    )
    .select_from(
        RECORD_VERSIONS.join(RECORDS, _r.id == _v.record_id)
        .join(FEED_PUBLISHED, _PUBLISHED)
        .outerjoin(SUBJECTS, _s.subject_id == _v.subject_id)
    )
    .where(
        _r.theme == bindparam("theme"),
        _v.version > _p.version,
        _v.version < _r.version,
    )
    .order_by(_v.record_id, _v.version)
)

# Records the feed carries that are gone from the store altogether.
_GONE = Prepared(
    select(_p.record_key, _p.version, _p.status).where(
        _p.theme == bindparam("theme"),
        _p.present,
        not_(exists().where(_r.theme == _p.theme, _r.record_key == _p.record_key)),
    )
)

_PUBLISHED_COLUMNS = ("theme", "record_key", "version", "content_hash", "status", "present", "leaf")


def _mark_published(dialect: str) -> ClauseElement:
    """Record what the feed now says of a record (insert, or replace what it said)."""
    values: dict[str, Any] = {
        name: bindparam(name) for name in _PUBLISHED_COLUMNS if name != "leaf"
    }
    values["leaf_idx"] = bindparam("leaf")
    statement = (postgresql if dialect == "postgresql" else sqlite).insert(FEED_PUBLISHED)
    statement = statement.values(values)
    upsert: ClauseElement = statement.on_conflict_do_update(
        index_elements=["theme", "record_key"],
        set_={
            "version": statement.excluded.version,
            "content_hash": statement.excluded.content_hash,
            "status": statement.excluded.status,
            "present": statement.excluded.present,
            "leaf_idx": statement.excluded.leaf_idx,
        },
    )
    return upsert


_MARK_PUBLISHED = Prepared(_mark_published, row=_PUBLISHED_COLUMNS)


def canonical_fields(fields: str | bytes) -> str:
    """A record's fields as canonical JSON: sorted keys, no spaces, UTF-8 text."""
    return orjson.dumps(orjson.loads(fields), option=orjson.OPT_SORT_KEYS).decode()


@dataclass(frozen=True, slots=True)
class _State:
    """One version of a record, as a feed change would carry it."""

    version: int
    status: str
    content_hash: str
    subject_id: str
    subject_type: str
    subject_name: str
    source_department: str
    fields: str | bytes
    decision_date: dt.date | None
    valid_until: dt.date | None
    publicity_end: dt.date | None
    changed_us: int
    in_feed: bool  # servable: for the current version today, for an earlier one by status


@dataclass(frozen=True, slots=True)
class _Change:
    record_key: str
    kind: int
    state: _State
    changed_us: int
    body: bytes = b""


def publish_changes(
    engine: Engine,
    feed_log: FeedLog,
    publisher: str,
    themes: Iterable[str],
    today: dt.date,
) -> dict[str, int]:
    """Append every change of the records of ``themes`` since the last run to their
    feeds; per theme, how many changes were appended (0: the feed was up to date).

    ``publisher`` is this node's member id (it goes into every change); ``today`` is
    the China Standard Time date publicity is counted against. Raises
    :class:`ConcurrentWriter` when other publishers kept moving a feed while this
    one read it.
    """
    appended: dict[str, int] = {}
    for theme in dict.fromkeys(themes):
        for attempt in range(_ATTEMPTS):
            try:
                appended[theme] = _publish_theme(engine, feed_log, publisher, theme, today)
                break
            except ConcurrentWriter:
                if attempt == _ATTEMPTS - 1:
                    raise
    return appended


def _publish_theme(
    engine: Engine, feed_log: FeedLog, publisher: str, theme: str, today: dt.date
) -> int:
    """Publish one theme's changes: read once, then append chunk by chunk."""
    with engine.connect() as conn:
        size = feed_log.size_in(conn, theme)  # before the records: see the module
        changes = _changes(conn, theme, today)
    if not changes:
        return 0
    for first in range(0, len(changes), CHUNK):
        chunk = changes[first : first + CHUNK]
        bodies = [_leaf(publisher, theme, change) for change in chunk]
        with engine.begin() as conn:
            new_size = feed_log.append(conn, theme, bodies, expected_size=size)
            _mark(conn, theme, chunk, size)
        size = new_size
    return len(changes)


def _changes(conn: Connection, theme: str, today: dt.date) -> list[_Change]:
    """The theme's changes not yet published, in the order they were made."""
    cursor = conn.connection.cursor()
    dialect = conn.dialect
    values = {"theme": theme, "today": sql_date(today)}
    try:
        changed = _CHANGED.execute(cursor, dialect, values).fetchall()
        between: dict[int, list[_State]] = {}
        if any(row[15] is not None and row[2] - row[15] > 1 for row in changed):
            for row in _BETWEEN.execute(cursor, dialect, {"theme": theme}).fetchall():
                status = str(row[2])
                between.setdefault(int(row[0]), []).append(
                    _State(
                        int(row[1]),
                        status,
                        str(row[3]),
                        str(row[4]),
                        str(row[5] or ""),
                        str(row[6] or ""),
                        str(row[7]),
                        row[8],
                        as_date(row[9]),
                        as_date(row[10]),
                        as_date(row[11]),
                        _micros(row[12]),
                        status not in WITHDRAWN,
                    )
                )
        gone = _GONE.execute(cursor, dialect, {"theme": theme}).fetchall()
    finally:
        cursor.close()
    changes: list[_Change] = []
    for row in changed:
        current = _State(
            int(row[2]),
            str(row[3]),
            str(row[4]),
            str(row[5]),
            str(row[6] or ""),
            str(row[7] or ""),
            str(row[8]),
            row[9],
            as_date(row[10]),
            as_date(row[11]),
            as_date(row[12]),
            _micros(row[13]),
            bool(row[14]),
        )
        published = None if row[15] is None else (int(row[15]), str(row[16]), bool(row[17]))
        changes.extend(
            _record_changes(str(row[1]), published, between.get(int(row[0]), ()), current)
        )
    recorded = now_us()  # a record gone from the store left it unseen: now is all we know
    for key, version, status in gone:
        state = _State(
            int(version), str(status), "", "", "", "", "", "{}", None, None, None, 0, False
        )
        changes.append(_Change(str(key), sync_pb2.REMOVAL, state, recorded))
    changes.sort(key=lambda c: (c.changed_us, c.record_key, c.state.version))
    return changes


def _record_changes(
    key: str,
    published: tuple[int, str, bool] | None,
    earlier: Sequence[_State],
    current: _State,
) -> list[_Change]:
    """The changes of one record since its published state, oldest first."""
    in_feed = published is not None and published[2]
    # versions the feed never carried are history from before it: start at the current one;
    # the reads are not one snapshot, so a version an import committed meanwhile may show
    # among the earlier ones too: only those older than the current state are taken
    older = sorted(
        {s.version: s for s in earlier if s.version < current.version}.values(),
        key=lambda s: s.version,
    )
    states = [current] if published is None else [*older, current]
    changes: list[_Change] = []
    last_us = 0
    for state in states:
        kind = _kind(in_feed, state)
        if kind is None:
            continue
        when = state.changed_us
        if kind == sync_pb2.PUBLICITY_ENDED and state.publicity_end is not None:
            when = _midnight_after(state.publicity_end)
        last_us = max(last_us, when)
        changes.append(_Change(key, kind, state, last_us))
        in_feed = state.in_feed
    return changes


def _kind(in_feed: bool, state: _State) -> int | None:
    """What moving from a published state to ``state`` is, or None (no change)."""
    if not in_feed:
        return sync_pb2.NEW if state.in_feed else None
    if not state.in_feed:
        return sync_pb2.REMOVAL if state.status in WITHDRAWN else sync_pb2.PUBLICITY_ENDED
    return sync_pb2.CORRECTION


def _leaf(publisher: str, theme: str, change: _Change) -> bytes:
    state = change.state
    message = sync_pb2.FeedChange(
        format_version=FORMAT_VERSION,
        publisher=publisher,
        theme=theme,
        kind=change.kind,  # type: ignore[arg-type]
        record_key=change.record_key,
        version=state.version,
        status=state.status,
        changed_unix_micros=change.changed_us,
    )
    if change.kind == sync_pb2.PUBLICITY_ENDED:
        message.publicity_end = _iso(state.publicity_end)
    elif change.kind != sync_pb2.REMOVAL:  # a leaving record is named, never shown again
        message.subject_id = state.subject_id
        message.subject_type = state.subject_type
        message.subject_name = state.subject_name
        message.source_department = state.source_department
        message.fields_json = canonical_fields(state.fields)
        message.decision_date = _iso(state.decision_date)
        message.valid_until = _iso(state.valid_until)
        message.publicity_end = _iso(state.publicity_end)
    return message.SerializeToString(deterministic=True)


def _mark(conn: Connection, theme: str, chunk: Sequence[_Change], first_leaf: int) -> None:
    """Say in ``feed_published`` what the feed now says of each record of the chunk."""
    latest: dict[str, tuple[Any, ...]] = {}
    for offset, change in enumerate(chunk):  # a record's last change in the chunk wins
        state = change.state
        latest[change.record_key] = (
            theme,
            change.record_key,
            state.version,
            state.content_hash,
            state.status,
            change.kind not in (sync_pb2.REMOVAL, sync_pb2.PUBLICITY_ENDED),
            first_leaf + offset,
        )
    cursor = conn.connection.cursor()
    try:
        _MARK_PUBLISHED.executemany_rows(cursor, conn.dialect, list(latest.values()))
    finally:
        cursor.close()


def _iso(day: dt.date | None) -> str:
    return "" if day is None else day.isoformat()


def _midnight_after(day: dt.date) -> int:
    """When a publicity ending on ``day`` (its last public day) ended: the next midnight in
    China, in microseconds since the epoch."""
    moment = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), CST)
    return int(moment.timestamp()) * 1_000_000


def _micros(value: object) -> int:
    """A timestamp column as a driver returns it (a datetime, or SQLite's text, in UTC)
    as microseconds since the epoch."""
    moment = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    if not isinstance(moment, dt.datetime):
        raise LedgerError(f"expected a timestamp in the records, found {value!r}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    delta = moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds

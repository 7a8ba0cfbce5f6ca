"""What the change-feed fault tests and the sync benchmark share.

* **One digest, three sources.** :class:`Digest` is a SHA-256 over every record a
  feed carries, each as the same canonical line (theme, key, version, subject,
  department, canonical fields, dates, status), sorted. It is computed from the
  publisher's store (:func:`publisher_digest`: its servable records of the theme,
  as a feed carries them), from the subscriber's copy (:func:`subscriber_digest`:
  its ``synced_records`` of that origin and theme) and from the first ``n`` leaves
  of the feed itself (:class:`FeedReplay`: what applying them one by one leaves).
  Equal digests mean equal data, record by record: nothing lost, added or changed.
* **Customs data made the real way.** Records are generated as department files
  (``devtools.sample``), imported with the real importer, changed at the source as
  a credit center changes them (a re-import with a corrected field, a status
  change) and published as a serving node publishes them.
* **Real processes, started fast.** :func:`cli_process` runs a ``credit-node``
  command line in a process of its own, forked from a server process that has
  imported the command line once (a fresh interpreter spends over a second on
  imports), so a test can start and ``SIGKILL`` many of them; :func:`serve` starts
  ``credit-node serve`` so, and returns once it listens.
* **A cable that breaks.** :class:`CuttingProxy` passes bytes between a subscriber
  and its publisher on loopback and drops its first connections after a number of
  bytes from the publisher: a stream cut in the middle of a batch.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import hashlib
import multiprocessing
import multiprocessing.context
import re
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, select

from creditexchange.clock import china_today
from creditexchange.devtools.sample import write_theme
from creditexchange.node.app.config import NodeConfig
from creditexchange.node.app.wiring import federation_view, open_audit_log
from creditexchange.node.catalog import Catalog
from creditexchange.node.database.driver import as_date
from creditexchange.node.database.models import RECORDS, SUBJECTS, SYNCED_RECORDS
from creditexchange.node.records.importer import ImportSummary, import_file
from creditexchange.node.records.repository import RecordStatus, find_record, servable, set_status
from creditexchange.node.sync.feed import FeedLog, feed_origin
from creditexchange.node.sync.publish import canonical_fields, publish_changes
from creditexchange.v1 import audit_pb2, sync_pb2

__all__ = [
    "CuttingProxy",
    "Digest",
    "FeedReplay",
    "applied_ranges",
    "cli_process",
    "correct_records",
    "customs_feed_log",
    "import_customs",
    "publish",
    "publisher_digest",
    "serve",
    "set_statuses",
    "stop",
    "subscriber_digest",
    "wait_until",
]

PUBLISHER = "customs"

# --- the digest ------------------------------------------------------------------------


@dataclass(frozen=True)
class Digest:
    """How many records, and the SHA-256 over all of them (see the module)."""

    records: int
    sha256: str


def _day(value: object) -> str:
    """A date as any of the three sources holds it (a date, ISO text, "" or None)."""
    day = as_date(value or None)
    return "" if day is None else day.isoformat()


def _line(theme: str, key: str, values: Sequence[Any]) -> bytes:
    """One record's canonical line: what a feed says of it, and nothing else."""
    version, subject_id, subject_type, name, department, fields, decided, valid, ends, status = (
        values
    )
    return orjson.dumps(
        [
            theme,
            key,
            int(version),
            subject_id,
            subject_type or "",
            name or "",
            department,
            canonical_fields(fields),
            _day(decided),
            _day(valid),
            _day(ends),
            status,
        ]
    )


def _digest(lines: Iterable[bytes]) -> Digest:
    ordered = sorted(lines)
    sha = hashlib.sha256()
    for line in ordered:
        sha.update(line)
        sha.update(b"\n")
    return Digest(len(ordered), sha.hexdigest())


def publisher_digest(engine: Engine, themes: Iterable[str], today: dt.date | None = None) -> Digest:
    """The publisher's servable records of ``themes`` on ``today`` (China's date), with
    their subjects' type and name, as its feed carries them."""
    r, s = RECORDS.c, SUBJECTS.c
    wanted = list(themes)
    query = (
        select(
            r.theme,
            r.record_key,
            r.version,
            r.subject_id,
            s.subject_type,
            s.name,
            r.source_department,
            r.fields,
            r.decision_date,
            r.valid_until,
            r.publicity_end,
            r.status,
        )
        .select_from(RECORDS.outerjoin(SUBJECTS, s.subject_id == r.subject_id))
        .where(r.theme.in_(wanted), servable(today or china_today()))
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return _digest(_line(row[0], row[1], row[2:]) for row in rows)


def subscriber_digest(engine: Engine, origin: str, themes: Iterable[str]) -> Digest:
    """The subscriber's copy of ``origin``'s feeds of ``themes`` (``synced_records``)."""
    c = SYNCED_RECORDS.c
    query = select(
        c.theme,
        c.record_key,
        c.version,
        c.subject_id,
        c.subject_type,
        c.subject_name,
        c.source_department,
        c.fields,
        c.decision_date,
        c.valid_until,
        c.publicity_end,
        c.status,
    ).where(c.origin == origin, c.theme.in_(list(themes)))
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return _digest(_line(row[0], row[1], row[2:]) for row in rows)


@dataclass
class FeedReplay:
    """The records a feed's first leaves leave behind, applied one by one as a subscriber
    must: a NEW, CORRECTION or REPAIR sets the record's state, a REMOVAL or
    PUBLICITY_ENDED drops it. :meth:`digest_at` folds further leaves as it is asked."""

    feeds: FeedLog
    theme: str
    size: int = 0
    held: dict[str, bytes] = field(default_factory=dict)

    def digest_at(self, size: int) -> Digest:
        """The digest of the copy a subscriber holds at cursor ``size``."""
        if size < self.size:  # start again: a replay only moves forwards
            self.size, self.held = 0, {}
        for raw in self.feeds.leaves(self.theme, self.size, size):
            c = sync_pb2.FeedChange.FromString(raw)
            if c.kind in (sync_pb2.REMOVAL, sync_pb2.PUBLICITY_ENDED):
                self.held.pop(c.record_key, None)
                continue
            self.held[c.record_key] = _line(
                c.theme,
                c.record_key,
                (
                    c.version,
                    c.subject_id,
                    c.subject_type,
                    c.subject_name,
                    c.source_department,
                    c.fields_json,
                    c.decision_date,
                    c.valid_until,
                    c.publicity_end,
                    c.status,
                ),
            )
        self.size = size
        return _digest(self.held.values())


# --- the publisher's data ----------------------------------------------------------------


def import_customs(
    engine: Engine, catalog: Catalog, path: Path, theme: str, records: int, seed: int
) -> ImportSummary:
    """Write ``records`` generated customs records of ``theme`` to ``path`` and import
    them with the real importer (rejects beside the file)."""
    write_theme(catalog, theme, PUBLISHER, records, seed, path)
    return import_file(engine, catalog, path, theme, reject_dir=path.parent / "rejects")


def correct_records(
    engine: Engine, catalog: Catalog, path: Path, theme: str, every: int, tag: int
) -> list[str]:
    """Correct every ``every``-th record of an imported file at its source: its customs
    registration code changes, and the file is imported again (each corrected record
    gets a new version, the others are unchanged). Returns the keys corrected."""
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    code, key = header.index("customs_code"), header.index("record_key")
    corrected = []
    for n, row in enumerate(body):
        if n % every == 0:
            row[code] = f"{(int(row[code]) + tag) % 10**10:010d}"
            corrected.append(row[key])
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([header, *body])
    summary = import_file(engine, catalog, path, theme, reject_dir=path.parent / "rejects")
    if summary.rejected or summary.updated < len(corrected):
        raise AssertionError(f"the corrected file did not import as corrections: {summary}")
    return corrected


def set_statuses(engine: Engine, theme: str, keys: Iterable[str], status: RecordStatus) -> None:
    """Change records' status as the credit center does (a repair, a withdrawal)."""
    now = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        for key in keys:
            record_id, _ = find_record(conn, theme, key)
            set_status(conn, record_id, status, f"test: {status.value}", now)


def customs_feed_log(config: NodeConfig, engine: Engine) -> FeedLog:
    """The node's feeds, built as a serving node builds them."""
    federation = config.settings.federation
    return FeedLog(
        engine,
        open_audit_log(config, engine).signer,
        lambda theme: feed_origin(federation, config.member_id, theme),
    )


def publish(config: NodeConfig, feeds: FeedLog) -> dict[str, int]:
    """Publish every change of the themes the memorandum has the node publish, now."""
    today = china_today()
    themes = federation_view(config).current().engine.published_themes(config.member_id, today)
    return publish_changes(feeds.engine, feeds, config.member_id, themes, today)


# --- the subscriber's record ---------------------------------------------------------------

_APPLIED = re.compile(r"^(?P<theme>\S+): applied changes (?P<first>\d+)-(?P<last>\d+);")


def applied_ranges(config: NodeConfig, engine: Engine) -> dict[str, list[tuple[int, int]]]:
    """Per theme, the ranges of changes the subscriber's ledger says it applied since the
    feed was last reset (its OUTGOING ``SYNC`` entries), in ledger order: one entry per
    batch committed."""
    log = open_audit_log(config, engine)
    ranges: dict[str, list[tuple[int, int]]] = {}
    for stored in log.entries(0, log.size()):
        assert stored.body is not None
        entry = audit_pb2.AuditEntry.FromString(stored.body)
        if entry.kind != audit_pb2.SYNC:
            continue
        if entry.direction == audit_pb2.LOCAL and entry.outcome.message == "reset":
            for theme in entry.themes_asked:
                ranges.pop(theme, None)
        if entry.direction != audit_pb2.OUTGOING:
            continue
        found = _APPLIED.match(entry.note)
        assert found is not None, entry.note
        ranges.setdefault(found["theme"], []).append((int(found["first"]), int(found["last"]) + 1))
    return ranges


# --- processes -----------------------------------------------------------------------------


def _command_line(args: list[str]) -> None:
    """The child's whole life: ``credit-node ARGS`` (its exit code is the process's)."""
    from creditexchange.node.cli import app

    app(args, prog_name="credit-node")


_context: multiprocessing.context.ForkServerContext | None = None


def cli_process(*args: str) -> multiprocessing.context.ForkServerProcess:
    """``credit-node ARGS`` started in a process of its own (see the module)."""
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(["creditexchange.node.cli.commands", "synchelpers"])
    process = _context.Process(target=_command_line, args=(list(args),), daemon=True)
    process.start()
    return process


def serve(home: Path, port: int) -> multiprocessing.context.ForkServerProcess:
    """``credit-node serve --home HOME`` (a :func:`cli_process`), once it accepts
    connections on ``port``."""
    process = cli_process("serve", "--home", str(home), "--log-level", "WARNING")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not process.is_alive():
            raise RuntimeError(f"credit-node serve --home {home} exited ({process.exitcode})")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return process
        time.sleep(0.02)
    stop(process)
    raise RuntimeError(f"credit-node serve did not listen on {port} within 60 s")


def stop(process: multiprocessing.context.ForkServerProcess) -> None:
    """Stop a started server as an operator does (SIGTERM), or kill it after 30 s."""
    if process.is_alive():
        process.terminate()
        process.join(30)
    if process.is_alive():
        process.kill()
        process.join()


class CuttingProxy:
    """A TCP relay on loopback to ``target``; each of its first ``cuts`` connections is
    dropped (both ways, at once) after ``after_bytes`` bytes from the target, the later
    ones are relayed whole. ``cut`` counts the connections dropped so far."""

    def __init__(self, target: tuple[str, int], *, cuts: int, after_bytes: int) -> None:
        self.target = target
        self.cuts = cuts
        self.after_bytes = after_bytes
        self.cut = 0
        self._accepted = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            budget = self.after_bytes if self._accepted < self.cuts else None
            self._accepted += 1
            upstream = socket.create_connection(self.target)
            self._open += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, None), daemon=True).start()
            threading.Thread(
                target=self._pipe, args=(upstream, client, budget), daemon=True
            ).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, budget: int | None) -> None:
        passed = 0
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if budget is not None and passed + len(data) >= budget:
                    sink.sendall(data[: budget - passed])  # the batch stops half-way
                    with self._lock:
                        self.cut += 1
                    break
                sink.sendall(data)
                passed += len(data)
        except OSError:
            pass
        for s in (source, sink):
            _close(s)

    def close(self) -> None:
        self._listener.close()
        for s in self._open:
            _close(s)


def _close(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    s.close()


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    """Poll ``predicate`` every 10 ms until it holds; AssertionError naming ``what``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.01)

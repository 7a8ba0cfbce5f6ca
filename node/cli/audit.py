"""``credit-node audit …``: the auditor's tools over the node's ledger.

Every command reads the node's own database; ``verify`` recomputes everything
from the stored bytes and exits 1 listing every problem it finds, each once, root
causes first. With ``--witnessed`` it also checks the head against the checkpoints
the peers cosigned (held here, and asked of each peer's witness now), so that a
rollback to an earlier signed state is caught.

``witness`` runs one witness round over the peers' logs now (a serving node runs
them every ``witness_interval_s``); ``witness-status`` shows what this node's
witness knows of each peer's log: the last size verified and cosigned, when, the
largest size seen in its receipts, and any alarm with its evidence.

``reconcile`` also asks a peer for its entries about this node and matches the two
ledgers' records of the calls between them; it exits 1 on any mismatch.

``search --subject`` finds the entries about one subject, through its HMAC under every
key the node has held (a search across a rotation of the subject-HMAC key), and is
itself recorded. ``keys`` lists the node's key history (signing and subject-HMAC keys,
each with the entries it covers); ``rotate-subject-key`` puts a new subject-HMAC key in
force (``deploy/operations/keys.md``).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from creditexchange.clock import CST, now_us
from creditexchange.errors import ConcurrentWriter, CreditExchangeError, LedgerError
from creditexchange.identifiers import subject_type_of
from creditexchange.node.app.config import NodeConfig
from creditexchange.node.app.keys import (
    SIGNING,
    describe_history,
    load_subject_key_ring,
    rotate_subject_hmac_key,
    signing_keys_in_force,
)
from creditexchange.node.app.wiring import (
    federation_view,
    open_audit_log,
    open_client,
    open_ledger,
    open_node,
)
from creditexchange.node.cli.common import (
    HomeOption,
    JsonOption,
    err,
    out,
    print_json,
    reports_errors,
)
from creditexchange.node.federation.reconcile import Reconciliation, Window, reconcile
from creditexchange.node.federation.witness import (
    PeerResult,
    PeerStatus,
    Witness,
    reset_peer,
    vouched_for,
    witness_status,
)
from creditexchange.node.ledger import (
    AuditLog,
    VerifyReport,
    WitnessedReport,
    entries,
    verify,
    verify_witnessed,
)
from creditexchange.node.ledger.search import EntryFilter, matching_entries
from creditexchange.node.ledger.verify import KeyInForce
from creditexchange.node.ledger.witnessing import WitnessRecords

__all__ = [
    "audit_app",
]

audit_app = typer.Typer(
    help="The audit ledger: checkpoints, entries, proofs, verification, retention.",
    no_args_is_help=True,
)


def audit_log(home: Path) -> tuple[NodeConfig, AuditLog]:
    node = open_node(home)
    return node.config, open_audit_log(node.config, node.database)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@audit_app.command("checkpoint")
@reports_errors
def checkpoint(home: HomeOption) -> None:
    """Print the latest signed checkpoint, exactly as signed (C2SP tlog-checkpoint)."""
    _, log = audit_log(home)
    print(log.latest_checkpoint(), end="")


@audit_app.command("vkey")
@reports_errors
def vkey(home: HomeOption) -> None:
    """Print the verifier key of this node's checkpoints (signed-note form)."""
    _, log = audit_log(home)
    print(log.signer.vkey())


def _recorded(body: bytes | None) -> str | None:
    """When an entry was recorded (the time inside it); None once pruned or undatable."""
    recorded = None if body is None else entries.recorded_time(body)
    if recorded is None:
        return None
    return dt.datetime.fromtimestamp(recorded / 1e6, dt.UTC).isoformat()


@audit_app.command("entries")
@reports_errors
def list_entries(
    home: HomeOption,
    start: Annotated[int, typer.Option("--from", min=0, help="first index")] = 0,
    end: Annotated[int | None, typer.Option("--to", help="last index (inclusive)")] = None,
    as_json: JsonOption = False,
) -> None:
    """Print entries decoded, with their index, leaf hash and stored bytes."""
    _, log = audit_log(home)
    stop = log.size() if end is None else end + 1
    rows = [_entry_row(e.index, e.leaf_hash, e.body) for e in log.entries(start, stop)]
    if as_json:
        print_json(rows)
        return
    _print_rows(rows)


def _entry_row(index: int, leaf_hash: bytes, body: bytes | None) -> dict[str, Any]:
    """An entry as ``entries`` and ``search`` show it: index, leaf hash, when, decoded."""
    return {
        "index": index,
        "leaf_hash": b64(leaf_hash),
        "recorded": _recorded(body),
        "pruned": body is None,
        "bytes": None if body is None else b64(body),
        "entry": None if body is None else entries.decode(body),
    }


def _print_rows(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        entry = r["entry"] or {}
        out.print(
            f"{r['index']:>8}  {(r['recorded'] or '-')[:19]:<19}  {r['leaf_hash'][:16]}…  "
            + (
                "(body pruned)"
                if r["pruned"]
                else f"{entry.get('direction', '')} {entry.get('kind', '')} "
                f"{entry.get('requester', '')}→{entry.get('responder', '')} "
                f"{entry.get('purpose', '')} {entry.get('outcome', {}).get('status', '')}"
                f"{' ' + entry['note'] if entry.get('note') else ''}"
            )
        )


def _print_proof(data: Mapping[str, object], as_json: bool) -> None:
    """A proof with its hashes in base64, as JSON or one field a line."""
    shown = {
        k: b64(v) if isinstance(v, bytes) else [b64(h) for h in v] if isinstance(v, list) else v
        for k, v in data.items()
    }
    if as_json:
        print_json(shown)
    else:
        for key, value in shown.items():
            out.print(f"{key}: {value}")


@audit_app.command("proof")
@reports_errors
def proof(
    index: int,
    home: HomeOption,
    size: Annotated[int | None, typer.Option(help="tree size (default: the current one)")] = None,
    as_json: JsonOption = False,
) -> None:
    """Print the RFC 9162 inclusion proof of an entry."""
    _, log = audit_log(home)
    _print_proof(log.inclusion_proof(index, size), as_json)


@audit_app.command("consistency")
@reports_errors
def consistency(old: int, new: int, home: HomeOption, as_json: JsonOption = False) -> None:
    """Print the RFC 9162 consistency proof between two tree sizes."""
    _, log = audit_log(home)
    _print_proof(log.consistency_proof(old, new), as_json)


@audit_app.command("verify")
@reports_errors
def verify_command(
    home: HomeOption,
    witnessed: Annotated[
        bool,
        typer.Option(
            "--witnessed",
            help="also check the head against the checkpoints the peers cosigned (asks them)",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Recompute the whole log and check every checkpoint; exits 1 listing every problem,
    each once, root causes first."""
    config, log = audit_log(home)
    keys = signing_keys_in_force(config, log.engine)
    report = verify(log, keys)
    vouched: tuple[WitnessedReport, list[str]] | None = None
    if witnessed:
        vouched = asyncio.run(_witnessed(config, log, keys))
    if as_json:
        data: dict[str, Any] = {
            "ok": report.ok,
            "size": report.size,
            "checked_bodies": report.checked_bodies,
            "pruned_bodies": report.pruned_bodies,
            "checkpoints": report.checkpoints,
            "problems": report.problems,
        }
        if vouched is not None:
            checked, unasked = vouched
            data["ok"] = report.ok and checked.ok
            data["witnessed"] = {
                "ok": checked.ok,
                "witnesses": checked.witnesses,
                "largest": checked.largest,
                "problems": checked.problems,
                "not_asked": unasked,
            }
        print_json(data)
    else:
        _print_verify(report)
        if vouched is not None:
            _print_witnessed(*vouched)
    if not report.ok or (vouched is not None and not vouched[0].ok):
        raise typer.Exit(1)


def _print_verify(report: VerifyReport) -> None:
    if report.ok:
        out.print(
            f"ledger verified: {report.size} entries ({report.checked_bodies} bodies rehashed, "
            f"{report.pruned_bodies} pruned), {report.checkpoints} signed checkpoints consistent"
        )
        return
    err.print(Text.assemble(("ledger verification failed", "bold red"), f": {report.problems[0]}"))
    for problem in report.problems[1:]:
        err.print(f"  also: {problem}")


async def _witnessed(
    config: NodeConfig, log: AuditLog, keys: list[KeyInForce]
) -> tuple[WitnessedReport, list[str]]:
    """The head against what the peers vouch for; and the peers that could not be asked."""
    async with open_client(config) as client:
        vouched, unasked = await vouched_for(client, WitnessRecords(log.engine))
    checked = await asyncio.to_thread(verify_witnessed, log, vouched, keys)
    if not checked.witnesses and not checked.problems:
        checked.problems.append(
            "no peer vouches for this log yet: no cosignature is held and no peer's witness "
            "has verified it (run 'credit-node audit witness' on the peers, or wait for their "
            "next round)"
        )
    return checked, unasked


def _print_witnessed(checked: WitnessedReport, unasked: list[str]) -> None:
    for line in unasked:
        err.print(f"  could not ask {line}")
    if checked.ok:
        out.print(
            f"witnessed: the head ({checked.size} entries) holds every checkpoint that "
            f"{', '.join(sorted(checked.witnesses))} cosigned (the largest: {checked.largest} "
            "entries)"
        )
        return
    if not checked.problems:
        err.print(
            Text.assemble(
                ("witness check failed", "bold red"),
                ": no peer vouches for this log (none reachable, or none has cosigned it "
                "yet): run 'credit-node audit witness' on the peers, or retry when they "
                "can be reached",
            )
        )
        return
    err.print(Text.assemble(("witness check failed", "bold red"), f": {checked.problems[0]}"))
    for problem in checked.problems[1:]:
        err.print(f"  also: {problem}")


def _iso(us: int | None) -> str | None:
    return None if us is None else dt.datetime.fromtimestamp(us / 1e6, dt.UTC).isoformat()


@audit_app.command("witness")
@reports_errors
def witness_command(home: HomeOption, as_json: JsonOption = False) -> None:
    """Witness every peer's log once now: verify, cosign, hand back; exits 1 on an alarm."""
    node = open_node(home)

    async def one_round() -> list[PeerResult]:
        ledger = open_ledger(node.config, node.database)
        async with ledger, open_client(node.config, ledger=ledger) as client:
            return await Witness(client, ledger).round()

    results = asyncio.run(one_round())
    if as_json:
        print_json(
            [
                {
                    "peer": r.peer,
                    "outcome": r.outcome,
                    "size": r.size,
                    "detail": r.detail,
                    "delivered": r.delivered,
                    "alarm": None if r.alarm is None else r.alarm.kind,
                }
                for r in results
            ]
        )
    else:
        for r in results:
            line = f"{r.peer:<12} {r.outcome:<11} {r.detail}"
            (err if r.outcome == "alarm" else out).print(line)
    if any(r.outcome == "alarm" for r in results):
        raise typer.Exit(1)


@audit_app.command("witness-status")
@reports_errors
def witness_status_command(home: HomeOption, as_json: JsonOption = False) -> None:
    """Per peer: the last size verified and cosigned, when, and any alarm (with evidence)."""
    node = open_node(home)
    try:
        members = federation_view(node.config, node.catalog).current().memorandum.members
        peers = [m.id for m in members if m.id != node.config.member_id]
    except CreditExchangeError:
        peers = []  # no memorandum installed: what is recorded, still
    statuses = witness_status(WitnessRecords(node.database), peers)
    if as_json:
        print_json([_status_json(s) for s in statuses])
        return
    for s in statuses:
        _print_status(s)


def _status_json(s: PeerStatus) -> dict[str, Any]:
    return {
        "peer": s.peer,
        "size": s.size,
        "seen": _iso(s.seen_us),
        "cosigned": _iso(s.cosigned_us),
        "receipt_size": s.receipt_size,
        "alarms": [
            {
                "kind": a.kind,
                "detail": a.detail,
                "raised": _iso(a.raised_us),
                "earlier_checkpoint": a.earlier_note,
                "later_checkpoint": a.later_note,
                "resolved": _iso(a.resolved_us),
                "resolution": a.resolution or None,
            }
            for a in s.alarms
        ],
    }


def _print_status(s: PeerStatus) -> None:
    size = "never witnessed" if s.size is None else f"size {s.size}"
    cosigned = f"cosigned {(_iso(s.cosigned_us) or '')[:19]}" if s.cosigned_us else "not cosigned"
    receipts = "" if s.receipt_size is None else f", receipts up to {s.receipt_size}"
    out.print(f"{s.peer:<12} {size}, {cosigned}{receipts}")
    for a in s.alarms:
        if a.resolved_us is not None:
            out.print(
                f"  alarm {a.kind} ({(_iso(a.raised_us) or '')[:19]}) resolved "
                f"{(_iso(a.resolved_us) or '')[:19]}: {a.resolution}",
                style="dim",
            )
            continue
        err.print(
            Text.assemble(
                (f"  ALARM {a.kind}", "bold red"),
                f" ({(_iso(a.raised_us) or '')[:19]}): {a.detail}",
            )
        )


@audit_app.command("witness-reset")
@reports_errors
def witness_reset_command(
    peer: Annotated[str, typer.Argument(help="the member whose witnessed view to reset")],
    home: HomeOption,
    reason: Annotated[str, typer.Option(help="why (recorded in the ledger with the reset)")],
) -> None:
    """After an alarm is looked into: forget the peer's checkpoints seen and resolve its
    alarms, so the next round starts from the peer's checkpoint then. Recorded."""
    config, log = audit_log(home)
    index = reset_peer(log, WitnessRecords(log.engine), config.member_id, peer, reason)
    out.print(f"witness of {peer} reset; recorded as entry {index}; alarms kept as evidence")


@audit_app.command("prune")
@reports_errors
def prune(home: HomeOption) -> None:
    """Drop entry bodies older than the retention period; leaf hashes and proofs stay.

    The pruning itself is recorded in the ledger.
    """
    config, log = audit_log(home)
    days = config.settings.audit_retention_days
    pruned = log.prune(now_us() - days * 86_400_000_000, config.member_id)
    if pruned is None:
        out.print(f"nothing to prune: no entry body is older than {days} days")
        return
    out.print(f"{pruned.note}; recorded as entry {pruned.recorded_as}")


def _china_day(value: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not a date: write it as 2026-12-01 (a day in China Standard Time)",
            param_hint=option,
        ) from None


@audit_app.command("reconcile")
@reports_errors
def reconcile_command(
    home: HomeOption,
    peer: Annotated[str, typer.Option("--peer", help="the member to reconcile with")],
    first: Annotated[str, typer.Option("--from", help="the first day, YYYY-MM-DD, China time")],
    last: Annotated[str, typer.Option("--to", help="the last day (included)")],
    as_json: JsonOption = False,
) -> None:
    """Match this node's records of the calls with a peer against the peer's, both ways.

    Exits 1 when a call is recorded on one side only or differently on the two.
    """
    config, log = audit_log(home)
    window = Window.china_days(_china_day(first, "--from"), _china_day(last, "--to"))

    async def run() -> Reconciliation:
        async with open_client(config) as client:
            return await reconcile(client, log, peer, window)

    result = asyncio.run(run())
    if as_json:
        print_json(result.as_dict())
    else:
        _print_reconciliation(result, first, last)
    if not result.ok:
        raise typer.Exit(1)


def _print_reconciliation(result: Reconciliation, first: str, last: str) -> None:
    data = result.as_dict()
    out.print(f"reconciled {result.member} with {result.peer}, {first} to {last} (China time)")
    for d in data["directions"]:
        out.print(
            f"  {d['requester']} → {d['provider']}: {d['matched']} matched, "
            f"{d['missing']} missing, {d['differs']} differing, {d['pruned']} pruned, "
            f"{d['unconfirmed']} unconfirmed"
        )
    mismatches = result.mismatches
    if mismatches:
        out.print(Text(f"{len(mismatches)} mismatch(es):", style="bold red"))
    else:
        out.print(Text("no mismatch", style="green"))
    for finding in mismatches:
        out.print(f"  - {finding.describe()}")
    others = [f for f in result.findings if not f.mismatch]
    if others:
        out.print("not compared (not mismatches):")
    for finding in others:
        out.print(f"  - {finding.describe()}")


def _day_start_us(day: dt.date) -> int:
    """The first µs of a China day, since the epoch (UTC)."""
    return int(dt.datetime.combine(day, dt.time(), CST).timestamp() * 1_000_000)


@audit_app.command("search")
@reports_errors
def search_command(
    home: HomeOption,
    subject: Annotated[
        str, typer.Option(help="the subject's exact identifier (credit code or identity number)")
    ],
    officer: Annotated[str, typer.Option(help="who searches (recorded with the search)")],
    first_day: Annotated[
        str | None, typer.Option("--from", help="first day recorded, China time (2026-12-01)")
    ] = None,
    last_day: Annotated[
        str | None, typer.Option("--to", help="last day recorded, China time (included)")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Find the entries about a subject, under every subject-HMAC key the node has held.

    The subject is matched through its HMAC, never stored or printed in clear; the search
    is itself recorded (a LOCAL entry with the officer and the subject's HMAC).
    """
    node = open_node(home)
    config = node.config
    canonical, _ = subject_type_of(subject)
    ring = load_subject_key_ring(config, node.database)
    from_us = None if first_day is None else _day_start_us(_china_day(first_day, "--from"))
    to_us = (
        None
        if last_day is None
        else _day_start_us(_china_day(last_day, "--to") + dt.timedelta(days=1))
    )
    log = open_audit_log(config, node.database)
    where = EntryFilter(from_us=from_us, to_us=to_us, subject_hmac=ring.hmacs(canonical))
    found = list(matching_entries(log, where))
    range_said = f" from={first_day}" * bool(first_day) + f" to={last_day}" * bool(last_day)
    note = (
        f"credit-node audit search subject=(its HMAC in this entry){range_said}: "
        f"{len(found)} entries, under {len(ring.keys)} subject-HMAC key(s)"
    )
    recorded_as = _record(log, config.member_id, officer, note, ring.hmacs(canonical)[0])
    rows = [_entry_row(f.index, f.leaf_hash, _body(log, f.index)) for f in found]
    if as_json:
        print_json({"entries": rows, "keys": len(ring.keys), "recorded_as": recorded_as})
        return
    _print_rows(rows)
    out.print(
        f"{len(rows)} entries about the subject, under {len(ring.keys)} subject-HMAC key(s); "
        f"this search is recorded as entry {recorded_as}"
    )


def _body(log: AuditLog, index: int) -> bytes | None:
    stored = next(iter(log.entries(index, index + 1)), None)
    return None if stored is None else stored.body


def _record(log: AuditLog, member_id: str, officer: str, note: str, hmac: bytes) -> int:
    """Record an operator's lookup; its entry's index (retried if a serving node appends
    meanwhile)."""
    for _ in range(5):
        try:
            index, _ = log.commit([entries.operator_call(member_id, officer, note, hmac, now_us())])
        except ConcurrentWriter:
            continue
        return index
    raise LedgerError("the ledger kept moving under this command; try again")


@audit_app.command("keys")
@reports_errors
def keys_command(home: HomeOption, as_json: JsonOption = False) -> None:
    """The node's key history: every signing and subject-HMAC key it has held, and from
    which ledger entry each was in force (the entry that records it)."""
    node = open_node(home)
    history = describe_history(node.database)
    rows: list[dict[str, Any]] = [
        {
            "kind": r.kind,
            "key_id": r.key_id,
            "from_index": r.from_index,
            "since": _iso(r.since_us),
            "recorded_as": r.recorded_as,
        }
        for r in history
    ]
    if as_json:
        print_json(rows)
        return
    if not rows:
        out.print("no key history: the node's present keys are in force from its first entry")
        return
    for r in rows:
        recorded = (
            "the key the node was created with"
            if r["recorded_as"] is None
            else f"recorded as entry {r['recorded_as']}"
        )
        what = "checkpoints above size" if r["kind"] == SIGNING else "subjects from entry"
        out.print(
            f"{r['kind']:<13} {r['key_id'][:16]}…  {what} {r['from_index']}  ({recorded})",
            soft_wrap=True,
        )


@audit_app.command("rotate-subject-key")
@reports_errors
def rotate_subject_key(home: HomeOption) -> None:
    """Put a new subject-HMAC key in force (stop the node first; start it after).

    The old key is kept in keys/retired/, so that entries before the rotation are still
    found by a subject search; the rotation is recorded in the ledger.
    """
    node = open_node(home)
    rotation = rotate_subject_hmac_key(node.config, node.database)
    done = "recorded as" if rotation.recorded_now else "already recorded as"
    out.print(
        f"subject HMAC key {rotation.in_force[:16]}… keys the subjects from ledger entry "
        f"{rotation.from_index} on ({done} that entry)",
        soft_wrap=True,
    )
    out.print(
        f"the retired key {rotation.retired[:16]}… is kept in {rotation.kept_at}: back it up "
        "with the home; searches need it for the entries before the rotation",
        soft_wrap=True,
    )
    out.print("next: start the node", soft_wrap=True)

"""``credit-node report``, ``report verify`` and ``check``: asking the whole region at once.

* ``credit-node report SUBJECT --purpose P --legal-basis L --case REF --officer ID``
  asks every member the memorandum lets this node ask, and its own store, under
  one deadline, and prints what each member did; ``--out FILE.json`` keeps the
  signed report, ``--out FILE.pdf`` renders it (``federation.pdf``), ``--json``
  prints it.
* ``credit-node report verify FILE`` checks a report offline against the
  memorandum it was issued under (the node home keeps every installed version;
  ``--memorandum PATH`` names a signed memorandum file instead) and prints each
  problem; exit 1 when there is any.
* ``credit-node check FILE.csv --purpose P … --out RESULT.csv`` checks a list of
  subjects (auction bidders) hit / no-hit at every member, one ``BatchCheck``
  each in parallel, and writes one row per subject, one column per member and
  theme checked, and a status column per member.

:func:`print_everyone` is the same fan-out for one subject, one line per member:
``credit-node query … --to all``.

Each command asks once through a regional client of its own: its breakers start
closed and end with it, and no metrics endpoint would show them, so it is given no
metrics. The members' circuits a node exports (``credit_node_member_circuit``) are
those of the regional client that lives as long as the serving node: its gateway's
(``gateway.server.open_gateway``).
"""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text
from typer.core import TyperGroup

from creditexchange.errors import CanonicalizationError, InvalidIdentifier, PolicyError
from creditexchange.identifiers import mask_identifier, subject_type_of
from creditexchange.node.app.config import NodeConfig, load_config
from creditexchange.node.app.wiring import federation_view, open_regional_client
from creditexchange.node.catalog import load_catalog
from creditexchange.node.cli.common import (
    HomeOption,
    JsonOption,
    err,
    out,
    print_json,
    reports_errors,
)
from creditexchange.node.federation.fanout import (
    DEFAULT_DEADLINE_S,
    FanOut,
    MemberResult,
    Outcome,
    ask_everyone,
    prepare,
)
from creditexchange.node.federation.report import (
    BatchResult,
    check_everyone,
    consolidated_report,
    report_digest,
)
from creditexchange.node.federation.report_verify import (
    MemorandumKeys,
    TrustedMemorandum,
    trusted_for,
    verify_report,
)
from creditexchange.policy.document import Mode
from creditexchange.v1 import exchange_pb2

__all__ = ["check", "print_everyone", "report_app"]


class _IssueUnlessNamed(TyperGroup):
    """``report SUBJECT …`` issues a report; ``report verify FILE`` verifies one."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # typer's own click Context
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["issue", *args]
        return super().parse_args(ctx, args)


report_app = typer.Typer(
    cls=_IssueUnlessNamed,
    help="A consolidated report on a subject across the whole region, and its verification.",
    no_args_is_help=True,
)

PurposeOption = Annotated[str, typer.Option(help="purpose code from the memorandum")]
LegalBasisOption = Annotated[str, typer.Option("--legal-basis", help="the statute relied on")]
CaseOption = Annotated[str, typer.Option("--case", help="the case file reference")]
OfficerOption = Annotated[str, typer.Option(help="the officer or system asking")]
DeadlineOption = Annotated[
    float,
    typer.Option(
        "--deadline", min=0.1, help="seconds to wait for the slowest member, all members at once"
    ),
]


# --- one line per member ---------------------------------------------------------------


def _counted(result: MemberResult) -> int:
    """Records answered (full) or hits (check)."""
    if result.answer is None:
        return 0
    return sum(
        len(t.records) if t.mode == exchange_pb2.MODE_FULL else int(t.hit)
        for s in result.answer.body.subjects
        for t in s.themes
        if t.allowed
    )


def _member_line(member: str, status: str, reason: str, elapsed_ms: float, what: str) -> Text:
    styles = {"answered": "green", "own": "green", "denied": "red", "skipped": "dim"}
    detail = f"  {what}" if status in ("answered", "own") else f"  {reason}"
    if status == "own" and reason:  # the own store shows nothing, and says why
        detail = f"  {reason}"
    timing = f"  {elapsed_ms:.0f} ms" if status != "skipped" else ""
    return Text.assemble(
        f"  {member:<10} ", (f"{status:<11}", styles.get(status, "yellow")), detail, (timing, "dim")
    )


def _fan_out_json(fanned: FanOut) -> list[dict[str, Any]]:
    return [
        {
            "member": r.member,
            "status": str(r.outcome),
            "reason": r.reason,
            "elapsed_ms": r.elapsed_ms,
            "records": _counted(r),
            "leaf_index": r.leaf_index,
            "answer": r.answer.to_json() if r.answer is not None else None,
        }
        for r in fanned.results
    ]


def print_everyone(
    config: NodeConfig,
    subject: str,
    *,
    purpose: str,
    legal_basis: str,
    case_reference: str,
    officer: str,
    themes: Sequence[str] = (),
    check: bool = False,
    deadline_s: float = DEFAULT_DEADLINE_S,
    as_json: bool = False,
) -> None:
    """Ask every member the memorandum lets this node ask about ``subject``, at once under
    one deadline, and print one line per member: its status and its records or hits, or
    why not (with ``as_json``, a JSON list, each with its answer). Raises ``typer.Exit(1)``
    when a member did not answer (denied, unavailable, timed out, skipped), as a refusal
    of ``query`` does; an error before anything was sent propagates."""

    async def ask() -> FanOut:
        async with open_regional_client(config) as region:
            asking = prepare(
                region,
                [subject],
                purpose=purpose,
                legal_basis=legal_basis,
                case_reference=case_reference,
                officer=officer,
                mode=Mode.CHECK if check else Mode.FULL,
                themes=themes,
            )
            return await ask_everyone(region, asking, deadline_s=deadline_s)

    fanned = asyncio.run(ask())
    if as_json:
        print_json(_fan_out_json(fanned))
    else:
        if not fanned.results:
            out.print("no member may be asked this by the installed memorandum")
        noun = "hit(s)" if check else "record(s)"
        for r in fanned.results:
            out.print(
                _member_line(r.member, r.outcome, r.reason, r.elapsed_ms, f"{_counted(r)} {noun}")
            )
        out.print(
            f"{len(fanned.results)} member(s) asked in {fanned.elapsed_ms:.0f} ms", style="dim"
        )
    if any(r.outcome is not Outcome.ANSWERED for r in fanned.results):
        raise typer.Exit(1)


# --- report ------------------------------------------------------------------------------


@report_app.command("issue")
@reports_errors
def issue(
    subject: Annotated[str, typer.Argument(help="USCC or resident identity number")],
    purpose: PurposeOption,
    legal_basis: LegalBasisOption,
    case: CaseOption,
    officer: OfficerOption,
    home: HomeOption,
    check: Annotated[bool, typer.Option("--check", help="hit / no-hit per theme only")] = False,
    deadline: DeadlineOption = DEFAULT_DEADLINE_S,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="write the report: FILE.json, or FILE.pdf")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Ask every member (and this node's store) about a subject and issue a signed report."""
    if out_file is not None and out_file.suffix.lower() not in (".json", ".pdf"):
        raise typer.BadParameter(
            "the report is written as FILE.json or FILE.pdf", param_hint="--out"
        )
    config = load_config(home)

    async def build() -> dict[str, Any]:
        async with open_regional_client(config) as region:
            return await consolidated_report(
                region,
                subject,
                purpose=purpose,
                legal_basis=legal_basis,
                case_reference=case,
                officer=officer,
                mode=Mode.CHECK if check else Mode.FULL,
                deadline_s=deadline,
            )

    report = asyncio.run(build())
    written = _write(report, out_file) if out_file is not None else []
    if as_json:
        print_json(report)
        return
    _print_summary(report)
    if written:
        out.print(f"written to {' and '.join(map(str, written))}")
    else:
        out.print(
            "(--out FILE.json keeps the signed report, --out FILE.pdf prints it)", style="dim"
        )


def _write(report: dict[str, Any], path: Path) -> list[Path]:
    """Write the signed report as JSON, and as ``path`` when that is a PDF: the PDF's
    digest names the JSON, which is what ``report verify`` checks, so it is kept beside
    it (``FILE.json`` next to ``FILE.pdf``). The files written."""
    files: dict[Path, bytes] = {
        path.with_suffix(".json"): (json.dumps(report, ensure_ascii=False, indent=2) + "\n").encode(
            "utf-8"
        )
    }
    if path.suffix.lower() == ".pdf":
        from creditexchange.node.federation.pdf import render_pdf  # reportlab, on demand

        files[path] = render_pdf(report)
    for target, data in files.items():
        try:
            target.write_bytes(data)
        except OSError as exc:
            err.print(f"error: cannot write {target}: {exc.strerror}; choose another --out")
            raise typer.Exit(2) from None
    return list(files)


def _print_summary(report: dict[str, Any]) -> None:
    subject = report["subject"]
    request = report["request"]
    out.print(
        Text.assemble(
            (subject["name"] or "(name not held)", "bold"),
            f"  {subject['id']}  ({subject['type']})",
        )
    )
    out.print(f"  {request['purpose_name']} ({request['purpose']}), {request['mode']} mode")
    noun = "hit(s)" if request["mode"] == "check" else "record(s)"
    for m in report["members"]:
        out.print(
            _member_line(
                m["member"], m["status"], m["reason"], m["elapsed_ms"], f"{m['records']} {noun}"
            )
        )
    for section in report["sections"]:
        if section["records"]:
            shown = [r for r in section["records"] if r["hit"] is not False]
            out.print(f"  {section['title_zh']} {section['title_en']}: {len(shown)}")
    out.print(
        f"report {report['report_id']}, digest {report_digest(report)}", style="dim", soft_wrap=True
    )


# --- report verify -------------------------------------------------------------------------


@report_app.command("verify")
@reports_errors
def verify(
    file: Annotated[Path, typer.Argument(help="a report, FILE.json")],
    home: Annotated[
        Path | None,
        typer.Option(
            "--home",
            envvar="CREDIT_NODE_HOME",
            help="the node home whose installed memoranda vouch for the report",
            show_default=False,
        ),
    ] = None,
    memorandum: Annotated[
        Path | None,
        typer.Option("--memorandum", help="a signed memorandum file (.json) instead of the home's"),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Check a report offline: signatures, bindings, receipts, cosignatures and tables.

    Exits 1 when anything fails, printing each problem."""
    try:
        report = json.loads(file.read_bytes())
    except (OSError, ValueError) as exc:
        err.print(f"error: cannot read {file} as a JSON report: {exc}")
        raise typer.Exit(2) from None
    trusted, catalog = _trusted(report, home, memorandum)
    problems = verify_report(report, trusted, catalog)
    against = {"version": trusted.memorandum.version, "hash": trusted.hash.hex()}
    if as_json:
        print_json(
            {
                "verified": not problems,
                "problems": problems,
                "digest": _digest_or_none(report),
                "memorandum": against,
            }
        )
    elif problems:
        for problem in problems:
            out.print(Text.assemble(("✗ ", "bold red"), problem), soft_wrap=True)
    else:
        out.print(
            Text.assemble(
                ("✓ ", "green"),
                f"report {report.get('report_id')} verified: issued by {report.get('issuer')}, "
                f"{len(report.get('answers', []))} signed answer(s), every receipt proven",
            ),
            soft_wrap=True,
        )
        out.print(f"digest {report_digest(report)}", style="dim")
    out.print(
        f"against memorandum version {against['version']} (SHA-256 {against['hash']})",
        style="dim",
        soft_wrap=True,
    )
    if problems:
        raise typer.Exit(1)


def _digest_or_none(report: Any) -> str | None:
    try:
        return report_digest(report)
    except CanonicalizationError:
        return None


def _trusted(report: Any, home: Path | None, memorandum: Path | None) -> tuple[MemorandumKeys, Any]:
    """The memorandum to verify against and the catalog to rebuild the tables with."""
    config = load_config(home) if home is not None else None
    catalog = load_catalog(config.catalog_path if config else None)
    if memorandum is not None:
        return TrustedMemorandum.from_file(memorandum), catalog
    if config is None:
        raise PolicyError(
            "no memorandum to verify against: pass --memorandum FILE.json, or --home (or "
            "CREDIT_NODE_HOME) of a node that installed the one the report was issued under"
        )
    current = federation_view(config, catalog).current()
    return trusted_for(report, config.policy_dir, current), catalog


# --- check ---------------------------------------------------------------------------------


@reports_errors
def check(
    file: Annotated[
        Path, typer.Argument(help="CSV of subjects: a subject_id column, or one id a line")
    ],
    purpose: PurposeOption,
    legal_basis: LegalBasisOption,
    case: CaseOption,
    officer: OfficerOption,
    out_file: Annotated[Path, typer.Option("--out", help="the result, RESULT.csv")],
    home: HomeOption,
    deadline: DeadlineOption = 30.0,
) -> None:
    """Check a list of subjects (auction bidders) hit / no-hit at every member at once.

    Writes one row per subject: whether any member has a hit (found), the hits, each
    member's status and one column per member and theme checked. A row whose
    identifier is invalid is not asked; its error column says why."""
    rows = _read_subjects(file)
    valid: dict[str, str] = {}  # canonical id -> id as read
    errors: dict[int, str] = {}
    for line, value in rows:
        try:
            canonical, _ = subject_type_of(value)
        except InvalidIdentifier as exc:
            errors[line] = f"not asked: {exc}"
            continue
        valid.setdefault(canonical, value)
    config = load_config(home)

    async def ask() -> BatchResult | None:
        if not valid:
            return None
        async with open_regional_client(config) as region:
            return await check_everyone(
                region,
                list(valid),
                purpose=purpose,
                legal_basis=legal_basis,
                case_reference=case,
                officer=officer,
                deadline_s=deadline,
            )

    result = asyncio.run(ask())
    _write_result(out_file, rows, errors, list(valid), result)
    if result is not None:
        for r in result.fanned.results:
            out.print(_member_line(r.member, r.outcome, r.reason, r.elapsed_ms, "checked"))
        found = sum(any(hit for hit, _ in row.values()) for row in result.hits)
        out.print(f"{len(valid)} subject(s) asked, {found} with hits; {len(errors)} invalid")
    out.print(f"written to {out_file}")


def _read_subjects(path: Path) -> list[tuple[int, str]]:
    """(line, id) of each subject in a CSV: the ``subject_id`` column of a header row, or
    the first cell of every line."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            lines = [(n, row) for n, row in enumerate(csv.reader(f), start=1) if any(row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        err.print(f"error: cannot read {path} as a UTF-8 CSV: {exc}")
        raise typer.Exit(2) from None
    column = 0
    if lines:
        header = [cell.strip().lower() for cell in lines[0][1]]
        if "subject_id" in header:
            column = header.index("subject_id")
            lines = lines[1:]
    subjects = [(n, row[column].strip() if column < len(row) else "") for n, row in lines]
    if not subjects:
        err.print(f"error: {path} lists no subject; one id a line, or a subject_id column")
        raise typer.Exit(2)
    return subjects


def _write_result(
    path: Path,
    rows: list[tuple[int, str]],
    errors: dict[int, str],
    asked: list[str],
    result: BatchResult | None,
) -> None:
    members = (
        [result.own_member, *(r.member for r in result.fanned.results)]
        if result is not None
        else []
    )
    statuses = {}
    if result is not None:
        statuses = {r.member: str(r.outcome) for r in result.fanned.results}
        statuses[result.own_member] = "own"
    columns = result.columns if result is not None else []
    header = ["line", "subject_id", "subject_type", "found", "hits", "error"]
    header += [f"{m}:status" for m in members]
    header += [f"{m}:{theme}" for m, theme in columns]
    position = {canonical: i for i, canonical in enumerate(asked)}
    try:
        with path.open("w", encoding="utf-8-sig", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            for line, value in rows:
                if line in errors or result is None:
                    writer.writerow([line, _shown_id(value), "", "", "", errors.get(line, "")])
                    continue
                i = position[subject_type_of(value)[0]]
                hits = result.hits[i]
                named = [f"{m}:{t}" for (m, t), (hit, _) in hits.items() if hit]
                cells = [_cell(hits.get((m, theme))) for m, theme in columns]
                writer.writerow(
                    [
                        line,
                        result.subjects[i],
                        result.subject_types[i],
                        "true" if named else "false",
                        " ".join(named),
                        "",
                        *(statuses[m] for m in members),
                        *cells,
                    ]
                )
    except OSError as exc:
        err.print(f"error: cannot write {path}: {exc.strerror}; choose another --out")
        raise typer.Exit(2) from None


def _cell(found: tuple[bool, bool] | None) -> str:
    if found is None:
        return ""
    hit, objection = found
    if not hit:
        return "no hit"
    return "hit, under objection" if objection else "hit"


def _shown_id(value: str) -> str:
    """An id from the file as a result may show it: a person's number masked."""
    try:
        canonical, kind = subject_type_of(value)
    except InvalidIdentifier:  # what looks like a person's number is masked all the same
        return mask_identifier(value, "individual") if value[:17].isdigit() else value[:24]
    return mask_identifier(canonical, kind)

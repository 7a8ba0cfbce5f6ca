"""``credit-node repair``: ending a record's publicity early by a credit repair (信用修复).

``repair THEME RECORD_KEY --basis … --evidence …`` ends a repairable record's
publicity once its minimum period has passed (NDRC Order 58); the record is no
longer served, its history shows the repair, and the change feed withdraws it from
subscribers. A refusal says why, and from when it would pass.
"""

from __future__ import annotations

from typing import Annotated

import typer

from creditexchange.node.app.wiring import open_node
from creditexchange.node.cli.common import HomeOption, JsonOption, out, print_json, reports_errors
from creditexchange.node.cli.objections import china_day
from creditexchange.node.records.repair import repair_record

__all__ = ["repair"]


@reports_errors
def repair(
    theme: Annotated[str, typer.Argument(help="the catalog theme of the record")],
    record_key: Annotated[str, typer.Argument(help="the record's key")],
    home: HomeOption,
    basis: Annotated[str, typer.Option(help="the legal basis or decision the repair rests on")],
    evidence: Annotated[str, typer.Option(help="what shows the subject put things right")],
    applicant: Annotated[str | None, typer.Option(help="who applied for the repair")] = None,
    decided: Annotated[
        str | None, typer.Option(help="the day the repair was decided, YYYY-MM-DD (default: today)")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """End a penalty record's publicity early by a credit repair (信用修复); refused before
    its minimum period, for a serious case, or a record not served or under objection."""
    node = open_node(home)
    done = repair_record(
        node.database,
        node.catalog,
        theme,
        record_key,
        basis=basis,
        evidence=evidence,
        applicant=applicant,
        decided=china_day(decided, "--decided"),
    )
    if as_json:
        print_json(done.as_json())
        return
    before = (
        f" (it was public until {done.publicity_end_before})" if done.publicity_end_before else ""
    )
    out.print(
        f"repair {done.number}: {theme} {record_key} repaired on {done.decided}; it is no longer "
        f"served{before}, and the change feed withdraws it from subscribers"
    )

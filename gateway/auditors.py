"""The auditors' API: read-only access to this node's audit ledger over REST.

An auditor (a key registered with ``credit-node auditors add``) reads the latest
checkpoint with the witnesses' cosignatures, searches the entries (time range,
direction, parties, partner, officer, purpose, decision, outcome, subject), gets an
entry with its inclusion proof, consistency proofs between tree sizes, what the
witnesses know, a reconciliation with a peer's ledger, and exports of a filtered
range as CSV or JSON Lines. The search itself is ``ledger.search``; this module
parses, records and shows.

What it promises:

* **Every call is recorded, before its answer leaves.** A LOCAL ``API_CALL`` entry
  names the auditor, the officer, the route and its filters (``note``), and a subject
  searched as its HMAC — never in clear, neither in the entry nor in any answer. An
  export is recorded before its first byte; a reconciliation that fails is recorded
  with the failure.
* **A request that is wrong is refused before anything is read or written**: a
  partner's key (403), an unknown or revoked key (401), no officer (400), a bad date,
  direction, decision, status, identifier or proof size (400), an entry past the tree
  (404) — each a problem document saying what to send instead.
* **Bounded.** A page reads at most ``ledger.search.SEARCH_SCAN_ROWS`` rows and returns
  at most 500 entries, then says where to resume (``next_cursor``); an export streams
  page after page up to the log's size when it began, in memory for one page.
* **What an answer shows is the ledger before the call's own entry** (a checkpoint, a
  page, a proof are read first, then the call is recorded, then the answer leaves).
* **Times carry their zone**: China Standard Time, ``+08:00``, beside µs since the
  epoch. A date in a filter means that whole day in China.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from creditexchange.clock import CST
from creditexchange.errors import AnswerRejected, ExchangeError, InvalidIdentifier, LedgerError
from creditexchange.gateway.auth import Asker, AuditorDep, GatewayDep
from creditexchange.gateway.context import Gateway
from creditexchange.gateway.problems import Problem, problem_responses
from creditexchange.identifiers import subject_type_of
from creditexchange.node.federation.reconcile import Window, reconcile
from creditexchange.node.federation.witness import PeerStatus, witness_status
from creditexchange.node.ledger.search import (
    SEARCH_PAGE_LIMIT,
    EntryFilter,
    Found,
    entry_at,
    matching_entries,
    search,
)
from creditexchange.node.ledger.witnessing import (
    RECEIVED,
    HeldCosignature,
    WitnessRecords,
    checkpoint_of,
)
from creditexchange.v1 import audit_pb2

__all__ = [
    "CSV_COLUMNS",
    "MAX_RECONCILE_DAYS",
    "AuditEntryView",
    "CheckpointView",
    "ConsistencyView",
    "EntryPageView",
    "EntryProofView",
    "ExportFormat",
    "ReconciliationView",
    "Search",
    "WitnessesView",
    "entry_view",
    "router",
    "search_parameters",
]

router = APIRouter(prefix="/v1/audit", tags=["auditors"])

MAX_RECONCILE_DAYS = 92
"""The longest range one reconciliation covers (a quarter): both ledgers' entries of the
range are held in memory while they are paired."""
_DEFAULT_LIMIT = 100


# --- the documents -----------------------------------------------------------------------


_EXAMPLE_ENTRY: dict[str, Any] = {
    "index": 1042,
    "leaf_hash": "5f1c9a0e47d2b3c8a61f0e9d7c5b4a3928171615141312111009080706050403",
    "pruned": False,
    "recorded": "2026-12-01T10:15:02.123456+08:00",
    "recorded_unix_micros": 1796091302123456,
    "direction": "OUTGOING",
    "kind": "QUERY",
    "requester": "huizhou",
    "responder": "shenzhen",
    "partner": "land-centre",
    "officer": "HZ-LAND-0042",
    "case_reference": "TD-2026-118",
    "purpose": "land_auction",
    "legal_basis": "招标拍卖挂牌出让国有建设用地使用权规定",
    "decision": {
        "allowed": True,
        "mode": "full",
        "rule_ids": ["land-auction-organisations"],
        "memorandum_version": 3,
        "reason": "",
    },
    "outcome": {"status": "OK", "message": ""},
    "subject_count": 1,
    "themes_asked": ["admin_penalty"],
    "themes_answered": ["admin_penalty"],
    "remote_receipt_index": 877,
    "note": "",
}
"""An entry as the API shows it: the documentation's example, and the CSV's columns."""


class DecisionView(BaseModel):
    """The provider's policy decision as the entry records it. 策略决定。"""

    allowed: bool = Field(description="Allowed or denied. 是否准予。")
    mode: str = Field(description="'full' or 'check' (hit / no-hit). 完整或核查模式。")
    rule_ids: list[str] = Field(description="The memorandum rules behind it. 依据的备忘录规则。")
    memorandum_version: int = Field(description="The memorandum's version. 备忘录版本。")
    reason: str = Field(description="For a deny: why. 拒绝原因。")


class OutcomeView(BaseModel):
    """How the call ended. 调用结果。"""

    status: str = Field(description="gRPC status name: OK, PERMISSION_DENIED … 状态。")
    message: str = Field(description="What was wrong, never an identity number. 说明。")


class AuditEntryView(BaseModel):
    """One entry of the ledger: who asked whom, when, why, and what came of it; a pruned
    entry (retention) keeps only its index and leaf hash. 审计账本条目。"""

    index: int = Field(description="Its index in the log. 条目序号。")
    leaf_hash: str = Field(description="RFC 9162 leaf hash, hex. 叶哈希（十六进制）。")
    pruned: bool = Field(description="Its body was dropped after retention. 正文已按期删除。")
    recorded: str | None = Field(
        default=None, description="When it was recorded, China Standard Time (+08:00). 记录时间。"
    )
    recorded_unix_micros: int | None = Field(
        default=None, description="The same, µs since the epoch (UTC). 记录时间（微秒）。"
    )
    direction: str | None = Field(
        default=None, description="INCOMING (answered), OUTGOING (asked) or LOCAL. 方向。"
    )
    kind: str | None = Field(
        default=None, description="QUERY, CHECK, BATCH_CHECK, API_CALL, … 类别。"
    )
    requester: str | None = Field(default=None, description="The member that asked. 请求方。")
    responder: str | None = Field(default=None, description="The member that answered. 提供方。")
    partner: str | None = Field(
        default=None,
        description="The partner system or auditor that asked through the gateway; "
        "empty: the node's operator. 经网关调用的合作系统或审计方。",
    )
    officer: str | None = Field(default=None, description="The officer who asked. 经办人。")
    case_reference: str | None = Field(
        default=None, description="The case reference. 案件/业务编号。"
    )
    purpose: str | None = Field(default=None, description="The purpose code. 用途。")
    legal_basis: str | None = Field(default=None, description="The legal basis. 法律依据。")
    decision: DecisionView | None = Field(
        default=None, description="The decision, when made. 决定。"
    )
    outcome: OutcomeView | None = Field(default=None, description="How it ended. 结果。")
    subject_count: int | None = Field(
        default=None, description="Subjects asked about. 涉及主体数。"
    )
    themes_asked: list[str] | None = Field(default=None, description="Themes asked. 请求的主题。")
    themes_answered: list[str] | None = Field(
        default=None, description="Themes answered. 答复的主题。"
    )
    remote_receipt_index: int | None = Field(
        default=None,
        description="OUTGOING: the provider's entry of the same call. 对方账本条目序号。",
    )
    note: str | None = Field(
        default=None,
        description="API_CALL: the route and filters; MAINTENANCE: what was done. 备注。",
    )

    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE_ENTRY]})


class EntryPageView(BaseModel):
    """A page of a search: the entries found, and where the next page starts. 检索结果页。"""

    entries: list[AuditEntryView]
    next_cursor: int | None = Field(
        description="Pass as `cursor` for the next page; null: the search is complete. "
        "下一页游标，为空表示已完。"
    )
    log_size: int = Field(description="The log's size this page was read against. 日志大小。")
    scanned: int = Field(description="Entries read for this page. 本页读取的条目数。")
    pruned_unmatched: int = Field(
        description="Pruned entries met that the filters could not be matched against. "
        "无法比对的已删正文条目数。"
    )


class InclusionProofView(BaseModel):
    """RFC 9162 proof that the entry is in the tree of `size` entries. 包含证明。"""

    index: int
    size: int
    leaf_hash: str = Field(description="hex")
    root_hash: str = Field(description="The tree's root at `size`, hex. 树根。")
    hashes: list[str] = Field(description="The proof's hashes, hex, in RFC 9162 order.")
    checkpoint: str | None = Field(
        description="The signed checkpoint of that size (when the latest was asked for). "
        "对应的签名检查点。"
    )


class EntryProofView(BaseModel):
    """An entry and its inclusion proof. 条目及其包含证明。"""

    entry: AuditEntryView
    proof: InclusionProofView


class ConsistencyView(BaseModel):
    """RFC 9162 proof that the tree of `first` entries is a prefix of `second`'s. 一致性证明。"""

    first: int
    second: int
    first_root: str = Field(description="hex")
    second_root: str = Field(description="hex")
    hashes: list[str] = Field(description="The proof's hashes, hex, in RFC 9162 order.")
    checkpoint: str | None = Field(
        description="The signed checkpoint of `second` (when the latest was asked for)."
    )


class CosignatureView(BaseModel):
    """A witness's cosignature on one of this log's checkpoints (C2SP tlog-cosignature).
    见证方副署。"""

    witness: str = Field(description="The member that cosigned. 见证成员。")
    size: int = Field(description="The size of the checkpoint cosigned. 副署的检查点大小。")
    root_hash: str = Field(description="Its root, hex.")
    checkpoint: str = Field(description="That checkpoint, as this node signed it.")
    cosignature: str = Field(description="The cosignature line ('— <witness> <base64>').")
    cosigned: str = Field(description="When, China Standard Time (+08:00). 副署时间。")


class CheckpointView(BaseModel):
    """The latest signed checkpoint, and the witnesses' cosignatures held. 最新检查点。"""

    checkpoint: str = Field(description="C2SP tlog-checkpoint signed note, exactly as signed.")
    origin: str
    size: int
    root_hash: str = Field(description="hex")
    cosignatures: list[CosignatureView] = Field(
        description="The latest cosignature of each witness (on the checkpoint it saw)."
    )
    cosigned_checkpoint: str | None = Field(
        description="The largest checkpoint cosigned, with its cosignature lines appended "
        "(a signed note any C2SP verifier reads); null: none yet. 带副署的检查点。"
    )


class AlarmView(BaseModel):
    """Two checkpoints of a peer's log that cannot both be true. 告警。"""

    kind: str = Field(description="fork or rollback")
    detail: str
    raised: str = Field(description="China Standard Time (+08:00)")
    earlier_checkpoint: str
    later_checkpoint: str


class PeerStatusView(BaseModel):
    """What this node's witness knows of one peer's log. 对某成员账本的见证状态。"""

    peer: str
    size: int | None = Field(description="Last size verified and cosigned (null: never).")
    seen: str | None = Field(description="When it was verified, +08:00.")
    cosigned: str | None = Field(description="When this node cosigned it, +08:00.")
    receipt_size: int | None = Field(description="Largest size seen in the peer's receipts.")
    alarms: list[AlarmView]


class WitnessesView(BaseModel):
    """This node as a witness of its peers, and its peers as witnesses of it. 见证状态。"""

    member: str
    peers: list[PeerStatusView]
    cosignatures: list[CosignatureView] = Field(
        description="The peers' latest cosignatures on this node's own log."
    )


class DirectionView(BaseModel):
    """The calls one way between the two members: how many pairs agree, and the findings
    of each kind. 单向调用的核对计数。"""

    requester: str
    provider: str
    matched: int
    missing: int
    differs: int
    pruned: int
    unconfirmed: int


class DifferenceView(BaseModel):
    """A field the two records of one call hold differently. 两方记录不一致的字段。"""

    field: str
    requester: str
    provider: str


class FindingView(BaseModel):
    """A call recorded on one side only, or differently on the two. 对账发现。"""

    kind: str = Field(description="missing, differs, pruned or unconfirmed")
    mismatch: bool
    call: str
    requester: str
    provider: str
    recorded_by: str
    missing_at: str | None
    requester_index: int | None
    provider_index: int | None
    recorded: str = Field(description="China Standard Time (+08:00)")
    request_digest: str
    nonce: str
    differences: list[DifferenceView]
    detail: str
    description: str


class ReconciliationView(BaseModel):
    """Both directions of the calls between this node and a peer, matched. 双边对账结果。"""

    member: str
    peer: str
    from_: str = Field(alias="from", description="Start, +08:00 (included).")
    to: str = Field(description="End, +08:00 (excluded).")
    ok: bool = Field(description="No mismatch. 无差异。")
    directions: list[DirectionView]
    mismatches: int
    findings: list[FindingView]

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class ExportFormat(StrEnum):
    """What an export is written as."""

    CSV = "csv"
    JSONL = "jsonl"


_PROBLEMS: Final = (
    (400, "A parameter is wrong, or X-Officer is missing: the detail says which. 参数错误。"),
    (403, "The key is not an auditor's. 非审计密钥。"),
)


def _problems(*more: tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    return problem_responses(*_PROBLEMS, *more)


# --- showing -----------------------------------------------------------------------------


def _china(time_us: int) -> str:
    """``time_us`` (µs since the epoch) in China Standard Time, to the microsecond."""
    seconds, micros = divmod(time_us, 1_000_000)
    return dt.datetime.fromtimestamp(seconds, CST).replace(microsecond=micros).isoformat()


def _enum_name(enum: Any, value: int) -> str:
    try:
        return str(enum.Name(value))
    except ValueError:
        return str(value)


def entry_view(found: Found) -> AuditEntryView:
    """How an entry is shown (the JSON listing, JSON Lines and, flattened, CSV)."""
    e = found.entry
    if e is None:
        return AuditEntryView(index=found.index, leaf_hash=found.leaf_hash.hex(), pruned=True)
    decision = None
    if e.HasField("decision"):
        d = e.decision
        decision = DecisionView(
            allowed=d.allowed,
            mode=d.mode,
            rule_ids=list(d.rule_ids),
            memorandum_version=d.memorandum_version,
            reason=d.reason,
        )
    return AuditEntryView(
        index=found.index,
        leaf_hash=found.leaf_hash.hex(),
        pruned=False,
        recorded=_china(e.time_unix_micros),
        recorded_unix_micros=e.time_unix_micros,
        direction=_enum_name(audit_pb2.Direction, e.direction),
        kind=_enum_name(audit_pb2.Kind, e.kind),
        requester=e.requester,
        responder=e.responder,
        partner=e.partner,
        officer=e.officer,
        case_reference=e.case_reference,
        purpose=e.purpose,
        legal_basis=e.legal_basis,
        decision=decision,
        outcome=OutcomeView(status=e.outcome.status, message=e.outcome.message),
        subject_count=e.subject_count,
        themes_asked=list(e.themes_asked),
        themes_answered=list(e.themes_answered),
        remote_receipt_index=e.remote_receipt.leaf_index if e.HasField("remote_receipt") else None,
        note=e.note,
    )


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A view as one CSV row: nested objects as ``outer_inner`` columns, lists joined by
    ``;``, booleans as true/false, null as an empty cell."""
    row: dict[str, Any] = {}
    for key, value in data.items():
        name = prefix + key
        if isinstance(value, dict):
            row.update(_flat(value, name + "_"))
        elif isinstance(value, list):
            row[name] = ";".join(str(v) for v in value)
        elif isinstance(value, bool):
            row[name] = "true" if value else "false"
        else:
            row[name] = "" if value is None else value
    return row


_FULL_EXAMPLE = AuditEntryView.model_validate(_EXAMPLE_ENTRY)
CSV_COLUMNS: tuple[str, ...] = tuple(_flat(_FULL_EXAMPLE.model_dump()))
"""The export's CSV columns: every field of :class:`AuditEntryView`, flattened."""
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula is prefixed with ``'``: an officer
    or a note is whatever a caller sent, and an export is opened by auditors."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def _csv_lines(views: Iterable[AuditEntryView]) -> Iterator[str]:
    """The CSV export: a UTF-8 byte order mark (so that spreadsheet programs set to a
    Chinese locale read it as UTF-8), a header row, one row per entry."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_COLUMNS, restval="", extrasaction="ignore")
    buffer.write("\ufeff")
    writer.writeheader()
    for view in views:
        writer.writerow({k: _cell(v) for k, v in _flat(view.model_dump()).items()})
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _jsonl_lines(views: Iterable[AuditEntryView]) -> Iterator[str]:
    """The JSON Lines export: one entry, as the listing shows it, per line."""
    chunk: list[str] = []
    size = 0
    for view in views:
        line = view.model_dump_json() + "\n"
        chunk.append(line)
        size += len(line)
        if size > 64 * 1024:
            yield "".join(chunk)
            chunk, size = [], 0
    yield "".join(chunk)


def _cosignature_view(held: HeldCosignature) -> CosignatureView:
    return CosignatureView(
        witness=held.member,
        size=held.size,
        root_hash=held.root_hash.hex(),
        checkpoint=held.note,
        cosignature=held.line,
        cosigned=_china(held.timestamp * 1_000_000),
    )


def _cosigned_checkpoint(held: list[HeldCosignature]) -> str | None:
    """The largest checkpoint cosigned, with every cosignature held on exactly it."""
    if not held:
        return None
    largest = max(held, key=lambda h: h.size)
    lines = sorted(h.line for h in held if h.note == largest.note)
    return largest.note + "".join(line + "\n" for line in lines)


def _status_view(status: PeerStatus) -> PeerStatusView:
    return PeerStatusView(
        peer=status.peer,
        size=status.size,
        seen=None if status.seen_us is None else _china(status.seen_us),
        cosigned=None if status.cosigned_us is None else _china(status.cosigned_us),
        receipt_size=status.receipt_size,
        alarms=[
            AlarmView(
                kind=a.kind,
                detail=a.detail,
                raised=_china(a.raised_us),
                earlier_checkpoint=a.earlier_note,
                later_checkpoint=a.later_note,
            )
            for a in status.alarms
        ],
    )


# --- reading the parameters --------------------------------------------------------------


def _bad(slug: str, title: str, detail: str) -> Problem:
    return Problem(400, slug, title, detail)


def _instant(value: str, name: str, *, end: bool) -> int:
    """A filter's bound in µs: a date is that China day (its midnight, or for an end the
    midnight after it); a date and time without a zone is China time."""
    text = value.strip()
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            when = dt.datetime.combine(day + dt.timedelta(days=1 if end else 0), dt.time(), CST)
        else:
            when = dt.datetime.fromisoformat(text)
            if when.tzinfo is None:
                when = when.replace(tzinfo=CST)
    except (ValueError, OverflowError):
        raise _bad(
            "invalid-time",
            "Invalid time",
            f"{name}={value[:40]!r} is not a date or time: write 2026-12-01 (that whole day "
            "in China Standard Time) or 2026-12-01T09:30:00+08:00",
        ) from None
    if not 1970 <= when.astimezone(dt.UTC).year <= 9998:
        raise _bad(
            "invalid-time",
            "Invalid time",
            f"{name}={value[:40]!r} is outside 1970 to 9998: give a time the ledger can hold",
        )
    seconds = int(when.timestamp())
    return seconds * 1_000_000 + when.microsecond


def _choice(name: str, value: str | None, allowed: Iterable[str]) -> str | None:
    if value is None or value == "":
        return None
    choices = list(allowed)
    if value.upper() in choices:
        return value.upper()
    raise _bad(
        "invalid-parameter",
        "Invalid parameter",
        f"{name}={value[:40]!r} is not one of {', '.join(choices)}",
    )


_STATUS = re.compile(r"^[A-Z][A-Z_]{0,39}$")
_DIRECTIONS = {
    "INCOMING": audit_pb2.INCOMING,
    "OUTGOING": audit_pb2.OUTGOING,
    "LOCAL": audit_pb2.LOCAL,
}
_DECISIONS = {"ALLOW": True, "DENY": False}


def _text(value: str | None) -> str | None:
    return None if value is None or value.strip() == "" else value.strip()


def _named(value: str | None) -> str | None:
    """A text filter recorded in the call's own entry (a member, partner, officer,
    purpose), refused when it is a credit code or identity number: a subject is searched
    with ``subject``, matched through its HMAC, so the entry never holds it in clear."""
    text = _text(value)
    if text is not None and len(text) in (15, 18):
        try:
            subject_type_of(text)
        except InvalidIdentifier:
            return text
        raise _bad(
            "identifier-in-filter",
            "An identifier in a text filter",
            "that filter holds a credit code or identity number: search a subject with "
            "subject=, which is matched through the node's HMAC and never recorded in clear",
        )
    return text


@dataclass(frozen=True)
class Search:
    """A search as asked: the filter, the subject searched (canonical, for the HMAC of
    the call's own entry) and the filters in words for that entry (no subject in clear)."""

    where: EntryFilter
    subject: str | None
    described: str


def _q(description: str, *examples: Any, **more: Any) -> Any:
    return Query(description=description, examples=list(examples), **more)


FromQuery = Annotated[
    str | None,
    Query(
        alias="from",
        description="Recorded at or after: a date (that whole China day) or an ISO 8601 date "
        "and time (China time unless it names a zone). 起始日期或时间（含，默认北京时间）。",
        examples=["2026-12-01", "2026-12-01T09:30:00+08:00"],
    ),
]
ToQuery = Annotated[
    str | None,
    _q(
        "Recorded before: a date (up to the end of that China day) or an ISO 8601 date and "
        "time (excluded). 截止日期（含当日）或时间（不含）。",
        "2026-12-31",
        "2026-12-01T18:00:00+08:00",
    ),
]


async def search_parameters(
    gateway: GatewayDep,
    from_: FromQuery = None,
    to: ToQuery = None,
    direction: Annotated[
        str | None,
        _q(
            "INCOMING (this node answered), OUTGOING (this node asked) or LOCAL (the node's "
            "own: gateway calls, screenings, maintenance). 方向：被查询、查询他方或本地。",
            "OUTGOING",
            json_schema_extra={"enum": list(_DIRECTIONS)},
        ),
    ] = None,
    requester: Annotated[
        str | None, _q("The member that asked. 请求方成员。", "shenzhen", max_length=64)
    ] = None,
    provider: Annotated[
        str | None, _q("The member that answered. 提供方成员。", "huizhou", max_length=64)
    ] = None,
    partner: Annotated[
        str | None,
        _q(
            "The partner system (or auditor) that asked through a gateway. 合作系统或审计方。",
            "land-centre",
            max_length=64,
        ),
    ] = None,
    officer: Annotated[
        str | None, _q("The officer who asked. 经办人。", "HZ-LAND-0042", max_length=200)
    ] = None,
    purpose: Annotated[
        str | None, _q("The purpose code. 用途代码。", "land_auction", max_length=64)
    ] = None,
    decision: Annotated[
        str | None,
        _q(
            "allow or deny: the policy decision recorded (entries without one match "
            "neither). 策略决定：准予或拒绝。",
            "deny",
            json_schema_extra={"enum": ["allow", "deny"]},
        ),
    ] = None,
    status: Annotated[
        str | None,
        _q(
            "The outcome status: OK, PERMISSION_DENIED, RESOURCE_EXHAUSTED … 结果状态。",
            "PERMISSION_DENIED",
            max_length=40,
        ),
    ] = None,
    subject: Annotated[
        str | None,
        _q(
            "A subject's exact identifier (unified social credit code or resident identity "
            "number), matched through the node's HMAC; the search is recorded with the "
            "subject's HMAC, never in clear. 主体标识（统一社会信用代码或身份证号），按本节点 "
            "HMAC 比对，检索本身留痕。",
            "91441300MA4UXXXX0A",
            max_length=40,
        ),
    ] = None,
) -> Search:
    """The filters of a search or an export, checked (400 naming the one that is wrong)."""
    said: list[str] = []
    from_us = to_us = None
    if _text(from_) is not None:
        from_us = _instant(from_ or "", "from", end=False)
        said.append(f"from={_china(from_us)}")
    if _text(to) is not None:
        to_us = _instant(to or "", "to", end=True)
        said.append(f"to={_china(to_us)}")
    chosen_direction = _choice("direction", _text(direction), _DIRECTIONS)
    chosen_decision = _choice("decision", _text(decision), _DECISIONS)
    wanted_status = _text(status)
    if wanted_status is not None:
        wanted_status = wanted_status.upper()
        if not _STATUS.match(wanted_status):
            raise _bad(
                "invalid-parameter",
                "Invalid parameter",
                f"status={status!r} is not a status name: e.g. OK, PERMISSION_DENIED",
            )
    canonical = None
    if _text(subject) is not None:
        try:
            canonical, _ = subject_type_of(subject or "")
        except InvalidIdentifier as exc:
            raise _bad(
                "invalid-identifier",
                "Invalid identifier",
                f"subject is neither a unified social credit code nor a resident identity "
                f"number: {exc}. Give the subject's exact 18-character identifier",
            ) from None
    texts = {
        "direction": chosen_direction,
        "requester": _named(requester),
        "provider": _named(provider),
        "partner": _named(partner),
        "officer": _named(officer),
        "purpose": _named(purpose),
        "decision": None if chosen_decision is None else chosen_decision.lower(),
        "status": wanted_status,
    }
    said += [f"{k}={v}" for k, v in texts.items() if v is not None]
    if canonical is not None:
        said.append("subject=(its HMAC in this entry)")
    try:
        where = EntryFilter(
            from_us=from_us,
            to_us=to_us,
            direction=None if chosen_direction is None else _DIRECTIONS[chosen_direction],
            requester=texts["requester"],
            provider=texts["provider"],
            partner=texts["partner"],
            officer=texts["officer"],
            purpose=texts["purpose"],
            allowed=None if chosen_decision is None else _DECISIONS[chosen_decision],
            status=wanted_status,
            subject_hmac=(
                None if canonical is None else gateway.subject_hmacs_under_every_key(canonical)
            ),
        )
    except LedgerError as exc:
        raise _bad(
            "invalid-range", "Invalid time range", f"{exc}: from {from_!r}, to {to!r}"
        ) from None
    return Search(where, canonical, " ".join(said) or "(no filter)")


SearchDep = Annotated[Search, Depends(search_parameters)]


async def _record(
    asker: Asker, what: str, subject: str | None = None, *, status: str = "OK", message: str = ""
) -> None:
    """The call's own entry, durable before its answer leaves."""
    await asker.gateway.record(
        asker.caller,
        asker.officer,
        what,
        subjects=[subject] if subject is not None else [],
        status=status,
        message=message,
    )


def _tree(gateway: Gateway, size: int | None) -> tuple[int, str | None]:
    """The tree size a proof is asked to (``size``), or the latest checkpoint's size with
    that checkpoint (served with the proof so it can be checked on its own)."""
    if size is not None:
        return size, None
    note = gateway.log.latest_checkpoint()
    return checkpoint_of(note).size, note


async def _size(gateway: Gateway) -> int:
    return await asyncio.to_thread(gateway.log.size)


# --- the routes --------------------------------------------------------------------------


@router.get(
    "/checkpoint",
    response_model=CheckpointView,
    summary="The latest checkpoint, with the witnesses' cosignatures · 最新检查点及副署",
    responses=_problems(),
)
async def get_checkpoint(asker: AuditorDep) -> CheckpointView:
    """The log's latest signed checkpoint (C2SP tlog-checkpoint, exactly as signed) and
    each witness's latest cosignature on it or an earlier one; check a cosigned
    checkpoint against the latest with `/v1/audit/consistency`.
    本节点账本最新签名检查点及各见证成员的最新副署。"""
    gateway = asker.gateway

    def read() -> tuple[str, list[HeldCosignature]]:
        return gateway.log.latest_checkpoint(), WitnessRecords(gateway.database).cosignatures(
            RECEIVED
        )

    note, held = await asyncio.to_thread(read)
    checkpoint = checkpoint_of(note)
    await _record(asker, "GET /v1/audit/checkpoint")
    return CheckpointView(
        checkpoint=note,
        origin=checkpoint.origin,
        size=checkpoint.size,
        root_hash=checkpoint.root_hash.hex(),
        cosignatures=[_cosignature_view(h) for h in held],
        cosigned_checkpoint=_cosigned_checkpoint(held),
    )


CursorQuery = Annotated[
    int | None,
    Query(
        ge=0,
        description="Where to resume: the `next_cursor` of the page before (an entry index). "
        "续查游标（上一页的 next_cursor）。",
        examples=[0, 20000],
    ),
]
LimitQuery = Annotated[
    int,
    Query(
        ge=1,
        le=SEARCH_PAGE_LIMIT,
        description=f"The most entries in this page (1 to {SEARCH_PAGE_LIMIT}). 每页条数上限。",
        examples=[_DEFAULT_LIMIT],
    ),
]


@router.get(
    "/entries",
    response_model=EntryPageView,
    summary="Search the ledger's entries · 检索审计条目",
    responses=_problems(),
)
async def list_entries(
    asker: AuditorDep,
    wanted: SearchDep,
    cursor: CursorQuery = None,
    limit: LimitQuery = _DEFAULT_LIMIT,
) -> EntryPageView:
    """The entries that match every filter given, in index order, a bounded page at a
    time: follow `next_cursor` until it is null. Each entry shows its officer and case
    reference; times are China Standard Time. Searching by subject is itself recorded,
    with the subject's HMAC. 按条件分页检索审计条目；按主体检索亦留痕。"""
    gateway = asker.gateway
    page = await asyncio.to_thread(search, gateway.log, wanted.where, cursor=cursor, limit=limit)
    await _record(
        asker,
        f"GET /v1/audit/entries {wanted.described} cursor={cursor or 0} limit={limit}",
        wanted.subject,
    )
    return EntryPageView(
        entries=[entry_view(f) for f in page.entries],
        next_cursor=page.next_cursor,
        log_size=page.size,
        scanned=page.scanned,
        pruned_unmatched=page.pruned,
    )


@router.get(
    "/entries/{index}",
    response_model=EntryProofView,
    summary="An entry with its inclusion proof · 条目及包含证明",
    responses=_problems((404, "No entry of that index: the log is smaller. 条目不存在。")),
)
async def get_entry(
    asker: AuditorDep,
    index: Annotated[int, Path(ge=0, description="The entry's index. 条目序号。", examples=[1042])],
    size: Annotated[
        int | None,
        Query(
            ge=1,
            description="Prove inclusion in the tree of this size (default: the latest "
            "checkpoint's). 证明所依据的树大小（默认最新检查点）。",
            examples=[5000],
        ),
    ] = None,
) -> EntryProofView:
    """The entry decoded, and its RFC 9162 inclusion proof: to the latest signed
    checkpoint (returned with it), or to the tree of `size` entries. Verify it with the
    leaf hash, the proof's hashes and the checkpoint's root. 条目及其 RFC 9162 包含证明。"""
    gateway = asker.gateway
    current = await _size(gateway)
    if index >= current:
        raise Problem(
            404,
            "entry-not-found",
            "No such entry",
            f"entry {index} is past the log, which holds {current} entries (0 to "
            f"{current - 1}): ask for an index below {current}",
        )
    if size is not None and not index < size <= current:
        raise _bad(
            "invalid-size",
            "Invalid tree size",
            f"size={size} cannot prove entry {index}: give a size above {index} and at most "
            f"the log's {current} entries",
        )

    def read() -> EntryProofView:
        tree, note = _tree(gateway, size)
        proof = gateway.log.inclusion_proof(index, tree)
        return EntryProofView(
            entry=entry_view(entry_at(gateway.log, index)),
            proof=InclusionProofView(
                index=index,
                size=tree,
                leaf_hash=proof["leaf_hash"].hex(),
                root_hash=proof["root_hash"].hex(),
                hashes=[h.hex() for h in proof["proof"]],
                checkpoint=note,
            ),
        )

    view = await asyncio.to_thread(read)
    await _record(
        asker, f"GET /v1/audit/entries/{index}" + (f" size={size}" if size is not None else "")
    )
    return view


@router.get(
    "/consistency",
    response_model=ConsistencyView,
    summary="A consistency proof between two tree sizes · 一致性证明",
    responses=_problems(),
)
async def get_consistency(
    asker: AuditorDep,
    first: Annotated[
        int,
        Query(
            ge=0,
            description="The smaller tree's size (e.g. a checkpoint a witness cosigned). "
            "较早检查点的大小。",
            examples=[4000],
        ),
    ],
    second: Annotated[
        int | None,
        Query(
            ge=0,
            description="The larger tree's size (default: the latest checkpoint's). "
            "较新检查点的大小（默认最新）。",
            examples=[5000],
        ),
    ] = None,
) -> ConsistencyView:
    """RFC 9162 proof that the log of `first` entries is a prefix of the log of `second`
    entries: the node did not rewrite its history between the two checkpoints.
    RFC 9162 一致性证明：两检查点之间历史未被改写。"""
    gateway = asker.gateway
    current = await _size(gateway)
    if second is not None and second > current:
        raise _bad(
            "invalid-size",
            "Invalid tree size",
            f"second={second} is past the log, which holds {current} entries: give at most "
            f"{current}, or leave it out for the latest checkpoint",
        )
    if first > (current if second is None else second):
        raise _bad(
            "invalid-size",
            "Invalid tree size",
            f"first={first} is larger than second={second if second is not None else current}"
            ": the first tree must be the smaller",
        )

    def read() -> ConsistencyView:
        tree, note = _tree(gateway, second)
        proof = gateway.log.consistency_proof(first, tree)
        return ConsistencyView(
            first=first,
            second=tree,
            first_root=proof["old_root"].hex(),
            second_root=proof["new_root"].hex(),
            hashes=[h.hex() for h in proof["proof"]],
            checkpoint=note,
        )

    view = await asyncio.to_thread(read)
    await _record(
        asker,
        f"GET /v1/audit/consistency first={first}"
        + (f" second={second}" if second is not None else ""),
    )
    return view


@router.get(
    "/witnesses",
    response_model=WitnessesView,
    summary="What the witnesses know · 见证状态",
    responses=_problems(),
)
async def get_witnesses(asker: AuditorDep) -> WitnessesView:
    """Per peer: the last size of its log this node verified and cosigned, when, the
    largest size seen in its receipts, and any alarm with both checkpoints as evidence;
    and the peers' latest cosignatures on this node's own log.
    本节点对各成员账本的见证情况、告警及各成员对本节点账本的副署。"""
    gateway = asker.gateway
    members = gateway.region.federation.memorandum.members
    peers = [m.id for m in members if m.id != gateway.member_id]

    def read() -> tuple[list[PeerStatus], list[HeldCosignature]]:
        records = WitnessRecords(gateway.database)
        return witness_status(records, peers), records.cosignatures(RECEIVED)

    statuses, held = await asyncio.to_thread(read)
    await _record(asker, "GET /v1/audit/witnesses")
    return WitnessesView(
        member=gateway.member_id,
        peers=[_status_view(s) for s in statuses],
        cosignatures=[_cosignature_view(h) for h in held],
    )


@router.get(
    "/reconcile",
    response_model=ReconciliationView,
    response_model_by_alias=True,
    summary="Reconcile with a peer's ledger · 与成员账本对账",
    responses=_problems(
        (502, "The peer could not be asked, or its listing did not verify. 对方不可达或验证失败。")
    ),
)
async def get_reconciliation(
    asker: AuditorDep,
    peer: Annotated[
        str,
        Query(
            description="The member to reconcile with. 对账成员。",
            examples=["shenzhen"],
            max_length=64,
        ),
    ],
    from_: Annotated[
        str,
        Query(
            alias="from",
            description="The first day (China time) or an ISO 8601 time. 起始日期（含）。",
            examples=["2026-12-01"],
        ),
    ],
    to: Annotated[
        str,
        _q(
            "The last day (included) or an ISO 8601 time (excluded). 截止日期（含）。",
            "2026-12-31",
        ),
    ],
) -> ReconciliationView:
    """Asks the peer for its entries about this node (verified against its signed
    checkpoint, entry by entry) and matches them with this node's: every call between
    the two, both ways, recorded on one side only or differently is reported. Reconcile
    a range that has ended (calls in flight may show as missing).
    向对方获取其关于本节点的已签名条目并逐笔比对，双向核对两本账。"""
    gateway = asker.gateway
    members = gateway.region.federation.memorandum.member_by_id
    if peer == gateway.member_id or peer not in members:
        others = sorted(m for m in members if m != gateway.member_id)
        raise _bad(
            "unknown-peer",
            "Unknown peer",
            f"{peer[:64]!r} is not another member of the memorandum: one of {', '.join(others)}",
        )
    window = Window(_instant(from_, "from", end=False), _instant(to, "to", end=True))
    if window.to_us <= window.from_us:
        raise _bad("invalid-range", "Invalid time range", f"to={to!r} is not after from={from_!r}")
    if window.to_us - window.from_us > MAX_RECONCILE_DAYS * 86_400_000_000:
        raise _bad(
            "invalid-range",
            "Range too long",
            f"reconcile at most {MAX_RECONCILE_DAYS} days at a time; split the range",
        )
    what = (
        f"GET /v1/audit/reconcile peer={peer} from={_china(window.from_us)} "
        f"to={_china(window.to_us)}"
    )
    try:
        result = await reconcile(gateway.region.client, gateway.log, peer, window)
    except AnswerRejected as exc:
        await _record(asker, what, status="ANSWER_REJECTED", message=str(exc))
        raise Problem(
            502, "answer-rejected", f"{peer}'s listing did not verify", str(exc)
        ) from None
    except ExchangeError as exc:
        await _record(asker, what, status="UNAVAILABLE", message=str(exc))
        raise Problem(
            502,
            "peer-unavailable",
            f"{peer} could not be asked",
            f"{exc}; retry later, or ask {peer}'s operator",
        ) from None
    await _record(asker, what, message="" if result.ok else f"{len(result.mismatches)} mismatches")
    return ReconciliationView.model_validate(result.as_dict())


@router.get(
    "/export",
    summary="Export the entries of a search as CSV or JSON Lines · 导出检索结果",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The entries, streamed: CSV (UTF-8 with a byte order mark, a header "
            "row, a text cell that would start a spreadsheet formula prefixed with ') or "
            "JSON Lines (one entry a line, as the listing shows it). CSV 或 JSON Lines 流式导出。",
            "content": {
                "text/csv": {
                    "schema": {"type": "string"},
                    "example": ",".join(CSV_COLUMNS) + "\r\n",
                },
                "application/x-ndjson": {
                    "schema": {"type": "string"},
                    "example": _FULL_EXAMPLE.model_dump_json() + "\n",
                },
            },
        },
        **_problems(),
    },
)
async def export_entries(
    asker: AuditorDep,
    wanted: SearchDep,
    export_format: Annotated[
        str,
        Query(
            alias="format",
            description="csv or jsonl. 导出格式。",
            examples=["csv", "jsonl"],
            json_schema_extra={"enum": [f.value for f in ExportFormat]},
        ),
    ] = ExportFormat.CSV.value,
) -> StreamingResponse:
    """Every entry that matches the filters, up to the log's size when the export began,
    streamed page by page (any size, in bounded memory). The export is recorded before
    its first byte; should the node fail mid-way the download ends early (its last
    line incomplete). 导出符合条件的全部条目（流式，不限大小）；导出本身留痕。"""
    chosen = _choice("format", export_format, [f.value.upper() for f in ExportFormat])
    kind = ExportFormat((chosen or ExportFormat.CSV.value).lower())
    gateway = asker.gateway
    asker.charge(1)  # an export may read the whole ledger: it counts as two calls
    end = await _size(gateway)
    await _record(
        asker,
        f"GET /v1/audit/export format={kind.value} {wanted.described} size={end}",
        wanted.subject,
    )
    views = (entry_view(f) for f in matching_entries(gateway.log, wanted.where, end=end))
    lines = _csv_lines(views) if kind is ExportFormat.CSV else _jsonl_lines(views)
    stamp = dt.datetime.now(CST).strftime("%Y%m%dT%H%M%S")
    name = f"audit-{gateway.member_id}-{stamp}.{kind.value}"
    media = "text/csv; charset=utf-8" if kind is ExportFormat.CSV else "application/x-ndjson"
    return StreamingResponse(
        (line.encode() for line in lines),
        media_type=media,
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
        },
    )

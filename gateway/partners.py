"""The partner routes: the cross-region report, this city's own records, hit / no-hit
checks, and the verification of a report someone hands in.

    GET  /v1/subjects/{id}/report   the consolidated report (JSON, or PDF by Accept)
    GET  /v1/subjects/{id}          this city's own records, as the purpose allows
    POST /v1/checks                 hit / no-hit for up to 1,000 subjects, every member
    POST /v1/reports/verify         a report checked offline against the memorandum

What every route keeps:

* **Nothing is asked or read before the call is allowed.** The key, the role, the
  officer (``X-Officer``) and the rate are checked by ``auth.partner``; then the
  purpose against the partner's registration, the identifiers' check characters,
  the subject types against the registration, and the request's texts as a provider
  would check them (``federation.fanout.prepare``). Each refusal is a problem
  document and writes nothing.
* **Every lookup is recorded with the partner and the officer.** A report or a
  check goes through the node's own client path (``federation.report``), so each
  member asked records the INCOMING lookup and this node the OUTGOING one, both
  naming the partner and the officer. A call that asks no member — the own-records
  lookup, a report or check for which the memorandum lets this node ask nobody, a
  verification — is recorded here as a LOCAL ``API_CALL`` entry (``Gateway.record``)
  before its answer leaves, subjects as keyed HMACs only.
* **One home for each rule.** The report and the checks are
  ``consolidated_report`` and ``check_everyone``, the own records are the report's
  own-store part (``report.own_records``: the purpose's subject types, check-only
  for individuals, sensitive values masked), verification is ``verify_report``
  against the memorandum version the report names, as ``credit-node report
  verify`` does it.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Final, Literal

import orjson
from fastapi import APIRouter, Body, Header, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from creditexchange.errors import CanonicalizationError
from creditexchange.gateway.auth import Asker, GatewayDep, PartnerDep
from creditexchange.gateway.context import Gateway
from creditexchange.gateway.problems import Problem, problem_responses
from creditexchange.identifiers import mask_identifier, validate_uscc
from creditexchange.node.exchange.askable import subject_types
from creditexchange.node.exchange.protocol import HEADER_TEXT_LIMITS, MAX_BATCH_SUBJECTS
from creditexchange.node.federation.fanout import Asking, prepare
from creditexchange.node.federation.report import (
    FORMAT,
    check_everyone,
    consolidated_report,
    covered_types,
    report_digest,
)
from creditexchange.node.federation.report import (
    own_records as own_store_records,
)
from creditexchange.node.federation.report_verify import trusted_for, verify_report
from creditexchange.policy.document import Mode
from creditexchange.subjects import SUBJECT_TYPES, is_individual

__all__ = [
    "CheckRequest",
    "CheckResult",
    "OwnRecords",
    "Report",
    "Verification",
    "router",
]

router = APIRouter(tags=["partners"])

PDF: Final = "application/pdf"
JSON: Final = "application/json"
MAX_REPORT_DEPTH: Final = 32
"""How deeply a report handed in for verification may nest: an issued report nests 7 levels;
a deeper document is refused before any recursive reading could exhaust the stack."""

_SUBJECT = "91441300MA4W7K3P2D"

# --- models: what the routes answer ------------------------------------------------------


class Field_(BaseModel):
    """One field of a record, as shown. 记录中的一个数据项。"""

    name: str = Field(description="The catalog's field name. 数据项代码。")
    label: str = Field(description="Its Chinese label. 中文名称。")
    value: str = Field(description="Its value (a code with its label). 取值。")
    unit: str = Field(description="A number's unit, or empty. 计量单位。")
    masked: bool = Field(description="Shown masked (sensitive). 是否已脱敏。")


class Record(BaseModel):
    """One record, or in check mode one hit / no-hit line per theme. 一条信用记录或核查结果。"""

    member: str = Field(description="The member that holds it. 提供方成员。")
    theme: str = Field(description="The data theme's code. 信息主题代码。")
    theme_name: str = Field(description="The theme's Chinese name. 主题名称。")
    source_department: str = Field(description="The source department. 来源部门。")
    record_key: str = Field(description="The record's key (e.g. decision number). 记录编号。")
    status: str = Field(description="active, or objection (异议处理中: under objection) 记录状态。")
    under_objection: bool = Field(description="An objection is open. 异议处理中。")
    decision_date: str = Field(description="ISO date, or empty. 决定日期。")
    valid_until: str = Field(description="ISO date, or empty. 有效期至。")
    publicity_end: str = Field(description="ISO date, or empty. 公示截止日期。")
    hit: bool | None = Field(description="Check mode: hit or not; null for a record. 是否命中。")
    fields: list[Field_] = Field(description="The fields the policy reveals. 公开的数据项。")
    synced_from: str | None = Field(
        default=None,
        description="Held by the issuing city as a copy of this member's change feed "
        "(customs data): shown as that member's. 同步自该成员的数据副本（如海关数据）。",
    )


class SubjectShown(BaseModel):
    """The subject as it may be shown (an individual masked). 主体（个人已脱敏）。"""

    id: str = Field(
        description="USCC, or a masked identity number. 统一社会信用代码或脱敏身份证号。"
    )
    type: str = Field(description=f"One of {', '.join(SUBJECT_TYPES)}. 主体类型。")
    name: str = Field(description="Its name, empty when no member holds it. 名称。")


class ReportMember(BaseModel):
    """What one member did. 各成员的答复情况。"""

    member: str = Field(description="Member id. 成员代码。")
    name: str = Field(description="Its Chinese name. 成员名称。")
    status: Literal["own", "answered", "denied", "unavailable", "timed_out", "skipped"] = Field(
        description="own (this node's store), answered, denied, unavailable, timed_out or "
        "skipped. 答复状态。"
    )
    reason: str = Field(description="Why not, when it did not answer. 未答复原因。")
    elapsed_ms: float = Field(description="How long it took. 耗时（毫秒）。")
    records: int = Field(description="Its records (check mode: hits). 记录数（核查模式为命中数）。")


class ReportSection(BaseModel):
    """A section of the national public credit report. 公共信用信息报告的一个部分。"""

    code: str = Field(description="Section code. 部分代码。")
    title_zh: str = Field(description="Chinese title. 中文标题。")
    title_en: str = Field(description="English title. 英文标题。")
    records: list[Record] = Field(description="Its records. 该部分记录。")


class ReportRequest(BaseModel):
    """The request the report answers. 报告对应的查询请求。"""

    purpose: str = Field(description="Purpose code. 用途代码。")
    purpose_name: str = Field(description="Its Chinese name. 用途名称。")
    legal_basis: str = Field(description="The statute relied on. 法律依据。")
    case_reference: str = Field(description="The case file. 案卷编号。")
    officer: str = Field(description="The officer who asked. 经办人。")
    partner: str = Field(description="The partner system that asked. 调用系统。")
    mode: Literal["full", "check"] = Field(description="full or check. 查询模式。")


class ReportMemorandum(BaseModel):
    version: int = Field(description="Memorandum version. 备忘录版本。")
    hash: str = Field(description="Its SHA-256, hex. 备忘录哈希。")


class EmbeddedAnswer(BaseModel):
    """A member's signed answer, verbatim. 成员签名答复原文。"""

    member: str = Field(description="Member id. 成员代码。")
    request_digest: str = Field(description="The request's digest, hex. 请求摘要。")
    answer_key: str = Field(description="Subject tag key (organisations only). 主体标签密钥。")
    envelope: str = Field(description="The signed envelope, base64. 签名信封（base64）。")


class ReportSignature(BaseModel):
    key_id: str = Field(description="The issuer's key id. 签发方密钥标识。")
    sig: str = Field(description="Ed25519 over the RFC 8785 form, base64. 签名。")


class Report(BaseModel):
    """The consolidated report, signed by this node (format ``creditexchange.report/v1``).
    跨区域公共信用信息报告（本节点签名）。"""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "format": FORMAT,
                    "report_id": "5c1f0e3a9b2d4c7e8f60a1b2c3d4e5f6",
                    "issuer": "shenzhen",
                    "federation": "3plus2",
                    "memorandum": {"version": 1, "hash": "9f2c…"},
                    "issued_at": "2026-05-12T10:31:02+08:00",
                    "subject": {"id": _SUBJECT, "type": "enterprise", "name": "惠州市某某有限公司"},
                    "request": {
                        "purpose": "land_auction",
                        "purpose_name": "土地和矿业权出让竞买资格审查",
                        "legal_basis": "国土资源部令第39号",
                        "case_reference": "TD-2026-017",
                        "officer": "HZ-LAND-0042",
                        "partner": "land-centre",
                        "mode": "full",
                    },
                    "deadline_s": 5.0,
                    "members": [
                        {
                            "member": "huizhou",
                            "name": "惠州市信用中心",
                            "status": "answered",
                            "reason": "",
                            "elapsed_ms": 41.7,
                            "records": 3,
                        }
                    ],
                    "sections": [
                        {
                            "code": "registration",
                            "title_zh": "基础登记信息",
                            "title_en": "Basic registration",
                            "records": [],
                        }
                    ],
                    "answers": [
                        {
                            "member": "huizhou",
                            "request_digest": "ab12…",
                            "answer_key": "cd34…",
                            "envelope": "CiQ…",
                        }
                    ],
                    "signature": {"key_id": "7e0d…", "sig": "MEUC…"},
                }
            ]
        }
    )

    format: Literal["creditexchange.report/v1"] = Field(description="Format. 报告格式。")
    report_id: str = Field(description="Unique id. 报告编号。")
    issuer: str = Field(description="The issuing member (this node). 签发成员。")
    federation: str = Field(description="The federation. 联盟代码。")
    memorandum: ReportMemorandum = Field(description="Memorandum in force. 适用备忘录。")
    issued_at: str = Field(description="When, ISO 8601 with +08:00. 签发时间。")
    subject: SubjectShown = Field(description="The subject. 查询主体。")
    request: ReportRequest = Field(description="The request. 查询请求。")
    deadline_s: float = Field(description="The fan-out's deadline. 查询时限（秒）。")
    members: list[ReportMember] = Field(description="Per member, what happened. 各成员情况。")
    sections: list[ReportSection] = Field(description="The nine sections. 九个部分。")
    answers: list[EmbeddedAnswer] = Field(description="Signed answers. 各成员签名答复。")
    signature: ReportSignature = Field(description="The issuer's signature. 签发方签名。")


class OwnRecord(Record):
    section: str = Field(description="The report section it belongs to. 所属报告部分。")


class OwnRecords(BaseModel):
    """This city's own records of a subject, as the purpose allows. 本市归集的主体信用记录。"""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "member": "shenzhen",
                    "subject": {"id": _SUBJECT, "type": "enterprise", "name": "深圳市某某有限公司"},
                    "purpose": "bank_credit",
                    "mode": "full",
                    "reason": "",
                    "records": [
                        {
                            "section": "registration",
                            "member": "shenzhen",
                            "theme": "registration",
                            "theme_name": "登记注册基本信息",
                            "source_department": "市场监督管理局",
                            "record_key": "REG-440300-0001",
                            "status": "active",
                            "under_objection": False,
                            "decision_date": "2019-03-01",
                            "valid_until": "",
                            "publicity_end": "",
                            "hit": None,
                            "fields": [
                                {
                                    "name": "registered_capital",
                                    "label": "注册资本（开办资金、资金数额）",
                                    "value": "500",
                                    "unit": "万元",
                                    "masked": False,
                                }
                            ],
                        }
                    ],
                }
            ]
        }
    )

    member: str = Field(description="This node's member id. 本节点成员代码。")
    subject: SubjectShown = Field(description="The subject. 查询主体。")
    purpose: str = Field(description="The purpose asked for. 查询用途。")
    mode: Literal["full", "check"] = Field(description="As shown: check for individuals. 模式。")
    reason: str = Field(description="Why nothing is shown, when so. 未展示原因。")
    records: list[OwnRecord] = Field(description="The records (check: lines). 记录。")


class CheckRequest(BaseModel):
    """A batch hit / no-hit check (e.g. auction bidders). 批量核查（如竞买人资格审查）。"""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "purpose": "land_auction",
                    "legal_basis": "《招标拍卖挂牌出让国有建设用地使用权规定》",
                    "case_reference": "TD-2026-017",
                    "subjects": [_SUBJECT],
                }
            ]
        },
    )

    purpose: str = Field(
        min_length=1,
        max_length=HEADER_TEXT_LIMITS["purpose"],
        description="A purpose the partner is registered for. 已登记的用途代码。",
    )
    legal_basis: str = Field(
        min_length=1,
        max_length=HEADER_TEXT_LIMITS["legal_basis"],
        description="The statute relied on. 法律依据。",
    )
    case_reference: str = Field(
        min_length=1,
        max_length=HEADER_TEXT_LIMITS["case_reference"],
        description="The case file. 案卷编号。",
    )
    subjects: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        min_length=1,
        max_length=MAX_BATCH_SUBJECTS,
        description="USCCs or resident identity numbers, at most 1,000 (the node may accept "
        "fewer). 统一社会信用代码或身份证号，最多 1000 个。",
    )


class MemberStatus(BaseModel):
    member: str = Field(description="Member id. 成员代码。")
    name: str = Field(description="Its Chinese name. 成员名称。")
    status: Literal["own", "answered", "denied", "unavailable", "timed_out", "skipped"] = Field(
        description="own, answered, denied, unavailable, timed_out or skipped. 答复状态。"
    )
    reason: str = Field(description="Why not, when it did not answer. 未答复原因。")
    elapsed_ms: float | None = Field(description="How long (null: own store). 耗时（毫秒）。")


class Checked(BaseModel):
    member: str = Field(description="Member id. 成员代码。")
    theme: str = Field(description="Theme code. 主题代码。")
    theme_name: str = Field(description="Theme name. 主题名称。")


class Hit(BaseModel):
    member: str = Field(description="The member with the hit. 命中成员。")
    theme: str = Field(description="The theme hit. 命中主题。")
    under_objection: bool = Field(description="Under objection. 异议处理中。")


class SubjectCheck(BaseModel):
    subject: str = Field(description="As asked (an individual masked). 主体（个人已脱敏）。")
    subject_type: str = Field(description="Its type. 主体类型。")
    found: bool = Field(description="Any member has a hit. 是否有命中。")
    hits: list[Hit] = Field(description="Each (member, theme) hit. 命中明细。")


class CheckResult(BaseModel):
    """Per subject (in the order asked) the hits; per member what it did; every (member,
    theme) checked — one not in a subject's hits is a no-hit. 核查结果。"""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "purpose": "land_auction",
                    "case_reference": "TD-2026-017",
                    "complete": True,
                    "members": [
                        {
                            "member": "shenzhen",
                            "name": "深圳市信用中心",
                            "status": "own",
                            "reason": "",
                            "elapsed_ms": None,
                        },
                        {
                            "member": "huizhou",
                            "name": "惠州市信用中心",
                            "status": "answered",
                            "reason": "",
                            "elapsed_ms": 37.5,
                        },
                    ],
                    "checked": [
                        {"member": "huizhou", "theme": "dishonest_list", "theme_name": "失信名单"}
                    ],
                    "subjects": [
                        {
                            "subject": _SUBJECT,
                            "subject_type": "enterprise",
                            "found": True,
                            "hits": [
                                {
                                    "member": "huizhou",
                                    "theme": "dishonest_list",
                                    "under_objection": False,
                                }
                            ],
                        }
                    ],
                }
            ]
        }
    )

    purpose: str = Field(description="The purpose. 用途。")
    case_reference: str = Field(description="The case file. 案卷编号。")
    complete: bool = Field(
        description="Every member asked answered (else a no-hit may be a silence). "
        "所有成员均已答复。"
    )
    members: list[MemberStatus] = Field(description="Per member, what happened. 各成员情况。")
    checked: list[Checked] = Field(description="Every (member, theme) checked. 已核查项。")
    subjects: list[SubjectCheck] = Field(description="Per subject, in order. 各主体结果。")


class Verification(BaseModel):
    """Whether a report verifies against the memorandum it names. 报告验证结果。"""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"valid": True, "digest": "3b5e…", "report_id": "5c1f…", "problems": []},
                {
                    "valid": False,
                    "digest": "0a9d…",
                    "report_id": "5c1f…",
                    "problems": [
                        "the issuer's signature (shenzhen, key 7e0d…) does not verify: the "
                        "report was changed after it was signed"
                    ],
                },
            ]
        }
    )

    valid: bool = Field(description="No problem found. 验证通过。")
    digest: str | None = Field(
        description="SHA-256 of the canonical report (as printed on its PDF), null when it "
        "has no canonical form. 报告摘要（与 PDF 上一致）。"
    )
    report_id: str | None = Field(description="The report's id as it states it. 报告编号。")
    problems: list[str] = Field(description="Every problem, one sentence each. 问题清单。")


# --- documented errors --------------------------------------------------------------------

_REFUSED: Final = (
    400,
    "Refused before anything was sent: an invalid identifier, a text a member would refuse, "
    "a missing X-Officer. 请求有误，未发出任何查询。",
)
_FORBIDDEN: Final = (
    403,
    "Not for this caller: a purpose or subject type not registered, an auditor's key. "
    "无权使用该用途或主体类型。",
)
_NO_SUBJECT: Final = (404, "No such subject. 主体不存在。")
_NOT_ACCEPTABLE: Final = (406, "Neither JSON nor PDF accepted. 不支持的 Accept。")


# --- parameters ---------------------------------------------------------------------------

SubjectId = Annotated[
    str,
    Path(
        alias="id",
        min_length=1,
        max_length=64,
        description="USCC or resident identity number. 统一社会信用代码或身份证号。",
        examples=[_SUBJECT],
    ),
]
PurposeQuery = Annotated[
    str,
    Query(
        min_length=1,
        max_length=HEADER_TEXT_LIMITS["purpose"],
        description="A purpose the partner is registered for. 已登记的用途代码。",
        examples=["land_auction"],
    ),
]
LegalBasisQuery = Annotated[
    str,
    Query(
        min_length=1,
        max_length=HEADER_TEXT_LIMITS["legal_basis"],
        description="The statute relied on. 法律依据。",
        examples=["《招标拍卖挂牌出让国有建设用地使用权规定》"],
    ),
]
CaseQuery = Annotated[
    str,
    Query(
        alias="case",
        min_length=1,
        max_length=HEADER_TEXT_LIMITS["case_reference"],
        description="The case file the lookup belongs to. 案卷编号。",
        examples=["TD-2026-017"],
    ),
]
ModeQuery = Annotated[
    Literal["full", "check"],
    Query(description="full: the records; check: hit / no-hit per theme. 查询模式。"),
]


def _prepared(
    gateway: Gateway,
    asker: Asker,
    subjects: Sequence[str],
    *,
    purpose: str,
    legal_basis: str,
    case_reference: str,
    mode: str,
) -> Asking:
    """The request as it would be sent, or the refusal that stops it before anything is
    asked or read: purpose not registered (403), an invalid identifier or a text a member
    would refuse (400), a subject type not registered (403)."""
    asker.require_purpose(purpose)
    asker.require_subject_types({kind for _, kind in subject_types(subjects)})
    asking = prepare(
        gateway.region,
        subjects,
        purpose=purpose,
        legal_basis=legal_basis,
        case_reference=case_reference,
        officer=asker.officer,
        partner=asker.name,
        mode=mode,
    )
    if not asking.legal_basis or not asking.case_reference:
        raise Problem(
            400,
            "texts-required",
            "Legal basis and case required",
            "name the statute relied on (legal_basis) and the case file (case_reference): "
            "every lookup is recorded with them; nothing was sent",
        )
    return asking


# --- the report ---------------------------------------------------------------------------


def _negotiated(accept: str | None) -> str | None:
    """JSON or PDF as ``Accept`` prefers (RFC 9110 §12.5.1: the highest q, then the most
    specific range; JSON on a tie or with no header), None when it accepts neither."""
    if not accept or not accept.strip():
        return JSON
    best: dict[str, tuple[float, int]] = {}
    for item in accept.split(","):
        media, *params = (p.strip() for p in item.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
                q = q if math.isfinite(q) and 0 <= q <= 1 else 0.0
        media = media.lower()
        for offered in (JSON, PDF):
            kind = offered.split("/")[0]
            specificity = {offered: 2, f"{kind}/*": 1, "*/*": 0}.get(media)
            if specificity is not None and specificity >= best.get(offered, (0.0, -1))[1]:
                best[offered] = (q, specificity)
    ranked = sorted(
        ((q, spec, offered == JSON, offered) for offered, (q, spec) in best.items() if q > 0),
        reverse=True,
    )
    return ranked[0][3] if ranked else None


@router.get(
    "/v1/subjects/{id}/report",
    operation_id="issue_report",
    summary="The consolidated report across the region · 跨区域信用报告",
    response_model=Report,
    responses={
        200: {
            "description": "The signed report: JSON, or its PDF with Accept: application/pdf. "
            "签名报告（JSON，或 PDF）。",
            "content": {PDF: {"schema": {"type": "string", "format": "binary"}}},
        },
        **problem_responses(_REFUSED, _FORBIDDEN, _NO_SUBJECT, _NOT_ACCEPTABLE),
    },
)
async def issue_report(
    subject: SubjectId,
    purpose: PurposeQuery,
    legal_basis: LegalBasisQuery,
    case: CaseQuery,
    asker: PartnerDep,
    gateway: GatewayDep,
    mode: ModeQuery = "full",
    accept: Annotated[
        str | None,
        Header(description="application/json (default) or application/pdf. 返回格式。"),
    ] = None,
) -> Response:
    """Ask every member the memorandum lets this node ask about the subject, and this
    city's own store, under one deadline, and return the report signed by this node. Each
    member asked records the lookup with the partner and the officer, as does this node.
    The JSON is the record (verify it with ``POST /v1/reports/verify``); the PDF is its
    rendering, with the digest and a QR code.

    向联盟内备忘录允许的各成员及本市数据库查询该主体，返回本节点签名的报告；每一次查询均
    连同调用方与经办人记入各方审计账本。JSON 为正式记录，PDF 为其版式文件。"""
    wanted = _negotiated(accept)
    if wanted is None:
        raise Problem(
            406,
            "not-acceptable",
            "Not acceptable",
            f"the report is served as {JSON} (the signed record) or {PDF}; Accept: "
            f"{(accept or '')[:100]!r} takes neither",
        )
    asking = _prepared(
        gateway,
        asker,
        [subject],
        purpose=purpose,
        legal_basis=legal_basis,
        case_reference=case,
        mode=mode,
    )
    report = await consolidated_report(
        gateway.region,
        subject,
        purpose=asking.purpose,
        legal_basis=asking.legal_basis,
        case_reference=asking.case_reference,
        officer=asking.officer,
        partner=asking.partner,
        mode=asking.mode,
        deadline_s=gateway.limits.deadline_s,
    )
    digest = report_digest(report)
    if all(m["status"] == "own" for m in report["members"]):  # no member asked: record it here
        await gateway.record(
            asker.caller,
            asker.officer,
            f"GET /v1/subjects/{{id}}/report purpose={asking.purpose} mode={asking.mode.value} "
            f"report={report['report_id']} digest={digest}: no member may be asked",
            purpose=asking.purpose,
            case_reference=asking.case_reference,
            subjects=[asking.subjects[0][0]],
        )
    headers = {"X-Report-Digest": digest}
    if wanted == PDF:
        from creditexchange.node.federation.pdf import render_pdf  # reportlab, on demand

        pdf = await asyncio.to_thread(render_pdf, report)
        headers["Content-Disposition"] = f'attachment; filename="report-{report["report_id"]}.pdf"'
        return Response(pdf, media_type=PDF, headers=headers)
    return Response(orjson.dumps(report), media_type=JSON, headers=headers)


# --- this city's own records --------------------------------------------------------------


@router.get(
    "/v1/subjects/{id}",
    operation_id="own_records",
    summary="This city's own records of a subject · 本市信用记录",
    response_model=OwnRecords,
    responses=problem_responses(_REFUSED, _FORBIDDEN, _NO_SUBJECT),
)
async def own_records(
    subject: SubjectId,
    purpose: PurposeQuery,
    legal_basis: LegalBasisQuery,
    case: CaseQuery,
    asker: PartnerDep,
    gateway: GatewayDep,
    mode: ModeQuery = "full",
) -> OwnRecords:
    """This city's own servable records of the subject, as they are shown for the purpose:
    nothing when the purpose does not cover the subject's type, hit / no-hit on the list
    themes only for an individual, sensitive values masked. No other member is asked; the
    lookup is recorded in this node's ledger with the partner and the officer.

    本市归集的该主体信用记录，按用途允许的范围展示（个人仅核查名单类主题，敏感项脱敏）；
    不向其他成员查询，查询记入本节点审计账本。"""
    asking = _prepared(
        gateway,
        asker,
        [subject],
        purpose=purpose,
        legal_basis=legal_basis,
        case_reference=case,
        mode=mode,
    )
    ((canonical, subject_type),) = asking.subjects
    region = gateway.region
    covered = covered_types(region, asking.purpose)
    what = f"GET /v1/subjects/{{id}} purpose={asking.purpose} mode={asking.mode.value}"
    own = await asyncio.to_thread(
        own_store_records, region, canonical, subject_type, asking.purpose, covered, asking.mode
    )
    if not own.held:
        await gateway.record(
            asker.caller,
            asker.officer,
            f"{what}: no such subject",
            purpose=asking.purpose,
            case_reference=asking.case_reference,
            subjects=[canonical],
            status="NOT_FOUND",
        )
        raise Problem(
            404,
            "no-such-subject",
            "No such subject",
            f"no subject {mask_identifier(canonical, subject_type)} in {region.member_id}'s "
            "store: check the identifier, or ask the region (GET /v1/subjects/{id}/report)",
        )
    shown_mode = Mode.CHECK if is_individual(subject_type) else asking.mode
    await gateway.record(
        asker.caller,
        asker.officer,
        f"{what}: {len(own.records)} record(s) shown",
        purpose=asking.purpose,
        case_reference=asking.case_reference,
        subjects=[canonical],
        message=own.reason,
    )
    return OwnRecords(
        member=region.member_id,
        subject=SubjectShown(
            id=mask_identifier(canonical, subject_type), type=subject_type, name=own.name
        ),
        purpose=asking.purpose,
        mode=shown_mode.value,
        reason=own.reason,
        records=[OwnRecord(section=section, **record) for section, record in own.records],
    )


# --- hit / no-hit checks ------------------------------------------------------------------


@router.post(
    "/v1/checks",
    operation_id="check_subjects",
    summary="Hit / no-hit for up to 1,000 subjects · 批量核查",
    response_model=CheckResult,
    responses=problem_responses(_REFUSED, _FORBIDDEN, 413),
)
async def check_subjects(
    request: Annotated[CheckRequest, Body()], asker: PartnerDep, gateway: GatewayDep
) -> CheckResult:
    """Check every subject hit / no-hit at every member the memorandum lets this node ask
    (one batch each, in parallel, under one deadline) and in this city's own store — for
    screening the bidders of an auction, the suppliers of a tender. Each member records
    the batch with the partner and the officer, as does this node. A subject named twice
    is asked once and answered in both places.

    向各成员（并行、统一时限）及本市数据库批量核查主体是否命中（如竞买人资格审查），
    每一次核查均连同调用方与经办人记入各方审计账本。"""
    limit = gateway.limits.max_subjects
    if len(request.subjects) > limit:
        raise Problem(
            413,
            "too-many-subjects",
            "Too many subjects",
            f"{len(request.subjects)} subjects in one check; this node takes at most {limit}: "
            "split the list; nothing was sent",
        )
    unique = list(dict.fromkeys(s.strip().upper() for s in request.subjects))
    asker.charge(len(unique) / 100)  # a batch weighs on the rate: 1,000 subjects, 10 calls more
    asking = _prepared(
        gateway,
        asker,
        unique,
        purpose=request.purpose,
        legal_basis=request.legal_basis,
        case_reference=request.case_reference,
        mode=Mode.CHECK,
    )
    region = gateway.region
    result = await check_everyone(
        region,
        [canonical for canonical, _ in asking.subjects],
        purpose=asking.purpose,
        legal_basis=asking.legal_basis,
        case_reference=asking.case_reference,
        officer=asking.officer,
        partner=asking.partner,
        deadline_s=gateway.limits.deadline_s,
    )
    if not result.fanned.results:  # no member may be asked: the own store's read is recorded here
        await gateway.record(
            asker.caller,
            asker.officer,
            f"POST /v1/checks purpose={asking.purpose} subjects={len(unique)}: no member may "
            "be asked",
            purpose=asking.purpose,
            case_reference=asking.case_reference,
            subjects=[canonical for canonical, _ in asking.subjects],
        )
    memorandum = region.federation.memorandum

    def name(member: str) -> str:
        known = memorandum.member_by_id.get(member)
        return known.name_zh if known else member

    own = result.own_member
    members = [MemberStatus(member=own, name=name(own), status="own", reason="", elapsed_ms=None)]
    members += [
        MemberStatus(
            member=r.member,
            name=name(r.member),
            status=r.outcome.value,
            reason=r.reason,
            elapsed_ms=r.elapsed_ms,
        )
        for r in result.fanned.results
    ]
    themes = region.catalog.theme_by_code
    checked = [
        Checked(member=m, theme=t, theme_name=themes[t].name_zh if t in themes else t)
        for m, t in result.columns
    ]
    position = {canonical: i for i, (canonical, _) in enumerate(asking.subjects)}
    subjects = []
    for asked in request.subjects:
        i = position[asked.strip().upper()]
        hits = [
            Hit(member=m, theme=t, under_objection=objection)
            for (m, t), (hit, objection) in sorted(result.hits[i].items())
            if hit
        ]
        subjects.append(
            SubjectCheck(
                subject=result.subjects[i],
                subject_type=result.subject_types[i],
                found=bool(hits),
                hits=hits,
            )
        )
    return CheckResult(
        purpose=asking.purpose,
        case_reference=asking.case_reference,
        complete=all(r.outcome.value == "answered" for r in result.fanned.results),
        members=members,
        checked=checked,
        subjects=subjects,
    )


# --- verifying a report -------------------------------------------------------------------


def _depth(value: Any) -> int:
    """How deeply ``value`` nests (iteratively: a hostile document cannot overflow it)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_REPORT_DEPTH:
            break
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def _report_id(value: str | None) -> str:
    """A report id as the ledger may hold it: the issuer's hex id, or a mark that the
    report handed in had none of that form (its text is the caller's, not recorded)."""
    if value is not None and len(value) == 32 and all(c in "0123456789abcdef" for c in value):
        return value
    return "(not a report id)"


def _verified(gateway: Gateway, report: dict[str, Any]) -> Verification:
    trusted = trusted_for(report, gateway.config.policy_dir, gateway.region.federation)
    problems = verify_report(report, trusted, gateway.catalog)
    try:
        digest: str | None = report_digest(report)
    except CanonicalizationError:
        digest = None
    report_id = report.get("report_id")
    return Verification(
        valid=not problems,
        digest=digest,
        report_id=report_id if isinstance(report_id, str) else None,
        problems=problems,
    )


@router.post(
    "/v1/reports/verify",
    operation_id="verify_report",
    summary="Verify a report someone hands in · 验证报告",
    response_model=Verification,
    responses=problem_responses(_REFUSED, _FORBIDDEN, 413),
)
async def verify_handed_in(
    report: Annotated[
        dict[str, Any],
        Body(
            description="A report as GET /v1/subjects/{id}/report returned it (format "
            f"{FORMAT}), unchanged. 原样提交的报告 JSON。",
            openapi_examples={
                "report": {
                    "summary": "A report as issued · 签发的报告",
                    "value": Report.model_config["json_schema_extra"]["examples"][0],
                }
            },
        ),
    ],
    asker: PartnerDep,
    gateway: GatewayDep,
) -> Verification:
    """Check a report offline, trusting no node: the issuer's signature, every member's
    signed answer and its binding to the request, every receipt's inclusion proof and
    cosignatures, and that the tables are exactly what the signed answers hold — against
    the memorandum version the report names, as this node keeps it. No member is asked;
    the verification is recorded in this node's ledger.

    离线验证报告：签发方签名、各成员签名答复及其与请求的绑定、审计回执的包含证明与见证
    签名、表格与签名答复一致；不向任何成员查询，验证记入本节点审计账本。"""
    if _depth(report) > MAX_REPORT_DEPTH:
        raise Problem(
            422,
            "not-a-report",
            "Not a report",
            f"the document nests deeper than {MAX_REPORT_DEPTH} levels; a report "
            f"({FORMAT}) nests 7: send the report as it was issued",
        )
    verification = await asyncio.to_thread(_verified, gateway, report)
    subject = report.get("subject")
    shown = subject.get("id") if isinstance(subject, Mapping) else None
    try:  # an organisation's code is in the report: its HMAC lets an auditor find the call
        subjects = [validate_uscc(shown)] if isinstance(shown, str) else []
    except ValueError:
        subjects = []
    await gateway.record(
        asker.caller,
        asker.officer,
        f"POST /v1/reports/verify report={_report_id(verification.report_id)} "
        f"digest={verification.digest} valid={verification.valid}",
        subjects=subjects,
        # the count only: a forged report's problems quote whatever text it holds
        message=f"{len(verification.problems)} problem(s)",
        status="OK" if verification.valid else "INVALID",
    )
    return verification

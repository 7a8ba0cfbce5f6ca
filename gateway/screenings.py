"""Joint reward and punishment screening for partner systems (联合奖惩 "trigger and feedback").

    POST /v1/screenings                 the measures that apply to subjects in a scene
    GET  /v1/screenings/{id}            a screening as it was answered, and its feedback
    POST /v1/screenings/{id}/feedback   what the department then did, per subject and measure

The work is :mod:`creditexchange.node.federation.screening`'s; this module checks the
call, maps refusals to problem documents and records the call. Promises:

* **Refused before anything is sent or written**: an unknown scene (422), a scene
  whose purpose the partner is not registered for (403), a subject type it is not
  registered for (403), an identifier whose check character is wrong (400), more
  subjects than the node takes (422; a body over the byte limit is 413 before it is
  read), a subject listed twice or of a type the scene does not screen (422).
* **Recorded with what it stored**: the screening is stored as a side write of its
  LOCAL ``SCREENING`` ledger entry (partner, officer, case, purpose, the subjects as
  HMACs), feedback of its ``FEEDBACK`` entry, so neither exists without the other.
  Reading a screening back is an ``API_CALL`` entry.
* **Only the partner that screened** reads the screening or gives its feedback (403
  for another partner, 404 for an id this node never issued); feedback names a
  subject the screening named and a measure it found for that subject (422 else).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Body, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from creditexchange.errors import (
    NotYourScreening,
    ScreeningError,
    UnknownScene,
    UnknownScreening,
    UnscreenedFeedback,
)
from creditexchange.gateway.auth import GatewayDep, PartnerDep
from creditexchange.gateway.context import Gateway
from creditexchange.gateway.problems import Problem, problem_responses
from creditexchange.node.exchange import askable
from creditexchange.node.exchange.protocol import MAX_BATCH_SUBJECTS
from creditexchange.node.federation.screening import (
    FeedbackItem,
    FeedbackOutcome,
    feedback_write,
    read_screening,
    resolve_feedback,
    screen,
    screening_write,
)
from creditexchange.node.measures import MeasuresCatalog, load_measures
from creditexchange.v1 import audit_pb2

__all__ = [
    "FeedbackAnswer",
    "FeedbackRequest",
    "ScreeningAnswer",
    "ScreeningRequest",
    "StoredScreening",
    "router",
]

router = APIRouter(tags=["screenings"])

_LAND_AUCTION_BIDDERS = ["91441300MA4W7K3P2D", "91441302MA51ABCD7G"]

# --- request and answer bodies ---------------------------------------------------------

SubjectId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=32)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


_ANSWER_EXAMPLE: dict[str, Any] = {
    "format": "creditexchange.screening/v1",
    "id": "5f0c6a2e9b7d4c1e8a3f2b1c0d9e8f7a",
    "scene": {
        "code": "land_auction",
        "name_zh": "土地和矿业权出让竞买",
        "name_en": "Land and mining-right auctions",
        "purpose": "land_auction",
    },
    "measures_version": "2026.1",
    "memorandum_version": 1,
    "created_at": "2026-12-03T10:15:00+08:00",
    "complete": True,
    "incomplete_reason": "",
    "members": [
        {
            "member": "huizhou",
            "name": "惠州市信用中心",
            "status": "own",
            "reason": "",
            "elapsed_ms": 0.0,
        },
        {
            "member": "shenzhen",
            "name": "深圳市信用中心",
            "status": "answered",
            "reason": "",
            "elapsed_ms": 31.5,
        },
    ],
    "summary": {
        "subjects": 2,
        "with_measures": 1,
        "measures": 1,
        "by_kind": {"prohibit": 1, "restrict": 0, "heightened_supervision": 0, "facilitate": 0},
    },
    "subjects": [
        {
            "position": 0,
            "subject": "91441300MA4W7K3P2D",
            "subject_type": "enterprise",
            "name": "惠州市某建设有限公司",
            "complete": True,
            "measures": [
                {
                    "measure": "serious_dishonesty_list",
                    "trigger_name_zh": "严重失信主体名单",
                    "trigger_name_en": "Serious dishonesty list (black list)",
                    "kind": "prohibit",
                    "description_zh": "不得参与国有建设用地使用权和矿业权竞买",
                    "description_en": "May not bid for state-owned construction land use rights",
                    "legal_basis": "国发〔2016〕33号; 国土资源部令第39号",
                    "binding": True,
                    "records": [
                        {
                            "member": "shenzhen",
                            "member_name": "深圳市信用中心",
                            "theme": "serious_dishonesty",
                            "theme_name": "严重失信主体名单",
                            "detail": "record",
                            "record_key": "深发改信〔2026〕12号",
                            "source_department": "development_reform",
                            "source_department_name": "发展和改革局",
                            "decision_date": "2026-10-04",
                            "valid_until": "",
                            "under_objection": False,
                            "condition": None,
                            "note": "",
                        }
                    ],
                }
            ],
            "undetermined": [],
        },
        {
            "position": 1,
            "subject": "91441302MA51ABCD7G",
            "subject_type": "enterprise",
            "name": "",
            "complete": True,
            "measures": [],
            "undetermined": [],
        },
    ],
    "ledger_entry": 1042,
}


class ScreeningRequest(_Body):
    """A screening: a scene and the subjects to screen in it. 筛查请求：业务场景与待筛查主体。"""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "scene": "land_auction",
                    "subjects": ["91441300MA4W7K3P2D", "91441302MA51ABCD7G"],
                    "case_reference": "HZ-TD-2026-018",
                }
            ]
        },
    )

    scene: str = Field(
        min_length=1,
        max_length=64,
        description="The business scene, a code of the measures catalog (GET the catalog with "
        "'credit-node measures show'): land_auction, public_procurement, fiscal_funds, "
        "grain_procurement, civil_service_hiring, bank_credit, customs_clearance, "
        "commendation, admin_licensing. 业务场景代码（见联合奖惩措施清单）。",
        examples=["land_auction"],
    )
    subjects: list[SubjectId] = Field(
        min_length=1,
        max_length=MAX_BATCH_SUBJECTS,
        description="Unified social credit codes (organisations) or resident identity numbers "
        "(individuals, for the scenes that screen them), each once, at most 1,000. The answer "
        "lists them in this order (position 0 first). 统一社会信用代码或身份证号，每个一次，"
        "最多 1000 个。",
        examples=[_LAND_AUCTION_BIDDERS],
    )
    case_reference: str = Field(
        min_length=1,
        max_length=128,
        description="The case the screening belongs to (auction lot, tender, grant "
        "application); recorded at every member asked. 业务案号（记入各方账本）。",
        examples=["HZ-TD-2026-018"],
    )
    legal_basis: str = Field(
        default="",
        max_length=512,
        description="The legal basis to state to the members; by default the scene's purpose "
        "basis in the memorandum. 向各成员声明的法律依据；缺省为备忘录中该用途的依据。",
        examples=["国发〔2016〕33号; 国土资源部令第39号"],
    )


class ConditionValue(BaseModel):
    """The condition that fired a graded trigger. 触发条件。"""

    field: str = Field(description="The field the trigger's condition reads. 条件字段。")
    value: str = Field(description="Its value in the record (a code). 记录中的值（代码）。")


class TriggeringRecord(BaseModel):
    """A record behind a measure, at the member that holds it. 触发措施的记录。"""

    member: str = Field(
        description="The member holding it. 持有记录的成员。", examples=["shenzhen"]
    )
    member_name: str = Field(description="Its name. 成员名称。", examples=["深圳市信用中心"])
    theme: str = Field(description="The catalog theme. 数据主题。", examples=["serious_dishonesty"])
    theme_name: str = Field(description="The theme's name. 主题名称。")
    detail: Literal["record", "hit_only"] = Field(
        description="'record': the record was read; 'hit_only': only that the subject is on "
        "the list (an individual, or a member that answers this purpose hit / no-hit only). "
        "record：已读取记录；hit_only：仅知命中。"
    )
    record_key: str = Field(
        description="The record's key: the listing or decision document number. 记录编号"
        "（列入决定文书号等）。",
        examples=["深发改信〔2026〕12号"],
    )
    source_department: str = Field(description="Source department code. 数据来源部门代码。")
    source_department_name: str = Field(description="Its name. 数据来源部门。")
    decision_date: str = Field(description="Decision or listing date, ISO. 决定（列入）日期。")
    valid_until: str = Field(description="Valid until, ISO, or empty. 有效期至。")
    under_objection: bool = Field(
        description="An objection is in progress: the record may change. 异议处理中。"
    )
    condition: ConditionValue | None = Field(
        description="For a conditional trigger (a grade): the field and the value that fired "
        "it. 条件触发（如信用等级）时的字段与值。"
    )
    note: str = Field(description="Why the record was not read, where it was not. 说明。")


class AppliedMeasure(BaseModel):
    """A measure that applies to the subject in the scene. 适用的奖惩措施。"""

    measure: str = Field(
        description="The measure's code; feedback names it. 措施代码（反馈时引用）。",
        examples=["serious_dishonesty_list"],
    )
    trigger_name_zh: str = Field(description="The list or grade. 触发名单或等级。")
    trigger_name_en: str = Field(description="The list or grade, in English.")
    kind: Literal["prohibit", "restrict", "heightened_supervision", "facilitate"] = Field(
        description="prohibit 禁止, restrict 限制, heightened_supervision 重点监管, "
        "facilitate 便利（激励）."
    )
    description_zh: str = Field(description="What the measure means. 措施内容。")
    description_en: str = Field(description="What the measure means, in English.")
    legal_basis: str = Field(description="Its legal basis. 法律依据。")
    binding: bool = Field(
        description="True: the department shall apply it; false: it weighs it. 是否必须执行。"
    )
    records: list[TriggeringRecord] = Field(description="The records that trigger it. 触发记录。")


class UndeterminedMeasure(BaseModel):
    """A measure that may apply but could not be decided: its condition needs a record
    that was not read. 无法判定的措施（记录未读取）。"""

    measure: str = Field(
        description="The measure's code. 措施代码。", examples=["customs_certified"]
    )
    trigger_name_zh: str = Field(description="The list or grade. 触发名单或等级。")
    kind: str = Field(description="The measure's kind, as in a measure. 措施类型。")
    records: list[TriggeringRecord] = Field(
        description="The hits whose record was not read. 命中但未读取的记录。"
    )


class ScreenedSubject(BaseModel):
    """One subject's result. 单个主体的筛查结果。"""

    position: int = Field(description="Its place in the request, from 0. 请求中的序号（从0起）。")
    subject: str = Field(
        description="Its id as shown (identity numbers masked). 主体标识（身份证号脱敏）。"
    )
    subject_type: str = Field(description="enterprise, individual_business, … 主体类型。")
    name: str = Field(description="Its name where a member holds it. 主体名称。")
    complete: bool = Field(
        description="Every member asked answered. False: measures may be missing. 是否完整。"
    )
    measures: list[AppliedMeasure] = Field(description="Measures that apply. 适用措施。")
    undetermined: list[UndeterminedMeasure] = Field(description="Could not be decided. 无法判定。")


class MemberOutcome(BaseModel):
    """What each member asked did (this node first). 各成员答复情况。"""

    member: str = Field(description="Member id. 成员标识。", examples=["customs"])
    name: str = Field(description="Member name. 成员名称。", examples=["深圳海关"])
    status: Literal["own", "answered", "denied", "unavailable", "timed_out", "skipped"] = Field(
        description="own: this node's store; answered; or why the member's answer is missing. "
        "own 本节点；answered 已答复；其余为未答复原因。"
    )
    reason: str = Field(description="Why its answer is missing, if it is. 未答复原因。")
    elapsed_ms: float = Field(description="Time it took, ms. 用时（毫秒）。")


class SceneOut(BaseModel):
    """The scene screened. 筛查的业务场景。"""

    code: str = Field(description="Scene code. 场景代码。", examples=["land_auction"])
    name_zh: str = Field(description="中文名称。", examples=["土地和矿业权出让竞买"])
    name_en: str = Field(description="English name.", examples=["Land and mining-right auctions"])
    purpose: str = Field(description="The memorandum purpose asked under. 查询用途。")


class Summary(BaseModel):
    """Counts over the whole screening. 筛查汇总。"""

    subjects: int = Field(description="Subjects screened. 筛查主体数。")
    with_measures: int = Field(description="Subjects with at least one measure. 有措施的主体数。")
    measures: int = Field(description="Measures found, all subjects. 措施总数。")
    by_kind: dict[str, int] = Field(description="Measures by kind. 按类型计。")


class ScreeningAnswer(BaseModel):
    """A screening's result. 筛查结果。"""

    model_config = ConfigDict(json_schema_extra={"examples": [_ANSWER_EXAMPLE]})

    format: str = Field(
        description="Document format. 文档格式。", examples=["creditexchange.screening/v1"]
    )
    id: str = Field(description="The screening's id, for feedback. 筛查编号（反馈时使用）。")
    scene: SceneOut
    measures_version: str = Field(description="Measures catalog version. 措施清单版本。")
    memorandum_version: int = Field(description="The memorandum asked under. 备忘录版本。")
    created_at: str = Field(description="China Standard Time, ISO 8601. 筛查时间。")
    complete: bool = Field(
        description="Every member asked answered; false means measures may be missing "
        "(see incomplete_reason), never that there are none. 是否完整。"
    )
    incomplete_reason: str = Field(description="Which members did not answer, why. 不完整原因。")
    members: list[MemberOutcome] = Field(description="The members asked. 被查询成员。")
    summary: Summary = Field(description="Counts. 汇总。")
    subjects: list[ScreenedSubject] = Field(
        description="Per subject, in request order. 逐主体结果。"
    )
    ledger_entry: int | None = Field(
        default=None, description="Index of its entry in this node's ledger. 审计账本条目序号。"
    )


class FeedbackRecorded(BaseModel):
    """One feedback item as recorded. 已记录的反馈。"""

    position: int = Field(description="The subject's position in the screening. 主体序号。")
    subject: str = Field(description="As shown (identity numbers masked). 主体（脱敏）。")
    measure: str = Field(description="The measure's code. 措施代码。")
    outcome: Literal["applied", "not_applied"] = Field(description="已执行 / 未执行。")
    reason: str = Field(description="Why not applied. 未执行原因。")
    officer: str = Field(default="", description="Who gave it. 反馈经办人。")
    recorded_at: str = Field(default="", description="When, China time. 记录时间。")


class StoredScreening(ScreeningAnswer):
    """A stored screening with its feedback, oldest first. 已存筛查结果及反馈。"""

    feedback: list[FeedbackRecorded] = Field(description="Feedback given. 执行反馈。")


class FeedbackItemIn(_Body):
    subject: SubjectId = Field(
        description="The subject, as screened. 被筛查主体的标识。", examples=["91441300MA4W7K3P2D"]
    )
    measure: str = Field(
        min_length=1,
        max_length=64,
        description="The measure's code, as the screening listed it. 措施代码。",
        examples=["serious_dishonesty_list"],
    )
    outcome: Literal["applied", "not_applied"] = Field(
        description="applied 已执行; not_applied 未执行（须说明原因）."
    )
    reason: str = Field(
        default="",
        max_length=1000,
        description="Required when not applied: why. 未执行时必填原因。",
        examples=["该企业已完成信用修复，移出名单"],
    )

    @model_validator(mode="after")
    def _reason_when_not_applied(self) -> FeedbackItemIn:
        if self.outcome == "not_applied" and not self.reason.strip():
            raise ValueError("a measure not applied needs its reason: say why in 'reason'")
        return self


class FeedbackRequest(_Body):
    """What the department did, per subject and measure. 部门执行情况反馈。"""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {
                            "subject": _LAND_AUCTION_BIDDERS[0],
                            "measure": "serious_dishonesty_list",
                            "outcome": "applied",
                        },
                        {
                            "subject": _LAND_AUCTION_BIDDERS[0],
                            "measure": "customs_seriously_dishonest",
                            "outcome": "not_applied",
                            "reason": "非土地竞买的法定禁止情形",
                        },
                    ]
                }
            ]
        },
    )

    items: list[FeedbackItemIn] = Field(
        min_length=1,
        max_length=10_000,
        description="One item per subject and measure. 每个主体、每项措施一条。",
        examples=[
            [
                {
                    "subject": "91441300MA4W7K3P2D",
                    "measure": "serious_dishonesty_list",
                    "outcome": "applied",
                }
            ]
        ],
    )


class FeedbackAnswer(BaseModel):
    """The feedback recorded. 反馈记录结果。"""

    screening_id: str = Field(description="The screening. 筛查编号。")
    recorded: int = Field(description="Items recorded. 已记录条数。")
    applied: int = Field(description="Items applied. 已执行条数。")
    not_applied: int = Field(description="Items not applied. 未执行条数。")
    items: list[FeedbackRecorded] = Field(description="The items recorded. 已记录条目。")
    ledger_entry: int = Field(description="Index of its entry in this node's ledger. 账本序号。")


# --- the routes --------------------------------------------------------------------------


def _measures(request: Request, gateway: Gateway) -> MeasuresCatalog:
    """The node's measures catalog, loaded once per app and checked against its data
    catalog and the installed memorandum's purposes."""
    loaded: MeasuresCatalog | None = getattr(request.app.state, "measures", None)
    if loaded is not None:
        return loaded
    setting = gateway.config.settings.measures_path
    try:
        loaded = load_measures(
            gateway.config.path(setting) if setting is not None else None,
            catalog=gateway.catalog,
            purposes=list(gateway.region.federation.memorandum.purpose_by_code),
        )
    except ScreeningError as exc:
        raise Problem(
            503,
            "measures-catalog",
            "Measures catalog unusable",
            f"{exc}. The node's operator must correct the measures catalog (measures_path).",
        ) from None
    request.app.state.measures = loaded
    return loaded


def _problem(exc: ScreeningError) -> Problem:
    if isinstance(exc, UnknownScene):
        return Problem(422, "unknown-scene", "Unknown scene", str(exc))
    if isinstance(exc, UnknownScreening):
        return Problem(404, "screening-not-found", "No such screening", str(exc))
    if isinstance(exc, NotYourScreening):
        return Problem(403, "not-your-screening", "Screening of another partner", str(exc))
    if isinstance(exc, UnscreenedFeedback):
        return Problem(422, "not-screened", "Not in the screening", str(exc))
    return Problem(
        422, "invalid-screening", "Screening or feedback not possible as asked", str(exc)
    )


_UNUSABLE: Final = (
    503,
    "The node's measures catalog cannot be used; its operator must correct it. 措施清单不可用。",
)

ScreeningId = Annotated[
    str,
    Path(
        max_length=64,
        description="The id a screening answered. 筛查编号。",
        examples=["5f0c6a2e9b7d4c1e8a3f2b1c0d9e8f7a"],
    ),
]


@router.post(
    "/v1/screenings",
    status_code=201,
    response_model=ScreeningAnswer,
    summary="Screen subjects for joint rewards and punishments · 联合奖惩筛查",
    responses=problem_responses(
        (400, "An identifier fails its check character; nothing was sent. 标识无效，未发出查询。"),
        (
            403,
            "The scene's purpose or a subject type is not registered for this partner. "
            "用途或主体类型未登记。",
        ),
        413,
        (
            422,
            "Unknown scene, a subject twice or of a type the scene does not screen, too many "
            "subjects, a field out of bounds. 场景未知或主体无效。",
        ),
        _UNUSABLE,
    ),
)
async def create_screening(
    request: Request,
    response: Response,
    asker: PartnerDep,
    gateway: GatewayDep,
    body: Annotated[ScreeningRequest, Body()],
) -> dict[str, Any]:
    """Screen up to 1,000 subjects in a business scene: per subject, the measures of the
    measures catalog that apply, each with the records that trigger it, the member holding
    them and the legal basis. Members that did not answer are listed and the screening is
    marked incomplete. 对最多 1000 个主体按业务场景进行联合奖惩筛查。"""
    measures = _measures(request, gateway)
    try:
        scene = measures.scene(body.scene)
    except ScreeningError as exc:
        raise _problem(UnknownScene(str(exc))) from None
    asker.require_purpose(scene.purpose)
    if len(body.subjects) > gateway.limits.max_subjects:
        gateway.metrics.refused.labels("size").inc()
        raise Problem(
            413,
            "too-many-subjects",
            "Too many subjects",
            f"{len(body.subjects)} subjects; this node screens at most "
            f"{gateway.limits.max_subjects} at once: split the list",
        )
    asker.require_subject_types(kind for _, kind in askable.subject_types(body.subjects))
    asker.charge(len(body.subjects) / 100)  # a batch weighs on the rate
    try:
        screened = await screen(
            gateway.region,
            measures,
            scene.code,
            body.subjects,
            case_reference=body.case_reference,
            officer=asker.officer,
            partner=asker.name,
            legal_basis=body.legal_basis,
            deadline_s=gateway.limits.deadline_s,
        )
    except ScreeningError as exc:
        raise _problem(exc) from None
    receipt = await gateway.record(
        asker.caller,
        asker.officer,
        f"POST /v1/screenings id={screened.id} scene={scene.code} "
        f"subjects={len(screened.subjects)} measures={len(screened.triggered)} "
        f"complete={'yes' if screened.complete else 'no'}",
        kind=audit_pb2.SCREENING,
        case_reference=body.case_reference,
        purpose=scene.purpose,
        subjects=[canonical for canonical, _ in screened.subjects],
        status="OK" if screened.complete else "INCOMPLETE",
        message=screened.document["incomplete_reason"],
        side_writes=[
            screening_write(
                screened,
                hmac_key=gateway.hmac_key,
                partner=asker.name,
                officer=asker.officer,
                case_reference=body.case_reference,
            )
        ],
    )
    for _, _, kind, _ in screened.triggered:
        gateway.metrics.screening_triggers.labels(scene.code, kind).inc()
    response.headers["Location"] = f"/v1/screenings/{screened.id}"
    return {**screened.document, "ledger_entry": receipt.index}


@router.get(
    "/v1/screenings/{screening_id}",
    response_model=StoredScreening,
    summary="A screening and its feedback · 筛查结果及反馈",
    responses=problem_responses(
        (403, "Made by another partner system. 非本系统发起的筛查。"),
        (404, "No such screening. 无此筛查。"),
    ),
)
async def get_screening(
    screening_id: ScreeningId, asker: PartnerDep, gateway: GatewayDep
) -> dict[str, Any]:
    """The screening as it was answered, with the feedback given since; only to the
    partner system that made it. 返回本系统发起的筛查结果及其反馈。"""
    try:
        document = await asyncio.to_thread(
            read_screening, gateway.database, screening_id, asker.name
        )
    except ScreeningError as exc:
        raise _problem(exc) from None
    await gateway.record(
        asker.caller,
        asker.officer,
        f"GET /v1/screenings/{screening_id}",
        purpose=document["scene"]["purpose"],
    )
    return document


@router.post(
    "/v1/screenings/{screening_id}/feedback",
    status_code=201,
    response_model=FeedbackAnswer,
    summary="Record what the department did · 联合奖惩执行反馈",
    responses=problem_responses(
        (400, "A subject identifier fails its check character. 标识无效。"),
        (403, "Made by another partner system. 非本系统发起的筛查。"),
        (404, "No such screening. 无此筛查。"),
        413,
        (
            422,
            "A subject not screened, a measure not found for it, a not_applied without its "
            "reason, a field out of bounds. 主体或措施不在筛查中，或缺少原因。",
        ),
    ),
)
async def give_feedback(
    screening_id: ScreeningId,
    asker: PartnerDep,
    gateway: GatewayDep,
    body: Annotated[FeedbackRequest, Body()],
) -> dict[str, Any]:
    """Per subject and measure of the screening: applied, or not applied and why. Only the
    partner system that screened may give it; a later feedback on the same measure
    supersedes the earlier one in the counts. 按主体和措施反馈执行情况。"""
    items = [
        FeedbackItem(i.subject, i.measure, FeedbackOutcome(i.outcome), i.reason) for i in body.items
    ]
    try:
        batch = await asyncio.to_thread(
            resolve_feedback,
            gateway.database,
            screening_id,
            asker.name,
            items,
            hmac_keys=gateway.subject_secrets,
        )
    except ScreeningError as exc:
        raise _problem(exc) from None
    applied = sum(1 for r in batch.items if r.outcome is FeedbackOutcome.APPLIED)
    recorded_us = batch.recorded_us
    receipt = await gateway.record(
        asker.caller,
        asker.officer,
        f"POST /v1/screenings/{screening_id}/feedback scene={batch.scene} "
        f"items={len(batch.items)} applied={applied} not_applied={len(batch.items) - applied}",
        kind=audit_pb2.FEEDBACK,
        case_reference=batch.case_reference,
        purpose=batch.purpose,
        subjects=list(dict.fromkeys(r.subject for r in batch.items)),
        side_writes=[feedback_write(batch, officer=asker.officer, recorded_us=recorded_us)],
    )
    return {
        "screening_id": screening_id,
        "recorded": len(batch.items),
        "applied": applied,
        "not_applied": len(batch.items) - applied,
        "items": [
            {
                "position": r.position,
                "subject": r.shown,
                "measure": r.measure,
                "outcome": r.outcome.value,
                "reason": r.reason,
                "officer": asker.officer,
            }
            for r in batch.items
        ],
        "ledger_entry": receipt.index,
    }

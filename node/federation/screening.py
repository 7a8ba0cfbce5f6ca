"""Joint reward and punishment screening (联合奖惩 "trigger and feedback").

A department about to act on some subjects — admit bidders to a land auction, pay
a grant, buy grain, hire — asks which measures of the measures catalog
(:mod:`creditexchange.node.measures`) apply to each of them in its scene.
:func:`screen` answers in two rounds, under the scene's memorandum purpose:

1. **Hit / no-hit** for every subject on the themes the scene's triggers read: one
   batch check per member the memorandum lets this node ask (``fanout.prepare`` and
   ``ask_everyone``, one deadline) and, meanwhile, one read of this node's own store.
2. **The triggering records, only for the hits**: a full query per (subject, member)
   that hit, restricted to the themes that hit, for organisations only. Nothing is
   read in full about a subject that hit nothing, nor about a theme it did not hit;
   an individual is never asked in full (the memorandum answers individuals hit /
   no-hit only), so an individual's measure names the list and the member, not the
   record.

Then each trigger of the scene is evaluated on the records found (a customs grade
must be 严重失信企业 to trigger "seriously dishonest"). Promises:

* **Never a silent "no measures".** A member that did not answer the first round
  (denied, unavailable, timed out, skipped) is listed, and the screening is marked
  incomplete; a hit whose record could not be read (the member answers this purpose
  in check mode only, or it did not answer the second round) still triggers every
  unconditional trigger, and is listed as ``undetermined`` for a trigger whose
  condition needs the record's fields.
* **Every call carries the partner and the officer**, so each member asked records
  them in its own ledger, and this node records them in every OUTGOING entry.
* **Nothing in clear that identifies a person**: the stored result shows
  individuals' ids masked; the stored subjects are HMACs under the ledger's key
  (:func:`~creditexchange.node.ledger.entries.subject_hmac`), so feedback that names
  a subject again is matched through the same HMAC.
* **Stored with its ledger entry.** :func:`screening_write` and :func:`feedback_write`
  are side writes of the gateway's SCREENING and FEEDBACK entries: the screening and
  its feedback are in the tables exactly when they are in the ledger.
* **Feedback only from the partner that screened**, only on a subject it screened
  and a measure found applying to it; a ``not_applied`` says why. Feedback is
  append-only: a later one on the same measure supersedes the earlier in
  :func:`measures_report`, and both stay.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import unicodedata
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

import orjson
from sqlalchemy import Dialect, Engine, bindparam, insert, select

from creditexchange.clock import CST, china_today, now_us
from creditexchange.errors import (
    NotYourScreening,
    ScreeningError,
    UnknownScene,
    UnknownScreening,
    UnscreenedFeedback,
)
from creditexchange.identifiers import mask_identifier, mask_subject_name, subject_type_of
from creditexchange.node.database.driver import Prepared
from creditexchange.node.database.models import (
    SCREENING_FEEDBACK,
    SCREENING_SUBJECTS,
    SCREENING_TRIGGERS,
    SCREENINGS,
)
from creditexchange.node.exchange.answer_view import VerifiedAnswer
from creditexchange.node.federation.fanout import (
    DEFAULT_DEADLINE_S,
    Asking,
    FanOut,
    Outcome,
    RegionalClient,
    ask_everyone,
    fan_out,
    prepare,
)
from creditexchange.node.ledger.entries import subject_hmac
from creditexchange.node.ledger.log import SideWrite
from creditexchange.node.measures import MeasureKind, MeasuresCatalog, Scene, Trigger
from creditexchange.node.records import repository
from creditexchange.policy.document import Mode
from creditexchange.subjects import is_individual
from creditexchange.v1 import exchange_pb2

__all__ = [
    "FORMAT",
    "DetailLevel",
    "Evidence",
    "FeedbackBatch",
    "FeedbackItem",
    "FeedbackOutcome",
    "ResolvedFeedback",
    "SceneCount",
    "Screened",
    "feedback_write",
    "measures_report",
    "read_screening",
    "resolve_feedback",
    "screen",
    "screening_write",
]

FORMAT: Final = "creditexchange.screening/v1"

_DETAIL_CALLS: Final = 32
"""The most second-round queries (records of the hits) in flight at once."""


class DetailLevel(StrEnum):
    RECORD = "record"  # the record was read: key, department, dates, the condition's field
    HIT_ONLY = "hit_only"  # only that the subject is on the list: the record was not read


@dataclass(frozen=True)
class Evidence:
    """A record behind a trigger (or, at ``HIT_ONLY``, the hit behind it) at one member.

    ``fields`` holds the values a condition may read (codes, revealed by the member or
    from this node's own store); None when the record was not read."""

    member: str
    theme: str
    detail: DetailLevel
    record_key: str = ""
    source_department: str = ""
    decision_date: str = ""
    valid_until: str = ""
    under_objection: bool = False
    fields: Mapping[str, str] | None = None
    note: str = ""
    copy: bool = False  # from this node's synced copy of the member's feed


@dataclass(frozen=True)
class Screened:
    """A screening as made: its id, the document answered and stored, the subjects
    (canonical id, type) in the request's order, and the measures found applying as
    (position, trigger, kind, binding)."""

    id: str
    scene: Scene
    created_us: int
    document: dict[str, Any]
    subjects: tuple[tuple[str, str], ...]
    triggered: tuple[tuple[int, str, str, bool], ...]

    @property
    def complete(self) -> bool:
        return bool(self.document["complete"])


# --- screening --------------------------------------------------------------------------


def _scene(measures: MeasuresCatalog, code: str) -> Scene:
    try:
        return measures.scene(code)
    except ScreeningError as exc:
        raise UnknownScene(str(exc)) from None


def _default_legal_basis(region: RegionalClient, scene: Scene) -> str:
    """The basis a provider is told when the partner gives none: the scene and the
    memorandum purpose's own basis, as NFKC text within a header's limit."""
    purpose = region.federation.memorandum.purpose_by_code.get(scene.purpose)
    basis = " ".join((purpose.legal_basis if purpose else "").split())
    text = unicodedata.normalize("NFKC", f"联合奖惩 {scene.name_zh}: {basis}")
    return text[:512].strip()


async def screen(
    region: RegionalClient,
    measures: MeasuresCatalog,
    scene_code: str,
    subjects: Sequence[str],
    *,
    case_reference: str,
    officer: str,
    partner: str,
    legal_basis: str = "",
    deadline_s: float = DEFAULT_DEADLINE_S,
) -> Screened:
    """Screen ``subjects`` for the measures of ``scene_code`` (see the module).

    Refused before anything is sent: an unknown scene (:class:`UnknownScene`), a subject
    listed twice or of a type the scene's purpose does not cover (ScreeningError), an
    identifier whose check character is wrong, too many subjects or a header text a
    provider would refuse (ExchangeError, from ``fanout.prepare``).
    """
    scene = _scene(measures, scene_code)
    themes = measures.themes_of(scene)
    asking = prepare(
        region,
        subjects,
        purpose=scene.purpose,
        legal_basis=legal_basis or _default_legal_basis(region, scene),
        case_reference=case_reference,
        officer=officer,
        partner=partner,
        mode=Mode.CHECK,
        themes=themes,
    )
    _refuse_repeats_and_uncovered(region, scene, asking.subjects)
    own_task = asyncio.create_task(asyncio.to_thread(_own_records, region, asking.subjects, themes))
    try:
        fanned = await ask_everyone(region, asking, deadline_s=deadline_s)
    except BaseException:
        await asyncio.gather(own_task, return_exceptions=True)
        raise
    own, names = await own_task
    evidence: list[list[Evidence]] = [list(e) for e in own]
    hits: dict[tuple[int, str], list[str]] = {}
    for result in fanned.results:
        if result.answer is None:
            continue
        for i, answered in enumerate(result.answer.body.subjects):
            hit = [t.theme for t in answered.themes if t.allowed and t.hit]
            if hit:
                hits[(i, result.member)] = hit
    details = await _read_hits(region, asking, hits, deadline_s)
    for (i, member), hit_themes in hits.items():
        detail = details.get((i, member), _Detail(reason=_INDIVIDUAL))
        if detail.name:
            names.setdefault(i, detail.name)
        for theme in hit_themes:
            records = detail.records.get(theme)
            if records is None:
                reason = detail.reasons.get(theme, detail.reason)
                evidence[i].append(Evidence(member, theme, DetailLevel.HIT_ONLY, note=reason))
            else:
                evidence[i].extend(records)
    evidence = [_without_repeats(e) for e in evidence]
    return _screened(region, measures, scene, asking.subjects, fanned, evidence, names)


def _without_repeats(evidence: Sequence[Evidence]) -> list[Evidence]:
    """Each record once: a member's own answer wins over this node's synced copy of it."""
    answered = {(e.member, e.theme, e.record_key) for e in evidence if not e.copy}
    return [e for e in evidence if not (e.copy and (e.member, e.theme, e.record_key) in answered)]


def _refuse_repeats_and_uncovered(
    region: RegionalClient, scene: Scene, subjects: Sequence[tuple[str, str]]
) -> None:
    first: dict[str, int] = {}
    for position, (canonical, _) in enumerate(subjects):
        if canonical in first:
            raise ScreeningError(
                f"subject {position + 1} repeats subject {first[canonical] + 1}: name each "
                "subject once (feedback is given per subject)"
            )
        first[canonical] = position
    covered = region.federation.memorandum.purpose_by_code[scene.purpose].subject_types
    for position, (_, kind) in enumerate(subjects):
        if kind not in covered:
            raise ScreeningError(
                f"subject {position + 1} is of type {kind}; the scene {scene.code} (purpose "
                f"{scene.purpose}) screens {', '.join(covered)} only: remove it; nothing was sent"
            )


def _stored(
    member: str,
    record: repository.StoredRecord | repository.SyncedCopy,
    subject_type: str,
    under_objection: bool,
    note: str = "",
    *,
    copy: bool = False,
) -> Evidence:
    """A record of this node's store (its own, or its copy of ``member``'s feed) as
    evidence: an individual's as a hit only."""
    individual = is_individual(subject_type)
    fields = {k: "" if v is None else str(v) for k, v in orjson.loads(record.fields).items()}
    return Evidence(
        member,
        record.theme,
        DetailLevel.HIT_ONLY if individual else DetailLevel.RECORD,
        record_key="" if individual else record.record_key,
        source_department=record.source_department,
        decision_date=_iso(record.decision_date),
        valid_until="" if individual else _iso(record.valid_until),
        under_objection=under_objection,
        fields=fields,
        note=note or ("an individual's record is shown as a hit only" if individual else ""),
        copy=copy,
    )


def _own_records(
    region: RegionalClient, subjects: Sequence[tuple[str, str]], themes: Sequence[str]
) -> tuple[list[list[Evidence]], dict[int, str]]:
    """This node's own servable records of ``subjects`` in ``themes`` (one read) and its
    synced copies of other members' feeds (customs' grades, cases, lights: shown as
    the origin's, noted as the copy), as evidence, and the names of the subjects it holds
    (by position)."""
    with region.store.connect() as conn:
        found = repository.read_subjects(
            conn.connection.driver_connection,
            conn.dialect,
            [s for s, _ in subjects],
            themes,
            china_today(),
        )
        synced = repository.read_synced(conn, [s for s, _ in subjects], china_today(), themes)
    position = {s: i for i, (s, _) in enumerate(subjects)}
    evidence: list[list[Evidence]] = [[] for _ in subjects]
    for record in found.records:
        i = position[record.subject_id]
        evidence[i].append(
            _stored(region.member_id, record, subjects[i][1], record.under_objection)
        )
    for copy in synced:  # customs' data as this node keeps it from customs' feed
        i = position[copy.subject_id]
        objection = copy.status == repository.RecordStatus.OBJECTION
        note = f"from {region.member_id}'s synced copy of {copy.origin}'s feed"
        evidence[i].append(_stored(copy.origin, copy, subjects[i][1], objection, note, copy=True))
    names = {
        position[s]: mask_subject_name(name, kind) for s, (kind, name) in found.subjects.items()
    }
    for copy in synced:
        names.setdefault(
            position[copy.subject_id], mask_subject_name(copy.subject_name, copy.subject_type)
        )
    return evidence, names


def _iso(value: dt.date | None) -> str:
    return value.isoformat() if value is not None else ""


_INDIVIDUAL: Final = "an individual is answered hit / no-hit only: the record is not read"


@dataclass(frozen=True)
class _Detail:
    """A member's second-round answer about one subject: the records of each hit theme it
    revealed, why a theme's records (``reasons``) or the whole call's (``reason``) were
    not read, and the subject's name as the member shows it."""

    records: dict[str, list[Evidence]] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    reason: str = ""
    name: str = ""


async def _read_hits(
    region: RegionalClient,
    asking: Asking,
    hits: Mapping[tuple[int, str], Sequence[str]],
    deadline_s: float,
) -> dict[tuple[int, str], _Detail]:
    """The second round: per (subject, member) that hit, a full query of the hit themes,
    for organisations only (an individual has no entry), every subject's members under
    one deadline, at most :data:`_DETAIL_CALLS` calls at once."""
    subjects = asking.subjects
    by_subject: dict[int, list[str]] = {}
    for i, member in hits:
        if not is_individual(subjects[i][1]):
            by_subject.setdefault(i, []).append(member)
    gate = asyncio.Semaphore(_DETAIL_CALLS)
    client = region.client

    async def one_subject(i: int, members: list[str]) -> FanOut:
        subject = subjects[i][0]

        async def ask(member: str, timeout: float) -> VerifiedAnswer:
            async with gate:
                return await client.query(
                    subject,
                    to=member,
                    themes=hits[(i, member)],
                    timeout=timeout,
                    purpose=asking.purpose,
                    legal_basis=asking.legal_basis,
                    case_reference=asking.case_reference,
                    officer=asking.officer,
                    partner=asking.partner,
                )

        return await fan_out(region, members, ask, deadline_s=deadline_s)

    order = list(by_subject.items())
    fanned = await asyncio.gather(*(one_subject(i, members) for i, members in order))
    read: dict[tuple[int, str], _Detail] = {}
    for (i, _), results in zip(order, fanned, strict=True):
        for result in results.results:
            if result.answer is None:
                reason = f"the record was not read: {result.outcome.value}: {result.reason}"
                read[(i, result.member)] = _Detail(reason=reason)
            else:
                read[(i, result.member)] = _answer_detail(result.member, result.answer.body)
    return read


def _answer_detail(member: str, body: exchange_pb2.AnswerBody) -> _Detail:
    """The records in a member's full answer about one subject, per theme."""
    detail = _Detail()
    (subject,) = body.subjects
    for theme in subject.themes:
        if not theme.allowed:
            detail.reasons[theme.theme] = (
                "the record was not read: the memorandum answers hit / no-hit only here "
                f"({theme.reason or theme.status})"
            )
            continue
        revealed = set(theme.revealed_fields)
        detail.records[theme.theme] = [
            Evidence(
                member,
                theme.theme,
                DetailLevel.RECORD,
                record_key=r.record_key,
                source_department=r.source_department,
                decision_date=r.decision_date,
                valid_until=r.valid_until,
                under_objection=r.under_objection,
                fields={k: v for k, v in r.fields.items() if k in revealed},
            )
            for r in theme.records
        ]
    if subject.found and subject.name:
        return _Detail(detail.records, detail.reasons, name=subject.name)
    return detail


# --- the result ---------------------------------------------------------------------


def _evaluate(
    measures: MeasuresCatalog, scene: Scene, evidence: Sequence[Evidence]
) -> tuple[list[tuple[Trigger, list[Evidence]]], list[tuple[Trigger, list[Evidence]]]]:
    """The scene's triggers that fire on ``evidence``, each with the evidence that fires
    it, and those that may fire but cannot be decided (the record was not read)."""
    firing: list[tuple[Trigger, list[Evidence]]] = []
    unsure: list[tuple[Trigger, list[Evidence]]] = []
    for trigger in measures.triggers_of(scene):
        fired: list[Evidence] = []
        undecided: list[Evidence] = []
        for e in _current(trigger, evidence):
            if e.theme not in trigger.themes:
                continue
            condition = trigger.condition
            if condition is not None and (e.fields is None or condition.field not in e.fields):
                undecided.append(e)
            elif trigger.fires_on(e.theme, e.fields or {}):
                fired.append(e)
        if fired:
            firing.append((trigger, fired))
        elif undecided:
            unsure.append((trigger, undecided))
    return firing, unsure


def _current(trigger: Trigger, evidence: Sequence[Evidence]) -> list[Evidence]:
    """``evidence`` less the records a later one replaced, for a trigger on a state
    (``latest_per``): per member, theme and value of those fields, the records of the
    latest decision date. Hits whose record was not read are kept as they are."""
    if trigger.latest_per is None:
        return list(evidence)
    latest: dict[tuple[str, ...], str] = {}

    def group(e: Evidence) -> tuple[str, ...]:
        fields = e.fields or {}
        return (e.member, e.theme, *(fields.get(f, "") for f in trigger.latest_per or ()))

    read = [e for e in evidence if e.detail is DetailLevel.RECORD and e.fields is not None]
    for e in read:
        key = group(e)
        latest[key] = max(latest.get(key, ""), e.decision_date)
    return [
        e
        for e in evidence
        if e.detail is not DetailLevel.RECORD
        or e.fields is None
        or e.decision_date == latest[group(e)]
    ]


def _evidence_json(region: RegionalClient, trigger: Trigger, e: Evidence) -> dict[str, Any]:
    catalog = region.catalog
    member = region.federation.memorandum.member_by_id.get(e.member)
    theme = catalog.theme_by_code.get(e.theme)
    department = catalog.department_by_code.get(e.source_department)
    condition = trigger.condition
    shown = e.detail is DetailLevel.RECORD and condition is not None and e.fields is not None
    return {
        "member": e.member,
        "member_name": member.name_zh if member else e.member,
        "theme": e.theme,
        "theme_name": theme.name_zh if theme else e.theme,
        "detail": e.detail.value,
        "record_key": e.record_key,
        "source_department": e.source_department,
        "source_department_name": department.name_zh if department else e.source_department,
        "decision_date": e.decision_date,
        "valid_until": e.valid_until,
        "under_objection": e.under_objection,
        "condition": (
            {"field": condition.field, "value": (e.fields or {}).get(condition.field, "")}
            if shown and condition is not None
            else None
        ),
        "note": e.note,
    }


def _member_rows(region: RegionalClient, fanned: FanOut, themes: Sequence[str]) -> list[Any]:
    memorandum = region.federation.memorandum

    def name(member: str) -> str:
        known = memorandum.member_by_id.get(member)
        return known.name_zh if known else member

    rows: list[dict[str, Any]] = [
        {
            "member": region.member_id,
            "name": name(region.member_id),
            "status": "own",
            "reason": "",
            "elapsed_ms": 0.0,
        }
    ]
    for result in fanned.results:
        answered: list[str] = []
        if result.answer is not None and result.answer.body.subjects:
            answered = [t.theme for t in result.answer.body.subjects[0].themes if t.allowed]
        rows.append(
            {
                "member": result.member,
                "name": name(result.member),
                "status": result.outcome.value,
                "reason": result.reason
                or ("" if answered else f"answers none of {', '.join(themes)} for this scene"),
                "elapsed_ms": float(result.elapsed_ms),
            }
        )
    return rows


def _screened(
    region: RegionalClient,
    measures: MeasuresCatalog,
    scene: Scene,
    subjects: Sequence[tuple[str, str]],
    fanned: FanOut,
    evidence: Sequence[Sequence[Evidence]],
    names: Mapping[int, str],
) -> Screened:
    created_us = now_us()
    missing = [r for r in fanned.results if r.outcome is not Outcome.ANSWERED]
    complete = not missing
    by_kind = {kind.value: 0 for kind in MeasureKind}
    triggered: list[tuple[int, str, str, bool]] = []
    rows = []
    for i, (canonical, kind) in enumerate(subjects):
        firing, unsure = _evaluate(measures, scene, evidence[i])
        applied = []
        for trigger, fired in firing:
            measure = scene.measure_by_trigger[trigger.code]
            by_kind[measure.kind.value] += 1
            triggered.append((i, trigger.code, measure.kind.value, measure.binding))
            applied.append(
                {
                    "measure": trigger.code,
                    "trigger_name_zh": trigger.name_zh,
                    "trigger_name_en": trigger.name_en,
                    "kind": measure.kind.value,
                    "description_zh": measure.description_zh,
                    "description_en": measure.description_en,
                    "legal_basis": measure.legal_basis,
                    "binding": measure.binding,
                    "records": [_evidence_json(region, trigger, e) for e in fired],
                }
            )
        rows.append(
            {
                "position": i,
                "subject": mask_identifier(canonical, kind),
                "subject_type": kind,
                "name": mask_subject_name(names.get(i, ""), kind),
                "complete": complete,
                "measures": applied,
                "undetermined": [
                    {
                        "measure": trigger.code,
                        "trigger_name_zh": trigger.name_zh,
                        "kind": scene.measure_by_trigger[trigger.code].kind.value,
                        "records": [_evidence_json(region, trigger, e) for e in undecided],
                    }
                    for trigger, undecided in unsure
                ],
            }
        )
    screening_id = uuid.uuid4().hex
    document = {
        "format": FORMAT,
        "id": screening_id,
        "scene": {
            "code": scene.code,
            "name_zh": scene.name_zh,
            "name_en": scene.name_en,
            "purpose": scene.purpose,
        },
        "measures_version": measures.version,
        "memorandum_version": region.federation.version,
        "created_at": _time(created_us),
        "complete": complete,
        "incomplete_reason": "; ".join(f"{r.member}: {r.reason}" for r in missing),
        "members": _member_rows(region, fanned, measures.themes_of(scene)),
        "summary": {
            "subjects": len(subjects),
            "with_measures": sum(1 for r in rows if r["measures"]),
            "measures": len(triggered),
            "by_kind": by_kind,
        },
        "subjects": rows,
    }
    return Screened(screening_id, scene, created_us, document, tuple(subjects), tuple(triggered))


def _time(us: int) -> str:
    return dt.datetime.fromtimestamp(us / 1e6, CST).isoformat(timespec="seconds")


# --- storage: side writes of the ledger entries ----------------------------------------


def _insert(table: Any) -> Prepared:
    return Prepared(
        insert(table).values({c.name: bindparam(c.name) for c in table.columns if c.name != "id"})
    )


_INSERT_SCREENING: Final = Prepared(
    insert(SCREENINGS).values({c.name: bindparam(c.name) for c in SCREENINGS.columns})
)
_INSERT_SUBJECT: Final = _insert(SCREENING_SUBJECTS)
_INSERT_TRIGGER: Final = _insert(SCREENING_TRIGGERS)
_INSERT_FEEDBACK: Final = _insert(SCREENING_FEEDBACK)


@dataclass(frozen=True)
class _Rows:
    """A side write of the ledger: statements, each with the rows it inserts."""

    batches: tuple[tuple[Prepared, tuple[dict[str, Any], ...]], ...]

    def write(self, cursor: Any, dialect: Dialect) -> None:
        for statement, rows in self.batches:
            if rows:
                statement.executemany(cursor, dialect, rows)


def screening_write(
    screened: Screened,
    *,
    hmac_key: bytes,
    partner: str,
    officer: str,
    case_reference: str,
) -> SideWrite:
    """The side write storing ``screened``, for the transaction of its SCREENING entry."""
    header = {
        "id": screened.id,
        "scene": screened.scene.code,
        "purpose": screened.scene.purpose,
        "partner": partner,
        "officer": officer,
        "case_reference": case_reference,
        "measures_version": screened.document["measures_version"],
        "subject_count": len(screened.subjects),
        "complete": int(screened.complete),
        "created_us": screened.created_us,
        "document": json.dumps(screened.document, ensure_ascii=False, separators=(",", ":")),
    }
    subjects = tuple(
        {
            "screening_id": screened.id,
            "position": i,
            "subject_hmac": subject_hmac(hmac_key, canonical),
            "subject": mask_identifier(canonical, kind),
            "subject_type": kind,
        }
        for i, (canonical, kind) in enumerate(screened.subjects)
    )
    triggers = tuple(
        {
            "screening_id": screened.id,
            "position": position,
            "trigger": trigger,
            "kind": kind,
            "binding": int(binding),
        }
        for position, trigger, kind, binding in screened.triggered
    )
    return _Rows(
        (
            (_INSERT_SCREENING, (header,)),
            (_INSERT_SUBJECT, subjects),
            (_INSERT_TRIGGER, triggers),
        )
    )


# --- reading a screening back ------------------------------------------------------------


def _owned(engine: Engine, screening_id: str, partner: str) -> Any:
    """The screening's row, if ``partner`` made it (UnknownScreening, NotYourScreening)."""
    unknown = UnknownScreening(
        f"no screening {screening_id[:40]!r} on this node: use the id a POST /v1/screenings "
        "answered"
    )
    if len(screening_id) != 32 or not all(c in "0123456789abcdef" for c in screening_id):
        raise unknown
    with engine.connect() as conn:
        row = conn.execute(select(SCREENINGS).where(SCREENINGS.c.id == screening_id)).first()
    if row is None:
        raise unknown
    if row.partner != partner:
        raise NotYourScreening(
            f"screening {screening_id} was made by another partner system; only the partner "
            "that screened may read it or give its feedback"
        )
    return row


def read_screening(engine: Engine, screening_id: str, partner: str) -> dict[str, Any]:
    """The stored screening as it was answered, with the feedback given since (oldest
    first), for the ``partner`` that made it."""
    row = _owned(engine, screening_id, partner)
    document: dict[str, Any] = json.loads(row.document)
    c = SCREENING_FEEDBACK.c
    with engine.connect() as conn:
        feedback = conn.execute(
            select(SCREENING_FEEDBACK).where(c.screening_id == screening_id).order_by(c.id)
        ).all()
    shown = {s["position"]: s["subject"] for s in document["subjects"]}
    document["feedback"] = [
        {
            "position": f.position,
            "subject": shown.get(f.position, ""),
            "measure": f.trigger,
            "outcome": f.outcome,
            "reason": f.reason,
            "officer": f.officer,
            "recorded_at": _time(f.recorded_us),
        }
        for f in feedback
    ]
    return document


# --- feedback -------------------------------------------------------------------------------


class FeedbackOutcome(StrEnum):
    APPLIED = "applied"
    NOT_APPLIED = "not_applied"


@dataclass(frozen=True)
class FeedbackItem:
    """What the department did with one measure for one subject (as the partner says it)."""

    subject: str
    measure: str
    outcome: FeedbackOutcome
    reason: str = ""


@dataclass(frozen=True)
class ResolvedFeedback:
    """A feedback item matched to the screening: the subject's position, its canonical id
    (for the ledger entry's HMAC only) and its id as shown."""

    position: int
    subject: str
    shown: str
    measure: str
    outcome: FeedbackOutcome
    reason: str


@dataclass(frozen=True)
class FeedbackBatch:
    """Feedback matched to its screening, ready to record: the screening's scene, purpose
    and case (for the FEEDBACK entry) and the items."""

    screening_id: str
    scene: str
    purpose: str
    case_reference: str
    items: tuple[ResolvedFeedback, ...]
    recorded_us: int


def resolve_feedback(
    engine: Engine,
    screening_id: str,
    partner: str,
    items: Sequence[FeedbackItem],
    *,
    hmac_keys: Sequence[bytes],
) -> FeedbackBatch:
    """``items`` matched to the screening, or the refusal that leaves everything unwritten:
    UnknownScreening, NotYourScreening, InvalidIdentifier, UnscreenedFeedback (a subject
    not screened, a measure not found applying to it), ScreeningError (no item, an item
    twice, a ``not_applied`` without its reason)."""
    screening = _owned(engine, screening_id, partner)
    if not items:
        raise ScreeningError("no feedback item: give at least one (subject, measure, outcome)")
    with engine.connect() as conn:
        subjects = conn.execute(
            select(
                SCREENING_SUBJECTS.c.position,
                SCREENING_SUBJECTS.c.subject_hmac,
                SCREENING_SUBJECTS.c.subject,
            ).where(SCREENING_SUBJECTS.c.screening_id == screening_id)
        ).all()
        triggered = conn.execute(
            select(SCREENING_TRIGGERS.c.position, SCREENING_TRIGGERS.c.trigger).where(
                SCREENING_TRIGGERS.c.screening_id == screening_id
            )
        ).all()
    position_of = {bytes(s.subject_hmac): (s.position, s.subject) for s in subjects}
    found: dict[int, list[str]] = {}
    for t in triggered:
        found.setdefault(t.position, []).append(t.trigger)
    resolved: list[ResolvedFeedback] = []
    seen: set[tuple[int, str]] = set()
    for n, item in enumerate(items, start=1):
        canonical, _ = subject_type_of(item.subject)  # InvalidIdentifier names what is wrong
        # the screening keyed its subjects with the key in force then: try every key held
        hmacs = (subject_hmac(key, canonical) for key in hmac_keys)
        match = next((position_of[h] for h in hmacs if h in position_of), None)
        if match is None:
            raise UnscreenedFeedback(
                f"item {n}: that subject was not screened in {screening_id}; give feedback "
                "only on the subjects the screening named"
            )
        position, shown = match
        if item.measure not in found.get(position, []):
            listed = ", ".join(found.get(position, [])) or "no measure"
            raise UnscreenedFeedback(
                f"item {n}: measure {item.measure[:64]!r} was not found applying to subject "
                f"{position} ({shown}); the screening found {listed} for it"
            )
        if (position, item.measure) in seen:
            raise ScreeningError(
                f"item {n}: subject {position} and measure {item.measure} are given twice; "
                "give each once"
            )
        seen.add((position, item.measure))
        reason = " ".join(item.reason.split())
        if item.outcome is FeedbackOutcome.NOT_APPLIED and not reason:
            raise ScreeningError(
                f"item {n}: a measure not applied needs its reason (e.g. the listing was "
                "repaired, or a court decision): say why in 'reason'"
            )
        resolved.append(
            ResolvedFeedback(position, canonical, shown, item.measure, item.outcome, reason)
        )
    return FeedbackBatch(
        screening_id,
        screening.scene,
        screening.purpose,
        screening.case_reference,
        tuple(resolved),
        now_us(),
    )


def feedback_write(batch: FeedbackBatch, *, officer: str, recorded_us: int) -> SideWrite:
    """The side write storing ``batch``, for the transaction of its FEEDBACK entry."""
    return _Rows(
        (
            (
                _INSERT_FEEDBACK,
                tuple(
                    {
                        "screening_id": batch.screening_id,
                        "position": r.position,
                        "trigger": r.measure,
                        "outcome": r.outcome.value,
                        "reason": r.reason,
                        "officer": officer,
                        "recorded_us": recorded_us,
                    }
                    for r in batch.items
                ),
            ),
        )
    )


# --- the report -----------------------------------------------------------------------------


@dataclass
class SceneCount:
    """Triggers and feedback of one scene for one department (the partner system that
    screened), over a period. ``pending`` measures have no feedback yet; where a
    measure got several, the latest counts."""

    scene: str
    department: str
    screenings: int = 0
    subjects: int = 0
    incomplete: int = 0
    triggers: int = 0
    by_kind: dict[str, int] = field(default_factory=lambda: {k.value: 0 for k in MeasureKind})
    binding: int = 0
    applied: int = 0
    not_applied: int = 0

    @property
    def pending(self) -> int:
        return self.triggers - self.applied - self.not_applied


def _day_start_us(day: dt.date) -> int:
    return int(dt.datetime.combine(day, dt.time(), CST).timestamp() * 1_000_000)


def measures_report(
    engine: Engine, *, since: dt.date | None = None, until: dt.date | None = None
) -> list[SceneCount]:
    """Per scene and department, the screenings made from ``since`` to ``until``
    (China dates, both included), the measures they found and the feedback given on
    them, sorted by scene and department."""
    if since is not None and until is not None and since > until:
        raise ScreeningError(
            f"the period runs from {since} to {until}: --from must not follow --to"
        )
    s = SCREENINGS.c
    chosen = select(s.id)
    if since is not None:
        chosen = chosen.where(s.created_us >= _day_start_us(since))
    if until is not None:
        chosen = chosen.where(s.created_us < _day_start_us(until + dt.timedelta(days=1)))
    ids = chosen.scalar_subquery()
    t, f = SCREENING_TRIGGERS.c, SCREENING_FEEDBACK.c
    with engine.connect() as conn:
        screenings = conn.execute(
            select(s.id, s.scene, s.partner, s.subject_count, s.complete).where(s.id.in_(ids))
        ).all()
        triggers = conn.execute(
            select(t.screening_id, t.kind, t.binding).where(t.screening_id.in_(ids))
        ).all()
        feedback = conn.execute(
            select(f.screening_id, f.position, f.trigger, f.outcome)
            .where(f.screening_id.in_(ids))
            .order_by(f.id)
        ).all()
    counts: dict[tuple[str, str], SceneCount] = {}
    key_of: dict[str, tuple[str, str]] = {}
    for row in screenings:
        key = key_of[row.id] = (row.scene, row.partner)
        count = counts.setdefault(key, SceneCount(*key))
        count.screenings += 1
        count.subjects += row.subject_count
        count.incomplete += 0 if row.complete else 1
    for found in triggers:
        count = counts[key_of[found.screening_id]]
        count.triggers += 1
        count.by_kind[found.kind] = count.by_kind.get(found.kind, 0) + 1
        count.binding += found.binding
    latest = {(r.screening_id, r.position, r.trigger): r.outcome for r in feedback}
    for (screening_id, _, _), outcome in latest.items():
        count = counts[key_of[screening_id]]
        if outcome == FeedbackOutcome.APPLIED:
            count.applied += 1
        else:
            count.not_applied += 1
    return [counts[key] for key in sorted(counts)]

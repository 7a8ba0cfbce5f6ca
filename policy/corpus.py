"""Decision test corpora, in the manner of Cedar's ``run-tests``.

A corpus is a YAML file that names a memorandum (a path relative to the corpus
file) and lists cases; each case is one request and the decision expected for
it::

    memorandum: memorandum-3plus2.yaml
    cases:
      - name: shenzhen-asks-huizhou-penalty-for-procurement
        request:
          requester: shenzhen
          provider: huizhou
          purpose: public_procurement
          subject_type: enterprise
          theme: admin_penalty
          mode: full
          time: 2026-11-27T02:00:00Z
          case_reference: ZB-2026-0042
          officer: officer-17
          quota_used: {}                 # optional; rule id -> count this period
        expect:
          allowed: true
          status: OK
          rule_ids: [regional-lists]     # compared as a set
          reveal: [...]                  # optional, exact set
          mask: [legal_rep_id_number]    # optional, exact set
          withhold_includes: [remarks]   # optional, subset of the withheld fields
          quota_rules: []                # optional, compared as a set
          reason_includes: "..."         # optional, a substring of the reason

A case may instead ask whether a member may sync a theme of another member's
change feed (:meth:`~policy.engine.PolicyEngine.may_sync`); its ``expect`` holds
``allowed``, ``status`` (``OK`` when a feed in force allows it, otherwise
``PERMISSION_DENIED``) and ``rule_ids`` (the id of the feed that allows it, or
nothing)::

      - name: shenzhen-syncs-customs-grades
        sync:
          subscriber: shenzhen
          publisher: customs
          theme: customs_credit_grade
          today: 2026-11-27              # a China Standard Time date
        expect:
          allowed: true
          status: OK
          rule_ids: [customs-feed]

The schema is strict: an unknown or missing key, a wrong type, a time without a
time zone, two cases with one name, a case with both or neither of ``request``
and ``sync``, an expectation a sync case cannot have (fields, quotas, a reason,
another status), or an ``allowed`` that contradicts the ``status`` is refused
with :class:`CorpusError` naming the case (``cases[12](name).expect.status``).
``mode`` is any string, so a corpus can show that an unknown mode is refused.

The memorandum is hashed as the engine's callers hash it: SHA-256 of the RFC 8785
canonical JSON of its signed part (the ``signed`` part of a ``.json`` envelope,
or the parsed ``.yaml`` source dumped as JSON data).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from creditexchange.errors import CorpusError, PolicyError, describe_validation_error
from creditexchange.policy.document import Memorandum, Mode, parse_memorandum
from creditexchange.policy.engine import (
    DataCatalog,
    Decision,
    DecisionRequest,
    PolicyEngine,
    Status,
)
from creditexchange.policy.trust import memorandum_hash, read_memorandum_file

__all__ = [
    "Case",
    "CaseResult",
    "Corpus",
    "SyncQuestion",
    "load_corpus",
    "load_memorandum",
    "run_corpus",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class CaseRequest(_Strict):
    requester: str
    provider: str
    purpose: str
    subject_type: str
    theme: str
    mode: str
    time: Annotated[dt.datetime, Field(strict=False)]
    case_reference: str = ""
    officer: str = ""
    quota_used: dict[str, int] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _aware(self) -> CaseRequest:
        if self.time.utcoffset() is None:
            raise ValueError("time must carry a time zone, e.g. 2026-11-27T02:00:00Z")
        return self


class SyncQuestion(_Strict):
    """May ``subscriber`` sync ``theme`` of ``publisher``'s change feed on ``today``?"""

    subscriber: str
    publisher: str
    theme: str
    today: Annotated[dt.date, Field(strict=False)]

    @model_validator(mode="before")
    @classmethod
    def _a_date_not_a_time(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("today"), dt.datetime):
            raise ValueError("today is a date (China Standard Time), e.g. 2026-11-27, not a time")
        return data


StatusName = Literal[
    "OK", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "INVALID_ARGUMENT"
]


class CaseExpect(_Strict):
    allowed: bool
    status: StatusName
    rule_ids: list[str]
    reveal: list[str] | None = None
    mask: list[str] | None = None
    withhold_includes: list[str] | None = None
    quota_rules: list[str] | None = None
    reason_includes: str | None = None

    @model_validator(mode="after")
    def _coherent(self) -> CaseExpect:
        if self.allowed != (self.status == Status.OK):
            raise ValueError(f"allowed {self.allowed} contradicts status {self.status}")
        return self


_DECISION_ONLY = ("reveal", "mask", "withhold_includes", "quota_rules", "reason_includes")


class Case(_Strict):
    """One query (``request``) or one sync question (``sync``), and what it must get."""

    name: str = Field(min_length=1)
    request: CaseRequest | None = None
    sync: SyncQuestion | None = None
    expect: CaseExpect

    @model_validator(mode="after")
    def _one_kind(self) -> Case:
        if (self.request is None) == (self.sync is None):
            raise ValueError("a case has either `request` (a query) or `sync` (a feed), not both")
        if self.sync is not None:
            extra = [k for k in _DECISION_ONLY if getattr(self.expect, k) is not None]
            if extra:
                raise ValueError(f"a sync case expects allowed, status and rule_ids, not {extra}")
            if self.expect.status not in (Status.OK, Status.PERMISSION_DENIED):
                raise ValueError(
                    f"a sync case's status is OK or PERMISSION_DENIED, not {self.expect.status}"
                )
            if len(self.expect.rule_ids) > 1:
                raise ValueError("a sync is allowed by one feed: rule_ids names at most one")
        return self


class Corpus(_Strict):
    memorandum: str = Field(min_length=1, description="path relative to the corpus file")
    cases: list[Case] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> Corpus:
        seen: set[str] = set()
        for case in self.cases:
            if case.name in seen:
                raise ValueError(f"case name {case.name!r} is used twice")
            seen.add(case.name)
        return self


@dataclass(frozen=True)
class CaseResult:
    name: str
    passed: bool
    message: str  # "" when passed; otherwise what differed, and the decision's reason
    decision: Decision | None  # None for a sync case


def _read_yaml(path: Path, what: str) -> Any:
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise CorpusError(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CorpusError(f"{path}: not valid YAML: {exc}") from None


def load_memorandum(path: Path) -> tuple[Memorandum, bytes]:
    """A memorandum (.yaml source or signed .json envelope) and its content hash."""
    try:
        envelope = read_memorandum_file(path)
    except PolicyError as exc:
        raise CorpusError(f"cannot read memorandum {path}: {exc}") from None
    signed = envelope["signed"]
    return parse_memorandum(signed, str(path)), memorandum_hash(signed)


def load_corpus(path: Path) -> tuple[Corpus, Memorandum, bytes]:
    """Parse a corpus strictly, with the memorandum it names and that memorandum's hash."""
    data = _read_yaml(path, "corpus")
    if not isinstance(data, dict):
        raise CorpusError(f"{path}: a corpus is a mapping with `memorandum` and `cases`")
    try:
        corpus = Corpus.model_validate(data)
    except ValidationError as exc:
        problems = describe_validation_error(exc, data)
        raise CorpusError(f"{path}: the corpus is invalid: {problems}") from None
    memorandum, digest = load_memorandum(path.parent / corpus.memorandum)
    return corpus, memorandum, digest


_MODE_VALUES = frozenset(m.value for m in Mode)


def request_of(case: Case) -> DecisionRequest:
    """The engine's request for a query case (a sync case has none: ValueError)."""
    r = case.request
    if r is None:
        raise ValueError(f"case {case.name!r} is a sync case, not a query")
    mode = Mode(r.mode) if r.mode in _MODE_VALUES else cast(Mode, r.mode)
    return DecisionRequest(
        requester=r.requester,
        provider=r.provider,
        purpose=r.purpose,
        subject_type=r.subject_type,
        theme=r.theme,
        mode=mode,
        time=r.time,
        case_reference=r.case_reference,
        officer=r.officer,
        quota_used=dict(r.quota_used),
    )


def _sets(expected: list[str], got: frozenset[str] | tuple[str, ...]) -> str | None:
    want = set(expected)
    have = set(got)
    if want == have:
        return None
    parts = []
    if want - have:
        parts.append(f"missing {sorted(want - have)}")
    if have - want:
        parts.append(f"unexpected {sorted(have - want)}")
    return ", ".join(parts)


def _check_sync(engine: PolicyEngine, case: Case, question: SyncQuestion) -> CaseResult:
    feed = engine.may_sync(question.subscriber, question.publisher, question.theme, question.today)
    want = case.expect
    got = (True, Status.OK, [feed.id]) if feed else (False, Status.PERMISSION_DENIED, [])
    problems = [
        f"{key}: expected {expected}, got {have}"
        for key, expected, have in zip(
            ("allowed", "status", "rule_ids"),
            (want.allowed, want.status, want.rule_ids),
            got,
            strict=True,
        )
        if expected != have
    ]
    message = ""
    if problems:
        found = f"feed {feed.id}" if feed else "no feed in force"
        message = "; ".join(problems) + (
            f" ({found} lets {question.subscriber} sync {question.theme} of "
            f"{question.publisher} on {question.today})"
        )
    return CaseResult(case.name, not problems, message, None)


def check_case(engine: PolicyEngine, case: Case) -> CaseResult:
    """Decide one case (or answer its sync question) and compare with what it expects."""
    if case.sync is not None:
        return _check_sync(engine, case, case.sync)
    decision = engine.decide(request_of(case))
    want = case.expect
    problems: list[str] = []
    if decision.allowed != want.allowed:
        problems.append(f"allowed: expected {want.allowed}, got {decision.allowed}")
    if decision.status != want.status:
        problems.append(f"status: expected {want.status}, got {decision.status}")
    differences: Mapping[str, tuple[list[str] | None, frozenset[str] | tuple[str, ...]]] = {
        "rule_ids": (want.rule_ids, decision.rule_ids),
        "reveal": (want.reveal, decision.reveal),
        "mask": (want.mask, decision.mask),
        "quota_rules": (want.quota_rules, decision.quota_rules),
    }
    for key, (expected, got) in differences.items():
        if expected is None:
            continue
        problem = _sets(expected, got)
        if problem:
            problems.append(f"{key}: {problem}")
    if want.withhold_includes is not None:
        missing = sorted(set(want.withhold_includes) - decision.withhold)
        if missing:
            problems.append(f"withhold: {missing} are not withheld")
    if want.reason_includes is not None and want.reason_includes not in decision.reason:
        problems.append(f"reason: does not contain {want.reason_includes!r}")
    message = ""
    if problems:
        message = "; ".join(problems) + f" (reason: {decision.reason})"
    return CaseResult(case.name, not problems, message, decision)


def run_corpus(path: Path, catalog: DataCatalog) -> list[CaseResult]:
    """Run every case of a corpus against its memorandum and the catalog, in order."""
    corpus, memorandum, digest = load_corpus(path)
    engine = PolicyEngine(memorandum, digest, catalog)
    return [check_case(engine, case) for case in corpus.cases]

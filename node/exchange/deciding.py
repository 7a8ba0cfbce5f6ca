"""The provider's decision on a call: which themes of which subjects it may answer, how.

For every subject type in the call and every theme (those asked, or, when none
is asked, every theme the catalog holds for those subject types) the policy
engine decides. When no theme was asked the themes no rule covers are left out,
so a refusal has the status and reason of the rules that did apply (a quota, a
missing case reference, a forbid) rather than of the first theme of the catalog.

A batch of n subjects counts n queries against each quota: it must fit whole, so
the engine is told the count plus the batch's other subjects of that type, and
:meth:`Decider.charge` then checks each quota against the whole call (a rule may
cover several subject types: 499 enterprises and 499 individual businesses are
998 queries under it). A call that does not fit is refused whole with
``RESOURCE_EXHAUSTED``. The check and the charge happen with nothing awaited
between them, so concurrent calls of one requester cannot together pass a quota.
The quota is charged (in memory at once, durably with the call's audit entry)
only when something is allowed.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from creditexchange.errors import InvalidIdentifier, Refused
from creditexchange.identifiers import subject_type_of
from creditexchange.node.catalog import Catalog
from creditexchange.node.exchange.answers import ThemeShape, theme_shape
from creditexchange.node.exchange.federation import Federation
from creditexchange.node.exchange.quotas import QuotaCharge, QuotaCounter, exceeded
from creditexchange.policy.document import Mode
from creditexchange.policy.engine import Decision, DecisionRequest, quota_period_start
from creditexchange.v1 import audit_pb2, exchange_pb2

__all__ = ["Decided", "Decider", "Verdict", "parse_subjects"]

# which status a refusal takes when themes were denied for different reasons
_PRECEDENCE = ("FAILED_PRECONDITION", "RESOURCE_EXHAUSTED", "INVALID_ARGUMENT")


@dataclass(frozen=True)
class Decided:
    """One theme's decision, with the parts of the answer and of the audit entry it makes."""

    theme: str
    decision: Decision
    audit: audit_pb2.ThemeDecision
    shape: ThemeShape


@dataclass
class Verdict:
    """The decision on a call: per (subject type, theme), and what it sums up to."""

    subjects: list[tuple[str, str]]  # (id, subject type), in the request's order
    themes: list[str]  # the themes considered, in the order answers list them
    decisions: dict[tuple[str, str], Decided]  # (subject type, theme) -> its decision
    themes_asked: list[str]  # as the audit entry records them: asked, or decided
    summary: audit_pb2.Decision
    per_type: Mapping[str, int]  # subject type -> how many of the call's subjects
    charges: list[QuotaCharge] = field(default_factory=list)

    @cached_property
    def allowed(self) -> dict[tuple[str, str], Decided]:
        return {key: d for key, d in self.decisions.items() if d.decision.allowed}

    def deny(self, reason: str) -> None:
        """The call is refused after all (a quota, the store): its summary says so. The
        summary may be shared with other calls' verdicts, so it is replaced, not changed."""
        summary = audit_pb2.Decision()
        summary.CopyFrom(self.summary)
        summary.allowed = False
        summary.reason = reason
        self.summary = summary

    def refusal(self) -> Refused:
        """Why nothing is allowed: the status that says most, every distinct reason."""
        if not self.decisions:
            return Refused(
                "PERMISSION_DENIED", "no theme of the catalog holds this kind of subject", "policy"
            )
        statuses = {d.decision.status for d in self.decisions.values()}
        status = next((s for s in _PRECEDENCE if s in statuses), "PERMISSION_DENIED")
        reasons = "; ".join(dict.fromkeys(d.decision.reason for d in self.decisions.values()))
        return Refused(status, reasons, "policy")


def parse_subjects(subjects: Sequence[str]) -> list[tuple[str, str]]:
    """Each subject's canonical id and its type, from the identifier alone (never from
    what the requester claims); INVALID_ARGUMENT naming the first that is neither a
    unified social credit code nor a resident identity number."""
    parsed: list[tuple[str, str]] = []
    for position, subject in enumerate(subjects):
        try:
            parsed.append(subject_type_of(subject))
        except InvalidIdentifier as exc:
            where = f"subject {position + 1}" if len(subjects) > 1 else "the subject"
            raise Refused("INVALID_ARGUMENT", f"{where}: {exc}", "malformed") from None
    return parsed


class _DecisionParts:
    """The answer and audit parts of the engine's decisions, built once per decision.

    The engine interns its decisions (one immutable ``Decision`` per outcome), and
    what a decision puts into an answer and into an audit entry depends only on
    the decision, the theme and the mode. So those parts are built the first time
    and copied from then on; nothing modifies them. An entry holds its decision,
    so the id it is found by is not reused while it is cached. The cache starts
    afresh with each memorandum version and when it reaches ``bound`` entries.
    """

    def __init__(self, catalog: Catalog, bound: int = 4096) -> None:
        self.catalog = catalog
        self.bound = bound
        self._federation: Federation | None = None
        self._parts: dict[tuple[str, Mode, int], Decided] = {}
        # the summaries of the combinations of decisions calls had, by the parts' ids (each
        # held with its parts, so that no id is reused while it is cached)
        self._summaries: dict[tuple[int, ...], tuple[tuple[Decided, ...], audit_pb2.Decision]]
        self._summaries = {}

    def _start(self, federation: Federation) -> None:
        """Forget every part when the memorandum changes or the cache is full."""
        self._parts.clear()
        self._summaries.clear()
        self._federation = federation

    def get(self, federation: Federation, theme: str, mode: Mode, decision: Decision) -> Decided:
        if federation is not self._federation:
            self._start(federation)
        key = (theme, mode, id(decision))
        parts = self._parts.get(key)
        if parts is None or parts.decision is not decision:
            if len(self._parts) >= self.bound:
                self._start(federation)
            audit = audit_pb2.ThemeDecision(
                theme=theme, decision=_pb_decision(decision), masked_fields=sorted(decision.mask)
            )
            shape = theme_shape(self.catalog, theme, decision, mode)
            parts = self._parts[key] = Decided(theme, decision, audit, shape)
        return parts

    def summary(
        self, federation: Federation, decisions: Mapping[tuple[str, str], Decided]
    ) -> audit_pb2.Decision:
        """:func:`_summary` of ``decisions`` (parts this cache gave, under ``federation``),
        built once per combination; never modified (:meth:`Verdict.deny` replaces it)."""
        decided = tuple(decisions.values())
        key = tuple(map(id, decided))
        held = self._summaries.get(key)
        if held is None or federation is not self._federation:
            if len(self._summaries) >= self.bound:
                self._summaries.clear()
            held = (decided, _summary(federation, decisions))
            if federation is self._federation:
                self._summaries[key] = held
        return held[1]


class Decider:
    """Decides the calls of one provider under the installed memorandum."""

    def __init__(self, member_id: str, catalog: Catalog, quotas: QuotaCounter) -> None:
        self.member_id = member_id
        self.catalog = catalog
        self.quotas = quotas
        self._parts = _DecisionParts(catalog)

    def decide(
        self,
        federation: Federation,
        requester: str,
        header: exchange_pb2.RequestHeader,
        subjects: list[tuple[str, str]],
        asked: list[str],
        mode: Mode,
        now: dt.datetime,
    ) -> Verdict:
        """Decide every (subject type, theme) of a call; nothing is charged yet."""
        per_type: dict[str, int] = {}
        for _, subject_type in subjects:
            per_type[subject_type] = per_type.get(subject_type, 0) + 1
        themes = asked or self._themes_holding(per_type)
        engine = federation.engine
        decisions: dict[tuple[str, str], Decided] = {}
        for subject_type, n in per_type.items():
            used = _QuotaView(self.quotas, engine.quotas, requester, now, n - 1)
            for theme in themes:
                decision = engine.decide(
                    DecisionRequest(
                        requester=requester,
                        provider=self.member_id,
                        purpose=header.purpose,
                        subject_type=subject_type,
                        theme=theme,
                        mode=mode,
                        time=now,
                        case_reference=header.case_reference,
                        officer=header.officer,
                        quota_used=used,
                    )
                )
                decisions[(subject_type, theme)] = self._parts.get(
                    federation, theme, mode, decision
                )
        themes_asked = asked
        if not asked:  # "every theme the policy allows": the themes no rule covers are not news
            allowed = {k: d for k, d in decisions.items() if d.decision.allowed}
            covered = {k: d for k, d in decisions.items() if d.decision.rule_ids}
            decisions = allowed or covered or decisions
            themes_asked = [t for _, t in decisions]
        summary = self._parts.summary(federation, decisions)
        return Verdict(subjects, themes, decisions, themes_asked, summary, per_type)

    def _themes_holding(self, subject_types: Mapping[str, int]) -> list[str]:
        return [t.code for t in self.catalog.themes if any(t.allows(st) for st in subject_types)]

    def charge(
        self, verdict: Verdict, requester: str, engine_quotas: Mapping[str, Any], now: dt.datetime
    ) -> None:
        """Count an allowed call against its quotas now, before anything awaits, so that
        concurrent calls see it; refuse it whole (``RESOURCE_EXHAUSTED``) if it does not
        fit a quota. ``verdict.charges`` are the side writes that make the counts durable
        with the call's audit entry; they are given back if it is not."""
        counts: Counter[str] = Counter()
        for subject_type, n in verdict.per_type.items():
            rules = {
                r
                for (t, _), d in verdict.allowed.items()
                if t == subject_type
                for r in d.decision.quota_rules
            }
            for rule in rules:
                counts[rule] += n
        periods = {r: quota_period_start(engine_quotas[r].period, now) for r in counts}
        for rule, n in counts.items():
            quota = engine_quotas[rule]
            used = self.quotas.used(requester, rule, periods[rule])
            if used + n > quota.limit:
                refusal = exceeded(requester, rule, quota.limit, quota.period, n, used)
                verdict.deny(refusal.message)
                raise refusal
        quotas = {r: engine_quotas[r] for r in counts}
        _, verdict.charges = self.quotas.charge(requester, periods, counts, quotas)


def _summary(
    federation: Federation, decisions: Mapping[tuple[str, str], Decided]
) -> audit_pb2.Decision:
    """The call's decision as its audit entry sums it up."""
    rule_ids: dict[str, None] = {}
    for decided in decisions.values():
        rule_ids.update(dict.fromkeys(decided.decision.rule_ids))
    allowed = [d.decision for d in decisions.values() if d.decision.allowed]
    return audit_pb2.Decision(
        allowed=bool(allowed),
        mode=str(allowed[0].mode) if allowed else "",
        rule_ids=list(rule_ids),
        memorandum_version=federation.version,
        memorandum_hash=federation.hash,
        reason=""
        if allowed
        else "; ".join(dict.fromkeys(d.decision.reason for d in decisions.values())),
    )


class _QuotaView(Mapping[str, int]):
    """The engine's ``quota_used``, read lazily from the counter for the rules it asks about."""

    __slots__ = ("_at", "_counter", "_extra", "_quotas", "_requester")

    def __init__(
        self,
        counter: QuotaCounter,
        quotas: Mapping[str, Any],
        requester: str,
        at: dt.datetime,
        extra: int,
    ) -> None:
        self._counter = counter
        self._quotas = quotas
        self._requester = requester
        self._at = at
        self._extra = extra  # a batch of n subjects counts n queries: it must fit whole

    def __getitem__(self, rule: str) -> int:
        quota = self._quotas[rule]
        start = quota_period_start(quota.period, self._at)
        return self._counter.used(self._requester, rule, start) + self._extra

    def __iter__(self) -> Iterator[str]:
        return iter(self._quotas)

    def __len__(self) -> int:
        return len(self._quotas)


def _pb_decision(d: Decision) -> audit_pb2.Decision:
    return audit_pb2.Decision(
        allowed=d.allowed,
        mode=str(d.mode) if d.mode else "",
        rule_ids=d.rule_ids,
        memorandum_version=d.memorandum_version,
        memorandum_hash=d.memorandum_hash,
        reason=d.reason,
    )

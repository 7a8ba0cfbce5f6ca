"""The decision engine: may this member ask that member about this subject, and what may it see?

``PolicyEngine(memorandum, memorandum_hash, catalog)`` compiles the memorandum's rules
against the node's data catalog once; ``PolicyEngine.decide(request)`` then answers
each query with a :class:`Decision` that names the rules behind it, the
memorandum version and hash, the fields to reveal, mask and withhold, and a
sentence an auditor can read.

Invariants (each is tested in ``tests/test_policy_engine.py``,
``tests/test_policy_feeds.py`` and the corpus ``policy/corpus-3plus2.yaml``):

1. **Deny by default.** Only a permit that matches the request can allow it.
   A rule matches when the provider, requester, purpose, subject type and theme
   are all listed in it, the request's mode is in its ``modes``, and the
   request's time lies inside its ``valid_from`` / ``valid_until`` dates.
2. **Dates are China Standard Time (UTC+8) and inclusive.** ``valid_from:
   2026-07-01`` starts at 2026-07-01 00:00 CST (2026-06-30T16:00Z);
   ``valid_until: 2027-06-30`` ends at the end of that day, 2027-06-30
   24:00 CST. Quota days and months are CST days and months as well
   (:func:`quota_period_start`), so a city's day resets at its own midnight.
3. **Checks run in a fixed order, and the first that fails decides**: (a) the
   mode and the time (``INVALID_ARGUMENT``: an unknown mode, a time that is not
   a datetime with a time zone); (b) expiry; (c) the names (``INVALID_ARGUMENT``:
   a requester or provider that is not a member, a requester asking itself (the
   memorandum governs queries *between* members), an unknown purpose, a theme
   the catalog lacks, an unknown subject type); (d) the purpose's subject
   types; (e) the theme's subject types (``INVALID_ARGUMENT``: a theme that
   holds no records of that kind of subject); (f) forbids; (g) permits, their
   conditions and quotas.
4. **An expired memorandum stops everything**: from ``expires`` on (``time >=
   expires``) every request is denied with ``FAILED_PRECONDITION`` "memorandum
   version N expired on …", whatever else is wrong with it.
5. **A purpose covers the subject types it lists.** A subject type its purpose
   does not list (an individual asked about for bank credit) is denied with
   ``PERMISSION_DENIED`` whatever the rules say: individuals are answered only
   for the statutory purposes the memorandum lists for them.
6. **A forbid beats every permit.** Any matching forbid denies the request
   (``PERMISSION_DENIED``, ``rule_ids`` = the matching forbids). A forbid has no
   conditions: one with ``conditions`` set is refused when the engine is built.
7. **Conditions and quotas decide whether a matching permit applies.** A permit
   whose conditions fail (``case_reference_required`` and no case reference,
   ``officer_required`` and no officer; blank counts as missing) or whose quota
   is used up (``quota_used[rule.id] >= limit``) does not apply. When matching
   permits exist but none applies, the deny says why: ``FAILED_PRECONDITION``
   naming the condition when any permit failed on a condition (the caller can
   fix that), otherwise ``RESOURCE_EXHAUSTED`` "quota of N per day exceeded for
   requester X under rule Y"; ``rule_ids`` are those permits.
8. **Field handling is privacy-minimal.** An allowed request is answered in the
   mode it asked for. ``check`` reveals nothing (hit / no-hit only): ``reveal``
   and ``mask`` are empty and every catalog field of the theme is withheld. In
   ``full`` mode, over the permits that apply: masked = union of their mask
   lists for the theme; revealed = union of their reveal lists minus the masked
   ones (a mask wins); withheld = every other catalog field of the theme. A
   permit without a ``fields`` entry for the theme reveals nothing. Whenever the
   theme is in the catalog, reveal, mask and withhold partition its fields (a
   deny withholds them all).
9. **Individuals in full mode need a permit that says so.** There is no
   wildcard: a full-mode request about an individual is allowed only by a permit
   that lists subject type ``individual`` *and* mode ``full`` (the shipped
   "3+2" memorandum has none, and forbids it outright).
10. **Sensitive fields are never revealed in clear.** A rule that reveals a
    field the catalog marks ``sensitive`` (identity numbers) is refused when the
    engine is built; such fields can only be masked or withheld.
11. **Compile-time checks name the rule.** A theme the catalog does not have, a
    field the theme does not have, a sensitive field revealed or a forbid with
    conditions raises :class:`~policy.document.PolicyError` naming
    ``rules[i](id)``.
12. **Fail closed.** ``decide`` never raises: any exception inside evaluation
    becomes a deny (``PERMISSION_DENIED``) whose reason starts with
    ``evaluation error:``.
13. **Every decision is explainable**: it carries ``rule_ids`` (the permits that
    allowed it; the forbids, or the permits whose conditions or quota failed,
    for a deny; nothing for a deny by default), the memorandum version and hash,
    a status and a readable reason. ``quota_rules`` lists the applying permits
    that have a quota: the caller counts the query against each of them.

Feeds (the memorandum's ``feeds:``) are the engine's second question: may this
member sync that theme of that member's change feed today?
(:meth:`PolicyEngine.may_sync`, with :meth:`PolicyEngine.published_themes` and
:meth:`PolicyEngine.subscriptions` for the publisher's and the subscriber's side.)

14. **Syncing is denied by default too.** A subscriber may sync a theme of a
    publisher only while a feed lists the publisher, the subscriber among its
    subscribers and the theme among its themes, and ``today`` (a China
    Standard Time date) lies inside the feed's inclusive ``valid_from`` /
    ``valid_until``. Unknown names, a member asking about its own feed and
    anything no feed lists get ``None``; query rules never let anyone sync.
15. **An expired memorandum stops every feed**, as it stops every answer: a
    day counts only if the memorandum is in force for all of it (``expires``
    at or after the next China Standard Time midnight), so no feed runs past
    ``expires`` on its last, partial day.
16. **Feed themes are checked against the catalog** when the engine is built,
    as rules' themes are: an unknown one raises
    :class:`~policy.document.PolicyError` naming ``feeds[i](id).themes``.

``quota_used`` is the caller's count of this requester's queries under each rule
in the rule's current period (:func:`quota_period_start`); an absent rule id
counts as 0, a negative count is an evaluation error.

Speed: rules are compiled per provider (lazily, on the first request naming it,
or eagerly with :meth:`PolicyEngine.prepare`) into a dict keyed by ``(provider,
requester, purpose, subject_type, theme, mode)`` whose values hold the
pre-compiled candidate forbids and permits, so ``decide`` is one dict lookup, a
few comparisons and a cached :class:`Decision`. Compiling per provider keeps
memory linear in the members a node actually answers for (a node answers for
itself), rather than quadratic in the federation's size. Decisions are
immutable and shared: one per distinct outcome of a slot, one per well-formed
request no rule covers, and a bounded cache for requests naming unknown things.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from creditexchange.clock import CST
from creditexchange.errors import PolicyError
from creditexchange.policy.document import (
    Effect,
    FeedRule,
    Memorandum,
    Mode,
    Period,
    Quota,
    Rule,
)
from creditexchange.subjects import SUBJECT_TYPES, is_individual

__all__ = [
    "DataCatalog",
    "DataField",
    "DataTheme",
    "Decision",
    "DecisionRequest",
    "PolicyEngine",
    "Status",
    "quota_period_start",
]


class DataField(Protocol):
    """What the engine needs of a catalog field: its name, and whether it is sensitive."""

    @property
    def name(self) -> str: ...

    @property
    def sensitive(self) -> bool: ...


class DataTheme(Protocol):
    """What the engine needs of a catalog theme: its code, subject types and fields."""

    @property
    def code(self) -> str: ...

    @property
    def subject_types(self) -> Sequence[str]: ...

    @property
    def fields(self) -> Sequence[DataField]: ...


class DataCatalog(Protocol):
    """What the engine needs of the node's data catalog (``node.catalog.Catalog`` is one).

    The policy depends on this shape only, never on the node that defines it.
    """

    @property
    def catalog_version(self) -> str: ...

    @property
    def themes(self) -> Sequence[DataTheme]: ...


class Status(StrEnum):
    """The decision's status, named after the gRPC code the node answers with."""

    OK = "OK"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"


@dataclass(frozen=True, slots=True)
class DecisionRequest:
    """One query to decide: who asks whom, about what kind of subject, why, how."""

    requester: str
    provider: str
    purpose: str
    subject_type: str
    theme: str
    mode: Mode
    time: dt.datetime  # time-zone aware
    case_reference: str = ""
    officer: str = ""
    # rule id -> queries this requester already made under the rule in the rule's
    # current period (see quota_period_start); an absent id counts as 0.
    quota_used: Mapping[str, int] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    mode: Mode | None  # the request's mode when allowed, None for a deny
    reveal: frozenset[str]
    mask: frozenset[str]
    withhold: frozenset[str]
    rule_ids: tuple[str, ...]
    memorandum_version: int
    memorandum_hash: bytes
    reason: str
    quota_rules: tuple[str, ...]
    status: str


def quota_period_start(period: Period, time: dt.datetime) -> dt.datetime:
    """Start of the quota period holding ``time``: its China Standard Time day or month.

    Returned in UTC (a CST day starts at 16:00Z the day before), so it can key a
    store's counters. ``time`` must carry a time zone.
    """
    if time.tzinfo is None or time.utcoffset() is None:
        raise ValueError("time must carry a time zone")
    local = time.astimezone(CST)
    if period is Period.DAY:
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    elif period is Period.MONTH:
        start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    else:  # pragma: no cover - Period has two members
        raise ValueError(f"unknown quota period {period!r}")
    return start.astimezone(dt.UTC)


# ---------------------------------------------------------------------------
# Compiled form


@dataclass(frozen=True, slots=True)
class _Candidate:
    """One rule as it applies to one theme."""

    id: str
    order: int  # position in the memorandum, to report rule ids in its order
    start: dt.datetime | None  # inclusive, in UTC
    end: dt.datetime | None  # exclusive, in UTC
    case_required: bool
    officer_required: bool
    quota_limit: int  # 0: no quota
    quota_period: Period | None
    reveal: frozenset[str]
    mask: frozenset[str]
    window_text: str  # "" when always valid


class _Slot:
    """The candidates for one (provider, requester, purpose, subject, theme, mode)."""

    __slots__ = ("cache", "forbids", "mode", "permits", "theme_fields")

    def __init__(
        self,
        mode: Mode,
        theme_fields: frozenset[str],
        forbids: tuple[_Candidate, ...],
        permits: tuple[_Candidate, ...],
    ) -> None:
        self.mode = mode
        self.theme_fields = theme_fields
        self.forbids = forbids
        self.permits = permits
        # (forbid bits, applying bits, condition-failed bits, exhausted bits, missing
        # conditions, requester named in a quota deny) -> Decision
        self.cache: dict[tuple[int, int, int, int, int, str], Decision] = {}


_SENTENCE_END = re.compile(r"。|\.\s+(?=[A-Z])")
_UTC = dt.UTC
_UNKNOWN_CACHE_SIZE = 4096  # denies of keys naming an unknown member, purpose or theme
_MODES: dict[object, Mode] = {m.value: m for m in Mode}
_EMPTY: frozenset[str] = frozenset()


def _window(rule: Rule) -> tuple[dt.datetime | None, dt.datetime | None, str]:
    start = end = None
    if rule.valid_from is not None:
        start = dt.datetime.combine(rule.valid_from, dt.time(0), CST).astimezone(_UTC)
    if rule.valid_until is not None:
        end = dt.datetime.combine(rule.valid_until + dt.timedelta(days=1), dt.time(0), CST)
        end = end.astimezone(_UTC)
    if rule.valid_from and rule.valid_until:
        text = f"valid from {rule.valid_from} to {rule.valid_until}"
    elif rule.valid_from:
        text = f"valid from {rule.valid_from}"
    elif rule.valid_until:
        text = f"valid until {rule.valid_until}"
    else:
        text = ""
    return start, end, (text + " (China Standard Time, inclusive)") if text else ""


def _feed_in_force(feed: FeedRule, today: dt.date) -> bool:
    """Whether ``today`` (a CST date) lies inside the feed's inclusive dates."""
    return (feed.valid_from is None or feed.valid_from <= today) and (
        feed.valid_until is None or today <= feed.valid_until
    )


def _first_sentence(text: str) -> str:
    """The first sentence of a rule's intent, for a reason ("Art. 6" does not end one)."""
    text = " ".join(text.split())
    end = _SENTENCE_END.search(text)
    if end is not None:
        text = text[: end.start() + 1]
    text = text.rstrip(".")
    return text if len(text) <= 240 else text[:239] + "…"


def _names(ids: list[str] | tuple[str, ...]) -> str:
    return ", ".join(ids)


class PolicyEngine:
    """Decides queries under one memorandum and one catalog; see the module's invariants."""

    def __init__(
        self, memorandum: Memorandum, memorandum_hash: bytes, catalog: DataCatalog
    ) -> None:
        self.memorandum = memorandum
        self.memorandum_hash = bytes(memorandum_hash)
        self.catalog = catalog
        self._catalog_fields: dict[str, dict[str, DataField]] = {
            t.code: {f.name: f for f in t.fields} for t in catalog.themes
        }
        self.version = memorandum.version
        self._expires = memorandum.expires.astimezone(_UTC)
        self._members = frozenset(m.id for m in memorandum.members)
        self._purposes = {p.code: frozenset(p.subject_types) for p in memorandum.purposes}
        self._theme_fields: dict[str, frozenset[str]] = {
            t.code: frozenset(f.name for f in t.fields) for t in catalog.themes
        }
        self._theme_subjects: dict[str, frozenset[str]] = {
            t.code: frozenset(str(s) for s in t.subject_types) for t in catalog.themes
        }
        self.quotas: Mapping[str, Quota] = {
            r.id: r.quota for r in memorandum.rules if r.quota is not None
        }
        # rule index -> theme -> candidate
        self._candidates: list[dict[str, _Candidate]] = [
            self._compile_rule(i, rule) for i, rule in enumerate(memorandum.rules)
        ]
        for i, feed in enumerate(memorandum.feeds):
            self._check_themes(f"feeds[{i}]({feed.id})", feed.themes)
        # (subscriber, publisher, theme) -> the feeds listing it, in memorandum order
        self._feeds: dict[tuple[str, str, str], list[FeedRule]] = {}
        for feed in memorandum.feeds:
            for subscriber in dict.fromkeys(feed.subscribers):
                for theme in dict.fromkeys(feed.themes):
                    self._feeds.setdefault((subscriber, feed.publisher, theme), []).append(feed)
        # The last China Standard Time date the memorandum is in force all day long.
        try:
            expiry_day = self._expires.astimezone(CST).date()
        except OverflowError:  # expires in the last hours of year 9999, UTC
            expiry_day = dt.date.max
        self._last_feed_day: dt.date | None = (
            expiry_day - dt.timedelta(days=1) if expiry_day > dt.date.min else None
        )
        self._rules_by_provider: dict[str, list[int]] = {}
        for i, rule in enumerate(memorandum.rules):
            for provider in dict.fromkeys(rule.providers):
                self._rules_by_provider.setdefault(provider, []).append(i)
        self._index: dict[tuple[str, str, str, str, str, Mode], _Slot] = {}
        self._prepared: set[str] = set()
        # well-formed keys no slot matches -> their deny (e.g. a purpose not covering a subject)
        self._misses: dict[tuple[str, str, str, str, str, Mode], Decision] = {}
        self._unknown: dict[tuple[str, str, str, str, str, Mode], Decision] = {}
        self._expired_by_theme: dict[str, Decision] = {}
        self._lock = threading.Lock()

    # -- compilation -----------------------------------------------------------------

    def _check_themes(self, where: str, themes: Sequence[str]) -> None:
        """Refuse a rule or feed naming a theme the catalog lacks, naming ``where``."""
        for theme in themes:
            if theme not in self._catalog_fields:
                raise PolicyError(
                    f"{where}.themes: theme {theme!r} is not in the catalog "
                    f"{self.catalog.catalog_version} "
                    f"(it has {', '.join(sorted(self._catalog_fields))})"
                )

    def _compile_rule(self, i: int, rule: Rule) -> dict[str, _Candidate]:
        where = f"rules[{i}]({rule.id})"
        version = self.catalog.catalog_version
        self._check_themes(where, rule.themes)
        if rule.effect is Effect.FORBID and (
            rule.conditions.case_reference_required or rule.conditions.officer_required
        ):
            raise PolicyError(
                f"{where}.conditions: a forbid applies unconditionally; "
                "conditions belong to permits"
            )
        for theme, field_handling in rule.fields.items():
            known = self._catalog_fields[theme]
            for kind, names in (("reveal", field_handling.reveal), ("mask", field_handling.mask)):
                unknown = [n for n in names if n not in known]
                if unknown:
                    raise PolicyError(
                        f"{where}.fields.{theme}.{kind}: field(s) {unknown} are not in theme "
                        f"{theme!r} of the catalog {version}"
                    )
            sensitive = [n for n in field_handling.reveal if known[n].sensitive]
            if sensitive:
                raise PolicyError(
                    f"{where}.fields.{theme}.reveal: sensitive field(s) {sensitive} may only be "
                    "masked or withheld, never revealed in clear"
                )
        start, end, window_text = _window(rule)
        candidates: dict[str, _Candidate] = {}
        for theme in rule.themes:
            handling = rule.fields.get(theme)
            candidates[theme] = _Candidate(
                id=rule.id,
                order=i,
                start=start,
                end=end,
                case_required=rule.conditions.case_reference_required,
                officer_required=rule.conditions.officer_required,
                quota_limit=rule.quota.limit if rule.quota else 0,
                quota_period=rule.quota.period if rule.quota else None,
                reveal=frozenset(handling.reveal) if handling else _EMPTY,
                mask=frozenset(handling.mask) if handling else _EMPTY,
                window_text=window_text,
            )
        return candidates

    def prepare(self, provider: str) -> None:
        """Compile the index for one provider now (a node calls it for itself at start)."""
        if provider in self._prepared:
            return
        with self._lock:
            if provider in self._prepared:
                return
            forbids: dict[tuple[str, str, str, str, Mode], list[_Candidate]] = {}
            permits: dict[tuple[str, str, str, str, Mode], list[_Candidate]] = {}
            for i in self._rules_by_provider.get(provider, []):
                rule = self.memorandum.rules[i]
                target = forbids if rule.effect is Effect.FORBID else permits
                for requester in dict.fromkeys(rule.requesters):
                    if requester == provider:
                        continue
                    for purpose in dict.fromkeys(rule.purposes):
                        allowed_subjects = self._purposes[purpose]
                        for subject in dict.fromkeys(rule.subject_types):
                            if subject not in allowed_subjects:
                                continue
                            for theme, candidate in self._candidates[i].items():
                                if subject not in self._theme_subjects[theme]:
                                    continue
                                for mode in dict.fromkeys(rule.modes):
                                    key = (requester, purpose, subject, theme, mode)
                                    target.setdefault(key, []).append(candidate)
            interned: dict[tuple[object, ...], _Slot] = {}
            entries: dict[tuple[str, str, str, str, str, Mode], _Slot] = {}
            for key in forbids.keys() | permits.keys():
                requester, purpose, subject, theme, mode = key
                f = tuple(sorted(forbids.get(key, ()), key=lambda c: c.order))
                p = tuple(sorted(permits.get(key, ()), key=lambda c: c.order))
                ident = (mode, theme, tuple(c.order for c in f), tuple(c.order for c in p))
                slot = interned.get(ident)
                if slot is None:
                    slot = interned[ident] = _Slot(mode, self._theme_fields[theme], f, p)
                entries[(provider, requester, purpose, subject, theme, mode)] = slot
            self._index.update(entries)
            self._prepared.add(provider)

    # -- feeds -----------------------------------------------------------------------

    def _feeds_in_force(self, today: dt.date) -> list[FeedRule]:
        """The memorandum's feeds in force all of ``today`` (a CST date), in its order."""
        if not self._feed_day(today):
            return []
        return [f for f in self.memorandum.feeds if _feed_in_force(f, today)]

    def _feed_day(self, today: dt.date) -> bool:
        """Whether the memorandum is in force all of ``today``; a non-date is a TypeError."""
        if not isinstance(today, dt.date) or isinstance(today, dt.datetime):
            raise TypeError(f"today must be a date (China Standard Time), not {today!r}")
        return self._last_feed_day is not None and today <= self._last_feed_day

    def may_sync(
        self, subscriber: str, publisher: str, theme: str, today: dt.date
    ) -> FeedRule | None:
        """The feed in force on ``today`` that lets ``subscriber`` sync ``theme`` of
        ``publisher``'s change feed, or None: deny by default (invariants 14 and 15).

        When several feeds list the same triple, the first in memorandum order is
        the one named. ``today`` is a China Standard Time date; anything else is a
        TypeError rather than a deny, because it is the caller's mistake.
        """
        if not self._feed_day(today):
            return None
        candidates = self._feeds.get((subscriber, publisher, theme), ())
        return next((f for f in candidates if _feed_in_force(f, today)), None)

    def published_themes(self, publisher: str, today: dt.date) -> list[str]:
        """The themes ``publisher`` publishes to at least one member on ``today``, in
        memorandum order, each once: the feeds its node keeps."""
        themes = (
            theme
            for feed in self._feeds_in_force(today)
            if feed.publisher == publisher
            for theme in feed.themes
        )
        return list(dict.fromkeys(themes))

    def subscriptions(self, subscriber: str, today: dt.date) -> list[tuple[str, str]]:
        """The ``(publisher, theme)`` pairs ``subscriber`` may sync on ``today``, in
        memorandum order, each once: the feeds its node follows."""
        pairs = (
            (feed.publisher, theme)
            for feed in self._feeds_in_force(today)
            if subscriber in feed.subscribers
            for theme in feed.themes
        )
        return list(dict.fromkeys(pairs))

    # -- decisions -------------------------------------------------------------------

    def decide(self, request: DecisionRequest) -> Decision:
        """Decide one request. Never raises: an error in evaluation is a deny."""
        try:
            return self._decide(request)
        except Exception as exc:
            return self._evaluation_error(request, exc)

    def _decide(self, request: DecisionRequest) -> Decision:
        mode = _MODES.get(request.mode)
        time = request.time
        if mode is None or not isinstance(time, dt.datetime):
            return self._malformed(request, mode)
        if time.tzinfo is not _UTC:
            # Normalised to the one UTC object the compiled bounds carry: comparing
            # datetimes of different tzinfo objects costs ~35 times more.
            if time.utcoffset() is None:
                return self._malformed(request, mode)
            time = time.astimezone(_UTC)
        if time >= self._expires:
            expired = self._expired_by_theme.get(request.theme)
            if expired is None:
                expired = self._expired(request)
                if request.theme in self._theme_fields:
                    self._expired_by_theme[request.theme] = expired
            return expired
        provider = request.provider
        key = (
            provider,
            request.requester,
            request.purpose,
            request.subject_type,
            request.theme,
            mode,
        )
        slot = self._index.get(key)
        if slot is None:
            known = self._misses.get(key) or self._unknown.get(key)
            if known is not None:
                return known
            if provider in self._members and provider not in self._prepared:
                self.prepare(provider)
                slot = self._index.get(key)
            if slot is None:
                denied, repeatable = self._explain(request, mode)
                if repeatable:  # every part of the key is known, so the cache stays bounded
                    self._misses[key] = denied
                else:  # an unknown name: remembered in a cache of bounded size
                    if len(self._unknown) >= _UNKNOWN_CACHE_SIZE:
                        self._unknown.clear()
                    self._unknown[key] = denied
                return denied

        forbid_bits = 0
        bit = 1
        for c in slot.forbids:
            if (c.start is None or time >= c.start) and (c.end is None or time < c.end):
                forbid_bits |= bit
            bit <<= 1
        applying = failed = exhausted = 0
        has_case = has_officer = True
        if not forbid_bits:
            if slot.permits:
                has_case = bool(request.case_reference.strip())
                has_officer = bool(request.officer.strip())
            used = request.quota_used
            bit = 1
            for c in slot.permits:
                if (c.start is None or time >= c.start) and (c.end is None or time < c.end):
                    if (c.case_required and not has_case) or (
                        c.officer_required and not has_officer
                    ):
                        failed |= bit
                    elif c.quota_limit:
                        count = used.get(c.id, 0)
                        if count < 0:
                            raise ValueError(f"quota_used[{c.id!r}] is negative ({count})")
                        if count >= c.quota_limit:
                            exhausted |= bit
                        else:
                            applying |= bit
                    else:
                        applying |= bit
                bit <<= 1
        # What is missing changes the reason of a conditions deny, so it is part of the state.
        missing = 0 if applying or not failed else int(not has_case) | int(not has_officer) << 1
        # A quota deny names the requester (a member: the cache stays bounded).
        who = request.requester if exhausted and not applying else ""
        state = (forbid_bits, applying, failed, exhausted, missing, who)
        decision = slot.cache.get(state)
        if decision is None:
            decision = slot.cache[state] = self._build(slot, state, request)
        return decision

    def _decision(
        self,
        *,
        allowed: bool = False,
        status: str,
        reason: str,
        theme_fields: frozenset[str] = _EMPTY,
        mode: Mode | None = None,
        reveal: frozenset[str] = _EMPTY,
        mask: frozenset[str] = _EMPTY,
        rule_ids: tuple[str, ...] = (),
        quota_rules: tuple[str, ...] = (),
    ) -> Decision:
        return Decision(
            allowed=allowed,
            mode=mode,
            reveal=reveal,
            mask=mask,
            withhold=theme_fields - reveal - mask,
            rule_ids=rule_ids,
            memorandum_version=self.version,
            memorandum_hash=self.memorandum_hash,
            reason=reason,
            quota_rules=quota_rules,
            status=status,
        )

    def _build(
        self, slot: _Slot, state: tuple[int, int, int, int, int, str], request: DecisionRequest
    ) -> Decision:
        forbid_bits, applying, failed, exhausted, _, _ = state

        def pick(candidates: tuple[_Candidate, ...], bits: int) -> list[_Candidate]:
            return [c for n, c in enumerate(candidates) if bits >> n & 1]

        fields = slot.theme_fields
        if forbid_bits:
            forbids = pick(slot.forbids, forbid_bits)
            rules = self.memorandum.rules
            why = "; ".join(
                f"rule {c.id} forbids it: {_first_sentence(rules[c.order].intent)}" for c in forbids
            )
            return self._decision(
                status=Status.PERMISSION_DENIED,
                reason=f"denied: {why}",
                theme_fields=fields,
                rule_ids=tuple(c.id for c in forbids),
            )
        if applying:
            permits = pick(slot.permits, applying)
            ids = tuple(c.id for c in permits)
            if slot.mode is Mode.CHECK:
                reveal = mask = _EMPTY
            else:
                mask = frozenset().union(*(c.mask for c in permits))
                reveal = frozenset().union(*(c.reveal for c in permits)) - mask
            return self._decision(
                allowed=True,
                status=Status.OK,
                reason=f"allowed by rule {_names(ids)} ({slot.mode.value} mode)",
                theme_fields=fields,
                mode=slot.mode,
                reveal=reveal,
                mask=mask,
                rule_ids=ids,
                quota_rules=tuple(c.id for c in permits if c.quota_limit),
            )
        if failed or exhausted:
            not_applying = pick(slot.permits, failed | exhausted)
            problems = []
            for n, c in enumerate(slot.permits):
                if failed >> n & 1:
                    missing = []
                    if c.case_required and not request.case_reference.strip():
                        missing.append("a case reference (case_reference_required)")
                    if c.officer_required and not request.officer.strip():
                        missing.append("the requesting officer (officer_required)")
                    problems.append(f"rule {c.id} requires {' and '.join(missing)}")
                elif exhausted >> n & 1:
                    assert c.quota_period is not None
                    problems.append(
                        f"quota of {c.quota_limit} per {c.quota_period.value} exceeded for "
                        f"requester {request.requester} under rule {c.id}"
                    )
            return self._decision(
                status=Status.FAILED_PRECONDITION if failed else Status.RESOURCE_EXHAUSTED,
                reason="denied: " + "; ".join(problems),
                theme_fields=fields,
                rule_ids=tuple(c.id for c in not_applying),
            )
        # Matching rules exist for the key, but none is valid at this time.
        windows = "; ".join(f"rule {c.id} is {c.window_text}" for c in slot.permits)
        return self._decision(
            status=Status.PERMISSION_DENIED,
            reason=(
                "denied by default: no rule in force at the time of the request permits this"
                + (f" ({windows})" if windows else "")
            ),
            theme_fields=fields,
        )

    def _expired(self, request: DecisionRequest) -> Decision:
        expires = self._expires
        return self._decision(
            status=Status.FAILED_PRECONDITION,
            reason=(
                f"memorandum version {self.version} expired on "
                f"{expires.astimezone(dt.UTC).isoformat().replace('+00:00', 'Z')} "
                f"({expires.astimezone(CST):%Y-%m-%d %H:%M} China Standard Time): cross-city "
                "answers stop until the members sign and install a newer version"
            ),
            theme_fields=self._theme_fields.get(request.theme, _EMPTY),
        )

    def _malformed(self, request: DecisionRequest, mode: Mode | None) -> Decision:
        """The deny for a request with an unknown mode or a time without a time zone."""
        theme_fields = self._theme_fields.get(request.theme, _EMPTY)
        if mode is None:
            reason = f"unknown mode {request.mode!r}: it is 'full' or 'check'"
        else:
            reason = f"the request time {request.time!r} is not a datetime with a time zone"
        return self._decision(
            status=Status.INVALID_ARGUMENT, reason=reason, theme_fields=theme_fields
        )

    def _explain(self, request: DecisionRequest, mode: Mode) -> tuple[Decision, bool]:
        """The deny for a well-formed request no compiled slot matches: say exactly why.

        Also says whether the same key always gets the same deny (no unknown name in
        it), so that the caller may remember it.
        """
        theme_fields = self._theme_fields.get(request.theme, _EMPTY)

        def deny(status: str, reason: str, repeatable: bool = True) -> tuple[Decision, bool]:
            decision = self._decision(status=status, reason=reason, theme_fields=theme_fields)
            return decision, repeatable

        invalid = Status.INVALID_ARGUMENT
        federation = f"federation {self.memorandum.federation} (memorandum version {self.version})"
        for role, member in (("requester", request.requester), ("provider", request.provider)):
            if member not in self._members:
                return deny(
                    invalid, f"unknown {role} {member!r}: not a member of {federation}", False
                )
        if request.requester == request.provider:
            return deny(
                invalid,
                f"requester and provider are both {request.provider!r}: the memorandum governs "
                "queries between members, not a member's own data",
            )
        purpose = request.purpose
        if purpose not in self._purposes:
            return deny(
                invalid,
                f"unknown purpose {purpose!r}: {federation} lists {', '.join(self._purposes)}",
                False,
            )
        theme = request.theme
        if theme not in self._theme_fields:
            return deny(
                invalid,
                f"unknown theme {theme!r}: not in the catalog {self.catalog.catalog_version}",
                False,
            )
        subject = request.subject_type
        if subject not in SUBJECT_TYPES:
            return deny(
                invalid,
                f"unknown subject type {subject!r}: it is one of {', '.join(SUBJECT_TYPES)}",
                False,
            )
        if subject not in self._purposes[purpose]:
            return deny(
                Status.PERMISSION_DENIED,
                f"purpose {purpose} does not cover subject type {subject} (it covers "
                f"{', '.join(sorted(self._purposes[purpose]))}): denied whatever the rules say",
            )
        if subject not in self._theme_subjects[theme]:
            return deny(
                invalid,
                f"theme {theme} holds no records of subject type {subject} "
                f"(it holds {', '.join(sorted(self._theme_subjects[theme]))})",
            )
        asked = (
            f"no rule of memorandum version {self.version} lets {request.requester} ask "
            f"{request.provider} about {subject} records of theme {theme} for purpose "
            f"{purpose} in {mode.value} mode"
        )
        other = Mode.CHECK if mode is Mode.FULL else Mode.FULL
        alternative = self._index.get(
            (request.provider, request.requester, purpose, subject, theme, other)
        )
        hint = ""
        if alternative is not None and alternative.permits:
            hint = (
                f" (rule {_names([c.id for c in alternative.permits])} allows {other.value} mode)"
            )
        elif is_individual(subject) and mode is Mode.FULL:
            hint = " (individuals are answered in check mode unless a permit covers them in full)"
        return deny(Status.PERMISSION_DENIED, f"denied by default: {asked}{hint}")

    def _evaluation_error(self, request: object, exc: Exception) -> Decision:
        text = f"{type(exc).__name__}: {exc}"
        if len(text) > 300:
            text = text[:299] + "…"
        try:
            theme = getattr(request, "theme", None)
            theme_fields = (
                self._theme_fields.get(theme, _EMPTY) if isinstance(theme, str) else _EMPTY
            )
        except Exception:  # pragma: no cover - a str subclass with a broken __hash__
            theme_fields = _EMPTY
        return self._decision(
            status=Status.PERMISSION_DENIED,
            reason=f"evaluation error: {text} (denied: the engine fails closed)",
            theme_fields=theme_fields,
        )

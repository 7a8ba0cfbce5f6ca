"""What the memorandum installed here lets this node ask: refused before sending, or
what would be allowed instead of a refused request.

The provider decides every call (``deciding.py``), with the same policy engine
(``policy/engine.py``) under the same memorandum version — or it refuses the
version. So the requester can know two things without asking anyone:

* :func:`ruled_out` — a request the provider is certain to refuse for a reason
  the requester can see: a subject whose identifier fails its check character
  (``creditexchange.identifiers.subject_type_of``, which the provider applies
  too), a purpose the memorandum lacks, or a purpose and subject type for which
  no rule lets this node ask that provider anything (no theme, neither mode).
  The client refuses such a request before anything is sent or recorded
  anywhere, and the message says what would be allowed: the purposes this node
  may ask that provider about for that subject type, and the members it may ask
  for that purpose.
* :func:`allowed_instead` — after the provider refused a request, what the
  memorandum would allow in its place: the other mode ("retry with --check"),
  the themes it allows, or other purposes. One sentence, for the whole request.

The local refusal is never stricter than the provider under the same memorandum:
it refuses only when the engine, asked now with this request's purpose, case
reference and officer and no quota used, denies every theme of the catalog in
both modes for a subject type, and not for a failed condition (a missing case
reference or officer, an expired memorandum: the provider's refusal names it).
Quotas and the themes asked are left to the provider. A provider holding another
memorandum version refuses the request for that alone.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from creditexchange.clock import utc_now
from creditexchange.errors import ExchangeError, InvalidIdentifier
from creditexchange.identifiers import subject_type_of
from creditexchange.node.exchange.federation import Federation
from creditexchange.policy.document import Mode
from creditexchange.policy.engine import DecisionRequest, Status

__all__ = ["Asked", "allowed_instead", "providers_for", "ruled_out", "subject_types"]


@dataclass(frozen=True)
class Asked:
    """A request as the memorandum sees it: who asks whom, why, about which kinds of
    subject, which themes (empty: all) in which mode, under which case and officer."""

    requester: str
    provider: str
    purpose: str
    subject_types: tuple[str, ...]
    themes: tuple[str, ...]
    mode: Mode
    case_reference: str
    officer: str
    batch: bool = False  # a batch check: check mode is the only mode it has


def subject_types(subjects: Sequence[str]) -> list[tuple[str, str]]:
    """Each subject's canonical id and type; ExchangeError naming the first subject whose
    identifier is not valid (its check character, its form) — nothing is sent."""
    parsed = []
    for position, subject in enumerate(subjects):
        try:
            canonical, kind = subject_type_of(subject)
        except InvalidIdentifier as exc:
            where = f"subject {position + 1}" if len(subjects) > 1 else "the subject"
            raise ExchangeError(
                f"{where} is not a valid identifier: {exc}; correct it (credit-node check-id "
                "explains an identifier); nothing was sent"
            ) from None
        parsed.append((canonical, kind.value))
    return parsed


def ruled_out(federation: Federation, asked: Asked, now: dt.datetime | None = None) -> None:
    """Raise ExchangeError when the memorandum installed here rules ``asked`` out: its
    purpose is not in the memorandum, or no rule lets the requester ask the provider
    anything for that purpose about one of its subject types. Says what is allowed."""
    now = now or utc_now()
    memorandum = federation.memorandum
    version = f"memorandum version {memorandum.version}"
    if asked.provider not in memorandum.member_by_id or asked.provider == asked.requester:
        others = [m for m in memorandum.member_by_id if m != asked.requester]
        raise ExchangeError(
            f"{asked.provider!r} is not another member of {version}: ask one of "
            f"{', '.join(others)}; nothing was sent"
        )
    for subject_type in dict.fromkeys(asked.subject_types):
        if _answers_something(federation, asked, asked.purpose, subject_type, now):
            continue
        purpose = memorandum.purpose_by_code.get(asked.purpose)
        if purpose is None:
            why = (
                f"purpose {asked.purpose!r} is not in {version} (its purposes: "
                f"{', '.join(memorandum.purpose_by_code)})"
            )
        elif subject_type not in purpose.subject_types:
            why = (
                f"purpose {asked.purpose} does not cover {subject_type} subjects in {version} "
                f"(it covers {', '.join(purpose.subject_types)})"
            )
        else:
            why = (
                f"no rule of {version} lets {asked.requester} ask {asked.provider} about "
                f"{subject_type} subjects for purpose {asked.purpose}"
            )
        purposes = [
            p
            for p in memorandum.purpose_by_code
            if p != asked.purpose and _answers_something(federation, asked, p, subject_type, now)
        ]
        providers = [
            m for m in providers_for(federation, asked, (subject_type,), now) if m != asked.provider
        ]
        allowed = []
        if purposes:
            allowed.append(
                f"{asked.provider} may be asked about {subject_type} subjects for purpose "
                f"{_or(purposes)}"
            )
        if providers:
            allowed.append(f"for {asked.purpose} this node may ask {_or(providers)}")
        instead = "; ".join(allowed) or (
            f"{version} lets {asked.requester} ask {asked.provider} nothing about "
            f"{subject_type} subjects, nor any member anything for {asked.purpose}"
        )
        raise ExchangeError(f"{why}: {instead}; nothing was sent")


def providers_for(
    federation: Federation,
    asked: Asked,
    subject_types: Sequence[str] | None = None,
    now: dt.datetime | None = None,
) -> list[str]:
    """The members :func:`ruled_out` lets ``asked.requester`` ask for ``asked.purpose``
    about one of ``subject_types`` (default: those asked), in the memorandum's order,
    whoever ``asked.provider`` is: the members worth asking in a fan-out."""
    now = now or utc_now()
    kinds = asked.subject_types if subject_types is None else subject_types
    return [
        m.id
        for m in federation.memorandum.members
        if m.id != asked.requester
        and any(
            _answers_something(federation, asked, asked.purpose, kind, now, m.id)
            for kind in dict.fromkeys(kinds)
        )
    ]


def allowed_instead(
    federation: Federation, asked: Asked, now: dt.datetime | None = None
) -> str | None:
    """What the memorandum installed here would allow in place of the refused ``asked``,
    as one sentence; None when it allows ``asked`` itself (the refusal was not the
    memorandum's: a quota, another version, the provider's state), when a condition
    failed (the refusal names it), or when it allows nothing like it."""
    now = now or utc_now()
    all_themes = tuple(t.code for t in federation.engine.catalog.themes)
    asked_themes = asked.themes or all_themes
    version = f"memorandum version {federation.memorandum.version}"
    conditions_failed: list[str] = []
    if _allowed(federation, asked, asked.mode, asked_themes, now, conditions_failed):
        return None  # the memorandum allows what was asked: the refusal was not its
    if conditions_failed:
        return None  # a missing case reference or officer: the refusal says which
    other = Mode.CHECK if asked.mode is Mode.FULL else Mode.FULL
    retry = "retry with --check" if other is Mode.CHECK else "retry without --check"
    modes = (asked.mode,) if asked.batch else (asked.mode, other)
    themes = [] if asked.batch else _allowed(federation, asked, other, asked_themes, now)
    if themes:
        return f"{retry}: {version} allows {other.value} mode for {_and(themes)}"
    if asked.themes:
        for mode in modes:
            themes = _allowed(federation, asked, mode, all_themes, now)
            if themes:
                how = "" if mode is asked.mode else f" and {retry.removeprefix('retry ')}"
                return (
                    f"ask without --theme (every theme allowed is answered){how}: {version} "
                    f"allows {mode.value} mode for {_and(themes)}"
                )
    purposes = [
        p
        for p in federation.memorandum.purpose_by_code
        if p != asked.purpose
        and any(_answers_something(federation, asked, p, s, now) for s in asked.subject_types)
    ]
    if purposes:
        return (
            f"{version} lets {asked.requester} ask {asked.provider} about these subjects for "
            f"purpose {_or(purposes)}"
        )
    return None


# --- asking the engine ----------------------------------------------------------------------


def _decisions(
    federation: Federation,
    asked: Asked,
    purpose: str,
    subject_type: str,
    modes: Iterable[Mode],
    themes: Iterable[str],
    now: dt.datetime,
    provider: str | None = None,
) -> Iterable[tuple[str, Mode, bool, str]]:
    """(theme, mode, allowed, status) of each decision the engine makes."""
    engine = federation.engine
    for mode in modes:
        for theme in themes:
            decision = engine.decide(
                DecisionRequest(
                    requester=asked.requester,
                    provider=provider or asked.provider,
                    purpose=purpose,
                    subject_type=subject_type,
                    theme=theme,
                    mode=mode,
                    time=now,
                    case_reference=asked.case_reference,
                    officer=asked.officer,
                )
            )
            yield theme, mode, decision.allowed, decision.status


def _answers_something(
    federation: Federation,
    asked: Asked,
    purpose: str,
    subject_type: str,
    now: dt.datetime,
    provider: str | None = None,
) -> bool:
    """Whether some theme in some mode is allowed, or denied only for a failed
    condition (which the provider's refusal names)."""
    themes = [t.code for t in federation.engine.catalog.themes]
    return any(
        allowed or status == Status.FAILED_PRECONDITION
        for _, _, allowed, status in _decisions(
            federation, asked, purpose, subject_type, tuple(Mode), themes, now, provider
        )
    )


def _allowed(
    federation: Federation,
    asked: Asked,
    mode: Mode,
    themes: Sequence[str],
    now: dt.datetime,
    conditions_failed: list[str] | None = None,
) -> list[str]:
    """The themes of ``themes`` allowed in ``mode`` for some subject type asked; the
    themes denied for a failed condition go to ``conditions_failed``."""
    allowed: dict[str, None] = {}
    for subject_type in asked.subject_types:
        for theme, _, ok, status in _decisions(
            federation, asked, asked.purpose, subject_type, (mode,), themes, now
        ):
            if ok:
                allowed[theme] = None
            elif status == Status.FAILED_PRECONDITION and conditions_failed is not None:
                conditions_failed.append(theme)
    return list(allowed)


def _and(names: Sequence[str]) -> str:
    return ", ".join(names)


def _or(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"

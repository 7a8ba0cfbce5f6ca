"""Asking every member at once: one fan-out, one overall deadline, one outcome per member.

:func:`prepare` checks a request; :func:`ask_everyone` asks every member the
installed memorandum lets this node ask (:func:`members_to_ask`) with the node's
one client (``exchange.client.FederationClient``: signed, sealed, verified and
recorded like any query). It keeps these promises:

* **In parallel, under one deadline.** Every call starts at once; each call's
  gRPC deadline is the time left, and the fan-out waits on all of them together
  (``asyncio.wait``), so it takes as long as the slowest member that answers in
  time, never the sum. A dead or black-holed member costs the deadline once.
  After the deadline a short grace (:data:`GRACE_S`, at most a twentieth of the
  deadline) lets calls whose gRPC deadline fired record their OUTGOING entry;
  whatever is still out then is cancelled.
* **One outcome per member**, in the memorandum's order of members:
  ``answered`` (the verified answer), ``denied`` (a refusal signed by the
  member, with the policy's reason), ``unavailable`` (the network, an
  ``UNAVAILABLE``, a refusal nobody signed, an answer that did not verify),
  ``timed_out`` (no answer within the deadline) or ``skipped`` (its circuit
  breaker is open: nothing was sent).
* **Breakers** (:mod:`~creditexchange.node.federation.breaker`) learn from every
  outcome: ``unavailable`` and ``timed_out`` are failures, ``answered`` and
  ``denied`` successes.
* **Refused before anything is sent**: an identifier whose check character is
  wrong, a purpose the memorandum does not list, a header text the providers
  would refuse (and, by the client, a member the memorandum rules out).

A report embeds each answer as it was received: a verified answer carries its
envelope's bytes and its request's answer key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum

import grpc
from sqlalchemy import Engine

from creditexchange.errors import ExchangeError, QueryRefused
from creditexchange.node.catalog import Catalog
from creditexchange.node.exchange import askable
from creditexchange.node.exchange.answer_view import VerifiedAnswer
from creditexchange.node.exchange.askable import Asked, providers_for
from creditexchange.node.exchange.client import FederationClient
from creditexchange.node.exchange.federation import Federation
from creditexchange.node.exchange.protocol import MAX_BATCH_SUBJECTS
from creditexchange.node.federation.breaker import Breakers
from creditexchange.policy.document import Mode

__all__ = [
    "DEFAULT_DEADLINE_S",
    "GRACE_S",
    "Asking",
    "FanOut",
    "MemberResult",
    "Outcome",
    "RegionalClient",
    "ask_everyone",
    "fan_out",
    "members_to_ask",
    "prepare",
]

DEFAULT_DEADLINE_S = 5.0
"""The overall deadline of a fan-out when none is given, in seconds."""

GRACE_S = 0.25
"""The most a fan-out waits past its deadline for calls that timed out to record their entry."""


class Outcome(StrEnum):
    """What happened when a member was asked."""

    ANSWERED = "answered"
    DENIED = "denied"
    UNAVAILABLE = "unavailable"
    TIMED_OUT = "timed_out"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class MemberResult:
    """One member's outcome. ``reason`` is empty when it answered; ``answer`` is set
    only then; ``leaf_index`` is a denial's entry in its ledger."""

    member: str
    outcome: Outcome
    reason: str
    elapsed_ms: float
    answer: VerifiedAnswer | None = None
    leaf_index: int | None = None


@dataclass(frozen=True)
class FanOut:
    """The members asked, each with its outcome, in the memorandum's order."""

    results: tuple[MemberResult, ...]
    deadline_s: float
    elapsed_ms: float


class RegionalClient:
    """This node as it asks the whole region: its client, its own store, its breakers.

    ``async with RegionalClient(...)`` opens and closes the client (and its ledger,
    when the client owns it); ``creditexchange.node.app.wiring.open_regional_client``
    builds one from a node home.
    """

    def __init__(
        self, client: FederationClient, *, store: Engine, catalog: Catalog, breakers: Breakers
    ) -> None:
        self.client = client
        self.store = store
        self.catalog = catalog
        self.breakers = breakers

    async def __aenter__(self) -> RegionalClient:
        await self.client.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.__aexit__(*exc)

    @property
    def member_id(self) -> str:
        return self.client.member_id

    @property
    def federation(self) -> Federation:
        return self.client.federation


def members_to_ask(
    federation: Federation,
    requester: str,
    purpose: str,
    subject_types: Collection[str],
    *,
    case_reference: str = "",
    officer: str = "",
) -> list[str]:
    """The members worth asking, in the memorandum's order: those the installed memorandum
    lets ``requester`` ask something for ``purpose`` about one of ``subject_types`` — a
    permit lists the member among the providers and the requester among the requesters,
    for that purpose and type, in force now (``exchange.askable.providers_for``, the rule
    the client itself applies before sending). Never the requester itself."""
    asked = Asked(
        requester=requester,
        provider=requester,
        purpose=purpose,
        subject_types=tuple(subject_types),
        themes=(),
        mode=Mode.FULL,
        case_reference=case_reference,
        officer=officer,
    )
    return providers_for(federation, asked)


Ask = Callable[[str, float], Awaitable[VerifiedAnswer]]
"""Ask one member, with this gRPC timeout, and return its verified answer."""


async def fan_out(
    region: RegionalClient, members: Sequence[str], ask: Ask, *, deadline_s: float
) -> FanOut:
    """Ask ``members`` with ``ask``, all at once, under one deadline (see the module)."""
    if deadline_s <= 0:
        raise ExchangeError(f"the deadline must be a positive number of seconds, not {deadline_s}")
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + deadline_s
    finished: dict[str, float] = {}

    async def timed(member: str) -> VerifiedAnswer:
        try:
            return await ask(member, max(deadline - loop.time(), 0.001))
        finally:
            finished[member] = loop.time()

    tasks: dict[str, asyncio.Task[VerifiedAnswer]] = {}
    for member in members:
        if region.breakers.admit(member):
            tasks[member] = asyncio.create_task(timed(member), name=f"fan-out:{member}")
    try:
        if tasks:
            _, pending = await asyncio.wait(tasks.values(), timeout=max(deadline - loop.time(), 0))
            if pending:  # their gRPC deadline fires now: let them record what happened
                _, pending = await asyncio.wait(pending, timeout=min(GRACE_S, deadline_s / 20))
    finally:  # past the grace, or the fan-out itself cancelled: nothing is left running
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
    results = []
    for member in members:
        if member not in tasks:
            results.append(
                MemberResult(
                    member,
                    Outcome.SKIPPED,
                    f"skipped: {member}'s circuit is open after "
                    f"{region.breakers.failure_threshold} failures in a row; it is tried again "
                    f"{region.breakers.cool_down_s:g} s after the last one",
                    0.0,
                )
            )
            continue
        elapsed_ms = round((finished.get(member, loop.time()) - started) * 1000, 1)
        result = _result(region, member, tasks[member], elapsed_ms, deadline_s)
        if result.outcome in (Outcome.ANSWERED, Outcome.DENIED):
            region.breakers.succeeded(member)
        else:
            region.breakers.failed(member)
        results.append(result)
    return FanOut(tuple(results), deadline_s, round((loop.time() - started) * 1000, 1))


def _result(
    region: RegionalClient,
    member: str,
    task: asyncio.Task[VerifiedAnswer],
    elapsed_ms: float,
    deadline_s: float,
) -> MemberResult:
    late = f"no answer within the deadline of {deadline_s:g} s"
    if task.cancelled():
        return MemberResult(member, Outcome.TIMED_OUT, late, elapsed_ms)
    error = task.exception()
    if error is None:
        answer = task.result()
        return MemberResult(member, Outcome.ANSWERED, "", elapsed_ms, answer)
    if isinstance(error, QueryRefused):
        if error.verified:
            return MemberResult(
                member, Outcome.DENIED, error.detail, elapsed_ms, leaf_index=error.leaf_index
            )
        if error.status == grpc.StatusCode.DEADLINE_EXCEEDED.name:
            return MemberResult(member, Outcome.TIMED_OUT, late, elapsed_ms)
        reason = f"{error.status}: {error.detail}"
        return MemberResult(member, Outcome.UNAVAILABLE, reason, elapsed_ms)
    if isinstance(error, ExchangeError):  # an answer that did not verify, no key to seal to
        return MemberResult(member, Outcome.UNAVAILABLE, str(error), elapsed_ms)
    raise error  # this node's own failure (its ledger, a bug): not the member's


@dataclass(frozen=True)
class Asking:
    """A fan-out's request, checked (:func:`prepare`): each subject's canonical id and type,
    the mode, the header texts as they are sent (NFKC, trimmed) and the themes (empty:
    all the policy allows)."""

    subjects: tuple[tuple[str, str], ...]
    mode: Mode
    purpose: str
    legal_basis: str
    case_reference: str
    officer: str
    themes: tuple[str, ...] = ()
    partner: str = ""

    @property
    def texts(self) -> dict[str, str]:
        return {
            "purpose": self.purpose,
            "legal_basis": self.legal_basis,
            "case_reference": self.case_reference,
            "officer": self.officer,
            "partner": self.partner,
        }


def prepare(
    region: RegionalClient,
    subjects: Sequence[str],
    *,
    purpose: str,
    legal_basis: str,
    case_reference: str,
    officer: str,
    partner: str = "",
    mode: Mode | str = Mode.FULL,
    themes: Sequence[str] = (),
) -> Asking:
    """The request of a fan-out, or the refusal (:class:`ExchangeError`) that stops it
    before anything is sent: an identifier whose check character is wrong, an unknown
    purpose or mode, too many subjects, a header text a provider would refuse."""
    try:
        mode = Mode(mode)
    except ValueError:
        raise ExchangeError(f"unknown mode {mode!r}: it is 'full' or 'check'") from None
    if not subjects:
        raise ExchangeError("no subject to ask about")
    if len(subjects) > 1 and mode is Mode.FULL:
        raise ExchangeError("several subjects are asked in check mode only (a batch check)")
    if len(subjects) > MAX_BATCH_SUBJECTS:
        raise ExchangeError(
            f"{len(subjects)} subjects in one batch; at most {MAX_BATCH_SUBJECTS} are accepted: "
            "split the list; nothing was sent"
        )
    parsed = askable.subject_types(subjects)  # a wrong check character: nothing is sent
    federation = region.federation
    if purpose not in federation.memorandum.purpose_by_code:
        raise ExchangeError(
            f"unknown purpose {purpose!r}: memorandum version {federation.version} lists "
            f"{', '.join(federation.memorandum.purpose_by_code)}; nothing was sent"
        )
    header = region.client.header(  # ExchangeError naming a text a provider would refuse
        region.member_id,
        purpose=purpose,
        legal_basis=legal_basis,
        case_reference=case_reference,
        officer=officer,
        partner=partner,
    )
    return Asking(  # the texts as they are sent: NFKC, trimmed
        tuple(parsed),
        mode,
        header.purpose,
        header.legal_basis,
        header.case_reference,
        header.officer,
        tuple(themes),
        header.partner,
    )


async def ask_everyone(
    region: RegionalClient, asking: Asking, *, deadline_s: float = DEFAULT_DEADLINE_S
) -> FanOut:
    """Ask every member worth asking (:func:`members_to_ask`) under one deadline.

    One subject is a ``Query`` (``full``) or a ``Check`` (``check``); several are one
    ``BatchCheck`` per member (check mode only).
    """
    members = members_to_ask(
        region.federation,
        region.member_id,
        asking.purpose,
        {kind for _, kind in asking.subjects},
        case_reference=asking.case_reference,
        officer=asking.officer,
    )
    client = region.client
    subjects = [canonical for canonical, _ in asking.subjects]
    texts = asking.texts

    async def ask(member: str, timeout: float) -> VerifiedAnswer:
        if len(subjects) > 1:
            return await client.batch_check(
                subjects, to=member, themes=asking.themes, timeout=timeout, **texts
            )
        return await client.query(
            subjects[0],
            to=member,
            themes=asking.themes,
            check=asking.mode is Mode.CHECK,
            timeout=timeout,
            **texts,
        )

    return await fan_out(region, members, ask, deadline_s=deadline_s)

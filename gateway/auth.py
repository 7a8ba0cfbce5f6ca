"""Who is calling: the key (``Authorization: Bearer cx1....``), the officer who asked
(``X-Officer``, required), the caller's role and rate, as FastAPI dependencies.

:func:`partner` and :func:`auditor` return the call's :class:`Asker`; a route of
either kind declares one of them and gets a caller that is registered, active, of
the right role and within its rate, and an officer text a provider would accept
(NFKC, visible, bounded). :meth:`Asker.require_purpose` refuses a purpose the
partner was not registered for, :meth:`Asker.require_subject_types` a subject type.
Each refusal is a problem document that says what to do; none of them asks a
member or writes anything.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from creditexchange.errors import AccessError
from creditexchange.gateway.access import Caller, Role
from creditexchange.gateway.context import Gateway
from creditexchange.gateway.problems import Problem
from creditexchange.node.exchange.protocol import header_text_problem

__all__ = ["Asker", "GatewayDep", "auditor", "gateway_of", "partner"]

_bearer = HTTPBearer(
    auto_error=False,
    description="The key the node's operator issued ('credit-node partners add' / "
    "'credit-node auditors add'). 运营方签发的访问密钥。",
)


async def gateway_of(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


GatewayDep = Annotated[Gateway, Depends(gateway_of)]


@dataclass(frozen=True)
class Asker:
    """A call's caller and the officer who asked through it."""

    caller: Caller
    officer: str
    gateway: Gateway

    @property
    def name(self) -> str:
        return self.caller.name

    def require_purpose(self, purpose: str) -> None:
        if purpose not in self.caller.purposes:
            self.gateway.metrics.refused.labels("purpose").inc()
            raise Problem(
                403,
                "purpose-not-registered",
                "Purpose not registered for this partner",
                f"{self.caller.name!r} is registered for {', '.join(self.caller.purposes)}; "
                f"it may not ask for {purpose!r}. Ask the node's operator to register the "
                "purpose if the law gives you one.",
                registered_purposes=list(self.caller.purposes),
            )

    def charge(self, calls: float) -> None:
        """Count ``calls`` more against the caller's rate (a batch, an export weighs more
        than one lookup): a 429 problem when that is over it."""
        _within_rate(self.gateway, self.caller, calls)

    def require_subject_types(self, types: Iterable[str]) -> None:
        allowed = self.caller.subject_types
        if not allowed:
            return
        wrong = sorted(set(types) - set(allowed))
        if wrong:
            self.gateway.metrics.refused.labels("subject_type").inc()
            raise Problem(
                403,
                "subject-type-not-registered",
                "Subject type not registered for this partner",
                f"{self.caller.name!r} may ask about {', '.join(allowed)} only, not "
                f"{', '.join(wrong)}",
            )


OfficerHeader = Annotated[
    str | None,
    Header(
        alias="X-Officer",
        description="The officer (or system user) who asked, in UTF-8; recorded in every "
        "ledger entry the call causes, here and at every member asked. "
        "经办人（必填，UTF-8，记入各方审计账本）。",
        examples=["HZ-LAND-0042"],
    ),
]
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _authenticated(gateway: Gateway, credentials: HTTPAuthorizationCredentials | None) -> Caller:
    if credentials is None or credentials.scheme.lower() != "bearer":
        gateway.metrics.refused.labels("key").inc()
        raise Problem(
            401,
            "unauthenticated",
            "Key missing",
            "send the key the node's operator issued as 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": 'Bearer realm="credit-exchange"'},
        )
    try:
        return gateway.keys.authenticate(credentials.credentials)
    except AccessError as exc:
        gateway.metrics.refused.labels("revoked" if "revoked" in str(exc) else "key").inc()
        raise Problem(
            401,
            "unauthenticated",
            "Key not accepted",
            str(exc),
            headers={"WWW-Authenticate": 'Bearer realm="credit-exchange", error="invalid_token"'},
        ) from None


def _header_text(raw: str | None) -> str:
    """A header's text: HTTP hands it over as latin-1; a client sending UTF-8 (an officer's
    Chinese name) gets it back as it wrote it."""
    if not raw:
        return ""
    try:
        return raw.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return raw


def _officer(gateway: Gateway, officer: str | None) -> str:
    text = unicodedata.normalize("NFKC", _header_text(officer)).strip()
    problem = header_text_problem("officer", text) if text else "the X-Officer header is missing"
    if problem:
        gateway.metrics.refused.labels("officer").inc()
        raise Problem(
            400,
            "officer-required",
            "Officer missing or invalid",
            f"{problem}: name the officer who asked in X-Officer (e.g. an employee number); "
            "it is recorded in every ledger entry of the call",
        )
    return text


def _within_rate(gateway: Gateway, caller: Caller, cost: float = 1.0) -> None:
    wait = gateway.limiter.take(caller, cost)
    if wait > 0:
        gateway.metrics.rate_limited.labels(caller.name).inc()
        seconds = max(1, math.ceil(wait))
        raise Problem(
            429,
            "rate-limited",
            "Too many requests",
            f"{caller.name!r} may make {caller.rate_per_min} calls a minute (a batch of 100 "
            f"subjects, an export or a reconciliation counts as one more); retry in {seconds} s",
            headers={"Retry-After": str(seconds)},
        )


def _asker(
    role: Role,
    gateway: Gateway,
    credentials: HTTPAuthorizationCredentials | None,
    officer: str | None,
) -> Asker:
    caller = _authenticated(gateway, credentials)
    if caller.role is not role:
        gateway.metrics.refused.labels("role").inc()
        raise Problem(
            403,
            "wrong-role",
            f"Not for a{'n' if role is Role.AUDITOR else ''} {caller.role.value}",
            f"{caller.name!r} is registered as {caller.role.value}; this endpoint is for "
            f"{role.value}s",
        )
    asker = Asker(caller, _officer(gateway, officer), gateway)
    _within_rate(gateway, caller)
    return asker


async def partner(
    request: Request, gateway: GatewayDep, credentials: BearerDep, officer: OfficerHeader = None
) -> Asker:
    """A partner system's call (dependency)."""
    asker = _asker(Role.PARTNER, gateway, credentials, officer)
    request.state.caller = asker.name  # the metrics' caller label
    return asker


async def auditor(
    request: Request, gateway: GatewayDep, credentials: BearerDep, officer: OfficerHeader = None
) -> Asker:
    """An auditor's call (dependency)."""
    asker = _asker(Role.AUDITOR, gateway, credentials, officer)
    request.state.caller = asker.name
    return asker


PartnerDep = Annotated[Asker, Depends(partner)]
AuditorDep = Annotated[Asker, Depends(auditor)]
__all__ += ["AuditorDep", "PartnerDep"]

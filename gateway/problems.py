"""Errors as RFC 9457 problem documents (``application/problem+json``).

Every error the gateway answers says what was wrong and what to do: ``type`` names the
kind of problem (``urn:credit-exchange:problem:<slug>``), ``title`` is its short name,
``detail`` says what this request did wrong, ``status`` repeats the HTTP status. A
validation error lists each field (``errors``: where and what). Nothing internal — no
stack, no SQL, no identity number — ever reaches a caller; an unexpected error is a
500 that names the request id to quote to the operator, and is logged.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from creditexchange.errors import (
    AccessError,
    AnswerRejected,
    CatalogError,
    CreditExchangeError,
    ExchangeError,
    InvalidIdentifier,
    NotFound,
    QueryRefused,
    ReportError,
    ScreeningError,
)

__all__ = ["PROBLEM_JSON", "Problem", "install_handlers", "problem_response"]

PROBLEM_JSON = "application/problem+json"
_TYPE = "urn:credit-exchange:problem:"
log = logging.getLogger("creditexchange.gateway")


class Problem(Exception):
    """An error answered as a problem document; raise it from a route."""

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = extra


def problem_response(problem: Problem) -> JSONResponse:
    body = {
        "type": _TYPE + problem.slug,
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
        **problem.extra,
    }
    return JSONResponse(body, problem.status, headers=problem.headers, media_type=PROBLEM_JSON)


# The project's errors, the most specific first: (kind, status, slug, title).
_ERRORS: tuple[tuple[type[CreditExchangeError], int, str, str], ...] = (
    (InvalidIdentifier, 400, "invalid-identifier", "Invalid identifier"),
    (NotFound, 404, "not-found", "Not found"),
    (AccessError, 403, "forbidden", "Not allowed for this caller"),
    (QueryRefused, 502, "member-refused", "A member refused the request"),
    (AnswerRejected, 502, "answer-rejected", "A member's answer did not verify"),
    (ExchangeError, 400, "request-refused", "Request refused before anything was sent"),
    (ScreeningError, 400, "screening", "Screening not possible as asked"),
    (CatalogError, 400, "catalog", "Unknown theme or catalog problem"),
    (ReportError, 400, "report", "Report problem"),
)


def from_error(error: CreditExchangeError) -> Problem:
    for kind, status, slug, title in _ERRORS:
        if isinstance(error, kind):
            return Problem(status, slug, title, str(error))
    return Problem(503, "node-unavailable", "The node cannot answer now", str(error))


def install_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` as a problem document."""

    @app.exception_handler(Problem)
    async def _problem(_request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc)

    @app.exception_handler(CreditExchangeError)
    async def _project(_request: Request, exc: CreditExchangeError) -> JSONResponse:
        return problem_response(from_error(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "where": ".".join(str(p) for p in e.get("loc", ())),
                "what": str(e.get("msg", "")),
            }
            for e in exc.errors()
        ]
        shown = "; ".join(f"{e['where']}: {e['what']}" for e in errors[:5])
        return problem_response(
            Problem(422, "invalid-request", "Invalid request", shown, errors=errors)
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        titles = {404: "Not found", 405: "Method not allowed", 406: "Not acceptable"}
        detail = exc.detail if isinstance(exc.detail, str) else titles.get(exc.status_code, "")
        if exc.status_code == 404 and detail == "Not Found":
            detail = "no such endpoint: the API is described at /openapi.json"
        return problem_response(
            Problem(
                exc.status_code,
                "http-" + str(exc.status_code),
                titles.get(exc.status_code, "HTTP error"),
                detail,
                headers=dict(exc.headers or {}),
            )
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        incident = uuid.uuid4().hex[:12]
        log.exception("gateway error", extra={"data": {"incident": incident}})
        return problem_response(
            Problem(
                500,
                "internal",
                "Internal error",
                f"the gateway failed on this request; quote incident {incident} to the "
                "node's operator",
                incident=incident,
            )
        )

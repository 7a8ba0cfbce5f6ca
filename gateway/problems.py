"""Errors as RFC 9457 problem documents (``application/problem+json``).

Every error the gateway answers says what was wrong and what to do: ``type`` names the
kind of problem (``urn:credit-exchange:problem:<slug>``), ``title`` is its short name,
``detail`` says what this request did wrong, ``status`` repeats the HTTP status. A
validation error lists each field (``errors``: where and what). Nothing internal — no
stack, no SQL, no identity number — ever reaches a caller; an unexpected error is a
500 that names the request id to quote to the operator, and is logged.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from creditexchange.errors import (
    AccessError,
    AnswerRejected,
    ApiProblem,
    CatalogError,
    CreditExchangeError,
    ExchangeError,
    InvalidIdentifier,
    NotFound,
    QueryRefused,
    ReportError,
    ScreeningError,
)

__all__ = [
    "PROBLEM_JSON",
    "Problem",
    "ProblemDocument",
    "install_handlers",
    "problem_response",
    "problem_responses",
]

PROBLEM_JSON = "application/problem+json"
_TYPE = "urn:credit-exchange:problem:"
log = logging.getLogger("gateway")


Problem = ApiProblem
"""An error answered as a problem document; raise it from a route (the errors module
declares it, as every exception of the project)."""


class ProblemDocument(BaseModel):
    """An error (RFC 9457): what was wrong and what to do. 错误说明（RFC 9457 问题文档）。"""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "type": "urn:credit-exchange:problem:purpose-not-registered",
                    "title": "Purpose not registered for this partner",
                    "status": 403,
                    "detail": "'icbc-huizhou' is registered for bank_credit; it may not ask "
                    "for 'land_auction'. Ask the node's operator to register the purpose if "
                    "the law gives you one.",
                }
            ]
        },
    )

    type: str = Field(description="The kind of problem, a URN. 问题类型。")
    title: str = Field(description="Its short name. 简述。")
    status: int = Field(description="The HTTP status. HTTP 状态码。")
    detail: str = Field(description="What this request did wrong, what to do. 具体原因及处理办法。")
    errors: list[dict[str, str]] | None = Field(
        default=None,
        description="A validation error's fields: where and what. 参数校验错误明细。",
    )


_DESCRIBED: dict[int, str] = {
    400: "The request is wrong: the detail says which part and how to fix it. 请求有误。",
    401: "No key, or a key unknown or revoked. 密钥缺失或无效。",
    403: "The key's caller may not do this (role, purpose or subject type not registered). "
    "无此权限。",
    404: "Not found: the detail says what. 未找到。",
    406: "The Accept header allows no type this route answers. 不支持的 Accept。",
    413: "Request body too large. 请求体过大。",
    422: "A field of the wrong type or out of bounds: `errors` lists each. 参数校验失败。",
    429: "Over the caller's rate: retry after Retry-After seconds. 超出调用频率。",
}


def problem_responses(*more: int | tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    """The problem documents a route may answer, for its OpenAPI description: those of
    every authenticated route (401, 403, 422, 429 with Retry-After) and ``more`` (a
    status, or a status with its own description)."""
    documented: dict[int | str, dict[str, Any]] = {}
    schema = ProblemDocument.model_json_schema()
    for item in (401, 403, 422, 429, *more):
        status, what = item if isinstance(item, tuple) else (item, _DESCRIBED[item])
        entry: dict[str, Any] = {"description": what, "content": {PROBLEM_JSON: {"schema": schema}}}
        if status == 429:
            entry["headers"] = {
                "Retry-After": {
                    "description": "Seconds to wait. 需等待的秒数。",
                    "schema": {"type": "integer"},
                }
            }
        documented[status] = entry
    return documented


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


_VALIDATION_REF = "#/components/schemas/HTTPValidationError"
_PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"where": {"type": "string"}, "what": {"type": "string"}},
            },
        },
    },
}


def _describe_validation_problems(app: FastAPI) -> None:
    """Make ``app``'s OpenAPI description say what its handler answers: FastAPI documents
    its own validation error (``HTTPValidationError`` as ``application/json``) on every
    route with parameters; this app answers it as a problem document."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                invalid = operation.get("responses", {}).get("422", {})
                content = invalid.get("content", {})
                json_schema = content.get("application/json", {}).get("schema", {})
                if json_schema.get("$ref") == _VALIDATION_REF:
                    invalid["content"] = {PROBLEM_JSON: {"schema": _PROBLEM_SCHEMA}}
        components = schema.get("components", {}).get("schemas", {})
        if _VALIDATION_REF not in json.dumps(schema):
            components.pop("HTTPValidationError", None)
            if '"#/components/schemas/ValidationError"' not in json.dumps(schema):
                components.pop("ValidationError", None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def install_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` as a problem document (and describe it so)."""
    _describe_validation_problems(app)

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
        if isinstance(exc.__cause__, Problem):  # raised while FastAPI read the body (its limit)
            return problem_response(exc.__cause__)
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

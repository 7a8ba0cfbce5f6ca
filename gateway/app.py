"""The gateway's FastAPI application: its routes, its error documents, its limits.

``create_app(gateway)`` builds the app over a running :class:`~.context.Gateway`;
``gateway.server`` serves it with uvicorn. Partner routes live in ``partners``,
the joint reward-and-punishment screening in ``screenings``, the auditors' API in
``auditors``. Every request passes two pieces of plain ASGI middleware: the body
limit (413 before a byte too many is read) and the metrics (requests by route
template, caller and status; latency by route).
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from creditexchange.gateway import auditors, partners, screenings
from creditexchange.gateway.context import Gateway
from creditexchange.gateway.metrics import GatewayMetrics
from creditexchange.gateway.problems import Problem, install_handlers, problem_response

__all__ = ["DESCRIPTION", "create_app"]

DESCRIPTION = """\
**Credit Exchange Node — REST gateway** · 信用信息共享节点 REST 网关

The city's node, for the systems that use public credit information (bank loan
review, land auctions and public-resource trading, fiscal funds, grain procurement,
civil-service hiring) and for auditors. A partner system never holds the node's keys:
it calls with the key the node's operator issued it (`Authorization: Bearer …`) and
names the officer who asked (`X-Officer`). Every lookup across the region goes
through the node's own signed, sealed and verified client path and is recorded, with
the partner and the officer, in this node's audit ledger and in the ledger of every
member asked.

本网关供银行、土地交易、财政资金、粮食收购等业务系统及审计人员使用。调用方凭运营方
签发的密钥访问，并须在 `X-Officer` 中注明经办人；每一次跨区域查询均经节点签名、加密、
验签，并连同调用方与经办人记入本节点及每个被查询成员的审计账本。

Errors are `application/problem+json` (RFC 9457): `type`, `title`, `status` and a
`detail` that says what was wrong and what to do. 错误以 RFC 9457 问题文档返回。
"""

TAGS: list[dict[str, Any]] = [
    {
        "name": "partners",
        "description": "Lookups for partner systems: the cross-region report, this city's "
        "own records, hit / no-hit checks, report verification. 合作系统查询。",
    },
    {
        "name": "screenings",
        "description": "Joint reward and punishment screening (联合奖惩, trigger and "
        "feedback): the measures that apply to subjects in a business scene, and what the "
        "department then did. 联合奖惩筛查与反馈。",
    },
    {
        "name": "auditors",
        "description": "Read-only access to this node's audit ledger for auditors: "
        "checkpoints, filtered entries, proofs, witnesses, reconciliation, exports. "
        "Every call is itself recorded. 审计接口（只读，调用亦留痕）。",
    },
]


class BodyLimit:
    """Refuse a request body larger than ``limit`` bytes (413), by its Content-Length
    or, when it streams, as soon as it grows past the limit."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = Problem(
            413,
            "body-too-large",
            "Request body too large",
            f"the body may hold at most {self.limit} bytes: split the request (a check or "
            "a screening takes at most 1,000 subjects)",
        )
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = self.limit + 1
                if declared > self.limit:
                    await problem_response(too_large)(scope, receive, send)
                    return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise too_large
            return message

        await self.app(scope, limited, send)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Measured:
    """Count every request by route template, caller and status, and time it."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            caller = scope.get("state", {}).get("caller", "-")
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"  # any token
            self.metrics.requests.labels(template, method, caller, str(status)).inc()
            self.metrics.latency.labels(template).observe(time.perf_counter() - started)


def create_app(gateway: Gateway) -> FastAPI:
    app = FastAPI(
        title="Credit Exchange Node gateway · 信用信息共享节点网关",
        version="1",
        description=DESCRIPTION,
        openapi_tags=TAGS,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.gateway = gateway
    install_handlers(app)
    app.include_router(partners.router)
    app.include_router(screenings.router)
    app.include_router(auditors.router)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "member": gateway.member_id}

    app.add_middleware(BodyLimit, limit=gateway.limits.max_body_bytes)
    app.add_middleware(Measured, metrics=gateway.metrics)
    return app

"""Serving the gateway: uvicorn on the node's ``gateway_host``:``gateway_port``, over
TLS with the operator's certificate, alone (``credit-node gateway``) or beside the
gRPC server (``credit-node serve``, sharing its ledger, database and metrics).

The gateway refuses to listen in clear on anything but a loopback address: partners'
officers and subjects cross the network only over TLS (or behind a TLS proxy on the
same host).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import socket
from collections.abc import AsyncIterator, Iterator

import uvicorn
from sqlalchemy import Engine

from creditexchange.errors import ConfigError
from creditexchange.gateway.access import KeyRegistry
from creditexchange.gateway.app import create_app
from creditexchange.gateway.context import Gateway, GatewayLimits
from creditexchange.gateway.metrics import GatewayMetrics
from creditexchange.node.app.config import NodeConfig, permission_problem
from creditexchange.node.app.keys import load_subject_key_ring
from creditexchange.node.app.server import NodeServer
from creditexchange.node.app.server import serve as serve_node
from creditexchange.node.app.wiring import open_audit_log, open_ledger, open_regional_client
from creditexchange.node.database import open_database
from creditexchange.node.exchange.metrics import Metrics
from creditexchange.node.ledger import Ledger

__all__ = ["GatewayServer", "open_gateway", "serve_gateway", "serve_with_gateway", "tls_files"]

log = logging.getLogger("gateway")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tls_files(config: NodeConfig) -> tuple[str, str] | None:
    """The gateway's certificate and key, or None on loopback without them; ConfigError
    when the gateway would serve in clear beyond this machine, or a file is missing."""
    s = config.settings
    if (s.gateway_tls_cert is None) != (s.gateway_tls_key is None):
        raise ConfigError("set both gateway_tls_cert and gateway_tls_key, or neither")
    if s.gateway_tls_cert is None or s.gateway_tls_key is None:
        if not _loopback(s.gateway_host):
            raise ConfigError(
                f"the gateway would listen on {s.gateway_host} without TLS: set "
                "gateway_tls_cert and gateway_tls_key (a server certificate from your CA), "
                'or gateway_host = "127.0.0.1" behind a TLS proxy'
            )
        return None
    cert, key = config.path(s.gateway_tls_cert), config.path(s.gateway_tls_key)
    for path, setting in ((cert, "gateway_tls_cert"), (key, "gateway_tls_key")):
        if not path.is_file():
            raise ConfigError(f"{setting}: {path} is not a file")
    problem = permission_problem(key)
    if problem:
        raise ConfigError(f"gateway_tls_key: {problem}")
    return str(cert), str(key)


@contextlib.asynccontextmanager
async def open_gateway(
    config: NodeConfig,
    *,
    ledger: Ledger | None = None,
    database: Engine | None = None,
    metrics: Metrics | None = None,
) -> AsyncIterator[Gateway]:
    """The gateway's parts, opened from ``config``, sharing a serving node's ``ledger``,
    ``database`` and ``metrics`` when given.

    The gateway's metrics join ``metrics``' registry, and the breakers of its regional
    client (every report, check and screening asks through it) set ``metrics``' gauge
    ``credit_node_member_circuit``: the node's /metrics shows each member's circuit as
    the partners' fan-outs left it. Without ``metrics`` the gateway has metrics of its
    own, which nothing serves."""
    engine = database if database is not None else open_database(config.database_url)
    shown = metrics if metrics is not None else Metrics()
    own_ledger = ledger is None
    running = ledger if ledger is not None else open_ledger(config, engine)
    if own_ledger:
        await running.__aenter__()
    try:
        region = open_regional_client(config, ledger=running, database=engine, metrics=shown)
        async with region:
            yield Gateway(
                config=config,
                region=region,
                database=engine,
                ledger=running,
                log=open_audit_log(config, engine),
                keys=KeyRegistry(engine),
                metrics=GatewayMetrics(shown.registry),
                subject_keys=load_subject_key_ring(config, engine),
                limits=GatewayLimits(
                    max_body_bytes=config.settings.gateway_max_body_bytes,
                    max_subjects=config.settings.max_batch_subjects,
                    deadline_s=config.settings.gateway_deadline_s,
                ),
            )
    finally:
        if own_ledger:
            await running.__aexit__(None, None, None)


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handlers: whoever runs the gateway (the node, the
    ``gateway`` command, a test) decides when it stops."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class GatewayServer:
    """The gateway served by uvicorn: ``async with GatewayServer(gateway, port=0) as s``;
    ``s.port`` is the port bound (``0`` binds a free one), ``s.url`` its base URL."""

    def __init__(self, gateway: Gateway, *, host: str | None = None, port: int | None = None):
        settings = gateway.config.settings
        self.gateway = gateway
        self.host = host or settings.gateway_host
        self.requested_port = settings.gateway_port if port is None else port
        self.tls = tls_files(gateway.config)
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    async def __aenter__(self) -> GatewayServer:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # accepted ones inherit it
        try:
            sock.bind((self.host, self.requested_port))
        except OSError as exc:
            sock.close()
            raise ConfigError(
                f"the gateway cannot listen on {self.host}:{self.requested_port}: "
                f"{exc.strerror}; set gateway_port to a free port"
            ) from None
        sock.listen(1024)
        sock.setblocking(False)
        self._socket = sock
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            create_app(self.gateway),
            log_level="warning",
            access_log=False,
            lifespan="off",
            ssl_certfile=self.tls[0] if self.tls else None,
            ssl_keyfile=self.tls[1] if self.tls else None,
            server_header=False,
            timeout_graceful_shutdown=5,
        )
        self._server = _QuietServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise ConfigError("the gateway stopped while starting")
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        if self._socket is not None:
            self._socket.close()


def _announce(config: NodeConfig, server: GatewayServer) -> None:
    log.info(
        "gateway serving",
        extra={"data": {"member": config.member_id, "url": server.url, "tls": bool(server.tls)}},
    )


def _stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM, its handlers installed now (before anything
    starts, so a signal during start-up stops the process cleanly too)."""
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopped.set)
    return stopped


async def serve_gateway(config: NodeConfig) -> None:
    """``credit-node gateway``: the gateway alone (the node serves elsewhere, on the same
    database), its metrics — the gateway's and its members' circuits — on
    ``metrics_port``, until SIGINT or SIGTERM."""
    tls_files(config)  # refuse a clear-text listener before opening anything
    stopped = _stop_on_signals()
    metrics = Metrics()
    if config.settings.metrics_port:
        metrics.serve(config.settings.metrics_port, config.settings.metrics_host)
    async with open_gateway(config, metrics=metrics) as gateway, GatewayServer(gateway) as s:
        _announce(config, s)
        await stopped.wait()


async def serve_with_gateway(
    config: NodeConfig, *, reuse_port: bool = False, lead: bool = True
) -> None:
    """``credit-node serve``: the node, and its gateway beside it on ``gateway_port``
    (none when it is 0), sharing its ledger and its metrics (the members' circuits
    among them) on one endpoint."""
    if not config.settings.gateway_port:
        await serve_node(config, reuse_port=reuse_port, lead=lead)
        return
    tls_files(config)
    stopped = _stop_on_signals()
    async with (
        NodeServer(config, reuse_port=reuse_port, lead=lead) as node,
        open_gateway(config, ledger=node.ledger, metrics=node.metrics) as gateway,
        GatewayServer(gateway) as s,
    ):
        _announce(config, s)
        await stopped.wait()

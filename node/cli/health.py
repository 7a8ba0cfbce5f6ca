"""``credit-node health``: ask a running node's gRPC health service whether it serves.

The probe a container runtime or an orchestrator runs beside the node (the image's
HEALTHCHECK, the Kubernetes probes in ``deploy/``). It asks ``grpc.health.v1.Health/Check``
over the node's own mutual TLS, with the home's certificate, pinning the node's member
name, exactly as a peer would: a node whose certificate, CA or memorandum no longer
lets members in fails its probe too, where a bare TCP check would pass.

Exit status: 0 the node answers SERVING; 1 it answers anything else, refuses the probe
or does not answer in time (the message on stderr says which, and what to look at);
2 the probe could not be made (no node home, unreadable certificate).

Nothing is recorded in the node's ledger for an answered probe; a refused one is, like
every refused call.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Annotated

import grpc
import typer
from grpc_health.v1 import health_pb2, health_pb2_grpc

from creditexchange.certs.identity import member_dns_name
from creditexchange.node.app.config import NodeConfig, load_config
from creditexchange.node.app.tls import channel_credentials, tls_credentials
from creditexchange.node.cli.common import HomeOption, err, out, reports_errors

__all__ = ["NodeHealth", "health", "health_app", "probe", "probe_address"]

_SERVING = health_pb2.HealthCheckResponse.SERVING
_STATUS_NAMES = health_pb2.HealthCheckResponse.ServingStatus.Name


@dataclass(frozen=True)
class NodeHealth:
    """What one probe found: whether the node serves, and a sentence for the operator."""

    serving: bool
    message: str


def probe_address(config: NodeConfig) -> str:
    """Where the node listens, as a client dials it: an address that means "every
    interface" (``0.0.0.0``, ``::``) is probed on the loopback of the same family."""
    host = config.settings.grpc_host.strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return f"{host}:{config.settings.grpc_port}"  # a host name
    if address.is_unspecified:
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    shown = f"[{address}]" if address.version == 6 else str(address)
    return f"{shown}:{config.settings.grpc_port}"


def probe(
    config: NodeConfig, *, address: str | None = None, service: str = "", timeout_s: float = 5.0
) -> NodeHealth:
    """Ask the node of ``config`` (at ``address``, by default where it listens) whether
    ``service`` ("" for the node as a whole) is SERVING, over mutual TLS with the home's
    certificate."""
    target = address or probe_address(config)
    credentials = channel_credentials(tls_credentials(config))
    name = member_dns_name(config.member_id)
    options = [("grpc.ssl_target_name_override", name)]
    what = f"{config.member_id} at {target}"
    with grpc.secure_channel(target, credentials, options=options) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
        except grpc.RpcError as exc:
            return NodeHealth(False, _failure(what, service, exc, timeout_s))
    status = _STATUS_NAMES(reply.status)
    if reply.status == _SERVING:
        return NodeHealth(True, f"{what}: {status}")
    return NodeHealth(
        False,
        f"{what} answers {status}{_for(service)}: it is starting or stopping; "
        "its log (credit-node serve) says which",
    )


def _for(service: str) -> str:
    return f" for {service}" if service else ""


def _failure(what: str, service: str, error: grpc.RpcError, timeout_s: float) -> str:
    code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = error.details() if isinstance(error, grpc.Call) else str(error)
    if code == grpc.StatusCode.UNAVAILABLE:
        return (
            f"no answer from {what} ({details}): is 'credit-node serve' running with this "
            "home, and is grpc_port the port it listens on?"
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"{what} did not answer within {timeout_s:g} s: the node is overloaded or stuck"
    if code == grpc.StatusCode.NOT_FOUND:
        return f"{what} has no health status for service {service!r}"
    if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
        return (
            f"{what} refused this home's certificate ({code.name}: {details}): the "
            "certificate is revoked or not of a member of the installed memorandum"
        )
    return f"{what} failed the health check ({code.name}: {details})"


@reports_errors
def health(
    home: HomeOption,
    address: Annotated[
        str | None,
        typer.Option(help="HOST:PORT to ask; default: where the home's node listens"),
    ] = None,
    service: Annotated[
        str, typer.Option(help="a service's full name; default: the node as a whole")
    ] = "",
    timeout: Annotated[
        float, typer.Option(min=0.1, max=60.0, help="seconds to wait for the answer")
    ] = 5.0,
) -> None:
    """Exit 0 when the node serves (its gRPC health service says SERVING), 1 otherwise."""
    found = probe(load_config(home), address=address, service=service, timeout_s=timeout)
    if not found.serving:
        err.print(found.message, soft_wrap=True)
        raise typer.Exit(1)
    out.print(found.message, soft_wrap=True)


health_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
"""``credit-node health`` alone, for :func:`creditexchange.node.cli.main` to run without
building the whole command table: a probe runs every few seconds."""
health_app.command()(health)

"""``credit-node demo``: the whole "3+2" federation on this machine, in one command.

It provisions six nodes (a federation CA and certificates, keys, the memorandum
signed by all six, sample department data for each), starts each as its own
``credit-node serve`` process on loopback, and walks through a showcase — an
allowed query, a masked answer, a denied purpose, a hit / no-hit check on an
individual, a batch check, customs data, an auditor verifying a ledger — printing
each answer with its receipt and what was verified. Then the federation keeps
running for you to query until Ctrl-C (``--once`` stops after the showcase).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import grpc
import typer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import text

from creditexchange.certs.identity import member_dns_name
from creditexchange.errors import FederationSetupError, QueryRefused
from creditexchange.node.cli.common import err, out, reports_errors
from creditexchange.node.cli.exchange import print_answer
from creditexchange.node.config import load_config
from creditexchange.node.exchange.client import FederationClient
from creditexchange.node.exchange.server import tls_material
from creditexchange.node.ledger import open_store as open_ledger_store
from creditexchange.node.ledger.log import verify
from creditexchange.node.provision import ProvisionedNode, provision
from creditexchange.node.sample import showcase_subject
from creditexchange.node.store import open_store

PUBLIC = "r.status <> 'expired' AND (r.publicity_end IS NULL OR r.publicity_end >= CURRENT_DATE)"


@reports_errors
def demo(
    once: Annotated[bool, typer.Option("--once", help="stop after the showcase")] = False,
    base_port: Annotated[
        int, typer.Option(help="nodes listen on this port and the next five")
    ] = 7501,
    metrics_port: Annotated[
        int, typer.Option(help="first Prometheus port (six in a row); 0: none")
    ] = 9501,
    subjects: Annotated[int, typer.Option(min=20, help="sample subjects per member")] = 300,
    seed: int = 2026,
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="keep the federation here (default: a temporary folder)"),
    ] = None,
) -> None:
    """Start a six-member federation on loopback and show signed, audited cross-city queries."""
    if directory is not None and directory.exists() and any(directory.iterdir()):
        raise FederationSetupError(f"{directory} is not empty: give a new folder to --dir")
    root = directory or Path(tempfile.mkdtemp(prefix="credit-federation-"))
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        out.rule("1. provision six members: CA, certificates, keys, memorandum, sample data")
        nodes = provision(
            root,
            base_port=base_port,
            metrics_base_port=metrics_port,
            subjects=subjects,
            seed=seed,
            say=lambda line: out.print(f"  {line}"),
        )
        out.rule("2. start each node as its own process (credit-node serve)")
        for member, node in nodes.items():
            processes[member] = _start(node)
        _wait_ready(nodes, processes)
        for member, node in nodes.items():
            metrics = (
                f", metrics http://127.0.0.1:{node.metrics_port}/metrics" if metrics_port else ""
            )
            out.print(f"  {member:9} pid {processes[member].pid} on 127.0.0.1:{node.port}{metrics}")
        asyncio.run(_showcase(nodes, seed))
        if directory is not None or not once:
            _invite(nodes, root, seed)
        if not once:
            out.print("\n[bold]The federation is running.[/] Press Ctrl-C to stop it.")
            _wait_for_interrupt(processes)
    finally:
        _stop(processes)
        if directory is None:
            shutil.rmtree(root, ignore_errors=True)


def _start(node: ProvisionedNode) -> subprocess.Popen[bytes]:
    log = (node.home / "serve.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "creditexchange.node.cli", "serve", "--home", str(node.home)],
        stdout=log,
        stderr=log,
        start_new_session=True,  # Ctrl-C reaches the demo, which stops the nodes in order
    )


def _wait_ready(
    nodes: dict[str, ProvisionedNode], processes: dict[str, subprocess.Popen[bytes]]
) -> None:
    """Wait for each node's gRPC health check to say SERVING, over mutual TLS."""

    async def healthy(node: ProvisionedNode) -> bool:
        tls = tls_material(node.config)
        credentials = grpc.ssl_channel_credentials(
            tls.ca_pem, tls.private_key_pem, tls.certificate_pem
        )
        async with grpc.aio.secure_channel(
            f"127.0.0.1:{node.port}",
            credentials,
            options=[("grpc.ssl_target_name_override", member_dns_name(node.member))],
        ) as channel:
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=1
                )
            except grpc.aio.AioRpcError:
                return False
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    deadline = time.monotonic() + 60
    for member, node in nodes.items():
        while not asyncio.run(healthy(node)):
            if processes[member].poll() is not None:
                tail = (node.home / "serve.log").read_text(errors="replace")[-2000:]
                raise FederationSetupError(f"node {member} exited at start:\n{tail}")
            if time.monotonic() > deadline:
                raise FederationSetupError(
                    f"node {member} did not become ready; see {node.home}/serve.log"
                )
            time.sleep(0.2)


def _stop(processes: dict[str, subprocess.Popen[bytes]]) -> None:
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes.values():
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def _wait_for_interrupt(processes: dict[str, subprocess.Popen[bytes]]) -> None:
    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    # Ctrl-C, and SIGTERM from a process manager; also where a shell started us with
    # SIGINT ignored (a background job)
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        while all(p.poll() is None for p in processes.values()):
            time.sleep(0.5)
        err.print("a node stopped on its own; stopping the federation")
    except KeyboardInterrupt:
        out.print("\nstopping the federation")


def _pick(node: ProvisionedNode, sql: str, n: int = 1) -> list[str]:
    database = open_store(node.config.database_url)
    try:
        with database.connect() as conn:
            return [row[0] for row in conn.execute(text(sql + f" LIMIT {n}"))]
    finally:
        database.dispose()


async def _showcase(nodes: dict[str, ProvisionedNode], seed: int) -> None:
    huizhou = nodes["huizhou"]
    enterprise = showcase_subject("huizhou", seed)
    individual = _pick(
        huizhou,
        "SELECT r.subject_id FROM records r JOIN subjects s ON s.subject_id = r.subject_id "
        f"WHERE s.subject_type = 'individual' AND r.theme = 'dishonest_debtor' AND {PUBLIC}",
    )
    bidders = _pick(
        huizhou,
        "SELECT DISTINCT r.subject_id FROM records r JOIN subjects s ON s.subject_id = "
        "r.subject_id WHERE s.subject_type = 'enterprise' AND r.theme = 'admin_penalty' "
        f"AND {PUBLIC}",
        2,
    ) + _pick(huizhou, "SELECT subject_id FROM subjects WHERE subject_type = 'enterprise'", 4)
    graded = _pick(
        nodes["customs"], "SELECT subject_id FROM records WHERE theme = 'customs_credit_grade'"
    )

    async def step(
        title: str, requester: str, ask: Callable[[FederationClient], Awaitable[Any]]
    ) -> None:
        out.rule(title)
        async with FederationClient(nodes[requester].config) as client:
            try:
                answer = await ask(client)
            except QueryRefused as refused:
                out.print(f"[bold red]refused[/] {refused}")
                out.print(
                    f"  [dim]both ledgers recorded the refusal ({refused.provider}'s entry "
                    f"{refused.leaf_index}); nothing about the subject left {refused.provider}[/]"
                )
                return
        print_answer(answer, max_records=2)

    def procurement(client: FederationClient, themes: list[str]) -> Awaitable[Any]:
        return client.query(
            enterprise,
            to="huizhou",
            themes=themes,
            purpose="public_procurement",
            legal_basis="《政府采购法》第二十二条",
            case_reference="SZCG-2026-1187",
            officer="shenzhen-procurement/wang",
        )

    await step(
        "3. an allowed query: Shenzhen procurement asks Huizhou about a bidder",
        "shenzhen",
        lambda c: procurement(c, ["registration", "admin_penalty"]),
    )
    await step(
        "4. a masked answer: the licence's legal representative id is masked by the memorandum",
        "shenzhen",
        lambda c: procurement(c, ["admin_license"]),
    )
    await step(
        "5. a denied purpose: Heyuan asks for full records for bank credit (+2 get checks only)",
        "heyuan",
        lambda c: c.query(
            enterprise,
            to="huizhou",
            purpose="bank_credit",
            legal_basis="《征信业管理条例》",
            case_reference="HY-LOAN-2026-031",
            officer="heyuan-bank/li",
            themes=["admin_penalty"],
        ),
    )
    if individual:
        await step(
            "6. hit / no-hit on an individual: Dongguan civil-service hiring checks a list",
            "dongguan",
            lambda c: c.query(
                individual[0],
                to="huizhou",
                purpose="civil_service_hiring",
                legal_basis="《公务员法》第二十六条",
                case_reference="DG-GWY-2026-88",
                officer="dongguan-hr/chen",
                themes=["dishonest_debtor", "serious_dishonesty"],
                check=True,
            ),
        )
    await step(
        "7. a batch check: Shenzhen's land auction screens six bidders in one call",
        "shenzhen",
        lambda c: c.batch_check(
            bidders,
            to="huizhou",
            purpose="land_auction",
            legal_basis="《招标拍卖挂牌出让国有建设用地使用权规定》",
            case_reference="SZ-TD-2026-14",
            officer="shenzhen-land-auction",
            themes=["admin_penalty", "serious_dishonesty"],
        ),
    )
    if graded:
        await step(
            "8. customs data: Huizhou's bank loan review asks Shenzhen Customs for a credit grade",
            "huizhou",
            lambda c: c.query(
                graded[0],
                to="customs",
                purpose="bank_credit",
                legal_basis="《海关注册登记和备案企业信用管理办法》",
                case_reference="HZ-LOAN-2026-204",
                officer="huizhou-bank/zhao",
                themes=["customs_credit_grade"],
            ),
        )
    out.rule("9. an auditor verifies Huizhou's audit ledger from its database")
    config = load_config(huizhou.home)
    database = open_store(config.database_url)
    try:
        store = open_ledger_store(config, database)
        report = verify(store, store.signer.verifier())
    finally:
        database.dispose()
    out.print(
        f"  {report.size} entries; " + ("[green]verified[/]" if report.ok else "[red]FAILED[/]")
    )
    for problem in report.problems[:5]:
        out.print(f"  [red]{problem}[/]")


def _invite(nodes: dict[str, ProvisionedNode], root: Path, seed: int) -> None:
    shenzhen = nodes["shenzhen"].home
    out.rule("try it yourself")
    out.print(f"federation in {root} (node homes, CA, logs in <member>/serve.log)")
    out.print(
        f"  credit-node query {showcase_subject('huizhou', seed)} --to huizhou "
        "--purpose public_procurement --legal-basis 政府采购法 --case C-1 --officer me "
        f"--home {shenzhen}"
    )
    out.print(f"  credit-node audit list --home {nodes['huizhou'].home}")
    out.print(f"  credit-node audit verify --home {nodes['huizhou'].home}")
    if os.environ.get("CREDIT_NODE_HOME"):
        out.print("[dim](CREDIT_NODE_HOME is set in your shell; --home overrides it)[/]")

"""``credit-node demo``: the whole "3+2" federation on this machine, in one command.

It provisions six nodes (a federation CA and certificates, keys, the memorandum
signed by all six, sample department data for each), starts each as its own
``credit-node serve`` process on loopback, and walks through a showcase — an
allowed query, a masked answer, a denied purpose, a hit / no-hit check on an
individual, a batch check, customs data, an auditor verifying a ledger — printing
each answer with its receipt and what was verified. Then the federation keeps
running for you to query until Ctrl-C (``--once`` stops after the showcase).

``--base-port`` moves the whole federation: the nodes listen on it and the next
five ports, and serve metrics :data:`METRICS_OFFSET` ports higher unless told
otherwise. The commands the demo invites you to try are resolved against the
``credit-node`` command before they are printed: it names only commands that exist.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.text import Text

from creditexchange.certs.identity import member_dns_name
from creditexchange.clock import china_today
from creditexchange.devtools.provision import ProvisionedNode, provision
from creditexchange.devtools.sample import showcase_subject
from creditexchange.errors import FederationSetupError, QueryRefused
from creditexchange.node.app.config import load_config
from creditexchange.node.app.tls import channel_credentials, tls_credentials
from creditexchange.node.app.wiring import open_audit_log, open_client
from creditexchange.node.cli.common import err, out
from creditexchange.node.cli.exchange import EVERY_MEMBER, print_answer, print_refusal
from creditexchange.node.database import open_database
from creditexchange.node.ledger import verify
from creditexchange.node.records import repository
from creditexchange.node.sync.subscribe import sync_status
from creditexchange.subjects import SubjectType

__all__ = ["METRICS_OFFSET", "command_exists", "metrics_base_port", "run_demo", "serving"]

MEMBERS_STARTED = 6
METRICS_OFFSET = 2000
"""The nodes on ports 7501–7506 serve metrics on 9501–9506: ``--base-port`` + 2000."""
GATEWAY_OFFSET = 1000
"""… and their REST gateways on 8501–8506: ``--base-port`` + 1000."""


def metrics_base_port(base_port: int, metrics_port: int | None) -> int:
    """The first metrics port: ``metrics_port`` if given (0: no metrics), otherwise
    :data:`METRICS_OFFSET` above ``base_port``; FederationSetupError when a range of
    six ports would not fit below 65536."""
    first = base_port + METRICS_OFFSET if metrics_port is None else metrics_port
    starts = (
        ("--base-port", base_port),
        ("the first metrics port", first),
        ("the first gateway port", base_port + GATEWAY_OFFSET),
    )
    for what, start in starts:
        if start and not 1024 <= start <= 65536 - MEMBERS_STARTED:
            raise FederationSetupError(
                f"{what} is {start}: six ports from it must lie between 1024 and 65535; "
                f"give a lower --base-port (metrics go {METRICS_OFFSET} above it) or "
                "--metrics-port 0 for none"
            )
    return first


def run_demo(
    *,
    once: bool,
    base_port: int,
    metrics_port: int | None,
    subjects: int,
    seed: int,
    directory: Path | None,
) -> None:
    """Provision, start, show, then keep the federation running until interrupted.

    ``metrics_port`` is the first metrics port; None: ``base_port`` + 2000, 0: none.
    """
    if directory is not None and directory.exists() and any(directory.iterdir()):
        raise FederationSetupError(f"{directory} is not empty: give a new folder to --dir")
    metrics_port = metrics_base_port(base_port, metrics_port)
    root = directory or Path(tempfile.mkdtemp(prefix="credit-federation-"))
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        out.rule("1. provision six members: CA, certificates, keys, memorandum, sample data")
        nodes = provision(
            root,
            base_port=base_port,
            metrics_base_port=metrics_port,
            gateway_base_port=base_port + GATEWAY_OFFSET,
            subjects=subjects,
            seed=seed,
            witness_interval_s=30.0,  # the members watch each other's ledgers while it runs
            feeds=True,  # customs publishes its feeds, the cities sync them
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
            out.print(
                f"  {member:9} pid {processes[member].pid} on 127.0.0.1:{node.port}{metrics}, "
                f"gateway http://127.0.0.1:{node.gateway_port}/docs"
            )
        asyncio.run(_showcase(nodes, seed))
        if directory is not None or not once:
            _invite(nodes, root, seed)
        if not once:
            out.print(
                Text.assemble(
                    "\n", ("The federation is running.", "bold"), " Press Ctrl-C to stop it."
                )
            )
            _wait_for_interrupt(processes)
    finally:
        _stop(processes)
        if directory is None:
            shutil.rmtree(root, ignore_errors=True)


# --- the nodes as processes -----------------------------------------------------------


def _start(node: ProvisionedNode) -> subprocess.Popen[bytes]:
    log = (node.home / "serve.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "creditexchange.node.cli", "serve", "--home", str(node.home)],
        stdout=log,
        stderr=log,
        start_new_session=True,  # Ctrl-C reaches the demo, which stops the nodes in order
    )


async def serving(node: ProvisionedNode) -> bool:
    """Whether the node's gRPC health check says SERVING, asked over mutual TLS."""
    credentials = channel_credentials(tls_credentials(node.config))
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


def _wait_ready(
    nodes: dict[str, ProvisionedNode], processes: dict[str, subprocess.Popen[bytes]]
) -> None:
    """Wait for each node's gRPC health check to say SERVING, over mutual TLS."""

    deadline = time.monotonic() + 60
    for member, node in nodes.items():
        while not asyncio.run(serving(node)):
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


# --- the showcase ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Examples:
    """The subjects the showcase asks about, picked from the members' own stores."""

    enterprise: str  # a Huizhou enterprise with records in every theme asked about
    individual: list[str]  # a Huizhou person on the dishonest judgment debtors list
    bidders: list[str]  # Huizhou enterprises, two of them with penalties
    graded: list[str]  # an enterprise Shenzhen Customs has graded


def _examples(nodes: dict[str, ProvisionedNode], seed: int) -> _Examples:
    def pick(member: str, **where: Any) -> list[str]:
        database = open_database(nodes[member].config.database_url)
        try:
            with database.connect() as conn:
                return repository.find_subjects(conn, china_today(), **where)
        finally:
            database.dispose()

    enterprise = SubjectType.ENTERPRISE.value
    return _Examples(
        enterprise=showcase_subject("huizhou", seed),
        individual=pick(
            "huizhou", subject_type=SubjectType.INDIVIDUAL.value, theme="dishonest_debtor"
        ),
        bidders=list(
            dict.fromkeys(
                pick("huizhou", subject_type=enterprise, theme="admin_penalty", limit=2)
                + pick("huizhou", subject_type=enterprise, limit=6)
            )
        )[:6],
        graded=pick("customs", theme="customs_credit_grade"),
    )


@dataclass(frozen=True)
class _Step:
    """One question of the showcase: who asks whom, about which example subjects, how."""

    title: str
    requester: str
    provider: str
    subjects: Callable[[_Examples], list[str]]  # none: the step is skipped
    asked: dict[str, Any]  # purpose, legal basis, case, officer, themes, check
    batch: bool = False


_PROCUREMENT = {
    "purpose": "public_procurement",
    "legal_basis": "《政府采购法》第二十二条",
    "case_reference": "SZCG-2026-1187",
    "officer": "shenzhen-procurement/wang",
}

_STEPS = (
    _Step(
        "3. an allowed query: Shenzhen procurement asks Huizhou about a bidder",
        "shenzhen",
        "huizhou",
        lambda e: [e.enterprise],
        {**_PROCUREMENT, "themes": ["registration", "admin_penalty"]},
    ),
    _Step(
        "4. a masked answer: the licence's legal representative id is masked by the memorandum",
        "shenzhen",
        "huizhou",
        lambda e: [e.enterprise],
        {**_PROCUREMENT, "themes": ["admin_license"]},
    ),
    _Step(
        "5. a denied purpose: Heyuan asks for full records for bank credit (+2 get checks only)",
        "heyuan",
        "huizhou",
        lambda e: [e.enterprise],
        {
            "purpose": "bank_credit",
            "legal_basis": "《征信业管理条例》",
            "case_reference": "HY-LOAN-2026-031",
            "officer": "heyuan-bank/li",
            "themes": ["admin_penalty"],
        },
    ),
    _Step(
        "6. hit / no-hit on an individual: Dongguan civil-service hiring checks a list",
        "dongguan",
        "huizhou",
        lambda e: e.individual[:1],
        {
            "purpose": "civil_service_hiring",
            "legal_basis": "《公务员法》第二十六条",
            "case_reference": "DG-GWY-2026-88",
            "officer": "dongguan-hr/chen",
            "themes": ["dishonest_debtor", "serious_dishonesty"],
            "check": True,
        },
    ),
    _Step(
        "7. a batch check: Shenzhen's land auction screens six bidders in one call",
        "shenzhen",
        "huizhou",
        lambda e: e.bidders,
        {
            "purpose": "land_auction",
            "legal_basis": "《招标拍卖挂牌出让国有建设用地使用权规定》",
            "case_reference": "SZ-TD-2026-14",
            "officer": "shenzhen-land-auction",
            "themes": ["admin_penalty", "serious_dishonesty"],
        },
        batch=True,
    ),
    _Step(
        "8. customs data: Huizhou's bank loan review asks Shenzhen Customs for a credit grade",
        "huizhou",
        "customs",
        lambda e: e.graded[:1],
        {
            "purpose": "bank_credit",
            "legal_basis": "《海关注册登记和备案企业信用管理办法》",
            "case_reference": "HZ-LOAN-2026-204",
            "officer": "huizhou-bank/zhao",
            "themes": ["customs_credit_grade"],
        },
    ),
)


async def _ask(node: ProvisionedNode, step: _Step, subjects: list[str]) -> None:
    out.rule(step.title)
    async with open_client(node.config) as client:
        try:
            if step.batch:
                answer = await client.batch_check(subjects, to=step.provider, **step.asked)
            else:
                answer = await client.query(subjects[0], to=step.provider, **step.asked)
        except QueryRefused as refused:
            print_refusal(refused, out)
            out.print(
                f"  both ledgers recorded the refusal ({refused.provider}'s entry "
                f"{refused.leaf_index}); nothing about the subject left {refused.provider}",
                style="dim",
            )
            return
    print_answer(answer, max_records=2)


def _audit(node: ProvisionedNode) -> None:
    out.rule("9. an auditor verifies Huizhou's audit ledger from its database")
    config = load_config(node.home)
    database = open_database(config.database_url)
    try:
        log = open_audit_log(config, database)
        report = verify(log, log.signer.verifier())
    finally:
        database.dispose()
    out.print(
        Text.assemble(
            f"  {report.size} entries; ", ("verified", "green") if report.ok else ("FAILED", "red")
        )
    )
    for problem in report.problems[:5]:
        out.print(f"  {problem}", style="red")


def _feeds(node: ProvisionedNode, wait_s: float = 30.0) -> None:
    """Customs' feeds as Huizhou holds them, once its node has caught up with each."""
    out.rule("10. customs' change feeds, synced by Huizhou (verified batch by batch)")
    config = load_config(node.home)
    database = open_database(config.database_url)
    deadline = time.monotonic() + wait_s
    try:
        while True:
            feeds = [f for f in sync_status(database) if f.publisher == "customs"]
            if (len(feeds) >= 3 and all(f.size and not f.lag_entries for f in feeds)) or (
                time.monotonic() > deadline
            ):
                break
            time.sleep(0.5)
    finally:
        database.dispose()
    for f in feeds:
        state = f"error: {f.last_error}" if f.last_error else "caught up"
        out.print(f"  {f.theme:22} {f.size:>5} changes, {f.records:>4} records held  ({state})")
    if not feeds:
        out.print("  not synced yet: see huizhou/serve.log", style="red")


async def _showcase(nodes: dict[str, ProvisionedNode], seed: int) -> None:
    examples = _examples(nodes, seed)
    for step in _STEPS:
        subjects = step.subjects(examples)
        if subjects:
            await _ask(nodes[step.requester], step, subjects)
    _audit(nodes["huizhou"])
    _feeds(nodes["huizhou"])


def _invitations(nodes: dict[str, ProvisionedNode], seed: int) -> list[list[str]]:
    """The commands the demo invites you to try, as argument lists after ``credit-node``."""
    subject = showcase_subject("huizhou", seed)
    shenzhen, heyuan, huizhou = (str(nodes[m].home) for m in ("shenzhen", "heyuan", "huizhou"))
    procurement = [
        "--purpose", "public_procurement", "--legal-basis", "政府采购法", "--case", "C-1",
        "--officer", "me",
    ]  # fmt: skip
    bank = [
        "--purpose", "bank_credit", "--legal-basis", "征信业管理条例", "--case", "L-1",
        "--officer", "me",
    ]  # fmt: skip
    explain = [
        "policy", "explain", "--home", huizhou, "--requester", "heyuan",
        "--purpose", "bank_credit", "--subject-type", "enterprise", "--theme", "admin_penalty",
        "--mode", "check",
    ]  # fmt: skip
    return [
        ["query", subject, "--to", "huizhou", *procurement, "--home", shenzhen],
        ["query", subject, "--to", "huizhou", *procurement, "--json", "--home", shenzhen],
        ["query", subject, "--to", "huizhou", *bank, "--check", "--home", heyuan],
        ["query", subject, "--to", EVERY_MEMBER, *procurement, "--home", shenzhen],
        ["report", subject, *procurement, "--home", shenzhen],
        ["show", subject, "--home", huizhou],
        explain,
        ["audit", "entries", "--home", huizhou],
        ["audit", "verify", "--home", huizhou],
        ["audit", "witness-status", "--home", huizhou],
        ["sync", "status", "--home", huizhou],
        ["partners", "add", "procurement-centre", "--purposes", "public_procurement",
         "--home", shenzhen],
        ["auditors", "add", "audit-office", "--home", shenzhen],
    ]  # fmt: skip


def command_exists(argv: list[str]) -> bool:
    """Whether ``credit-node argv`` names a command this installation has, with options
    it knows: ``argv --help`` succeeds (nothing is run). ``query --to all`` needs the
    consolidated report's module besides."""
    from typer.testing import CliRunner

    from creditexchange.node.cli import app  # not at import: the CLI loads this module

    if CliRunner().invoke(app, [*argv, "--help"]).exit_code != 0:
        return False
    if argv[0] == "query" and argv[argv.index("--to") + 1] == EVERY_MEMBER:
        return importlib.util.find_spec("creditexchange.node.cli.report") is not None
    return True


def _invite(nodes: dict[str, ProvisionedNode], root: Path, seed: int) -> None:
    out.rule("try it yourself")
    out.print(f"federation in {root} (node homes, CA, logs in <member>/serve.log)")
    for argv in _invitations(nodes, seed):
        if command_exists(argv):
            out.print(f"  credit-node {shlex.join(argv)}", soft_wrap=True)
    gateway = f"http://127.0.0.1:{nodes['shenzhen'].gateway_port}"
    subject = showcase_subject("huizhou", seed)
    query = "purpose=public_procurement&legal_basis=%E6%94%BF%E5%BA%9C%E9%87%87%E8%B4%AD%E6%B3%95"
    out.print("then, with the partner's key, shenzhen's REST gateway (described at /docs):")
    out.print(
        f"  curl -H 'Authorization: Bearer KEY' -H 'X-Officer: me' "
        f"'{gateway}/v1/subjects/{subject}/report?{query}&case=C-1'",
        soft_wrap=True,
    )
    if os.environ.get("CREDIT_NODE_HOME"):
        out.print("(CREDIT_NODE_HOME is set in your shell; --home overrides it)", style="dim")

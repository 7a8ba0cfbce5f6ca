"""deploy/container/: the node's image, and ``credit-node health``, the probe it runs.

The probe is tested on a real node served from a provisioned home: SERVING exits 0;
a node that is not running, a service the node does not know and a missing home do
not. The image is built the way its README says (``build.sh``: a Debian base made by
mmdebstrap, the checkout's wheels, ``podman build``), then run as an operator would run
it: a read-only root file system, no capabilities, the home a volume, its HEALTHCHECK
asked with ``podman healthcheck run``.

Podman runs as root on these machines with the settings ``/work/shared/CONTAINERS.md``
describes (no default ulimits, runc, cgroupfs, host networking), which the tests apply.
Locally a missing podman or mmdebstrap skips the image tests; with CI=true it fails them.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from ports import free_ports

from creditexchange.devtools.provision import ProvisionedNode, provision
from creditexchange.node.app.config import NodeConfig, load_config
from creditexchange.node.cli.health import probe, probe_address

TESTS = Path(__file__).resolve().parent
CONTAINER = TESTS.parent / "deploy" / "container"
CONTAINERFILE = CONTAINER / "Containerfile"
BUILD_SCRIPT = CONTAINER / "build.sh"
IN_CI = os.environ.get("CI") == "true"
MEMBER = "huizhou"
IMAGE = "localhost/credit-node:deploy-test"
READY_WITHIN_S = 60.0


def credit_node() -> str:
    """The credit-node this interpreter installed."""
    found = shutil.which("credit-node", path=str(Path(sys.executable).parent))
    assert found is not None, f"no credit-node beside {sys.executable}: pip install -e ."
    return found


# --- the Containerfile, read as the builder reads it -----------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def instructions(text: str) -> list[Instruction]:
    """The Containerfile's instructions in order, continuation lines joined, comments out."""
    found: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, arguments = line.partition(" ")
        found.append(Instruction(keyword.upper(), " ".join(arguments.split())))
    return found


def final_stage(text: str) -> list[Instruction]:
    every = instructions(text)
    starts = [i for i, instruction in enumerate(every) if instruction.keyword == "FROM"]
    assert starts, "no FROM in the Containerfile"
    return every[starts[-1] :]


def one(stage: list[Instruction], keyword: str) -> str:
    values = [i.arguments for i in stage if i.keyword == keyword]
    assert len(values) == 1, f"expected one {keyword} in the final stage, found {values}"
    return values[0]


def image_uid() -> int:
    """The node user's uid, ``ARG UID=`` of the Containerfile (also used by compose and
    Kubernetes)."""
    found = re.search(r"^ARG UID=(\d+)$", CONTAINERFILE.read_text(), re.MULTILINE)
    assert found, "the Containerfile declares no ARG UID=<number>"
    return int(found[1])


def image_home() -> str:
    stage = final_stage(CONTAINERFILE.read_text())
    env = one(stage, "ENV")
    found = re.search(r"\bCREDIT_NODE_HOME=(\S+)", env)
    assert found, f"ENV does not set CREDIT_NODE_HOME: {env}"
    return found[1]


def json_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), arguments
    return value


def healthcheck_command() -> list[str]:
    healthcheck = one(final_stage(CONTAINERFILE.read_text()), "HEALTHCHECK")
    _, _, command = healthcheck.partition(" CMD ")
    assert command, f"HEALTHCHECK without an exec-form CMD: {healthcheck}"
    return json_form(command)


def test_the_image_runs_the_node_unprivileged_with_its_home_a_volume() -> None:
    stage = final_stage(CONTAINERFILE.read_text())
    uid = image_uid()
    assert uid >= 1000
    assert one(stage, "USER") == "${UID}:${UID}", "USER is the numeric uid (runAsNonRoot checks it)"
    assert json_form(one(stage, "VOLUME")) == [image_home()]
    assert json_form(one(stage, "ENTRYPOINT")) == ["credit-node"]
    assert json_form(one(stage, "CMD")) == ["serve"]
    assert one(stage, "STOPSIGNAL") == "SIGTERM"
    assert "PYTHONDONTWRITEBYTECODE=1" in one(stage, "ENV"), "nothing written beside the code"
    users = [i.arguments for i in stage if i.keyword == "RUN" and "useradd" in i.arguments]
    assert users and '--uid "${UID}"' in users[0] and "-m 0700 " + image_home() in users[0]


def test_the_health_check_asks_the_nodes_grpc_health_service() -> None:
    command = healthcheck_command()
    assert command[:2] == ["credit-node", "health"], command
    options = one(final_stage(CONTAINERFILE.read_text()), "HEALTHCHECK")
    timeout = re.search(r"--timeout=(\d+)s", options)
    probe_timeout = command[command.index("--timeout") + 1]
    assert timeout and float(probe_timeout) < int(timeout[1]), "the probe outlives its check"


def test_nothing_is_downloaded_while_the_image_builds() -> None:
    text = CONTAINERFILE.read_text()
    installs = [i.arguments for i in instructions(text) if "pip install" in i.arguments]
    assert installs and all("--no-index" in command for command in installs)
    assert not [i for i in instructions(text) if i.keyword == "ADD"], "ADD may fetch URLs"
    assert not re.search(r"apt-get|curl|wget", text)


# --- credit-node health on a real node ---------------------------------------------------


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory: pytest.TempPathFactory) -> ProvisionedNode:
    root = tmp_path_factory.mktemp("health")
    (port,) = free_ports(1)
    [node] = provision(root, members=(MEMBER,), ports=[port], subjects=5).values()
    return node


@contextmanager
def serving_node(home: Path, log: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """``credit-node serve --home home`` running, with ``env`` added to this process's
    environment; yields the address ``credit-node health`` probes once it says SERVING.
    Stopped with SIGTERM after."""
    environment = {**os.environ, **(env or {})}
    with log.open("ab") as output:
        process = subprocess.Popen(
            [credit_node(), "serve", "--home", str(home)],
            env=environment,
            stdout=output,
            stderr=output,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        config = _config_with(home, env or {})
        deadline = time.monotonic() + READY_WITHIN_S
        while not probe(config, timeout_s=1).serving:
            if process.poll() is not None:
                pytest.fail(
                    f"the node exited with {process.returncode}:\n{log.read_text()[-3000:]}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"not SERVING within {READY_WITHIN_S} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield probe_address(config)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _config_with(home: Path, env: dict[str, str]) -> NodeConfig:
    """The home's configuration as the node reads it with ``env`` set."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        return load_config(home)


def run_health(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [credit_node(), "health", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def served(provisioned: ProvisionedNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The provisioned node, serving; its address."""
    log = tmp_path_factory.mktemp("served") / "serve.log"
    with serving_node(provisioned.home, log) as address:
        yield address


def test_health_exits_0_when_the_node_serves(provisioned: ProvisionedNode, served: str) -> None:
    done = run_health("--home", str(provisioned.home))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{MEMBER} at {served}: SERVING"


def test_health_exits_1_with_a_reason_when_no_node_answers(
    provisioned: ProvisionedNode, served: str
) -> None:
    (nobody,) = free_ports(1)
    done = run_health("--home", str(provisioned.home), "--address", f"127.0.0.1:{nobody}")
    assert done.returncode == 1
    assert f"no answer from huizhou at 127.0.0.1:{nobody}" in done.stderr
    assert "is 'credit-node serve' running" in done.stderr


def test_health_cannot_probe_without_a_node_home(tmp_path: Path) -> None:
    done = run_health("--home", str(tmp_path / "nowhere"))
    assert done.returncode == 2
    assert "no node home at" in done.stderr


def test_health_imports_only_what_a_probe_needs(provisioned: ProvisionedNode, served: str) -> None:
    """A probe runs every few seconds: ``credit-node health`` builds no command table and
    loads neither the exchange nor the node's wiring nor the migrations."""
    heavy = [
        "creditexchange.node.cli.commands",
        "creditexchange.node.exchange.provider",
        "creditexchange.node.app.wiring",
        "alembic",
    ]
    script = (
        "import sys\n"
        "from creditexchange.node.cli import main\n"
        f"sys.argv = ['credit-node', 'health', '--home', {str(provisioned.home)!r}]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        f"print([m for m in {heavy!r} if m in sys.modules])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"{MEMBER} at {served}: SERVING" in done.stdout
    assert done.stdout.splitlines()[-1] == "[]"


def test_the_probe_fails_for_a_service_the_node_does_not_know(
    provisioned: ProvisionedNode, served: str
) -> None:
    config = load_config(provisioned.home)
    assert probe(config, service="creditexchange.v1.CreditExchange").serving
    unknown = probe(config, service="no.such.Service")
    assert not unknown.serving
    assert (
        unknown.message
        == f"{MEMBER} at {served} has no health status for service 'no.such.Service'"
    )


@pytest.mark.parametrize(
    ("grpc_host", "address"),
    [
        ("0.0.0.0", "127.0.0.1:7443"),
        ("::", "[::1]:7443"),
        ("[::]", "[::1]:7443"),
        ("10.1.2.3", "10.1.2.3:7443"),
        ("fd00::5", "[fd00::5]:7443"),
        ("node.internal", "node.internal:7443"),
    ],
)
def test_the_probe_dials_where_the_node_listens(
    provisioned: ProvisionedNode, grpc_host: str, address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREDIT_NODE_GRPC_HOST", grpc_host)
    monkeypatch.setenv("CREDIT_NODE_GRPC_PORT", "7443")
    assert probe_address(load_config(provisioned.home)) == address


# --- the image, built and run with podman ---------------------------------------------


def require(tool: str, package: str) -> str:
    found = shutil.which(tool)
    if found is None:
        reason = f"{tool} is not installed (Debian: apt-get install {package})"
        if IN_CI:
            pytest.fail(f"{reason}; CI must build and run the image", pytrace=False)
        pytest.skip(reason)
    return found


@dataclass(frozen=True)
class Podman:
    """podman with this machine's settings (/work/shared/CONTAINERS.md)."""

    argv: tuple[str, ...]
    env: dict[str, str]

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.argv, *args], capture_output=True, text=True, timeout=timeout, env=self.env
        )

    def ok(self, *args: str, timeout: float = 120) -> str:
        done = self(*args, timeout=timeout)
        assert done.returncode == 0, f"podman {shlex.join(args)}:\n{done.stdout}{done.stderr}"
        return done.stdout


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Podman:
    found = require("podman", "podman runc")
    settings = tmp_path_factory.mktemp("podman") / "containers.conf"
    settings.write_text("[containers]\ndefault_ulimits = []\n")  # setrlimit is refused here
    argv = [found, "--cgroup-manager=cgroupfs"]
    if shutil.which("runc"):
        argv += ["--runtime", "runc"]
    return Podman(tuple(argv), {**os.environ, "CONTAINERS_CONF": str(settings)})


@pytest.fixture(scope="module")
def image(podman: Podman) -> str:
    """The image, built by build.sh from this checkout (about a minute: wheels, then
    the build; the base is made once with mmdebstrap and kept)."""
    if podman("image", "exists", "localhost/debian:bookworm").returncode != 0:
        require("mmdebstrap", "mmdebstrap")
    done = subprocess.run(
        ["sh", str(BUILD_SCRIPT), IMAGE],
        capture_output=True,
        text=True,
        timeout=1200,
        env={
            **podman.env,
            "CONTAINER_ENGINE": shlex.join(podman.argv),
            "BUILD_OPTIONS": "--network=host",
            "PYTHON": sys.executable,
        },
    )
    assert done.returncode == 0, f"build.sh failed:\n{done.stdout[-5000:]}{done.stderr[-5000:]}"
    return IMAGE


@pytest.fixture
def container_name(podman: Podman) -> Iterator[str]:
    name = f"credit-node-test-{uuid.uuid4().hex[:8]}"
    yield name
    podman("rm", "--force", "--volumes", "--time", "0", name)  # its anonymous home too


HARDENED = (
    "--network=host",
    "--read-only",
    "--read-only-tmpfs=false",  # not even /tmp is writable
    "--cap-drop=all",
    "--security-opt=no-new-privileges",
)


@pytest.mark.slow
def test_the_built_image_keeps_its_user_volume_and_health_check(podman: Podman, image: str) -> None:
    [config] = json.loads(podman.ok("image", "inspect", image))
    uid = image_uid()
    assert config["Config"]["User"] == f"{uid}:{uid}"
    assert list(config["Config"]["Volumes"]) == [image_home()]
    # podman shows it beside Config, docker inside
    health = config.get("Healthcheck") or config["Config"].get("Healthcheck") or {}
    assert health.get("Test") == ["CMD", *healthcheck_command()], "HEALTHCHECK was dropped"
    assert config["Config"]["Entrypoint"] == ["credit-node"]


def wait_healthy(podman: Podman, name: str) -> subprocess.CompletedProcess[str]:
    deadline = time.monotonic() + READY_WITHIN_S
    while True:
        done = podman("healthcheck", "run", name)
        if done.returncode == 0 or time.monotonic() > deadline:
            return done
        state = podman.ok("inspect", name, "--format", "{{.State.Status}}").strip()
        assert state == "running", podman("logs", name).stderr[-3000:]
        time.sleep(1)


@pytest.mark.slow
def test_the_image_serves_a_node_read_only_and_healthy_and_stops_cleanly(
    podman: Podman, image: str, container_name: str, tmp_path: Path
) -> None:
    (port,) = free_ports(1)
    [node] = provision(tmp_path, members=(MEMBER,), ports=[port], subjects=5).values()
    uid = image_uid()
    for path in [node.home, *node.home.rglob("*")]:
        os.chown(path, uid, uid, follow_symlinks=False)  # the volume is the node user's
    podman.ok(
        "run", "--detach", "--name", container_name, *HARDENED,
        "--volume", f"{node.home}:{image_home()}", image,
    )  # fmt: skip

    healthy = wait_healthy(podman, container_name)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert podman.ok("exec", container_name, "id", "-u").strip() == str(uid)
    written = podman("exec", container_name, "touch", "/opt/credit-node/written")
    assert written.returncode != 0 and "Read-only file system" in written.stderr
    podman.ok("stop", "--time", "30", container_name, timeout=60)
    status = podman.ok("inspect", container_name, "--format", "{{.State.ExitCode}}").strip()
    logs = podman("logs", container_name)
    assert status == "0", logs.stdout + logs.stderr
    assert '"message":"serving","member":"huizhou"' in logs.stdout + logs.stderr
    assert "Traceback" not in logs.stdout + logs.stderr


@pytest.mark.slow
def test_the_health_check_fails_while_no_node_serves(
    podman: Podman, image: str, container_name: str
) -> None:
    """An empty home: the probe cannot be made, and the container is unhealthy."""
    podman.ok(
        "run", "--detach", "--name", container_name, *HARDENED,
        "--entrypoint", "sleep", image, "300",
    )  # fmt: skip
    done = podman("healthcheck", "run", container_name)
    assert done.returncode != 0
    assert "unhealthy" in done.stdout + done.stderr


@pytest.mark.slow
def test_a_new_volume_becomes_the_node_users_private_home(podman: Podman, image: str) -> None:
    volume = f"credit-node-test-{uuid.uuid4().hex[:8]}"
    podman.ok("volume", "create", volume)
    try:
        mount = f"{volume}:{image_home()}"
        shown = podman.ok(
            "run", "--rm", *HARDENED, "--volume", mount, "--entrypoint", "stat", image,
            "--format", "%u:%g %a", image_home(),
        )  # fmt: skip
        uid = image_uid()
        assert shown.strip() == f"{uid}:{uid} 700"
        made = podman.ok("run", "--rm", *HARDENED, "--volume", mount, image, "init", MEMBER)
        assert f"created node {MEMBER} in {image_home()}" in made
    finally:
        podman("volume", "rm", "--force", volume)

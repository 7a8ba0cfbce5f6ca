"""A node home is its user's alone: what the node creates, and what it refuses to run on.

The node holds identity numbers and names in clear, its signing key and maybe a
database password. Everything it creates must be unreadable by other local users
whatever the umask (folders 0700, files 0600), and every command that opens a home
refuses one that others can reach, naming the file, its mode and the chmod.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ports import free_ports
from typer.testing import CliRunner

from creditexchange.devtools.provision import ProvisionedNode, signed_memorandum
from creditexchange.errors import InsecurePermissions
from creditexchange.node.app.config import load_config
from creditexchange.node.app.home import create_home
from creditexchange.node.cli import app

PERMISSIVE_UMASK = 0o022  # the usual default: new files 0644, new folders 0755

PUBLIC_FILES = {
    # The node's certificate: it is sent to every peer in every TLS handshake; the
    # CA issues it 0644 (its key, tls/huizhou.key, is 0600 and checked below).
    "tls/huizhou.crt": "a certificate, public by design",
    # The memorandum: signed by every member and held by each of them; it names the
    # members' public keys, endpoints and rules, nothing personal, nothing secret.
    "policy/current.json": "the installed memorandum, a federation document",
    "policy/v1.json": "the same memorandum, kept in the history",
}


def _node(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``credit-node ARGS`` in its own process, under the permissive umask."""
    return subprocess.run(
        [sys.executable, "-m", "creditexchange.node.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        umask=PERMISSIVE_UMASK,
    )


def _modes(home: Path) -> dict[str, int]:
    """Every folder and file under ``home`` (and the home itself) with its mode."""
    modes = {".": stat.S_IMODE(home.stat().st_mode)}
    for folder, folders, files in os.walk(home):
        for name in [*folders, *files]:
            path = Path(folder, name)
            modes[str(path.relative_to(home))] = stat.S_IMODE(path.lstat().st_mode)
    return modes


def _not_private(home: Path) -> list[str]:
    """What under ``home`` other users could read or write, public files aside."""
    problems = []
    for name, mode in _modes(home).items():
        path = home / name
        if path.is_dir():
            if mode != 0o700:
                problems.append(f"{name}/ {mode:04o}")
        elif name in PUBLIC_FILES:
            if mode & 0o022 or mode & 0o400 == 0:
                problems.append(f"{name} {mode:04o} (public, but writable by others)")
        elif mode != 0o600:
            problems.append(f"{name} {mode:04o}")
    return problems


def _wait_for_port(port: int, server: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"serve stopped with {server.returncode}: {server.communicate()[1]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"serve did not listen on {port} within {timeout} s")


@pytest.mark.slow
def test_a_node_run_under_a_permissive_umask_creates_nothing_other_users_can_read(
    tmp_path: Path,
) -> None:
    home, ca = tmp_path / "huizhou", tmp_path / "ca"
    [port] = free_ports(1)
    env = {
        **os.environ,
        # the CA stays outside the home, as in a real federation; only the node's own
        # certificate and key are issued into it
        "CREDIT_NODE_TLS_CERT": "tls/huizhou.crt",
        "CREDIT_NODE_TLS_KEY": "tls/huizhou.key",
        "CREDIT_NODE_TLS_CA": str(ca / "ca.crt"),
        "CREDIT_NODE_TLS_CRL": str(ca / "crl.pem"),
        "CREDIT_NODE_GRPC_HOST": "127.0.0.1",
    }
    steps = [
        ("init", "huizhou", "--home", str(home), "--grpc-port", str(port), "--metrics-port", "0"),
        ("certs", "init-ca", "--out", str(ca)),
        ("certs", "issue", "huizhou", "--ca", str(ca), "--out", str(home / "tls")),
        ("sample", "--member", "huizhou", "--subjects", "20", "--seed", "5", "--out",
         str(tmp_path / "in")),
    ]  # fmt: skip
    for step in steps:
        done = _node(*step, env=env)
        assert done.returncode == 0, (step, done.stdout, done.stderr)
    memorandum = signed_memorandum({"huizhou": ProvisionedNode("huizhou", home, port, 0)})
    (tmp_path / "memorandum.json").write_text(json.dumps(memorandum))
    installed = _node("policy", "install", str(tmp_path / "memorandum.json"), "--home", str(home),
                      env=env)  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    penalties = next((tmp_path / "in").glob("admin_penalty.*"))
    with penalties.open("a", encoding="utf-8") as f:  # one bad row: a reject report is written
        f.write("91441300MA4W7K3P2X,enterprise,坏行,BAD-1" + "," * 20 + "\n")
    imported = _node("import", str(penalties), "--theme", "admin_penalty", "--home", str(home),
                     env=env)  # fmt: skip
    assert imported.returncode == 1, imported.stderr  # 1: rows were rejected, the rest imported
    assert list((home / "rejects").glob("batch-*.rejects.csv"))

    server = subprocess.Popen(
        [sys.executable, "-m", "creditexchange.node.cli", "serve", "--home", str(home)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        umask=PERMISSIVE_UMASK,
    )
    try:
        _wait_for_port(port, server)
        while_serving = _modes(home)
        serving_problems = _not_private(home)
    finally:
        server.send_signal(signal.SIGTERM)
        _, log = server.communicate(timeout=60)
    assert server.returncode == 0, log

    assert serving_problems == [], "while serving"
    assert _not_private(home) == [], "after serving"
    # the files that matter were there to be checked
    for name in ("node.toml", "keys/signing.key", "keys/subject-hmac.key", "tls/huizhou.key",
                 "data/node.db", "data/node.db-wal", "data/node.db-shm"):  # fmt: skip
        assert while_serving.get(name) == 0o600, name
    assert while_serving["."] == 0o700


# -- refusing a home others can reach --------------------------------------------------


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return create_home(tmp_path / "hz", "huizhou").home


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


OPENED_TO_OTHERS = [
    # (what is opened, its mode, the fix, how the message describes it)
    (".", 0o755, 700, "the home {home} is readable by group and others"),
    ("node.toml", 0o644, 600, "node.toml is readable by group and others"),
    ("node.toml", 0o620, 600, "node.toml is writable by group"),
    ("data", 0o750, 700, "data is readable by group"),
    ("data/node.db", 0o644, 600, "data/node.db is readable by group and others"),
    ("data/node.db", 0o604, 600, "data/node.db is readable by others"),
    ("data/node.db-wal", 0o644, 600, "data/node.db-wal is readable by group and others"),
    ("keys", 0o711, 700, "keys is searchable by group and others"),
    ("keys/signing.key", 0o640, 600, "keys/signing.key is readable by group"),
    ("keys/subject-hmac.key", 0o666, 600,
     "keys/subject-hmac.key is readable and writable by group and others"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "mode", "fix", "described"), OPENED_TO_OTHERS)
def test_serve_refuses_a_home_others_can_reach_naming_the_file_its_mode_and_the_chmod(
    home: Path, name: str, mode: int, fix: int, described: str
) -> None:
    path = home if name == "." else home / name
    gc.collect()  # a connection left from making the home, closed now, removes its -wal
    if not path.exists():  # a -wal file, as SQLite leaves one beside a database in use
        path.touch(0o600)
    path.chmod(mode)
    code, output = _cli("serve", "--home", str(home))
    assert code == 2
    assert f"{described.format(home=home)} (mode {mode:04o}): run chmod {fix} {path}" in output
    path.chmod(0o700 if path.is_dir() else 0o600)
    load_config(home)  # its owner's alone again: the home opens
    code, output = _cli("serve", "--home", str(home))
    assert code == 2 and "chmod" not in output  # serve now stops at the missing certificate


@pytest.mark.parametrize(
    "command",
    [
        ["serve"],
        ["import", "{file}", "--theme", "admin_penalty"],
        ["db", "status"],
        ["db", "upgrade"],
        ["show", "91441300MA4W7K3P2D"],
        ["audit", "verify"],
        ["policy", "show"],
    ],
    ids=lambda argv: " ".join(argv),
)
def test_every_command_that_opens_the_store_refuses_a_database_others_can_read(
    home: Path, tmp_path: Path, command: list[str]
) -> None:
    department_file = tmp_path / "p.csv"
    department_file.write_text("subject_id,subject_type,subject_name,record_key\n")
    database = home / "data" / "node.db"
    database.chmod(0o644)
    argv = [part.format(file=department_file) for part in command]
    code, output = _cli(*argv, "--home", str(home))
    assert code == 2, output
    assert (
        f"data/node.db is readable by group and others (mode 0644): run chmod 600 {database}"
        in output
    )


def test_every_problem_is_listed_in_one_message(home: Path) -> None:
    (home / "node.toml").chmod(0o644)
    (home / "data" / "node.db").chmod(0o644)
    with pytest.raises(InsecurePermissions) as refusal:
        load_config(home)
    message = str(refusal.value)
    assert f"run chmod 600 {home / 'node.toml'}" in message
    assert f"run chmod 600 {home / 'data' / 'node.db'}" in message


def test_init_refuses_an_existing_folder_others_can_reach_and_writes_nothing(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o755)
    code, output = _cli("init", "huizhou", "--home", str(folder))
    assert code == 2
    assert f"(mode 0755): run chmod 700 {folder}" in output
    assert list(folder.iterdir()) == []
    folder.chmod(0o700)
    code, output = _cli("init", "huizhou", "--home", str(folder))
    assert code == 0, output

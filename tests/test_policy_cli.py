"""The memorandum's life as operators live it: keys, signatures, verify, install, explain."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from creditexchange.node.app.home import create_home
from creditexchange.node.cli import app

POLICY = Path(__file__).resolve().parent.parent / "policy"
runner = CliRunner()


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


@pytest.fixture
def federation(tmp_path: Path) -> dict[str, Any]:
    """The shipped memorandum with a generated key for each of the six members."""
    source = yaml.safe_load((POLICY / "memorandum-3plus2.yaml").read_text("utf-8"))
    keys: dict[str, Path] = {}
    for member in source["members"]:
        key_file = tmp_path / "keys" / f"{member['id']}.key"
        code, output = cli("policy", "keygen", "--out", str(key_file))
        assert code == 0, output
        member["keys"] = yaml.safe_load(output.split("memorandum:\n", 1)[1])
        keys[member["id"]] = key_file
    return {"source": source, "keys": keys, "dir": tmp_path}


def write_version(fed: dict[str, Any], version: int, signers: list[str]) -> Path:
    source = dict(fed["source"], version=version)
    path = fed["dir"] / f"memorandum-v{version}.yaml"
    path.write_text(yaml.safe_dump(source, allow_unicode=True, sort_keys=False), "utf-8")
    signed: Path = path.with_suffix(".json")
    for member in signers:
        code, output = cli(
            "policy",
            "sign",
            str(path if member == signers[0] else signed),
            "--key",
            str(fed["keys"][member]),
            "--out",
            str(signed),
        )
        assert code == 0, output
    return signed


def test_a_threshold_of_members_signs_and_every_node_installs_it(
    federation: dict[str, Any], tmp_path: Path
) -> None:
    v1 = write_version(federation, 1, ["huizhou", "shenzhen", "dongguan", "customs"])
    code, output = cli("policy", "verify", str(v1))
    assert code == 0, output
    assert "4 of 4 needed" in output or "met" in output

    home = tmp_path / "hz"
    create_home(home, "huizhou")
    code, output = cli("policy", "install", str(v1), "--home", str(home))
    assert code == 0, output
    code, output = cli("policy", "show", "--home", str(home))
    assert code == 0 and "version 1" in output

    code, output = cli(
        "policy",
        "explain",
        "--home",
        str(home),
        "--requester",
        "shenzhen",
        "--purpose",
        "bank_credit",
        "--subject-type",
        "enterprise",
        "--theme",
        "admin_penalty",
        "--json",
    )
    decision = json.loads(output)
    assert decision["allowed"] and decision["rules"], output
    assert "legal_rep_id_number" not in decision["reveal"]

    code, output = cli(
        "policy",
        "explain",
        "--home",
        str(home),
        "--requester",
        "shenzhen",
        "--purpose",
        "bank_credit",
        "--subject-type",
        "individual",
        "--theme",
        "admin_penalty",
    )
    assert code == 1 and "DENY" in output


def test_an_update_signed_by_too_few_members_is_refused_and_the_last_good_stays(
    federation: dict[str, Any], tmp_path: Path
) -> None:
    home = tmp_path / "sz"
    create_home(home, "shenzhen")
    v1 = write_version(federation, 1, ["huizhou", "shenzhen", "dongguan", "customs"])
    assert cli("policy", "install", str(v1), "--home", str(home))[0] == 0
    v2 = write_version(federation, 2, ["huizhou", "shenzhen", "dongguan"])
    code, output = cli("policy", "verify", str(v2), "--current", str(v1))
    assert code == 1 and "not valid" in output
    code, output = cli("policy", "install", str(v2), "--home", str(home))
    assert code == 2, output
    code, output = cli("policy", "show", "--home", str(home))
    assert "version 1" in output
    code, output = cli("policy", "install", str(v1), "--home", str(home))
    assert code == 2  # the same version again is no update


def test_the_shipped_corpus_passes_from_the_command_line() -> None:
    code, output = cli("policy", "test", str(POLICY / "corpus-3plus2.yaml"))
    assert code == 0, output
    assert " 0 failed" in output


def test_explain_without_a_memorandum_says_what_to_give() -> None:
    code, output = cli(
        "policy",
        "explain",
        "--requester",
        "a",
        "--purpose",
        "b",
        "--subject-type",
        "enterprise",
        "--theme",
        "admin_penalty",
    )
    assert code == 2 and "--memorandum FILE" in output


def test_a_quota_counted_in_the_store_holds_for_the_next_process(
    federation: dict[str, Any], tmp_path: Path
) -> None:
    import datetime as dt

    from creditexchange.node.app.config import load_config
    from creditexchange.node.database import open_database
    from creditexchange.node.exchange.quotas import count
    from creditexchange.policy.document import Period
    from creditexchange.policy.engine import quota_period_start

    home = tmp_path / "hz"
    create_home(home, "huizhou")
    v1 = write_version(federation, 1, ["huizhou", "shenzhen", "dongguan", "customs"])
    assert cli("policy", "install", str(v1), "--home", str(home))[0] == 0
    ask = (
        "policy",
        "explain",
        "--home",
        str(home),
        "--requester",
        "shenzhen",
        "--purpose",
        "land_auction",
        "--subject-type",
        "enterprise",
        "--theme",
        "serious_dishonesty",
        "--mode",
        "check",
        "--json",
    )
    code, output = cli(*ask)
    assert code == 0 and json.loads(output)["rules"] == ["regional-land-auction"], output

    store = open_database(load_config(home).database_url)
    today = quota_period_start(Period.DAY, dt.datetime.now(dt.UTC))
    for _ in range(500):  # the rule's daily limit, counted as the query path will
        count(store, "shenzhen", {"regional-land-auction": today})
    code, output = cli(*ask)
    decision = json.loads(output)
    assert code == 1 and decision["status"] == "RESOURCE_EXHAUSTED", output
    assert "500" in decision["reason"]

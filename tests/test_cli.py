"""The credit-node command as an operator uses it, from init to show."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from creditexchange.devtools.sample import KNOWN_REGIONS, showcase_subject, write_sample
from creditexchange.node.app.home import create_home
from creditexchange.node.catalog import Catalog
from creditexchange.node.cli import app
from creditexchange.node.database import open_database
from creditexchange.node.records.importer import import_file

runner = CliRunner()


def cli(*args: str, home: Path | None = None) -> tuple[int, str]:
    argv = [*args, "--home", str(home)] if home else list(args)
    result = runner.invoke(app, argv)
    return result.exit_code, result.output


def sample_penalties(tmp_path: Path) -> Path:
    """Huizhou's sample department files (40 subjects, seed 5); the penalty file."""
    code, output = cli(
        "sample", "--member", "huizhou", "--subjects", "40", "--seed", "5",
        "--out", str(tmp_path / "in"),
    )  # fmt: skip
    assert code == 0, output
    return next((tmp_path / "in").glob("admin_penalty.*"))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    code, output = cli("init", "huizhou", home=tmp_path / "hz")
    assert code == 0, output
    return tmp_path / "hz"


@pytest.mark.parametrize("member", sorted(KNOWN_REGIONS))
def test_every_members_sample_data_imports_without_a_single_reject(
    member: str, catalog: Catalog, database_url: str, tmp_path: Path
) -> None:
    config = create_home(tmp_path / member, member, database_url=database_url)
    engine = open_database(config.database_url)
    files = write_sample(catalog, member, 60, 3, tmp_path / "in")
    total = 0
    for path in files:
        summary = import_file(engine, catalog, path, path.stem, reject_dir=tmp_path / "rej")
        assert summary.rejected == 0, path.read_text()[:500]
        assert summary.inserted == summary.read
        total += summary.inserted
    assert total > 60
    engine.dispose()


def test_an_operator_imports_department_files_and_shows_a_subject(
    home: Path, tmp_path: Path
) -> None:
    penalties = sample_penalties(tmp_path)
    code, output = cli("import", str(penalties), "--theme", "admin_penalty", home=home)
    assert code == 0, output
    assert "rejected 0" in output
    code, output = cli("import", str(penalties), "--theme", "admin_penalty", "--json", home=home)
    assert code == 0
    [summary] = json.loads(output)
    assert summary["inserted"] == 0 and summary["unchanged"] == summary["read"]

    subject = showcase_subject("huizhou", 5)
    code, output = cli("show", subject, home=home)
    assert code == 0, output
    assert subject in output
    code, output = cli("show", subject, "--json", home=home)
    view = json.loads(output)
    assert view["subject_id"] == subject
    assert any(r["theme"] == "admin_penalty" for r in view["records"])


def test_rejected_rows_exit_1_and_name_the_reject_report(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(
        "subject_id,subject_type,subject_name,record_key,registered_capital\n"
        "91441300MA4W7K3P2X,enterprise,惠州示例有限公司,R1,100\n",
        encoding="utf-8",
    )
    code, output = cli("import", str(path), "--theme", "registration", home=home)
    if code == 2:  # the header lacks a required registration field: also a clear refusal
        assert "lacks required column" in output
        return
    assert code == 1
    assert "rejected 1" in output and "rejects.csv" in output


def test_a_file_in_the_wrong_encoding_exits_2_with_the_fix(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "gbk.csv"
    path.write_bytes("subject_id,subject_type,subject_name,record_key\n1,2,惠州,4\n".encode("gbk"))
    code, output = cli("import", str(path), "--theme", "honours", home=home)
    assert code == 2
    assert "--encoding gbk" in output


def test_check_id_explains_a_wrong_check_character() -> None:
    code, output = cli("check-id", "91441300MA4W7K3P2X")
    assert code == 1
    assert "check character is 'X', expected 'D'" in output
    code, output = cli("check-id", "441302198506123314")
    assert code == 0
    assert "441302********3314" in output and "441302198506123314" not in output


def test_catalog_commands_print_themes_and_fields() -> None:
    code, output = cli("catalog", "list")
    assert code == 0 and "admin_penalty" in output
    code, output = cli("catalog", "show", "admin_penalty", "--json")
    assert code == 0
    assert json.loads(output)["publicity"]["max_months"] == 36
    code, output = cli("catalog", "show", "nope")
    assert code == 2 and "unknown theme 'nope'" in output


def test_objections_are_opened_and_closed_from_the_command_line(home: Path, tmp_path: Path) -> None:
    penalties = sample_penalties(tmp_path)
    cli("import", str(penalties), "--theme", "admin_penalty", home=home)
    subject = showcase_subject("huizhou", 5)
    _, output = cli("show", subject, "--json", home=home)
    key = next(
        r["record_key"] for r in json.loads(output)["records"] if r["theme"] == "admin_penalty"
    )
    code, output = cli("objection", "open", "admin_penalty", key, "--reason", "paid", home=home)
    assert code == 0, output
    _, output = cli("show", subject, home=home)
    assert "objection in progress" in output
    code, output = cli(
        "objection", "close", "admin_penalty", key, "--outcome", "confirmed", home=home
    )
    assert code == 0, output
    _, output = cli("show", subject, home=home)
    assert "objection in progress" not in output


def test_commands_without_a_node_home_say_how_to_make_one(tmp_path: Path) -> None:
    code, output = cli("show", "91441300MA4W7K3P2D", home=tmp_path / "none")
    assert code == 2
    assert "credit-node init MEMBER --home" in output


def test_db_status_reports_the_schema_revision(home: Path) -> None:
    code, output = cli("db", "status", home=home)
    assert code == 0 and "schema revision" in output


@pytest.mark.slow
def test_the_demo_runs_a_six_member_federation_end_to_end(tmp_path: Path) -> None:
    base = random.randrange(20_000, 60_000, 10)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "creditexchange.node.cli",
            "demo",
            "--once",
            "--subjects",
            "40",
            "--base-port",
            str(base),
            "--metrics-port",
            "0",
            "--dir",
            str(tmp_path / "fed"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    for member in ("huizhou", "shenzhen", "dongguan", "heyuan", "shanwei", "customs"):
        assert f"node {member}:" in output
    assert "refused" in output and "PERMISSION_DENIED" in output  # the denied purpose
    assert "HIT" in output  # the check and the batch check
    assert "(masked)" in output and "********" in output
    assert output.count("✓ entry included in") >= 4
    assert "verified" in output
    assert not list((tmp_path / "fed").glob("*/serve.log")) or all(
        "Traceback" not in log.read_text() for log in (tmp_path / "fed").glob("*/serve.log")
    )

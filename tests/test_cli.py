"""The credit-node command as an operator uses it, from init to show."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import random
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fedharness import Federation
from rich.table import Table
from rich.text import Text
from typer.testing import CliRunner, Result

from creditexchange.devtools import demo
from creditexchange.devtools.demo import metrics_base_port
from creditexchange.devtools.provision import ProvisionedNode
from creditexchange.devtools.sample import KNOWN_REGIONS, showcase_subject, write_sample
from creditexchange.errors import FederationSetupError
from creditexchange.identifiers import uscc_check_character
from creditexchange.node.app.config import load_config
from creditexchange.node.app.home import create_home
from creditexchange.node.app.wiring import open_audit_log, open_node
from creditexchange.node.catalog import Catalog, FieldType, load_catalog
from creditexchange.node.cli import app
from creditexchange.node.cli.common import err, out, print_json
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
    code, output = cli(
        "objection", "open", "admin_penalty", key, "--reason", "paid",
        "--applicant", "[red]张三", "--channel", "window", home=home,
    )  # fmt: skip
    assert code == 0, output
    number = re.search(r"objection (\d+) opened", output)
    assert number is not None, output
    _, output = cli("show", subject, home=home)
    assert "objection in progress" in output
    code, output = cli("objection", "list", "--open", home=home)
    assert code == 0 and "[red]张三" in output, output
    code, output = cli("objection", "close", number.group(1), "--outcome", "confirmed", home=home)
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


# --- text from input, files and peers is printed as written --------------------------------

# A penalty decision whose case number, subject name and facts carry Rich markup and
# emoji codes, as a department file or a member's answer may.
CASE_NUMBER = "[bold]惠罚〔2026〕1号[/bold]"
SUBJECT_NAME = "[red]惠州:cn:有限公司[/red]"
FACTS = "[/x] 检查发现[a-z]消防设施未保持完好"
FILE_NAME = "penalties [a-z] [bold].csv"


@dataclass(frozen=True)
class MarkedFederation:
    huizhou: Path  # serving, holding the marked penalty
    shenzhen: Path  # not serving: the command line asks from its home
    subject: str  # the enterprise the marked penalty is about
    department_file: Path  # the penalty file, under a name with brackets
    fed: Federation


@pytest.fixture(scope="module")
def marked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MarkedFederation]:
    root = tmp_path_factory.mktemp("markup")
    fed = Federation(root / "fed", ("huizhou", "shenzhen"), {}, subjects=20)
    try:
        fed.stop("shenzhen")  # so that the command line is the only writer of its ledger
        huizhou = fed.nodes["huizhou"].home
        with (huizhou / "incoming" / "admin_penalty.csv").open(encoding="utf-8") as sample:
            reader = csv.DictReader(sample)
            row = next(reader)
            columns = list(reader.fieldnames or [])
        row.update(
            record_key=CASE_NUMBER,
            decision_number=CASE_NUMBER,
            subject_name=SUBJECT_NAME,
            violation_facts=FACTS,
        )
        department_file = root / FILE_NAME
        with department_file.open("w", encoding="utf-8", newline="") as file:
            writer = csv.DictWriter(file, columns)
            writer.writeheader()
            writer.writerow(row)
        node = open_node(huizhou)
        summary = import_file(
            node.database, node.catalog, department_file, "admin_penalty",
            reject_dir=node.config.reject_dir,
        )  # fmt: skip
        node.database.dispose()
        assert summary.inserted == 1, summary
        yield MarkedFederation(
            huizhou, fed.nodes["shenzhen"].home, row["subject_id"], department_file, fed
        )
    finally:
        fed.close()


_ASK_HUIZHOU = [
    "query", "{subject}", "--to", "huizhou", "--purpose", "public_procurement",
    "--legal-basis", "政府采购法第二十二条", "--officer", "[dim]officer[/dim]",
    "--home", "{shenzhen}",
]  # fmt: skip
_HZ = ["--home", "{huizhou}"]
_TOO_EARLY = ["--basis", "b", "--evidence", "e", "--decided", "2020-01-01"]  # before any minimum


@pytest.mark.parametrize(
    ("argv", "status", "verbatim"),
    [
        pytest.param(
            [*_ASK_HUIZHOU, "--case", "C-1", "--theme", "[/x]"],
            1,
            ["refused:", "unknown theme(s) '[/x]'"],
            id="a-theme-that-closes-a-tag-in-the-providers-refusal",
        ),
        pytest.param(
            [*_ASK_HUIZHOU, "--case", "[bold]x[/bold]", "--theme", "admin_penalty"],
            0,
            [SUBJECT_NAME, CASE_NUMBER, f"违法事实: {FACTS}", "✓"],
            id="a-case-reference-asked-and-a-case-number-answered-by-a-peer",
        ),
        pytest.param(
            ["import", "{department_file}", "--theme", "admin_penalty", *_HZ],
            0,
            [f"{FILE_NAME}: read 1", "unchanged 1"],
            id="a-department-files-name",
        ),
        pytest.param(
            ["show", "{subject}", *_HZ],
            0,
            [SUBJECT_NAME, CASE_NUMBER, FACTS],
            id="a-record-from-the-nodes-own-store",
        ),
        pytest.param(
            ["history", "admin_penalty", CASE_NUMBER, *_HZ],
            0,
            [CASE_NUMBER, FACTS, FILE_NAME],
            id="a-records-history",
        ),
        pytest.param(
            ["repair", "admin_penalty", CASE_NUMBER, *_TOO_EARLY, *_HZ],
            2,
            [f"error: record '{CASE_NUMBER}' may be repaired from"],
            id="a-record-key-in-an-error-message",
        ),
        pytest.param(
            ["catalog", "show", "[red]penalty[/red] :cn:"],
            2,
            ["error: unknown theme '[red]penalty[/red] :cn:'"],
            id="markup-and-an-emoji-code-in-an-error-message",
        ),
        pytest.param(
            ["objection", "close", "1", "--outcome", "[red]done", *_HZ],
            2,
            ["'[red]done' is not one of"],
            id="markup-in-typers-own-error-for-a-bad-value",
        ),
    ],
)
def test_text_from_input_files_and_peers_is_printed_as_written(
    marked: MarkedFederation, argv: list[str], status: int, verbatim: list[str]
) -> None:
    args = [
        a.format(
            subject=marked.subject,
            huizhou=marked.huizhou,
            shenzhen=marked.shenzhen,
            department_file=marked.department_file,
        )
        for a in argv
    ]
    result = runner.invoke(app, args, env={"COLUMNS": "1000"})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == status, result.output
    shown = " ".join(result.output.split())  # words in order; where lines break is Rich's
    for text in verbatim:
        assert " ".join(text.split()) in shown, f"{text!r} not printed as written:\n{result.output}"


def test_the_import_progress_bar_shows_a_files_name_as_written(
    marked: MarkedFederation, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the bar is drawn on interactive terminals only: make stderr one
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setattr(err, "is_interactive", True)
    result = runner.invoke(
        app,
        [
            "import",
            str(marked.department_file),
            "--theme",
            "admin_penalty",
            "--home",
            str(marked.huizhou),
        ],
        env={"COLUMNS": "1000"},
    )
    assert result.exit_code == 0, result.output
    assert FILE_NAME in result.stderr


@pytest.mark.slow
def test_the_demo_runs_a_six_member_federation_end_to_end(tmp_path: Path) -> None:
    # below the ephemeral range (32768 up), where other servers get their free ports;
    # the metrics ports are 2000 higher
    base = random.randrange(20_000, 30_000, 10)
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
    assert "allowed instead: retry with --check" in output  # the +2's bank credit, in full
    for i in range(6):  # --base-port moved the metrics ports too
        assert f"metrics http://127.0.0.1:{base + 2000 + i}/metrics" in output
    commands = _printed_commands(done.stdout)
    assert {c[0] for c in commands} >= {"query", "show", "policy", "audit"}, commands
    _assert_each_exists(commands)
    assert not list((tmp_path / "fed").glob("*/serve.log")) or all(
        "Traceback" not in log.read_text() for log in (tmp_path / "fed").glob("*/serve.log")
    )


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("FAKE\x1b[2J\x1b[31mBLACKLISTED\x1b[0m", id="escape-sequences"),
        pytest.param("evil\u202egnp.exe", id="a-right-to-left-override"),
        pytest.param("A\u200bB\x85C\u2028D", id="zero-width-next-line-and-line-separator"),
    ],
)
def test_control_and_formatting_characters_reach_the_terminal_escaped(
    text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Text from a peer (a refusal, a field) cannot repaint or reorder the officer's screen."""
    table = Table("field", "value")
    table.add_row("name", text)
    out.print(Text(f"refused: {text}"))
    out.print(table)
    print_json({"message": text})
    printed = capsys.readouterr().out
    for char in "\x1b\u202e\u200b\x85\u2028":
        assert char not in printed, f"{char!r} reached the terminal"
    assert text.encode("unicode_escape").decode("ascii") in printed  # shown, escaped
    assert json.loads(printed[printed.index("{") :]) == {"message": text}


# --- the requester's interface: query -------------------------------------------------------

PENALTY = load_catalog().theme("admin_penalty")
UNKNOWN_ENTERPRISE = "91441300MA4W7K3P1" + uscc_check_character("91441300MA4W7K3P1")


def _query(marked: MarkedFederation, subject: str, *options: str, to: str = "huizhou") -> Result:
    """``credit-node query SUBJECT --to huizhou …`` from Shenzhen's home."""
    argv = [
        "query", subject, "--to", to, "--legal-basis", "政府采购法第二十二条",
        "--case", "C-1", "--officer", "officer-7", "--home", str(marked.shenzhen), *options,
    ]  # fmt: skip
    return runner.invoke(app, argv, env={"COLUMNS": "1000"})


def _ledger_sizes(marked: MarkedFederation) -> tuple[int, int]:
    """The sizes of Huizhou's (serving) and Shenzhen's (the command line's) ledgers."""
    config = load_config(marked.shenzhen)
    database = open_database(config.database_url)
    try:
        shenzhen = open_audit_log(config, database).size()
    finally:
        database.dispose()
    return marked.fed.servers["huizhou"].ledger.log.size(), shenzhen


def test_query_prints_the_catalogs_labels_units_and_code_labels_as_show_does(
    marked: MarkedFederation,
) -> None:
    result = _query(
        marked, marked.subject, "--purpose", "public_procurement", "-t", "admin_penalty"
    )
    assert result.exit_code == 0, result.output
    _, shown = cli("show", marked.subject, "--json", home=marked.huizhou)
    (penalty,) = [r for r in json.loads(shown)["records"] if r["record_key"] == CASE_NUMBER]
    code = penalty["fields"]["penalty_type"]
    printed = result.stdout
    assert "行政处罚信息（双公示） (admin_penalty)" in printed
    labels = PENALTY.field_by_name["penalty_type"].codes or {}
    assert f"处罚类别: {code} ({labels[code]})" in printed
    assert "罚款金额（万元）" in printed  # a label with its unit
    assert "法定代表人证件号码: " in printed and "(masked)" in printed
    assert "violation_facts:" not in printed and "penalty_type:" not in printed


def test_query_json_is_the_projects_schema_not_protobufs(marked: MarkedFederation) -> None:
    result = _query(
        marked, marked.subject, "--purpose", "public_procurement", "-t", "admin_penalty", "--json"
    )
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["outcome"] == "answered" and answer["provider"] == "huizhou"
    (subject,) = answer["subjects"]
    assert subject["found"] is True
    (theme,) = subject["themes"]
    assert theme["mode"] == "full" and theme["hit"] is True
    assert theme["field_labels"]["fine_amount"] == "罚款金额（万元）"
    numeric = {f.name for f in PENALTY.fields if f.type in (FieldType.DECIMAL, FieldType.INTEGER)}
    for record in theme["records"]:
        for name in numeric & set(record["fields"]):
            value = record["fields"][name]
            assert value is None or isinstance(value, int | float), (name, value)
        assert record["decision_date"] is None or re.fullmatch(
            r"\d{4}-\d{2}-\d{2}", record["decision_date"]
        )
    assert "MODE_" not in result.stdout and '"answer"' not in result.stdout


def test_an_unknown_subject_says_no_such_subject(marked: MarkedFederation) -> None:
    result = _query(marked, UNKNOWN_ENTERPRISE, "--purpose", "public_procurement")
    assert result.exit_code == 0, result.output
    assert "no such subject: huizhou holds no record of it" in result.stdout
    assert "record(s)" not in result.stdout
    result = _query(marked, UNKNOWN_ENTERPRISE, "--purpose", "public_procurement", "--json")
    (subject,) = json.loads(result.stdout)["subjects"]
    assert subject["found"] is False and subject["name"] == ""


def test_a_refusal_with_json_is_a_json_object_on_stdout_too(marked: MarkedFederation) -> None:
    person = "441302198506123314"  # an individual, asked in full mode: refused by the provider
    before, _ = _ledger_sizes(marked)
    result = _query(
        marked, person, "--purpose", "civil_service_hiring", "--json",
        "-t", "serious_dishonesty", "-t", "dishonest_debtor",
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    refusal = json.loads(result.stdout)
    assert refusal["outcome"] == "refused" and refusal["status"] == "PERMISSION_DENIED"
    assert refusal["provider"] == "huizhou" and refusal["verified"] is True
    assert refusal["leaf_index"] == before  # the provider's entry of this refusal
    assert "forbid-individual-full" in refusal["reason"]
    assert refusal["instead"] == (
        "retry with --check: memorandum version 1 allows check mode for serious_dishonesty, "
        "dishonest_debtor"
    )
    # people read it on stderr: the status, the reason and the suggestion, each once
    assert f"refused: huizhou refused the query (its audit entry {before})" in result.stderr
    assert result.stderr.count("forbid-individual-full forbids it") == 1
    assert result.stderr.count("retry with --check") == 1


def test_a_refusal_names_each_distinct_reason_once(marked: MarkedFederation) -> None:
    result = _query(
        marked, marked.subject, "--purpose", "public_procurement",
        "-t", "customs_credit_grade", "-t", "customs_case", "-t", "customs_light_status",
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert result.stderr.count("denied by default") == 1
    assert "themes customs_credit_grade, customs_case, customs_light_status" in result.stderr
    assert result.stderr.count("allowed instead: ask without --theme") == 1


@pytest.mark.parametrize(
    ("subject", "purpose", "says"),
    [
        pytest.param(
            "91441300MA4W7K3P2X", "public_procurement",
            "the subject is not a valid identifier: check character is 'X', expected 'D'",
            id="a-wrong-check-character",
        ),
        pytest.param(
            "{subject}", "customs_clearance",
            "no rule of memorandum version 1 lets shenzhen ask huizhou about enterprise subjects "
            "for purpose customs_clearance: huizhou may be asked about enterprise subjects for "
            "purpose fiscal_funds",
            id="a-purpose-no-rule-allows",
        ),
        pytest.param(
            "{subject}", "tax_refund", "purpose 'tax_refund' is not in memorandum version 1",
            id="a-purpose-not-in-the-memorandum",
        ),
    ],
)  # fmt: skip
def test_what_the_memorandum_or_check_character_rules_out_is_never_sent(
    marked: MarkedFederation, subject: str, purpose: str, says: str
) -> None:
    before = _ledger_sizes(marked)
    result = _query(marked, subject.format(subject=marked.subject), "--purpose", purpose)
    assert result.exit_code == 2, result.output
    shown = " ".join(result.stderr.split())
    assert says in shown and "nothing was sent" in shown
    assert _ledger_sizes(marked) == before  # neither side recorded anything


def test_query_to_all_asks_every_member_through_the_consolidated_report(
    marked: MarkedFederation,
) -> None:
    result = _query(marked, marked.subject, "--purpose", "public_procurement", to="all")
    assert result.exit_code == 0, result.output
    assert "huizhou" in result.stdout


# --- the demo -------------------------------------------------------------------------------


def test_the_demos_metrics_ports_move_with_its_base_port() -> None:
    assert metrics_base_port(7501, None) == 9501
    assert metrics_base_port(20_000, None) == 22_000
    assert metrics_base_port(20_000, 0) == 0  # no metrics
    assert metrics_base_port(20_000, 30_000) == 30_000
    with pytest.raises(FederationSetupError, match="--metrics-port 0"):
        metrics_base_port(64_000, None)


def _printed_commands(text: str) -> list[list[str]]:
    return [
        shlex.split(line.strip())[1:]
        for line in text.splitlines()
        if line.strip().startswith("credit-node ")
    ]


def _assert_each_exists(commands: list[list[str]]) -> None:
    for argv in commands:
        result = runner.invoke(app, [*argv, "--help"])
        assert result.exit_code == 0, f"credit-node {shlex.join(argv)}: {result.output}"
        if argv[:1] == ["query"] and "all" in argv:
            assert importlib.util.find_spec("creditexchange.node.cli.report") is not None


def test_the_demo_invites_only_commands_that_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    members = ("huizhou", "shenzhen", "dongguan", "heyuan", "shanwei", "customs")
    nodes = {m: ProvisionedNode(m, tmp_path / m, 7501 + i, 0) for i, m in enumerate(members)}
    demo._invite(nodes, tmp_path, 2026)
    commands = _printed_commands(capsys.readouterr().out)
    assert {c[0] for c in commands} >= {"query", "show", "policy", "audit"}, commands
    _assert_each_exists(commands)
    assert not demo.command_exists(["audit", "no-such-command", "--home", str(tmp_path)])
    assert not demo.command_exists(["show", "X", "--no-such-option"])

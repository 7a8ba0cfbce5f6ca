"""What commands print, redirected to a file or a pipe, is whole: no line of it is wrapped,
folded or cut to a screen's width, so long Chinese names and fields stay on their line
(and ``grep`` finds them). On a terminal, output still fits the window."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from rich.cells import cell_len
from rich.table import Table
from typer.testing import CliRunner

from creditexchange.devtools.sample import showcase_subject
from creditexchange.node.cli import app
from creditexchange.node.cli.common import out

runner = CliRunner()

LONG_NAME = "惠州市" + "长" * 51 + "有限责任公司"  # 60 characters, 120 columns
LONG_FACTS = "经查，当事人" + "未按规定保持消防设施完好有效，" * 12 + "情节较重。"


def _lines_holding(text: str, output: str) -> list[str]:
    return [line for line in output.splitlines() if text in line]


def test_a_long_chinese_name_and_field_are_shown_whole_on_one_line(tmp_path: Path) -> None:
    assert len(LONG_NAME) == 60
    home = tmp_path / "hz"
    assert runner.invoke(app, ["init", "huizhou", "--home", str(home)]).exit_code == 0
    sample = runner.invoke(
        app, ["sample", "--member", "huizhou", "--subjects", "40", "--seed", "5",
              "--out", str(tmp_path / "in")],
    )  # fmt: skip
    assert sample.exit_code == 0, sample.output
    penalties = next((tmp_path / "in").glob("admin_penalty.*"))
    subject = showcase_subject("huizhou", 5)
    with penalties.open(encoding="utf-8") as file:
        reader = csv.DictReader(file)
        columns = list(reader.fieldnames or [])
        row = next(r for r in reader if r["subject_id"] == subject)
    row.update(subject_name=LONG_NAME, violation_facts=LONG_FACTS)
    department_file = tmp_path / "long.csv"
    with department_file.open("w", encoding="utf-8", newline="") as file:
        writer = csv.DictWriter(file, columns)
        writer.writeheader()
        writer.writerow(row)
    imported = runner.invoke(
        app, ["import", str(department_file), "--theme", "admin_penalty", "--home", str(home)]
    )
    assert imported.exit_code == 0, imported.output

    result = runner.invoke(app, ["show", subject, "--home", str(home)])
    assert result.exit_code == 0, result.output
    [name_line] = _lines_holding(LONG_NAME, result.stdout)
    assert subject in name_line  # the name, its id and its type on one line
    assert _lines_holding(f"违法事实: {LONG_FACTS}", result.stdout)
    assert "…" not in result.stdout


def test_a_table_keeps_each_row_on_one_line_when_redirected(
    capsys: pytest.CaptureFixture[str],
) -> None:
    table = Table("subject", "name", "facts")
    table.add_row("91441300MA4W7K3P2D", LONG_NAME, LONG_FACTS)
    out.print(table)
    printed = capsys.readouterr().out
    [row] = _lines_holding(LONG_NAME, printed)
    assert LONG_FACTS in row and "91441300MA4W7K3P2D" in row


def test_catalog_tables_show_every_label_whole_when_redirected() -> None:
    result = runner.invoke(app, ["catalog", "show", "admin_penalty"])
    assert result.exit_code == 0, result.output
    assert "…" not in result.stdout
    assert _lines_holding("违法事实", result.stdout)
    widths = {cell_len(line) for line in result.stdout.splitlines() if line.startswith("│")}
    assert len(widths) == 1  # one table, its rows all as wide as each other


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_a_table_still_fits_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    screen = _Terminal()
    monkeypatch.setattr(out, "_file", screen)  # restored to None: sys.stdout, whatever it is
    monkeypatch.setenv("COLUMNS", "60")
    table = Table("subject", "name")
    table.add_row("91441300MA4W7K3P2D", LONG_NAME)
    out.print(table)
    lines = screen.getvalue().splitlines()
    assert lines and max(len(line) for line in lines) <= 60


def test_a_rule_is_drawn_at_the_usual_width_when_redirected(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    out.rule("2. start each node")
    [line] = capsys.readouterr().out.splitlines()
    assert len(line) == 80 and "2. start each node" in line

"""The measures catalog: the shipped file, a city's own, and the files refused with a
message that names the file, the entry and what is wrong."""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import Engine
from typer.testing import CliRunner

from creditexchange.errors import ScreeningError
from creditexchange.node.catalog import Catalog
from creditexchange.node.cli import app
from creditexchange.node.federation.screening import measures_report
from creditexchange.node.measures import MeasureKind, load_measures, parse_measures
from creditexchange.policy.document import parse_memorandum

POLICY = Path(__file__).parent.parent / "policy" / "memorandum-3plus2.yaml"
SHIPPED = Path(__file__).parent.parent / "node" / "data" / "measures.yaml"


@pytest.fixture(scope="module")
def purposes() -> list[str]:
    memorandum = parse_memorandum(yaml.safe_load(POLICY.read_text("utf-8")), str(POLICY))
    return list(memorandum.purpose_by_code)


@pytest.fixture(scope="module")
def shipped() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(SHIPPED.read_text("utf-8"))
    return data


def test_the_shipped_catalog_fits_the_data_catalog_and_the_memorandum(
    catalog: Catalog, purposes: list[str]
) -> None:
    measures = load_measures(catalog=catalog, purposes=purposes)
    scenes = {s.code for s in measures.scenes}
    assert {
        "land_auction",
        "public_procurement",
        "fiscal_funds",
        "grain_procurement",
        "civil_service_hiring",
        "bank_credit",
        "customs_clearance",
        "commendation",
    } <= scenes
    land = measures.scene("land_auction")
    barred = land.measure_by_trigger["serious_dishonesty_list"]
    assert (barred.kind, barred.binding) == (MeasureKind.PROHIBIT, True)
    assert "国发〔2016〕33号" in barred.legal_basis
    assert "serious_dishonesty" in measures.themes_of(land)
    customs = measures.scene("customs_clearance")
    assert customs.measure_by_trigger["customs_certified"].kind is MeasureKind.FACILITATE
    assert (
        "海关总署令第282号" in customs.measure_by_trigger["customs_seriously_dishonest"].legal_basis
    )
    for scene in measures.scenes:  # every punishing measure has its legal basis
        assert all(m.legal_basis.strip() for m in scene.measures)


def test_a_grade_trigger_fires_only_on_its_values(catalog: Catalog) -> None:
    measures = load_measures(catalog=catalog)
    seriously = measures.trigger_by_code["customs_seriously_dishonest"]
    assert seriously.fires_on("customs_credit_grade", {"grade": "seriously_dishonest"})
    assert not seriously.fires_on("customs_credit_grade", {"grade": "dishonest"})
    assert not seriously.fires_on("customs_case", {"grade": "seriously_dishonest"})
    assert not seriously.fires_on("customs_credit_grade", {})
    listed = measures.trigger_by_code["serious_dishonesty_list"]
    assert listed.fires_on("serious_dishonesty", {})


def test_a_city_file_replaces_the_shipped_one(
    tmp_path: Path, shipped: dict[str, Any], catalog: Catalog
) -> None:
    city = copy.deepcopy(shipped)
    city["version"] = "huizhou-2026.2"
    city["scenes"] = [s for s in city["scenes"] if s["code"] == "grain_procurement"]
    path = tmp_path / "measures.yaml"
    path.write_text(yaml.safe_dump(city, allow_unicode=True), "utf-8")
    measures = load_measures(path, catalog=catalog)
    assert measures.version == "huizhou-2026.2"
    assert [s.code for s in measures.scenes] == ["grain_procurement"]
    with pytest.raises(ScreeningError, match=r"unknown scene 'land_auction'.*grain_procurement"):
        measures.scene("land_auction")


Edit = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Edit:
    def edit(data: dict[str, Any]) -> None:
        *head, last = path.split(".")
        node: Any = data
        for part in head:
            node = node[int(part)] if part.isdigit() else node[part]
        if last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value

    return edit


def _append_measure(scene: int, measure: dict[str, Any]) -> Edit:
    return lambda data: data["scenes"][scene]["measures"].append(measure)


_REPEAT = {
    "trigger": "serious_dishonesty_list",
    "kind": "restrict",
    "description_zh": "重复",
    "description_en": "again",
    "legal_basis": "国发〔2016〕33号",
    "binding": False,
}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_set("colour", "red"), r"colour: Extra inputs are not permitted"),
        (
            _set("scenes.0.measures.0.kind", "ban"),
            r"scenes\[0\]\(land_auction\)\.measures\[0\]\.kind: Input should be 'prohibit'",
        ),
        (
            _set("scenes.0.measures.0.legal_basis", ""),
            r"scenes\[0\]\(land_auction\)\.measures\[0\]\.legal_basis: String should have at "
            r"least 1 character",
        ),
        (
            _set("scenes.0.measures.0.trigger", "moon_list"),
            r"scenes\[0\]\(land_auction\)\.measures\[0\]\.trigger: unknown trigger 'moon_list'",
        ),
        (
            _append_measure(0, _REPEAT),
            r"measures\[4\]\.trigger: 'serious_dishonesty_list' has a measure in this scene",
        ),
        (_set("scenes.0.measures", []), r"scenes\[0\]\(land_auction\)\.measures: List should"),
        (_set("triggers.0.themes", []), r"triggers\[0\]\(serious_dishonesty_list\)\.themes"),
        (
            lambda data: data["triggers"].append(dict(data["triggers"][0])),
            r"trigger 'serious_dishonesty_list' is listed twice",
        ),
        (_set("effective", "soon"), r"effective: Input should be a valid date"),
    ],
    ids=[
        "unknown-key",
        "unknown-kind",
        "no-legal-basis",
        "unknown-trigger",
        "trigger-twice-in-a-scene",
        "scene-without-measures",
        "trigger-without-themes",
        "trigger-twice",
        "bad-date",
    ],
)
def test_a_bad_file_is_refused_naming_the_file_the_entry_and_the_problem(
    tmp_path: Path, shipped: dict[str, Any], edit: Edit, message: str
) -> None:
    data = copy.deepcopy(shipped)
    edit(data)
    path = tmp_path / "city-measures.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), "utf-8")
    with pytest.raises(ScreeningError, match=message) as raised:
        load_measures(path)
    assert str(raised.value).startswith(f"{path}: the measures catalog is invalid: ")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            _set("triggers.0.themes", ["black_list"]),
            r"triggers\[0\]\(serious_dishonesty_list\)\.themes: the data catalog has no theme "
            r"'black_list'",
        ),
        (
            _set("triggers.3.condition", {"field": "colour", "values": ["red"]}),
            r"triggers\[3\]\(customs_seriously_dishonest\)\.condition\.field: theme "
            r"'customs_credit_grade' has no field 'colour'",
        ),
        (
            _set("triggers.3.condition", {"field": "grade", "values": ["very_bad"]}),
            r"condition\.values: 'very_bad' are not codes of customs_credit_grade\.grade",
        ),
        (
            _set("triggers.3.latest_per", ["scheme"]),
            r"latest_per: theme 'customs_credit_grade' has no field 'scheme'",
        ),
        (
            _set("scenes.0.purpose", "space_tourism"),
            r"scenes\[0\]\(land_auction\)\.purpose: the memorandum lists no purpose "
            r"'space_tourism'",
        ),
    ],
    ids=["unknown-theme", "unknown-field", "unknown-code", "unknown-latest-field", "no-purpose"],
)
def test_a_file_that_does_not_fit_the_node_is_refused(
    tmp_path: Path,
    shipped: dict[str, Any],
    catalog: Catalog,
    purposes: list[str],
    edit: Edit,
    message: str,
) -> None:
    data = copy.deepcopy(shipped)
    edit(data)
    path = tmp_path / "city-measures.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), "utf-8")
    parse_measures(data, str(path))  # the file itself is well formed
    with pytest.raises(ScreeningError, match=message) as raised:
        load_measures(path, catalog=catalog, purposes=purposes)
    assert str(raised.value).startswith(f"{path}: ")


def test_unreadable_files_are_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(ScreeningError, match=r"cannot read measures file .*missing\.yaml"):
        load_measures(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("scenes: [unclosed\n", "utf-8")
    with pytest.raises(ScreeningError, match=r"broken\.yaml: not valid YAML"):
        load_measures(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n", "utf-8")
    with pytest.raises(ScreeningError, match=r"list\.yaml: a measures catalog is a mapping"):
        load_measures(listed)
    latin = tmp_path / "gbk.yaml"
    latin.write_bytes("title: 联合奖惩".encode("gbk"))
    with pytest.raises(ScreeningError, match=r"gbk\.yaml: not UTF-8"):
        load_measures(latin)


def test_measures_show_lists_the_catalog() -> None:
    result = CliRunner().invoke(app, ["measures", "show", "--json", "--scene", "land_auction"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    (scene,) = shown["scenes"]
    assert scene["code"] == "land_auction"
    assert {m["trigger"] for m in scene["measures"]} >= {"serious_dishonesty_list"}
    unknown = CliRunner().invoke(app, ["measures", "show", "--scene", "moon"])
    assert unknown.exit_code == 2
    assert "unknown scene 'moon'" in unknown.output


def test_an_empty_report_and_a_backwards_period(engine: Engine) -> None:
    assert measures_report(engine) == []
    day = dt.date(2026, 5, 1)
    with pytest.raises(ScreeningError, match="--from must not follow --to"):
        measures_report(engine, since=day, until=day - dt.timedelta(days=1))

"""The synthetic department data: deterministic, valid and in the importer's format.

Every file ``write_sample`` writes must import without a single reject: the
identifiers carry valid check characters, codes are catalog codes, required
fields are filled, subject types are those the theme allows and a stated
publicity end lies inside the theme's rule.
"""

from __future__ import annotations

import copy
import csv
import datetime as dt
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine

from creditexchange.devtools.sample import (
    DEFAULT_TODAY,
    FEDERATION_CITIES,
    KNOWN_REGIONS,
    showcase_subject,
    write_sample,
    write_theme,
)
from creditexchange.identifiers import validate_resident_id, validate_uscc
from creditexchange.node.catalog import Catalog, FieldType, load_catalog, parse_catalog
from creditexchange.node.records.importer import import_file
from creditexchange.node.records.publicity import add_months, publicity_end
from creditexchange.node.records.validation import SUBJECT_COLUMNS, RowValidator, cell_text

SEED = 11
CITY_SUBJECTS = 1500
CUSTOMS_SUBJECTS = 600
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
USCC_KIND = {
    "enterprise": {"91"},
    "individual_business": {"92"},
    "institution": {"12"},
    "social_org": {"51", "52", "53"},
}


@pytest.fixture(scope="module")
def default() -> Catalog:
    return load_catalog()


@pytest.fixture(scope="module")
def huizhou(default: Catalog, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_sample(default, "huizhou", CITY_SUBJECTS, SEED, tmp_path_factory.mktemp("hz"))


@pytest.fixture(scope="module")
def customs(default: Catalog, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_sample(
        default, "customs", CUSTOMS_SUBJECTS, SEED, tmp_path_factory.mktemp("customs")
    )


def read_rows(path: Path) -> Iterator[dict[str, Any]]:
    if path.suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as f:
            yield from csv.DictReader(f)
    else:
        with path.open("rb") as f:
            for line in f:
                yield orjson.loads(line)


def as_cells(row: dict[str, Any]) -> dict[str, str]:
    """A row as the importer hands it to validation (JSON scalars as cell text)."""
    return {name: cell_text(value) for name, value in row.items()}


def all_rows(paths: list[Path]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path in paths:
        for row in read_rows(path):
            yield path.stem, row


# --- determinism --------------------------------------------------------------


@pytest.mark.parametrize(("member", "subjects"), [("huizhou", 400), ("customs", 200)])
def test_two_runs_write_byte_identical_files(
    default: Catalog, tmp_path: Path, member: str, subjects: int
) -> None:
    first = write_sample(default, member, subjects, SEED, tmp_path / "a")
    second = write_sample(default, member, subjects, SEED, tmp_path / "b")
    assert [p.name for p in first] == [p.name for p in second]
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_another_seed_writes_other_data(default: Catalog, tmp_path: Path) -> None:
    a = write_sample(default, "heyuan", 100, 1, tmp_path / "a")
    b = write_sample(default, "heyuan", 100, 2, tmp_path / "b")
    assert a[0].read_bytes() != b[0].read_bytes()


def test_a_smaller_sample_is_the_beginning_of_a_larger_one(
    default: Catalog, tmp_path: Path
) -> None:
    small = write_sample(default, "dongguan", 60, SEED, tmp_path / "small")
    large = write_sample(default, "dongguan", 240, SEED, tmp_path / "large")
    for s, big in zip(small, large, strict=True):
        assert big.read_bytes().startswith(s.read_bytes()), s.name


def test_dates_count_back_from_the_anchor_date_not_the_clock(
    default: Catalog, tmp_path: Path
) -> None:
    later = DEFAULT_TODAY + dt.timedelta(days=400)
    paths = write_sample(default, "shanwei", 300, SEED, tmp_path, today=later)
    penalty = next(p for p in paths if p.stem == "admin_penalty")
    decided = [dt.date.fromisoformat(r["decision_date"]) for r in read_rows(penalty)]
    assert max(decided) > DEFAULT_TODAY
    assert max(decided) <= later


# --- the importer's format ----------------------------------------------------


def test_a_city_writes_its_own_themes_in_both_formats(
    default: Catalog, huizhou: list[Path]
) -> None:
    expected = [t.code for t in default.themes if t.source_department != "customs"]
    assert [p.stem for p in huizhou] == expected
    assert {p.suffix for p in huizhou} == {".csv", ".jsonl"}
    assert sum(p.suffix == ".jsonl" for p in huizhou) >= 2
    for path in huizhou:
        assert path.name == f"{path.stem}{path.suffix}"
        assert path.exists() and path.stat().st_size > 0


def test_customs_writes_only_the_customs_themes(default: Catalog, customs: list[Path]) -> None:
    assert {p.stem for p in customs} == {
        t.code for t in default.themes if t.source_department == "customs"
    }
    assert {p.suffix for p in customs} == {".csv", ".jsonl"}


def test_a_csv_header_is_the_subject_block_then_the_theme_fields(
    default: Catalog, huizhou: list[Path]
) -> None:
    for path in huizhou:
        if path.suffix != ".csv":
            continue
        with path.open(encoding="utf-8", newline="") as f:
            header = next(csv.reader(f))
        theme = default.theme(path.stem)
        assert header == [*SUBJECT_COLUMNS, *(f.name for f in theme.fields)]


def test_json_lines_omit_empty_values_and_name_only_catalog_fields(
    default: Catalog, huizhou: list[Path], customs: list[Path]
) -> None:
    for path in [*huizhou, *customs]:
        if path.suffix != ".jsonl":
            continue
        allowed = set(SUBJECT_COLUMNS) | set(default.theme(path.stem).field_by_name)
        for row in read_rows(path):
            assert set(row) <= allowed
            assert all(value not in ("", None) for value in row.values())


@pytest.mark.parametrize("member", ["huizhou", "customs"])
def test_every_row_passes_the_importers_validation(
    default: Catalog, member: str, request: pytest.FixtureRequest
) -> None:
    paths: list[Path] = request.getfixturevalue(member)
    for path in paths:
        theme = default.theme(path.stem)
        validator = RowValidator(theme, theme.source_department)
        for line, row in enumerate(read_rows(path), start=1):
            checked = validator.check(line, as_cells(row))
            assert not isinstance(checked, list), (path.name, line, checked)


# --- values -------------------------------------------------------------------


def test_every_identifier_is_valid_for_its_subject_type(
    default: Catalog, huizhou: list[Path], customs: list[Path]
) -> None:
    for theme_code, row in all_rows([*huizhou, *customs]):
        subject_type = row["subject_type"]
        if subject_type == "individual":
            assert validate_resident_id(row["subject_id"]) == row["subject_id"]
        else:
            assert validate_uscc(row["subject_id"]) == row["subject_id"]
            assert row["subject_id"][:2] in USCC_KIND[subject_type]
        theme = default.theme(theme_code)
        for f in theme.fields:
            value = row.get(f.name)
            if not value:
                continue
            if f.type is FieldType.USCC:
                assert validate_uscc(value) == value, (theme_code, f.name)
            elif f.type is FieldType.ID_NUMBER and row.get(f.id_type_field or "") == "resident_id":
                assert validate_resident_id(value) == value, (theme_code, f.name)


def test_a_citys_subjects_are_registered_in_its_region(huizhou: list[Path]) -> None:
    born: Counter[str] = Counter()
    for _theme, row in all_rows(huizhou):
        if row["subject_type"] == "individual":
            born[row["subject_id"][:6]] += 1
        else:
            assert row["subject_id"][2:8] == "441300"
    # Individuals mostly carry the address code of a Huizhou district (441302 …),
    # some that of the place they moved from.
    local = sum(n for code, n in born.items() if code[:4] == "4413" and code != "441300")
    assert local > 0.5 * sum(born.values())
    assert len(born) > 3


def test_customs_reports_on_enterprises_of_the_five_cities(customs: list[Path]) -> None:
    regions = Counter(row["subject_id"][2:8] for _theme, row in all_rows(customs))
    assert set(regions) == {KNOWN_REGIONS[city] for city in FEDERATION_CITIES}
    types = {row["subject_type"] for _theme, row in all_rows(customs)}
    assert types == {"enterprise"}


def test_record_keys_are_unique_within_each_theme(huizhou: list[Path], customs: list[Path]) -> None:
    for path in [*huizhou, *customs]:
        keys = [row["record_key"] for row in read_rows(path)]
        assert keys and len(keys) == len(set(keys)), path.name


def test_every_code_value_is_one_of_its_fields_codes(
    default: Catalog, huizhou: list[Path], customs: list[Path]
) -> None:
    seen: dict[tuple[str, str], set[str]] = {}
    for theme_code, row in all_rows([*huizhou, *customs]):
        for f in default.theme(theme_code).fields:
            if f.type is FieldType.CODE and row.get(f.name):
                assert row[f.name] in (f.codes or {}), (theme_code, f.name, row[f.name])
                seen.setdefault((theme_code, f.name), set()).add(row[f.name])
    assert len(seen[("admin_penalty", "penalty_type")]) >= 3
    assert len(seen[("admin_penalty", "industry")]) >= 5


def test_required_fields_are_always_filled_and_values_are_well_formed(
    default: Catalog, huizhou: list[Path], customs: list[Path]
) -> None:
    for theme_code, row in all_rows([*huizhou, *customs]):
        assert all(row[c] for c in SUBJECT_COLUMNS)
        for f in default.theme(theme_code).fields:
            value = row.get(f.name, "")
            if f.required:
                assert value != "", (theme_code, f.name)
            if value == "":
                continue
            if f.type is FieldType.DATE:
                assert ISO_DATE.match(value), (theme_code, f.name, value)
            elif f.type is FieldType.DECIMAL:
                assert re.fullmatch(r"\d+(\.\d+)?", value), (theme_code, f.name, value)
            elif f.type is FieldType.INTEGER:
                assert re.fullmatch(r"\d+", str(value)), (theme_code, f.name, value)
            elif f.max_length is not None:
                assert len(value) <= f.max_length, (theme_code, f.name)


def test_decisions_lie_in_the_past_of_the_anchor_date(
    default: Catalog, huizhou: list[Path], customs: list[Path]
) -> None:
    for theme_code, row in all_rows([*huizhou, *customs]):
        decided = default.theme(theme_code).dates.decision_date
        if decided and row.get(decided):
            assert dt.date.fromisoformat(row[decided]) <= DEFAULT_TODAY, (theme_code, row)


def test_subject_types_are_only_those_each_theme_allows(
    default: Catalog, huizhou: list[Path], customs: list[Path]
) -> None:
    for theme_code, row in all_rows([*huizhou, *customs]):
        assert default.theme(theme_code).allows(row["subject_type"]), (theme_code, row)


def test_individuals_appear_only_in_themes_that_allow_them_and_do_appear(
    default: Catalog, huizhou: list[Path]
) -> None:
    themes_with_individuals = {
        theme for theme, row in all_rows(huizhou) if row["subject_type"] == "individual"
    }
    assert themes_with_individuals
    assert "dishonest_debtor" in themes_with_individuals
    for code in themes_with_individuals:
        assert default.theme(code).allows("individual")


def test_a_subject_has_one_name_and_one_type_across_all_files(huizhou: list[Path]) -> None:
    known: dict[str, tuple[str, str]] = {}
    for _theme, row in all_rows(huizhou):
        entry = (row["subject_type"], row["subject_name"])
        assert known.setdefault(row["subject_id"], entry) == entry


def test_every_organisation_has_a_registration_record(huizhou: list[Path]) -> None:
    registered = {row["subject_id"] for theme, row in all_rows(huizhou) if theme == "registration"}
    organisations = {
        row["subject_id"]
        for _theme, row in all_rows(huizhou)
        if row["subject_type"] != "individual"
    }
    assert organisations <= registered
    registration = next(p for p in huizhou if p.stem == "registration")
    for row in read_rows(registration):
        assert row["record_key"] == row["subject_id"]


def test_the_mix_of_subjects_and_themes_is_realistic(huizhou: list[Path]) -> None:
    subjects: dict[str, str] = {}
    by_theme: dict[str, set[str]] = {}
    for theme, row in all_rows(huizhou):
        subjects[row["subject_id"]] = row["subject_type"]
        by_theme.setdefault(theme, set()).add(row["subject_id"])
    kinds = Counter(subjects.values())
    assert kinds.most_common(1)[0][0] == "enterprise"
    assert set(kinds) == {"enterprise", "individual_business", "institution", "social_org",
                          "individual"}  # fmt: skip
    organisations = len(by_theme["registration"])
    assert 0.2 < len(by_theme["admin_penalty"]) / organisations < 0.4
    assert 0.35 < len(by_theme["admin_license"]) / organisations < 0.6
    assert len(by_theme["serious_dishonesty"]) / organisations < 0.05


def test_a_stated_penalty_publicity_end_respects_the_rule(
    default: Catalog, huizhou: list[Path]
) -> None:
    theme = default.theme("admin_penalty")
    rule = theme.publicity
    assert rule is not None and rule.extended_minimum is not None
    penalty = next(p for p in huizhou if p.stem == "admin_penalty")
    rows = list(read_rows(penalty))
    stated = [r for r in rows if r["publicity_end"]]
    assert 0 < len(stated) < len(rows) / 3  # most rows leave it to the rule's maximum
    for row in stated:
        decided = dt.date.fromisoformat(row["decision_date"])
        end = dt.date.fromisoformat(row["publicity_end"])
        assert publicity_end(rule, decided, end, row) == end
        if row["industry"] in rule.extended_minimum.values:
            assert end >= add_months(decided, 12)


# --- the showcase subject -----------------------------------------------------


def test_the_showcase_subject_is_an_enterprise_with_licence_penalty_and_rating(
    huizhou: list[Path],
) -> None:
    subject = showcase_subject("huizhou", SEED)
    themes = {theme for theme, row in all_rows(huizhou) if row["subject_id"] == subject}
    assert {"registration", "admin_license", "admin_penalty", "credit_rating"} <= themes
    registration = next(read_rows(huizhou[0]))
    assert registration["subject_id"] == subject
    assert registration["subject_type"] == "enterprise"
    assert registration["registration_status"] == "active"


def test_the_showcase_penalty_is_still_public(huizhou: list[Path]) -> None:
    subject = showcase_subject("huizhou", SEED)
    penalty = next(p for p in huizhou if p.stem == "admin_penalty")
    row = next(r for r in read_rows(penalty) if r["subject_id"] == subject)
    assert not row["publicity_end"]
    assert dt.date.fromisoformat(row["decision_date"]) > DEFAULT_TODAY - dt.timedelta(days=365)


def test_the_customs_showcase_has_a_grade_a_case_and_a_light(customs: list[Path]) -> None:
    subject = showcase_subject("customs", SEED)
    themes = {theme for theme, row in all_rows(customs) if row["subject_id"] == subject}
    assert themes == {"customs_credit_grade", "customs_case", "customs_light_status"}


def test_customs_and_the_city_speak_of_the_same_enterprise(
    huizhou: list[Path], customs: list[Path]
) -> None:
    assert showcase_subject("customs", SEED) == showcase_subject("huizhou", SEED)
    city_names = {
        row["subject_id"]: row["subject_name"]
        for theme, row in all_rows(huizhou)
        if theme == "registration"
    }
    from_huizhou = {
        row["subject_id"]: row["subject_name"]
        for _theme, row in all_rows(customs)
        if row["subject_id"][2:8] == "441300"
    }
    assert from_huizhou
    for subject_id, name in from_huizhou.items():
        assert city_names[subject_id] == name


# --- members and regions ------------------------------------------------------


def test_an_unknown_member_without_a_region_is_refused(default: Catalog, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown member 'guangzhou': pass its region code"):
        write_sample(default, "guangzhou", 10, SEED, tmp_path)
    with pytest.raises(ValueError, match="pass its region code"):
        showcase_subject("guangzhou", SEED)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("region", ["4401", "44010A", "990100"])
def test_a_malformed_region_code_is_refused(default: Catalog, tmp_path: Path, region: str) -> None:
    with pytest.raises(ValueError, match="region code"):
        write_sample(default, "guangzhou", 10, SEED, tmp_path, region=region)


def test_an_unknown_member_with_a_region_gets_subjects_of_that_region(
    default: Catalog, tmp_path: Path
) -> None:
    paths = write_sample(default, "guangzhou", 200, SEED, tmp_path, region="440100")
    registration = next(p for p in paths if p.stem == "registration")
    rows = list(read_rows(registration))
    assert rows and all(r["subject_id"][2:8] == "440100" for r in rows)
    assert rows[0]["subject_id"] == showcase_subject("guangzhou", SEED, region="440100")
    assert rows[0]["subject_name"].startswith("广州市")


# --- write_theme --------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
@pytest.mark.parametrize("n", [0, 1, 2500])
def test_write_theme_writes_exactly_n_rows_with_unique_keys(
    default: Catalog, tmp_path: Path, suffix: str, n: int
) -> None:
    path = write_theme(default, "admin_penalty", "huizhou", n, SEED, tmp_path / f"p{suffix}")
    rows = list(read_rows(path))
    assert len(rows) == n
    assert len({r["record_key"] for r in rows}) == n
    assert len({r["subject_id"] for r in rows}) == n  # a fresh subject per row
    validator = RowValidator(default.theme("admin_penalty"), "market_regulation")
    for line, row in enumerate(rows, start=1):
        assert not isinstance(validator.check(line, as_cells(row)), list)


def test_write_theme_is_deterministic(default: Catalog, tmp_path: Path) -> None:
    a = write_theme(default, "customs_case", "customs", 300, SEED, tmp_path / "a.jsonl")
    b = write_theme(default, "customs_case", "customs", 300, SEED, tmp_path / "b.jsonl")
    assert a.read_bytes() == b.read_bytes()


def test_write_theme_refuses_a_file_of_unknown_format(default: Catalog, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.csv or \.jsonl"):
        write_theme(default, "admin_penalty", "huizhou", 5, SEED, tmp_path / "p.xlsx")


# --- a city's own catalog -----------------------------------------------------


def test_a_city_catalog_with_its_own_theme_and_codes_still_gets_valid_files(
    default: Catalog, tmp_path: Path
) -> None:
    data: dict[str, Any] = default.model_dump(mode="json")
    penalty = next(t for t in data["themes"] if t["code"] == "admin_penalty")
    kind = next(f for f in penalty["fields"] if f["name"] == "penalty_type")
    kind["codes"] = {"fine": "罚款", "warning": "警告"}  # fewer codes than the generator knows
    penalty["publicity"]["max_months"] = 24
    inspection = copy.deepcopy(penalty)
    inspection.update(code="fire_inspection", name_zh="消防监督检查", name_en="Fire inspection")
    inspection["publicity"] = None
    inspection["record_key_field"] = None
    inspection["fields"] = [
        {"name": "checked_on", "name_zh": "检查日期", "name_en": "Checked on",
         "type": "date", "required": True},
        {"name": "passed", "name_zh": "是否合格", "name_en": "Passed",
         "type": "boolean", "required": True},
        {"name": "hazards", "name_zh": "隐患数", "name_en": "Hazards", "type": "integer"},
        {"name": "inspector_id_type", "name_zh": "检查员证件类型", "name_en": "Id type",
         "type": "code", "codes": {"resident_id": "居民身份证"}, "required": True},
        {"name": "inspector_id", "name_zh": "检查员证件号码", "name_en": "Id number",
         "type": "id_number", "id_type_field": "inspector_id_type", "sensitive": True,
         "required": True},
        {"name": "unit_uscc", "name_zh": "检查单位代码", "name_en": "Unit USCC",
         "type": "uscc", "required": True},
        {"name": "note", "name_zh": "备注", "name_en": "Note", "type": "string",
         "max_length": 4, "required": True},
    ]  # fmt: skip
    inspection["dates"] = {"decision_date": "checked_on"}
    data["themes"].append(inspection)
    city = parse_catalog(data, "city")

    paths = write_sample(city, "huizhou", 400, SEED, tmp_path)
    assert "fire_inspection" in {p.stem for p in paths}
    paths.append(write_theme(city, "fire_inspection", "huizhou", 50, SEED, tmp_path / "f.jsonl"))
    for path in paths:
        theme = city.theme("fire_inspection" if path.stem == "f" else path.stem)
        validator = RowValidator(theme, theme.source_department)
        rows = list(read_rows(path))
        assert rows, path.name
        for line, row in enumerate(rows, start=1):
            checked = validator.check(line, as_cells(row))
            assert not isinstance(checked, list), (path.name, line, checked)


# --- through the real importer ----------------------------------------------


def test_a_city_and_customs_sample_import_without_a_single_reject(
    default: Catalog, engine: Engine, tmp_path: Path
) -> None:
    """The importer's own contract, end to end (SQLite here, PostgreSQL in CI)."""
    for member in ("shenzhen", "customs"):
        paths = write_sample(default, member, 150, SEED, tmp_path / member)
        for path in paths:
            summary = import_file(
                engine, default, path, path.stem, reject_dir=tmp_path / "rejects",
                today=DEFAULT_TODAY,
            )  # fmt: skip
            assert summary.rejected == 0, (member, path.name, summary.reject_report)
            assert summary.read == summary.inserted > 0, (member, path.name)
    again = import_file(
        engine, default, paths[0], paths[0].stem, reject_dir=tmp_path / "rejects",
        today=DEFAULT_TODAY,
    )  # fmt: skip
    assert again.unchanged == again.read and again.inserted == 0

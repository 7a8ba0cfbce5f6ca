"""The default catalog shipped with the node, and the refusal of invalid catalogs.

The default catalog must load, hold the themes the node's users rely on, and carry
every field of the 双公示 (double publicity) licence and penalty standards. A
catalog with anything off is refused whole, and the error names the place.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

from creditexchange.errors import CatalogError
from creditexchange.node.catalog import (
    Catalog,
    Category,
    Department,
    FieldType,
    Theme,
    load_catalog,
    parse_catalog,
)
from creditexchange.subjects import SubjectType

ALL_SUBJECT_TYPES = {t.value for t in SubjectType}

EXPECTED_THEMES = [
    "registration",
    "admin_license",
    "admin_penalty",
    "serious_dishonesty",
    "honours",
    "abnormal_operation",
    "dishonest_debtor",
    "credit_commitment",
    "credit_rating",
    "customs_credit_grade",
    "customs_case",
    "customs_light_status",
]

NATIONAL_CATEGORIES_2024 = {
    "registration",
    "judicial",
    "administrative",
    "professional_qualification",
    "abnormal_operation",
    "intellectual_property",
    "serious_dishonesty",
    "contract_performance",
    "credit_commitment",
    "credit_evaluation",
    "law_compliance",
    "honours",
    "voluntary",
}

# The 双公示 fields of DOMAIN.md, as the default catalog names them.
LEGAL_REP_FIELDS = ["legal_representative", "legal_rep_id_type", "legal_rep_id_number"]
PENALTY_FIELDS = [
    "decision_number",
    "violation_type",
    "violation_facts",
    "legal_basis",
    "penalty_type",
    "penalty_content",
    "fine_amount",
    "confiscated_amount",
    "suspended_license_name",
    "suspended_license_number",
    "decision_date",
    "penalty_valid_until",
    "publicity_end",
    "deciding_authority",
    "deciding_authority_uscc",
    "data_source_department",
    "data_source_uscc",
    "remarks",
    *LEGAL_REP_FIELDS,
]
LICENSE_FIELDS = [
    "license_document_name",
    "license_document_number",
    "license_category",
    "certificate_name",
    "certificate_number",
    "license_content",
    "decision_date",
    "valid_from",
    "valid_to",
    "issuing_authority",
    "issuing_authority_uscc",
    "current_status",
    "data_source_department",
    "data_source_uscc",
    "remarks",
    *LEGAL_REP_FIELDS,
]


@pytest.fixture(scope="module")
def default() -> Catalog:
    return load_catalog()


def default_data() -> dict[str, Any]:
    """The default catalog as a plain YAML mapping, to mutate."""
    text = resources.files("creditexchange.node").joinpath("data/catalog.yaml").read_text("utf-8")
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def theme_of(data: dict[str, Any], code: str) -> dict[str, Any]:
    found: dict[str, Any] = next(t for t in data["themes"] if t["code"] == code)
    return found


def field_of(data: dict[str, Any], theme: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(f for f in theme_of(data, theme)["fields"] if f["name"] == name)
    return found


# --- the default catalog ----------------------------------------------------


def test_the_default_catalog_loads_with_its_version_and_edition(default: Catalog) -> None:
    assert default.catalog_version == "2024.1"
    assert default.edition == "2024"
    assert default.title
    assert default.kind == "credit-exchange/catalog"


def test_the_default_catalog_file_explains_itself_and_how_a_city_overrides_it() -> None:
    text = resources.files("creditexchange.node").joinpath("data/catalog.yaml").read_text("utf-8")
    head = text[: text.index("catalog_version:")]
    assert head.lstrip().startswith("#")
    assert "catalog_path" in head


@pytest.mark.parametrize("code", EXPECTED_THEMES)
def test_every_theme_the_node_relies_on_is_in_the_default_catalog(
    default: Catalog, code: str
) -> None:
    theme = default.theme(code)
    assert theme.name_zh and theme.name_en and theme.description


def test_the_categories_are_those_of_the_2024_national_catalog(default: Catalog) -> None:
    assert {c.code for c in default.categories} == NATIONAL_CATEGORIES_2024


def test_every_item_has_a_chinese_and_an_english_name(default: Catalog) -> None:
    named: list[Category | Department | Theme] = [
        *default.categories, *default.departments, *default.themes,
    ]  # fmt: skip
    for item in named:
        assert item.name_zh.strip() and item.name_en.strip(), item.code
    for theme in default.themes:
        for f in theme.fields:
            assert f.name_zh.strip() and f.name_en.strip(), f"{theme.code}.{f.name}"


def test_the_penalty_theme_carries_every_double_publicity_penalty_field(default: Catalog) -> None:
    theme = default.theme("admin_penalty")
    missing = [name for name in PENALTY_FIELDS if name not in theme.field_by_name]
    assert missing == []
    fields = theme.field_by_name
    assert fields["decision_number"].required
    assert fields["decision_date"].required and fields["decision_date"].type is FieldType.DATE
    assert fields["fine_amount"].type is FieldType.DECIMAL
    assert fields["deciding_authority_uscc"].type is FieldType.USCC
    assert fields["data_source_uscc"].type is FieldType.USCC
    assert set(fields["penalty_type"].codes or {}) == {
        "warning", "fine", "confiscation", "suspension", "revocation", "detention", "other",
    }  # fmt: skip
    assert set(theme.subject_types) == ALL_SUBJECT_TYPES
    assert theme.dates.decision_date == "decision_date"
    assert theme.dates.valid_until == "penalty_valid_until"


def test_the_penalty_publicity_rule_follows_ndrc_order_58(default: Catalog) -> None:
    rule = default.theme("admin_penalty").publicity
    assert rule is not None
    assert (rule.start_field, rule.min_months, rule.max_months, rule.end_field) == (
        "decision_date", 3, 36, "publicity_end",
    )  # fmt: skip
    assert rule.extended_minimum is not None
    assert rule.extended_minimum.field == "industry"
    assert rule.extended_minimum.min_months == 12
    assert set(rule.extended_minimum.values) == {
        "food", "drug", "special_equipment", "work_safety", "fire_safety",
    }  # fmt: skip


def test_the_extended_minimum_names_only_codes_of_the_industry_field(default: Catalog) -> None:
    theme = default.theme("admin_penalty")
    assert theme.publicity is not None and theme.publicity.extended_minimum is not None
    industry = theme.field_by_name["industry"]
    assert industry.required  # a blank industry must not dodge the one-year minimum
    assert set(theme.publicity.extended_minimum.values) <= set(industry.codes or {})


def test_the_licence_theme_carries_every_double_publicity_licence_field(default: Catalog) -> None:
    theme = default.theme("admin_license")
    missing = [name for name in LICENSE_FIELDS if name not in theme.field_by_name]
    assert missing == []
    fields = theme.field_by_name
    assert set(fields["license_category"].codes or {}) == {
        "general", "franchise", "recognition", "approval", "registration", "other",
    }  # fmt: skip
    assert fields["issuing_authority_uscc"].type is FieldType.USCC
    assert set(theme.subject_types) == ALL_SUBJECT_TYPES
    assert theme.dates.decision_date == "decision_date"
    assert theme.dates.valid_until == "valid_to"


@pytest.mark.parametrize("theme_code", ["admin_license", "admin_penalty"])
def test_the_legal_representatives_id_number_is_sensitive_and_typed(
    default: Catalog, theme_code: str
) -> None:
    fields = default.theme(theme_code).field_by_name
    number = fields["legal_rep_id_number"]
    assert number.type is FieldType.ID_NUMBER
    assert number.sensitive
    assert number.id_type_field == "legal_rep_id_type"
    assert set(fields["legal_rep_id_type"].codes or {}) == {
        "resident_id", "passport", "hk_macau_pass", "taiwan_pass", "other",
    }  # fmt: skip
    assert not fields["legal_representative"].sensitive  # public in 双公示


def test_every_identity_number_in_the_catalog_is_sensitive(default: Catalog) -> None:
    for theme in default.themes:
        for f in theme.fields:
            if f.type is FieldType.ID_NUMBER:
                assert f.sensitive, f"{theme.code}.{f.name}"


@pytest.mark.parametrize(
    "code", ["serious_dishonesty", "honours", "abnormal_operation", "dishonest_debtor"]
)
def test_the_list_themes_answer_hit_or_no_hit(default: Catalog, code: str) -> None:
    assert default.theme(code).is_list


@pytest.mark.parametrize(
    ("code", "start", "end"),
    [
        ("abnormal_operation", "inclusion_date", "removal_date"),
        ("honours", "award_date", "valid_until"),
        ("dishonest_debtor", "publish_date", "removal_date"),
    ],
)
def test_a_list_record_stops_being_served_when_the_subject_leaves_the_list(
    default: Catalog, code: str, start: str, end: str
) -> None:
    rule = default.theme(code).publicity
    assert rule is not None
    assert (rule.start_field, rule.end_field, rule.min_months) == (start, end, 0)
    assert rule.max_months is None  # no fixed term: the entry lasts until it is removed


def test_registration_concerns_every_organisation_but_no_individual(default: Catalog) -> None:
    theme = default.theme("registration")
    assert set(theme.subject_types) == ALL_SUBJECT_TYPES - {"individual"}
    assert not theme.is_list
    assert theme.publicity is None


def test_dishonest_judgment_debtors_include_individuals(default: Catalog) -> None:
    assert default.theme("dishonest_debtor").allows("individual")
    assert default.theme("dishonest_debtor").category == "judicial"


def test_the_abnormal_operation_list_concerns_enterprises_and_individual_businesses(
    default: Catalog,
) -> None:
    assert set(default.theme("abnormal_operation").subject_types) == {
        "enterprise",
        "individual_business",
    }


def test_the_black_list_is_public_between_one_and_three_years(default: Catalog) -> None:
    rule = default.theme("serious_dishonesty").publicity
    assert rule is not None
    assert (rule.start_field, rule.min_months, rule.max_months) == ("inclusion_date", 12, 36)
    assert default.theme("serious_dishonesty").field_by_name["inclusion_date"].required


def test_the_tax_credit_grades_are_a_b_m_c_d(default: Catalog) -> None:
    fields = default.theme("credit_rating").field_by_name
    assert {"A", "B", "M", "C", "D"} <= set(fields["grade"].codes or {})
    assert "tax" in (fields["rating_scheme"].codes or {})
    assert fields["year"].type is FieldType.INTEGER


def test_customs_grades_cover_order_282_and_the_older_order_251(default: Catalog) -> None:
    theme = default.theme("customs_credit_grade")
    fields = theme.field_by_name
    assert set(fields["regime"].codes or {}) == {"order_282", "order_251"}
    assert {
        "advanced_certified", "certified", "regular", "dishonest", "seriously_dishonest", "other",
    } == set(fields["grade"].codes or {})  # fmt: skip
    assert fields["customs_code"].max_length == 10
    assert "individual" not in theme.subject_types


def test_customs_cases_grade_dishonesty_records_minor_general_serious(default: Catalog) -> None:
    fields = default.theme("customs_case").field_by_name
    assert set(fields["case_kind"].codes or {}) == {"smuggling", "customs_violation"}
    assert set(fields["record_grade"].codes or {}) == {"minor", "general", "serious"}


def test_the_customs_themes_are_owned_by_customs_and_no_other_is(default: Catalog) -> None:
    owned = {t.code for t in default.themes if t.source_department == "customs"}
    assert owned == {"customs_credit_grade", "customs_case", "customs_light_status"}
    light = default.theme("customs_light_status").field_by_name["light"]
    assert set(light.codes or {}) == {"green", "yellow"}


# --- invalid catalogs are refused, naming the place ------------------------

Mutation = Callable[[dict[str, Any]], None]


def _set(path: Callable[[dict[str, Any]], dict[str, Any]], key: str, value: Any) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        path(data)[key] = value

    return mutate


def _drop_codes(data: dict[str, Any]) -> None:
    del field_of(data, "admin_penalty", "penalty_type")["codes"]


def _duplicate_theme(data: dict[str, Any]) -> None:
    data["themes"].append(copy.deepcopy(theme_of(data, "registration")))


def _unknown_subject_type(data: dict[str, Any]) -> None:
    theme_of(data, "honours")["subject_types"].append("robot")


@pytest.mark.parametrize(
    ("mutate", "place", "reason"),
    [
        pytest.param(
            _set(lambda d: d, "colour", "red"), "colour", "Extra inputs", id="unknown-top-level-key"
        ),
        pytest.param(
            _set(lambda d: field_of(d, "admin_penalty", "fine_amount"), "colour", "red"),
            "themes[2](admin_penalty).fields[6](fine_amount).colour",
            "Extra inputs",
            id="unknown-field-key",
        ),
        pytest.param(
            _set(lambda d: field_of(d, "admin_penalty", "fine_amount"), "type", "money"),
            "themes[2](admin_penalty).fields[6](fine_amount).type",
            "'decimal'",
            id="wrong-field-type",
        ),
        pytest.param(
            _set(lambda d: theme_of(d, "admin_penalty")["publicity"], "min_months", "three"),
            "themes[2](admin_penalty).publicity.min_months",
            "integer",
            id="wrong-value-type",
        ),
        pytest.param(
            _drop_codes,
            "themes[2](admin_penalty).fields[4](penalty_type)",
            "has type code but lists no codes",
            id="code-field-without-codes",
        ),
        pytest.param(
            _set(lambda d: theme_of(d, "admin_penalty"), "source_department", "ministry_of_magic"),
            "(admin_penalty).source_department",
            "unknown department 'ministry_of_magic'",
            id="unknown-department",
        ),
        pytest.param(
            _set(lambda d: theme_of(d, "honours"), "category", "gossip"),
            "(honours).category",
            "unknown category 'gossip'",
            id="unknown-category",
        ),
        pytest.param(
            _set(lambda d: theme_of(d, "admin_penalty")["publicity"], "start_field", "decided_on"),
            "themes[2](admin_penalty)",
            "publicity.start_field names unknown field 'decided_on'",
            id="publicity-start-field-not-a-field",
        ),
        pytest.param(
            _set(
                lambda d: theme_of(d, "admin_penalty")["publicity"]["extended_minimum"],
                "field",
                "sector",
            ),
            "themes[2](admin_penalty)",
            "publicity.extended_minimum.field names unknown field 'sector'",
            id="extended-minimum-field-not-a-field",
        ),
        pytest.param(
            _set(lambda d: theme_of(d, "admin_penalty")["publicity"], "max_months", 6),
            "themes[2](admin_penalty).publicity",
            "minimum publicity period is longer than the maximum",
            id="minimum-longer-than-maximum",
        ),
        pytest.param(
            _duplicate_theme,
            "theme 'registration'",
            "is listed twice",
            id="duplicate-theme",
        ),
        pytest.param(
            _unknown_subject_type,
            "themes[4](honours).subject_types[5]",
            "'individual'",
            id="unknown-subject-type",
        ),
        pytest.param(
            _set(lambda d: field_of(d, "admin_penalty", "legal_rep_id_number"), "sensitive", False),
            "themes[2](admin_penalty).fields[20](legal_rep_id_number)",
            "holds identity document numbers, which are always sensitive (masked wherever "
            "shown); remove 'sensitive: false' from it",
            id="identity-number-said-not-sensitive",
        ),
    ],
)
def test_an_invalid_catalog_is_refused_with_the_place_named(
    mutate: Mutation, place: str, reason: str
) -> None:
    data = default_data()
    mutate(data)
    with pytest.raises(CatalogError) as caught:
        parse_catalog(data, "test")
    message = str(caught.value)
    assert message.startswith("test: the catalog is invalid")
    assert place in message
    assert reason in message


def test_the_unmutated_default_data_parses_so_each_refusal_is_the_mutations_doing() -> None:
    assert parse_catalog(default_data(), "test").theme("admin_penalty")


def test_a_catalog_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(CatalogError, match="a catalog is a mapping at the top level"):
        parse_catalog(["themes"], "test")


def test_a_catalog_file_that_is_not_yaml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text("catalog_version: '1'\nthemes: [unclosed, {code: x\n", encoding="utf-8")
    with pytest.raises(CatalogError, match="not valid YAML") as caught:
        load_catalog(path)
    assert str(path) in str(caught.value)


def test_a_catalog_file_that_cannot_be_read_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read catalog file"):
        load_catalog(tmp_path / "missing.yaml")


def test_a_city_catalog_file_is_loaded_from_its_path(tmp_path: Path) -> None:
    data = default_data()
    data["catalog_version"] = "huizhou.2025.3"
    data["themes"] = [theme_of(data, "admin_penalty")]
    path = tmp_path / "huizhou.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    catalog = load_catalog(path)
    assert catalog.catalog_version == "huizhou.2025.3"
    assert [t.code for t in catalog.themes] == ["admin_penalty"]


def test_an_extended_minimum_naming_a_value_that_is_not_a_code_is_refused() -> None:
    data = default_data()
    penalty = next(t for t in data["themes"] if t["code"] == "admin_penalty")
    penalty["publicity"]["extended_minimum"]["values"] = ["fod"]
    with pytest.raises(CatalogError, match=r"\['fod'\] are not codes of field 'industry'"):
        parse_catalog(data, "test")


def test_an_identity_number_is_sensitive_when_the_catalog_does_not_say() -> None:
    data = default_data()
    del field_of(data, "admin_penalty", "legal_rep_id_number")["sensitive"]
    fields = parse_catalog(data, "test").theme("admin_penalty").field_by_name
    assert fields["legal_rep_id_number"].sensitive
    assert not fields["legal_representative"].sensitive  # other fields: public unless stated


def test_an_id_type_field_without_resident_id_is_refused() -> None:
    data = default_data()
    penalty = next(t for t in data["themes"] if t["code"] == "admin_penalty")
    id_type = next(f for f in penalty["fields"] if f["name"] == "legal_rep_id_type")
    id_type["codes"].pop("resident_id")
    with pytest.raises(CatalogError, match="has no code 'resident_id'"):
        parse_catalog(data, "test")

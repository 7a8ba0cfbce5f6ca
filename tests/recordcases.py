"""What the tests of a record's life share (history, objections, repair): a small catalog
with a repairable penalty theme and a non-repairable one, and department files written
and imported the way a city's departments deliver them."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from creditexchange.clock import CST
from creditexchange.node.catalog import Catalog, parse_catalog
from creditexchange.node.records.importer import ImportSummary, import_file

__all__ = [
    "ENTERPRISE",
    "OTHER_ENTERPRISE",
    "PERSON",
    "TODAY",
    "catalog_of_cases",
    "import_rows",
    "row",
]

TODAY = dt.date(2026, 11, 27)
ENTERPRISE = "91441300MA4W7K3P2D"
OTHER_ENTERPRISE = "91441300MA4W7K3P3G"
PERSON = "441302198506123314"

_FIELDS: list[dict[str, Any]] = [
    {"name": "decision_number", "name_zh": "决定书文号", "name_en": "Decision number",
     "type": "string", "required": True, "max_length": 64},
    {"name": "penalty_type", "name_zh": "处罚类别", "name_en": "Penalty type", "type": "code",
     "required": True, "codes": {"fine": "罚款", "revocation": "吊销许可证件"}},
    {"name": "industry", "name_zh": "所属领域", "name_en": "Industry", "type": "code",
     "codes": {"food": "食品", "other": "其他"}},
    {"name": "fine", "name_zh": "罚款金额（万元）", "name_en": "Fine (10k yuan)",
     "type": "decimal", "unit": "万元"},
    {"name": "decision_date", "name_zh": "处罚决定日期", "name_en": "Decision date",
     "type": "date", "required": True},
    {"name": "publicity_end", "name_zh": "公示截止期", "name_en": "Publicity end",
     "type": "date"},
    {"name": "rep_id_type", "name_zh": "法定代表人证件类型", "name_en": "Rep id type",
     "type": "code", "codes": {"resident_id": "身份证", "passport": "护照"}},
    {"name": "rep_id", "name_zh": "法定代表人证件号码", "name_en": "Rep id number",
     "type": "id_number", "id_type_field": "rep_id_type"},
    {"name": "facts", "name_zh": "违法事实", "name_en": "Facts", "type": "text"},
]  # fmt: skip

_PUBLICITY: dict[str, Any] = {
    "start_field": "decision_date",
    "min_months": 3,
    "max_months": 36,
    "end_field": "publicity_end",
    "extended_minimum": {"field": "industry", "values": ["food"], "min_months": 12},
}

CATALOG: dict[str, Any] = {
    "catalog_version": "cases.1",
    "title": "a record's life",
    "edition": "2024",
    "effective": "2024-01-01",
    "categories": [{"code": "admin", "name_zh": "行政管理", "name_en": "Administrative"}],
    "departments": [{"code": "market", "name_zh": "市场监管局", "name_en": "Market regulation"}],
    "themes": [
        {
            "code": "penalty",
            "name_zh": "行政处罚",
            "name_en": "Administrative penalty",
            "category": "admin",
            "subject_types": ["enterprise", "individual"],
            "source_department": "market",
            "dates": {"decision_date": "decision_date"},
            "publicity": {
                **_PUBLICITY,
                "repairable": True,
                "serious": {"field": "penalty_type", "values": ["revocation"]},
            },
            "fields": _FIELDS,
        },
        {
            "code": "notice",
            "name_zh": "通报",
            "name_en": "Notice",
            "category": "admin",
            "subject_types": ["enterprise"],
            "source_department": "market",
            "dates": {"decision_date": "decision_date"},
            "publicity": _PUBLICITY,
            "fields": _FIELDS,
        },
    ],
}

HEADER = ["subject_id", "subject_type", "subject_name", "record_key"] + [f["name"] for f in _FIELDS]


def catalog_of_cases() -> Catalog:
    return parse_catalog(CATALOG, "cases")


def row(key: str, **values: str) -> dict[str, str]:
    """A penalty of ``ENTERPRISE`` decided 2026-03-01, fine 1.5 (万元), unless ``values``
    say otherwise."""
    base = {
        "subject_id": ENTERPRISE,
        "subject_type": "enterprise",
        "subject_name": "惠州市示例电子科技有限公司",
        "record_key": key,
        "decision_number": f"惠市监罚〔2026〕{key}号",
        "penalty_type": "fine",
        "industry": "other",
        "fine": "1.5",
        "decision_date": "2026-03-01",
        "facts": "未按规定公示年度报告",
    }
    base.update(values)
    return base


def import_rows(
    engine: Engine,
    catalog: Catalog,
    folder: Path,
    name: str,
    rows: list[dict[str, str]],
    *,
    theme: str = "penalty",
    exported: dt.datetime | None = None,
) -> ImportSummary:
    """Write ``rows`` as the department file ``name`` and import it, exported at
    ``exported`` (default: now, so a later file replaces an earlier one)."""
    path = folder / name
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HEADER)
        writer.writeheader()
        writer.writerows(rows)
    summary = import_file(
        engine,
        catalog,
        path,
        theme,
        reject_dir=folder / "rejects",
        exported_at=exported or dt.datetime.now(CST),
        today=TODAY,
    )
    assert summary.rejected == 0, summary
    return summary

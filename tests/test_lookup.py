"""Reading a subject back from the store: what an operator is told when it is not there.

Runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import Engine

from creditexchange.errors import NotFound
from creditexchange.node.catalog import Catalog
from creditexchange.node.database.models import SYNCED_RECORDS
from creditexchange.node.records.view import subject_view


@pytest.mark.parametrize(
    ("looked_up", "shown"),
    [
        ("91441300MA4W7K3P2D", "91441300MA4W7K3P2D"),
        (" 91441300ma4w7k3p2d ", "91441300MA4W7K3P2D"),
        ("441302198506123314", "441302********3314"),
        ("44130219850612331x", "441302********331X"),
        ("91441300MA4W7K3P2X", "914413********3P2X"),
        ("E12345678", "*********"),
        ("4413021985", "**********"),
    ],
    ids=[
        "a USCC",
        "a USCC in lower case with blanks",
        "a resident id",
        "a resident id ending in x",
        "a USCC with a wrong check character",
        "a passport number",
        "part of a resident id",
    ],
)
def test_a_missing_subject_is_named_in_clear_only_when_its_id_is_a_valid_uscc(
    engine: Engine, catalog: Catalog, looked_up: str, shown: str
) -> None:
    with pytest.raises(NotFound) as caught:
        subject_view(engine, catalog, looked_up)
    assert str(caught.value) == (
        f"no subject {shown} in this node's store; check the id, or import the department "
        "file that holds the subject's records"
    )


_GRADE = {
    "regime": "order_282",
    "grade": "dishonest",
    "customs_code": "4413960001",
    "decision_number": "深关信〔2026〕0042号",
    "decision_date": "2026-10-09",
    "source_customs": "惠州海关",
}


def _synced(engine: Engine, subject: str, *, publicity_end: dt.date | None = None) -> None:
    with engine.begin() as conn:
        conn.execute(
            SYNCED_RECORDS.insert().values(
                origin="customs",
                theme="customs_credit_grade",
                record_key="深关信〔2026〕0042号",
                version=1,
                subject_id=subject,
                subject_type="enterprise",
                subject_name="惠州市海关信用测试有限公司",
                source_department="customs",
                fields=json.dumps(_GRADE, ensure_ascii=False),
                decision_date=dt.date(2026, 10, 9),
                valid_until=None,
                publicity_end=publicity_end,
                status="active",
                feed_idx=0,
                changed_us=0,
            )
        )


def test_a_record_synced_from_customs_is_shown_as_customs_data(
    engine: Engine, catalog: Catalog
) -> None:
    subject = "91441300MA4W7K3P2D"  # known here only from the customs feed
    _synced(engine, subject)
    view = subject_view(engine, catalog, subject)
    assert view.name == "惠州市海关信用测试有限公司" and view.subject_type == "enterprise"
    (record,) = view.records
    assert record.origin == "customs" and record.theme == "customs_credit_grade"
    assert record.fields["grade"] == "dishonest"
    assert view.as_json()["records"][0]["origin"] == "customs"


def test_a_synced_record_past_its_publicity_is_not_shown(engine: Engine, catalog: Catalog) -> None:
    subject = "91441300MA4W7K3P2D"
    _synced(engine, subject, publicity_end=dt.date(2020, 1, 1))
    with pytest.raises(NotFound):
        subject_view(engine, catalog, subject)

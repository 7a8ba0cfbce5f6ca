"""Reading a subject back from the store: what an operator is told when it is not there.

Runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from creditexchange.errors import NotFound
from creditexchange.node.catalog import Catalog
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

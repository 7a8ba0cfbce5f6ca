"""Identifier validation as GB 32100-2015 and GB 11643-1999 define it."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from creditexchange.errors import InvalidIdentifier
from creditexchange.identifiers import (
    USCC_ALPHABET,
    mask_identifier,
    mask_resident_id,
    resident_id_check_character,
    uscc_check_character,
    validate_resident_id,
    validate_uscc,
)

VALID_ID = "441302198506123314"


def test_uscc_worked_example_from_the_domain_gets_check_character_d() -> None:
    assert uscc_check_character("91441300MA4W7K3P2") == "D"
    assert validate_uscc("91441300MA4W7K3P2D") == "91441300MA4W7K3P2D"


def test_resident_id_worked_example_from_the_domain_gets_check_character_4() -> None:
    assert resident_id_check_character("44130219850612331") == "4"


def test_uscc_is_canonicalised_to_upper_case_without_blanks() -> None:
    assert validate_uscc(" 91441300ma4w7k3p2d ") == "91441300MA4W7K3P2D"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "91441300MA4W7K3P2",
            "wrong length: a unified social credit code has 18 characters, found 17",
        ),
        ("91441300MA4W7K3P2DD", "found 19"),
        ("9144130OMA4W7K3P2D", "bad character 'O' at position 8"),
        ("91441300MA4W7K3I2D", "bad character 'I' at position 16"),
        ("B1441300MA4W7K3P2D", "bad character 'B' at position 1: the registering department"),
        ("9144A300MA4W7K3P2D", "positions 3-8 must be the 6-digit region code"),
        ("91441300MA4W7K3P2X", "check character is 'X', expected 'D'"),
    ],
)
def test_invalid_uscc_is_refused_with_what_is_wrong(value: str, message: str) -> None:
    with pytest.raises(InvalidIdentifier, match=message.replace("(", r"\(")):
        validate_uscc(value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "44130219850612331",
            "wrong length: a resident identity number has 18 characters, found 17",
        ),
        ("4413021985061233145", "found 19"),
        ("4413021985A6123314", "bad character at position 11"),
        ("44130219850612331Y", "bad character at position 18"),
        ("991302198506123314", r"positions 1-2 \(99\) are not a GB/T 2260 province code"),
        ("441302198513323314", r"birth date \(positions 7-14\) is not a real date"),
        (
            "441302190002293314",
            r"birth date \(positions 7-14\) is not a real date",
        ),  # 1900 not leap
        ("441302209901013314", "in the future"),
        ("441302198506123315", "check character is '5', expected '4'"),
    ],
)
def test_invalid_resident_id_is_refused_with_what_is_wrong(value: str, message: str) -> None:
    with pytest.raises(InvalidIdentifier, match=message):
        validate_resident_id(value, today=dt.date(2026, 11, 27))


def test_resident_id_errors_never_repeat_the_number() -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        validate_resident_id("441302198506123315")
    assert "441302198506123315" not in str(caught.value)
    assert "19850612" not in str(caught.value)


def test_lower_case_x_check_character_is_accepted() -> None:
    first17 = next(
        f"4413021985061{n:03d}3"
        for n in range(1000)
        if resident_id_check_character(f"4413021985061{n:03d}3") == "X"
    )
    assert validate_resident_id(first17 + "x") == first17 + "X"


def test_identity_numbers_are_masked_keeping_region_and_last_four() -> None:
    assert mask_resident_id(VALID_ID) == "441302********3314"
    assert mask_identifier(VALID_ID, "individual") == "441302********3314"
    assert mask_identifier("91441300MA4W7K3P2D", "enterprise") == "91441300MA4W7K3P2D"


uscc_bodies = st.tuples(
    st.sampled_from("123456789ANY"),
    st.text(alphabet=USCC_ALPHABET, min_size=1, max_size=1),
    st.text(alphabet="0123456789", min_size=6, max_size=6),
    st.text(alphabet=USCC_ALPHABET, min_size=9, max_size=9),
).map("".join)


@given(uscc_bodies)
def test_every_code_with_its_computed_check_character_is_valid(body: str) -> None:
    assert validate_uscc(body + uscc_check_character(body)) == body + uscc_check_character(body)


@given(uscc_bodies, st.integers(0, 16), st.sampled_from(USCC_ALPHABET))
def test_any_single_character_substitution_in_a_uscc_is_detected(
    body: str, position: int, replacement: str
) -> None:
    code = body + uscc_check_character(body)
    changed = code[:position] + replacement + code[position + 1 :]
    if changed != code:
        with pytest.raises(InvalidIdentifier):
            validate_uscc(changed)


resident_bodies = st.tuples(
    st.sampled_from(["110101", "440300", "441302", "441900", "441502", "441602"]),
    st.dates(dt.date(1920, 1, 1), dt.date(2020, 12, 31)).map(lambda d: d.strftime("%Y%m%d")),
    st.text(alphabet="0123456789", min_size=3, max_size=3),
).map("".join)


@given(resident_bodies, st.integers(0, 17), st.sampled_from("0123456789X"))
def test_any_single_character_substitution_in_an_identity_number_is_detected(
    body: str, position: int, replacement: str
) -> None:
    number = body + resident_id_check_character(body)
    assert validate_resident_id(number) == number
    changed = number[:position] + replacement + number[position + 1 :]
    if changed != number:
        with pytest.raises(InvalidIdentifier):
            validate_resident_id(changed)

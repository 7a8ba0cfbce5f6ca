"""Subject identifiers: the Unified Social Credit Code and the resident identity number.

Both validators are exact implementations of the national standards as DOMAIN.md
states them, and both say *what* is wrong when a value is refused: the wrong
length, the bad character and its 1-based position, or the check character found
and the one expected.

Promises kept here:

* ``validate_uscc`` / ``validate_resident_id`` return the canonical form (upper
  case, surrounding blanks removed) or raise :class:`InvalidIdentifier`.
* A valid checksum does not mean the entity exists; nothing here claims it does.
* ``mask_resident_id`` is the only way an identity number is shown or logged
  (``441302********3314``); :func:`mask_identifier` and :func:`mask_subject_name`
  pick the right masking for any subject, so callers never have to decide.
* :func:`subject_type_of` is how a node learns what kind of subject it is asked
  about: from the identifier, never from what a requester claims.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Final

from creditexchange.clock import china_today
from creditexchange.errors import InvalidIdentifier
from creditexchange.subjects import SubjectType, is_individual

__all__ = [
    "USCC_ALPHABET",
    "identifier_kind",
    "mask_identifier",
    "mask_name",
    "mask_resident_id",
    "mask_subject_name",
    "resident_id_check_character",
    "subject_type_of",
    "uscc_check_character",
    "validate_resident_id",
    "validate_subject_id",
    "validate_uscc",
]

USCC_ALPHABET: Final = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_VALUE: Final = {c: i for i, c in enumerate(USCC_ALPHABET)}
_USCC_DEPARTMENTS: Final = frozenset("123456789ANY")

# GB/T 2260 province-level codes (first two digits of every address code).
_PROVINCES: Final = frozenset(
    [
        "11",
        "12",
        "13",
        "14",
        "15",
        "21",
        "22",
        "23",
        "31",
        "32",
        "33",
        "34",
        "35",
        "36",
        "37",
        "41",
        "42",
        "43",
        "44",
        "45",
        "46",
        "50",
        "51",
        "52",
        "53",
        "54",
        "61",
        "62",
        "63",
        "64",
        "65",
        "71",
        "81",
        "82",
        "83",
        "91",
    ]
)
_EARLIEST_BIRTH: Final = dt.date(1900, 1, 1)
# Well-formed shapes; a value that matches only needs its check character verified.
_USCC_SHAPE: Final = re.compile(r"[1-9ANY][0-9A-HJ-NPQRTUWXY][0-9]{6}[0-9A-HJ-NPQRTUWXY]{10}")
_RESIDENT_SHAPE: Final = re.compile(r"[1-9][0-9]{16}[0-9X]")


# The weighted sums are evaluated with int() in a base congruent to the weights'
# ratio, which is exact modular arithmetic and much faster than a Python loop:
#   USCC:  sum(v_i * 3**i) mod 31 == int(reversed digits, 34) mod 31, as 34 == 3 (mod 31);
#   resident id: sum(d_j * 2**(18-j)) mod 11 == 2 * int(first17, 13) mod 11, as 13 == 2 (mod 11).
_BASE34_DIGITS: Final = str.maketrans(USCC_ALPHABET, "0123456789ABCDEFGHIJKLMNOPQRSTU")


def uscc_check_character(first17: str) -> str:
    """The GB 32100-2015 check character for the first 17 characters of a code."""
    total = int(first17[::-1].translate(_BASE34_DIGITS), 34)
    return USCC_ALPHABET[(31 - total % 31) % 31]


def validate_uscc(value: str) -> str:
    """Return the canonical Unified Social Credit Code or raise InvalidIdentifier."""
    code = value.strip().upper()
    if _USCC_SHAPE.fullmatch(code) and code[17] == uscc_check_character(code[:17]):
        return code
    if len(code) != 18:
        raise InvalidIdentifier(
            f"wrong length: a unified social credit code has 18 characters, found {len(code)}"
        )
    for position, char in enumerate(code, start=1):
        if char not in _USCC_VALUE:
            raise InvalidIdentifier(
                f"bad character {char!r} at position {position}: a unified social credit code "
                "uses only 0-9 and the letters A-Y without I, O, S, V and Z"
            )
    if code[0] not in _USCC_DEPARTMENTS:
        raise InvalidIdentifier(
            f"bad character {code[0]!r} at position 1: the registering department is one of "
            "1-9, A, N or Y"
        )
    if not code[2:8].isdigit():
        raise InvalidIdentifier(
            f"positions 3-8 must be the 6-digit region code of the registering authority, "
            f"found {code[2:8]!r}"
        )
    expected = uscc_check_character(code[:17])
    if code[17] != expected:
        raise InvalidIdentifier(f"check character is {code[17]!r}, expected {expected!r}")
    return code


def resident_id_check_character(first17: str) -> str:
    """The ISO 7064 MOD 11-2 check character for the first 17 digits of an identity number."""
    total = 2 * int(first17, 13)
    check = (12 - total % 11) % 11
    return "X" if check == 10 else str(check)


def validate_resident_id(value: str, *, today: dt.date | None = None) -> str:
    """Return the canonical resident identity number or raise InvalidIdentifier.

    The message never repeats the number itself: it is sensitive personal data.
    """
    number = value.strip().upper()
    if (
        _RESIDENT_SHAPE.fullmatch(number)
        and number[:2] in _PROVINCES
        and number[17] == resident_id_check_character(number[:17])
    ):
        _check_birth_date(number, today)
        return number
    if len(number) != 18:
        raise InvalidIdentifier(
            f"wrong length: a resident identity number has 18 characters, found {len(number)}"
        )
    for position, char in enumerate(number[:17], start=1):
        if not char.isdigit() or not char.isascii():
            raise InvalidIdentifier(
                f"bad character at position {position}: positions 1-17 of a resident identity "
                "number are digits"
            )
    if not (number[17].isdigit() or number[17] == "X"):
        raise InvalidIdentifier("bad character at position 18: the check character is a digit or X")
    if number[:2] not in _PROVINCES:
        raise InvalidIdentifier(f"positions 1-2 ({number[:2]}) are not a GB/T 2260 province code")
    _check_birth_date(number, today)
    expected = resident_id_check_character(number[:17])
    if number[17] != expected:
        raise InvalidIdentifier(f"check character is {number[17]!r}, expected {expected!r}")
    return number


def _check_birth_date(number: str, today: dt.date | None) -> None:
    try:
        birth = dt.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        raise InvalidIdentifier("birth date (positions 7-14) is not a real date") from None
    if not _EARLIEST_BIRTH <= birth <= (today or china_today()):
        raise InvalidIdentifier("birth date (positions 7-14) is before 1900 or in the future")


def mask_resident_id(number: str) -> str:
    """``441302198506123314`` -> ``441302********3314``; anything else is fully masked."""
    if len(number) == 18:
        return f"{number[:6]}{'*' * 8}{number[14:]}"
    return "*" * len(number)


def mask_name(name: str) -> str:
    """Keep the family name of an individual: ``张三丰`` -> ``张**``."""
    return name[:1] + "*" * (len(name) - 1) if name else name


def mask_identifier(subject_id: str, subject_type: str) -> str:
    """How a subject id may be shown: individuals masked, organisations in clear."""
    return mask_resident_id(subject_id) if is_individual(subject_type) else subject_id


def mask_subject_name(name: str, subject_type: str) -> str:
    """How a subject's name may be shown: an individual's down to the family name."""
    return mask_name(name) if is_individual(subject_type) else name


def identifier_kind(subject_type: str) -> str:
    """What identifies a subject of this type, in words."""
    return (
        "resident identity number" if is_individual(subject_type) else "unified social credit code"
    )


def validate_subject_id(subject_id: str, subject_type: str) -> str:
    """The canonical identifier of a subject of ``subject_type``, or InvalidIdentifier."""
    if is_individual(subject_type):
        return validate_resident_id(subject_id)
    return validate_uscc(subject_id)


def subject_type_of(subject_id: str) -> tuple[str, SubjectType]:
    """The canonical id and the subject type it names, from the identifier alone.

    A resident identity number names an individual. A unified social credit code
    names its kind in its first two characters (GB 32100-2015): registered by
    market regulation (``9``) as an individual business (``92``) or otherwise an
    enterprise; by civil affairs (``5``) a social organisation; by any other
    department (establishment offices, justice, culture, …) an institution.
    A provider decides with this, never with what the requester claims.
    Raises InvalidIdentifier when the value is neither.
    """
    value = subject_id.strip().upper()
    if value[:17].isdigit() and value[:1] != "9":  # no province code starts with 9
        try:
            return validate_resident_id(value), SubjectType.INDIVIDUAL
        except InvalidIdentifier as problem:
            resident_problem: InvalidIdentifier | None = problem
    else:
        resident_problem = None
    try:
        code = validate_uscc(value)
    except InvalidIdentifier as uscc_problem:
        raise InvalidIdentifier(
            f"{resident_problem or uscc_problem}: the subject must be a unified social credit "
            "code or a resident identity number"
        ) from None
    if code[0] == "9":
        return code, (SubjectType.INDIVIDUAL_BUSINESS if code[1] == "2" else SubjectType.ENTERPRISE)
    if code[0] == "5":
        return code, SubjectType.SOCIAL_ORG
    return code, SubjectType.INSTITUTION

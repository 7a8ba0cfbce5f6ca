"""The kinds of subject a credit record can be about, and how a subject is shown.

Five kinds, as the national public credit information catalog has them. Only one
of them is a natural person, ``individual``, identified by a resident identity
number; the other four are organisations identified by a unified social credit
code (``creditexchange.identifiers`` tells which from the identifier alone).
Whether a subject is a person decides how it may be shown and asked about, so the
question is asked in one place: :func:`is_individual`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

__all__ = ["SUBJECT_TYPES", "SubjectType", "is_individual", "subject_type_name"]


class SubjectType(StrEnum):
    ENTERPRISE = "enterprise"
    INDIVIDUAL_BUSINESS = "individual_business"
    INSTITUTION = "institution"
    SOCIAL_ORG = "social_org"
    INDIVIDUAL = "individual"


SUBJECT_TYPES: Final[tuple[str, ...]] = tuple(t.value for t in SubjectType)
"""The subject types' codes, in the catalog's order."""


_NAMES: Final[dict[str, tuple[str, str]]] = {
    SubjectType.ENTERPRISE: ("企业", "enterprise"),
    SubjectType.INDIVIDUAL_BUSINESS: ("个体工商户", "individual business"),
    SubjectType.INSTITUTION: ("事业单位", "public institution"),
    SubjectType.SOCIAL_ORG: ("社会组织", "social organisation"),
    SubjectType.INDIVIDUAL: ("自然人", "individual"),
}


def subject_type_name(subject_type: str) -> str:
    """A subject type as a person reads it, Chinese then English ("企业 enterprise"); an
    unknown code as it is."""
    names = _NAMES.get(subject_type)
    return f"{names[0]} {names[1]}" if names else subject_type


def is_individual(subject_type: str) -> bool:
    """A natural person: masked wherever shown, asked about only as the memorandum allows."""
    return subject_type == SubjectType.INDIVIDUAL

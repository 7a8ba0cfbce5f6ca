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

__all__ = ["SUBJECT_TYPES", "SubjectType", "is_individual"]


class SubjectType(StrEnum):
    ENTERPRISE = "enterprise"
    INDIVIDUAL_BUSINESS = "individual_business"
    INSTITUTION = "institution"
    SOCIAL_ORG = "social_org"
    INDIVIDUAL = "individual"


SUBJECT_TYPES: Final[tuple[str, ...]] = tuple(t.value for t in SubjectType)
"""The subject types' codes, in the catalog's order."""


def is_individual(subject_type: str) -> bool:
    """A natural person: masked wherever shown, asked about only as the memorandum allows."""
    return subject_type == SubjectType.INDIVIDUAL

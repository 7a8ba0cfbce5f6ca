"""The memorandum document: the federation's members, keys, purposes and sharing rules.

The source form is YAML (``policy/memorandum-3plus2.yaml``); it is signed as
canonical JSON (RFC 8785) inside an envelope (``policy.trust``). This module is
the schema, and it keeps these promises:

* Strict: an unknown key, a wrong type or a dangling reference (a rule naming an
  unknown member, purpose, subject type or field handling for an unknown theme) is
  refused at load with the exact place named (``rules[3](core-penalty).purposes``).
* Nothing has a permissive default: an empty list of requesters, purposes,
  subject types or themes in a rule is an error, not "everything"; a rule must
  list what it covers (``"*"`` is not a wildcard here).
* Field names in a rule, and the themes of rules and feeds, are checked against
  the node's catalog when the engine is built (the memorandum itself does not
  embed the catalog).
* Feeds (``feeds:``, optional, empty by default so that memoranda written before
  feeds existed still parse) say which member publishes which themes as a change
  feed and which members may sync them. A feed names one publisher, at least one
  subscriber and at least one theme; a publisher never subscribes to its own
  feed; rule and feed ids share one namespace, so a decision or a sync names
  exactly one thing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from enum import StrEnum
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from creditexchange.errors import PolicyError, describe_validation_error
from creditexchange.subjects import SUBJECT_TYPES

__all__ = [
    "CODE",
    "MEMBER_ID",
    "Conditions",
    "Effect",
    "FeedRule",
    "FieldHandling",
    "Member",
    "Memorandum",
    "Mode",
    "Period",
    "Purpose",
    "Quota",
    "Role",
    "Rule",
    "SigningKey",
    "parse_memorandum",
]

MEMBER_ID = r"^[a-z][a-z0-9_-]{1,31}$"
CODE = r"^[a-z][a-z0-9_-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Role(StrEnum):
    CITY = "city"
    CUSTOMS = "customs"


class SigningKey(_Strict):
    """A member's Ed25519 signing key; ``key_id`` is SHA-256 of the raw public key, hex."""

    key_id: str = Field(pattern=r"^[0-9a-f]{64}$")
    public_key: str = Field(pattern=r"^[0-9a-f]{64}$", description="32 bytes, hex")


class Member(_Strict):
    id: str = Field(pattern=MEMBER_ID)
    name_zh: str
    name_en: str
    role: Role
    region: str = Field(pattern=r"^[0-9]{6}$", description="GB/T 2260 region code")
    endpoint: str = Field(description="host:port of the member's gRPC service")
    keys: list[SigningKey] = Field(default_factory=list)
    certificate_fingerprints: list[str] = Field(
        default_factory=list, description="SHA-256 of the member's node certificates, hex"
    )


class Purpose(_Strict):
    code: str = Field(pattern=CODE)
    name_zh: str
    name_en: str
    legal_basis: str = Field(min_length=1)
    subject_types: list[str] = Field(min_length=1)


class Effect(StrEnum):
    PERMIT = "permit"
    FORBID = "forbid"


class Mode(StrEnum):
    FULL = "full"  # the records, with fields revealed, masked or withheld
    CHECK = "check"  # hit / no-hit only


class Period(StrEnum):
    DAY = "day"
    MONTH = "month"


class Quota(_Strict):
    limit: int = Field(gt=0)
    period: Period


class Conditions(_Strict):
    case_reference_required: bool = False
    officer_required: bool = False


class FieldHandling(_Strict):
    """Per theme: fields shown in clear, shown masked; every other field is withheld."""

    reveal: list[str] = Field(default_factory=list)
    mask: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _disjoint(self) -> FieldHandling:
        both = set(self.reveal) & set(self.mask)
        if both:
            raise ValueError(f"fields {sorted(both)} are both revealed and masked")
        return self


class Rule(_Strict):
    id: str = Field(pattern=CODE)
    effect: Effect
    intent: str = Field(min_length=1, description="why the rule exists, for auditors")
    providers: list[str] = Field(min_length=1, description="members whose data it covers")
    requesters: list[str] = Field(min_length=1)
    purposes: list[str] = Field(min_length=1)
    subject_types: list[str] = Field(min_length=1)
    themes: list[str] = Field(min_length=1)
    modes: list[Mode] = Field(min_length=1)
    valid_from: dt.date | None = None
    valid_until: dt.date | None = None
    fields: dict[str, FieldHandling] = Field(
        default_factory=dict, description="theme -> field handling (permits in full mode)"
    )
    quota: Quota | None = None
    conditions: Conditions = Conditions()

    @model_validator(mode="after")
    def _coherent(self) -> Rule:
        unknown = set(self.subject_types) - set(SUBJECT_TYPES)
        if unknown:
            raise ValueError(f"unknown subject type(s) {sorted(unknown)}")
        if self.effect is Effect.FORBID and (self.fields or self.quota):
            raise ValueError("a forbid rule has no field handling or quota")
        extra = set(self.fields) - set(self.themes)
        if extra:
            raise ValueError(f"field handling for theme(s) {sorted(extra)} the rule does not cover")
        if self.valid_from and self.valid_until and self.valid_from > self.valid_until:
            raise ValueError("valid_from is after valid_until")
        return self


class FeedRule(_Strict):
    """One member's change feed of some themes, and the members that may sync it.

    A feed is the other way data leaves its home node (the first is an answer to a
    query): the publisher serves every change of the listed themes to each
    subscriber, which keeps a synced copy. Deny by default: a member syncs a theme
    of a publisher only while a feed in force lists both. ``valid_from`` and
    ``valid_until`` are China Standard Time dates, inclusive, as for rules.
    """

    id: str = Field(pattern=CODE)
    intent: str = Field(min_length=1, description="why the feed exists, for auditors")
    publisher: str = Field(pattern=MEMBER_ID, description="the member whose records it carries")
    subscribers: list[str] = Field(min_length=1, description="members that may sync it")
    themes: list[str] = Field(min_length=1)
    valid_from: dt.date | None = None
    valid_until: dt.date | None = None

    @model_validator(mode="after")
    def _coherent(self) -> FeedRule:
        if self.publisher in self.subscribers:
            raise ValueError(
                f"publisher {self.publisher!r} is among its own subscribers: a member "
                "never syncs its own feed"
            )
        if self.valid_from and self.valid_until and self.valid_from > self.valid_until:
            raise ValueError("valid_from is after valid_until")
        return self


class Memorandum(_Strict):
    kind: Literal["credit-exchange/memorandum"] = "credit-exchange/memorandum"
    federation: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    title_zh: str
    title_en: str
    version: int = Field(ge=1)
    expires: dt.datetime
    threshold: int = Field(ge=1)
    ca_fingerprints: list[str] = Field(default_factory=list)
    members: list[Member] = Field(min_length=1)
    purposes: list[Purpose] = Field(min_length=1)
    rules: list[Rule] = Field(min_length=1)
    feeds: list[FeedRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references_resolve(self) -> Memorandum:
        if self.expires.tzinfo is None:
            raise ValueError("expires must carry a time zone, e.g. 2027-12-31T00:00:00Z")
        for what, ids in (
            ("member", [m.id for m in self.members]),
            ("purpose", [p.code for p in self.purposes]),
            ("rule", [r.id for r in self.rules]),
            ("signing key", [k.key_id for m in self.members for k in m.keys]),
        ):
            seen: set[str] = set()
            for value in ids:
                if value in seen:
                    raise ValueError(f"{what} {value!r} is listed twice")
                seen.add(value)
        if self.threshold > len(self.members):
            raise ValueError(
                f"threshold {self.threshold} is more than the {len(self.members)} members"
            )
        members = {m.id for m in self.members}
        purposes = {p.code: p for p in self.purposes}
        for p in self.purposes:
            unknown = set(p.subject_types) - set(SUBJECT_TYPES)
            if unknown:
                raise ValueError(f"purpose {p.code!r}: unknown subject type(s) {sorted(unknown)}")
        for i, r in enumerate(self.rules):
            where = f"rules[{i}]({r.id})"
            for field_name, names in (("providers", r.providers), ("requesters", r.requesters)):
                unknown = set(names) - members
                if unknown:
                    raise ValueError(f"{where}.{field_name}: unknown member(s) {sorted(unknown)}")
            unknown = set(r.purposes) - set(purposes)
            if unknown:
                raise ValueError(f"{where}.purposes: unknown purpose(s) {sorted(unknown)}")
        used = {r.id: f"rules[{i}]" for i, r in enumerate(self.rules)}
        for i, f in enumerate(self.feeds):
            where = f"feeds[{i}]({f.id})"
            if f.id in used:
                raise ValueError(
                    f"{where}.id: {f.id!r} is already the id of {used[f.id]}; rules and feeds "
                    "share one set of ids"
                )
            used[f.id] = f"feeds[{i}]"
            if f.publisher not in members:
                raise ValueError(f"{where}.publisher: unknown member {f.publisher!r}")
            unknown = set(f.subscribers) - members
            if unknown:
                raise ValueError(f"{where}.subscribers: unknown member(s) {sorted(unknown)}")
        return self

    @cached_property
    def member_by_id(self) -> Mapping[str, Member]:
        return {m.id: m for m in self.members}

    @cached_property
    def purpose_by_code(self) -> Mapping[str, Purpose]:
        return {p.code: p for p in self.purposes}


def parse_memorandum(data: Any, source: str) -> Memorandum:
    """Validate the ``signed`` part of a memorandum (the YAML source, or JSON)."""
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: a memorandum is a mapping at the top level")
    try:
        return Memorandum.model_validate(data)
    except ValidationError as exc:
        problems = describe_validation_error(exc, data)
        raise PolicyError(f"{source}: the memorandum is invalid: {problems}") from None

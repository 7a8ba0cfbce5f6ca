"""Signed memoranda: canonical JSON, signature thresholds, key rotation, rollback and expiry.

The update cases are tables in the manner of python-tuf's key-rotation tests:
each case is a sequence of memorandum versions, each naming its members' keys,
its threshold and the keys that sign it; the last version is installed or
refused for the named rules, and a refusal leaves the previous version installed.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from creditexchange.errors import (
    CanonicalizationError,
    MemorandumExpired,
    MemorandumRefused,
    PolicyError,
)
from creditexchange.policy.canonical import MAX_SAFE_INTEGER, canonical_json
from creditexchange.policy.document import parse_memorandum
from creditexchange.policy.trust import (
    NO_MEMORANDUM,
    IgnoreReason,
    SignatureCheck,
    TrustStore,
    accept,
    check_signatures,
    expired_error,
    is_expired,
    key_id,
    load_envelope,
    memorandum_hash,
    sign,
    signing_key_entry,
    to_json_data,
    verify_new,
)

# --------------------------------------------------------------------------- fixtures

KEYS = [nacl.signing.SigningKey(bytes([i + 1]) * 32) for i in range(12)]
NOW = dt.datetime(2026, 6, 1, 8, 0, tzinfo=dt.UTC)
EXPIRES = dt.datetime(2027, 12, 31, tzinfo=dt.UTC)

MEMBERS = [
    ("shanghai", "上海市", "Shanghai", "city", "310000"),
    ("nanjing", "南京市", "Nanjing", "city", "320100"),
    ("hangzhou", "杭州市", "Hangzhou", "city", "330100"),
    ("hefei", "合肥市", "Hefei", "city", "340100"),
    ("customs-sh", "上海海关", "Shanghai Customs", "customs", "310000"),
]

SOURCE = """\
kind: credit-exchange/memorandum
federation: yangtze-delta
title_zh: 长三角公共信用信息共享备忘录
title_en: Yangtze River Delta memorandum on sharing public credit information
version: 1
expires: 2027-12-31T00:00:00Z
threshold: 3
members: []
purposes:
  - code: admin_approval
    name_zh: 行政审批
    name_en: Administrative approval
    legal_basis: 《优化营商环境条例》第五十三条
    subject_types: [enterprise]
rules:
  - id: r1
    effect: permit
    intent: Nanjing sees Shanghai's administrative penalties when approving an enterprise
    providers: [shanghai]
    requesters: [nanjing]
    purposes: [admin_approval]
    subject_types: [enterprise]
    themes: [admin_penalty]
    modes: [full]
"""

ONE_KEY_EACH = ((0,), (1,), (2,), (3,), (4,))


def member(index: int, keys: tuple[int, ...]) -> dict[str, Any]:
    member_id, name_zh, name_en, role, region = MEMBERS[index]
    return {
        "id": member_id,
        "name_zh": name_zh,
        "name_en": name_en,
        "role": role,
        "region": region,
        "endpoint": f"{member_id}.credit.example:7443",
        "keys": [signing_key_entry(KEYS[k].verify_key) for k in keys],
    }


def memorandum(
    *,
    version: int = 1,
    threshold: int = 3,
    keys: tuple[tuple[int, ...], ...] = ONE_KEY_EACH,
    expires: dt.datetime = EXPIRES,
    **changes: Any,
) -> dict[str, Any]:
    """The signed part: the YAML source, filled in, validated and turned into JSON data."""
    data = yaml.safe_load(SOURCE)
    data.update(version=version, threshold=threshold, expires=expires, **changes)
    data["members"] = [member(i, k) for i, k in enumerate(keys)]
    return to_json_data(parse_memorandum(data, "test fixture"))


def signed_by(signed: dict[str, Any], *signers: int) -> dict[str, Any]:
    envelope: dict[str, Any] = {"signed": signed, "signatures": []}
    for k in signers:
        envelope = sign(envelope, KEYS[k])
    return envelope


def raw_signature(signed: dict[str, Any], k: int) -> dict[str, str]:
    return {
        "key_id": key_id(bytes(KEYS[k].verify_key)),
        "sig": KEYS[k].sign(canonical_json(signed)).signature.hex(),
    }


def installed(envelope: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """An envelope as ``current``: accepted on its own (first install)."""
    return envelope, verify_new(envelope, current=None, now=NOW)


# --------------------------------------------------------------------------- update tables


@dataclass(frozen=True)
class Version:
    keys: tuple[tuple[int, ...], ...]
    threshold: int
    sigs: tuple[int, ...]
    refused: tuple[str, ...] = ()


def each(*keys: int) -> tuple[tuple[int, ...], ...]:
    """One key per member, in member order."""
    return tuple((k,) for k in keys)


FIVE = each(0, 1, 2, 3, 4)
ROTATED = each(0, 1, 5, 3, 4)  # hangzhou's key 2 is replaced by key 5
ALL_NEW = each(5, 6, 7, 8, 9)
TWO_KEYS = ((0, 5), (1,), (2,), (3,), (4,))  # shanghai has keys 0 and 5

# fmt: off
UPDATE_CASES: dict[str, list[Version]] = {
    "3 of 5, signed by three members": [
        Version(FIVE, 3, (0, 2, 4)),
    ],
    "3 of 5, signed by two members: one short": [
        Version(FIVE, 3, (0, 2), refused=("own-signatures",)),
    ],
    "3 of 5, any three members will do, version after version": [
        Version(FIVE, 3, (0, 2, 4)),
        Version(FIVE, 3, (0, 4, 1)),
        Version(FIVE, 3, (1, 2, 3)),
        Version(FIVE, 3, (2, 3, 4)),
    ],
    "3 of 5, one key rotated, signed with the old and the new key": [
        Version(FIVE, 3, (0, 2, 4)),
        Version(ROTATED, 3, (0, 1, 2, 5)),
    ],
    "3 of 5, one key rotated, signed with only the new key: the installed version counts 2": [
        Version(FIVE, 3, (0, 2, 4)),
        Version(ROTATED, 3, (0, 1, 5), refused=("installed-signatures",)),
    ],
    "3 of 5, one key rotated, signed with only the old key: the new version counts 2": [
        Version(FIVE, 3, (0, 2, 4)),
        Version(ROTATED, 3, (0, 1, 2), refused=("own-signatures",)),
    ],
    "3 of 5, one key rotated, the rotated member does not sign": [
        Version(FIVE, 3, (0, 2, 4)),
        Version(ROTATED, 3, (0, 1, 3)),
    ],
    "3 of 5, one key rotated, and the next version needs only the new key": [
        Version(FIVE, 3, (0, 2, 4)),
        Version(ROTATED, 3, (0, 1, 2, 5)),
        Version(ROTATED, 3, (0, 1, 5)),
    ],
    "3 of 5, one key rotated, and the next version cannot use the retired key": [
        Version(FIVE, 3, (0, 2, 4)),
        Version(ROTATED, 3, (0, 1, 2, 5)),
        Version(ROTATED, 3, (0, 1, 2), refused=("own-signatures", "installed-signatures")),
    ],
    "3 of 5, all keys rotated, through a version signed by both sets": [
        Version(FIVE, 3, (0, 2, 4)),
        Version(ALL_NEW, 3, (0, 2, 4, 5, 6, 7)),
        Version(ALL_NEW, 3, (5, 6, 7)),
    ],
    "3 of 5, all keys rotated at once, signed by the new keys only": [
        Version(FIVE, 3, (0, 2, 4)),
        Version(ALL_NEW, 3, (5, 6, 7), refused=("installed-signatures",)),
    ],
    "3 of 5, all keys rotated at once, signed by the old keys only": [
        Version(FIVE, 3, (0, 2, 4)),
        Version(ALL_NEW, 3, (0, 2, 4), refused=("own-signatures",)),
    ],
    "2 of 3 raised to 3 of 3, signed by all three": [
        Version(each(0, 1, 2), 2, (0, 1)),
        Version(each(0, 1, 2), 3, (0, 1, 2)),
    ],
    "2 of 3 raised to 3 of 3, signed by two: the new threshold is not met": [
        Version(each(0, 1, 2), 2, (0, 1)),
        Version(each(0, 1, 2), 3, (0, 1), refused=("own-signatures",)),
    ],
    "3 of 3 lowered to 2 of 3, signed by two: the installed threshold is not met": [
        Version(each(0, 1, 2), 3, (0, 1, 2)),
        Version(each(0, 1, 2), 2, (0, 1), refused=("installed-signatures",)),
    ],
    "3 of 3 lowered to 2 of 3, signed by all three, then two are enough": [
        Version(each(0, 1, 2), 3, (0, 1, 2)),
        Version(each(0, 1, 2), 2, (0, 1, 2)),
        Version(each(0, 1, 2), 2, (0, 1)),
    ],
    "a member with two keys counts once": [
        Version(TWO_KEYS, 3, (0, 5, 1), refused=("own-signatures",)),
    ],
    "a member with two keys may sign with either": [
        Version(TWO_KEYS, 3, (5, 1, 2)),
    ],
    "a key of a non-member does not count": [
        Version(FIVE, 3, (0, 1, 9), refused=("own-signatures",)),
    ],
    "a member joins: its signature counts for the new version only": [
        Version(each(0, 1, 2, 3), 3, (0, 1, 2)),
        Version(each(0, 1, 2, 3, 4), 3, (0, 1, 4), refused=("installed-signatures",)),
    ],
    "a member leaves: its signature no longer counts for the new version": [
        Version(FIVE, 3, (0, 1, 2)),
        Version(each(0, 1, 2, 3), 3, (0, 1, 4), refused=("own-signatures",)),
    ],
}
# fmt: on


@pytest.mark.parametrize("versions", UPDATE_CASES.values(), ids=UPDATE_CASES.keys())
def test_a_sequence_of_versions_installs_or_is_refused_for_the_named_rules(
    tmp_path: Path, versions: list[Version]
) -> None:
    store = TrustStore(tmp_path)
    last_good = 0
    for number, step in enumerate(versions, start=1):
        signed = memorandum(version=number, threshold=step.threshold, keys=step.keys)
        envelope = signed_by(signed, *step.sigs)
        if step.refused:
            with pytest.raises(MemorandumRefused) as refusal:
                store.install(envelope, NOW)
            assert refusal.value.rules == step.refused, str(refusal.value)
        else:
            assert store.install(envelope, NOW).version == number
            last_good = number
    if last_good:
        assert store.current()[1].version == last_good
        assert store.versions() == list(range(1, last_good + 1))
    else:
        with pytest.raises(PolicyError, match=NO_MEMORANDUM):
            store.current()


# --------------------------------------------------------------------------- counting


def test_the_threshold_is_met_by_three_members_of_five() -> None:
    signed = memorandum()
    check = check_signatures(signed_by(signed, 0, 2, 4), parse_memorandum(signed, "t"))
    assert check.met
    assert check.valid == 3
    assert check.members == ("shanghai", "hangzhou", "customs-sh")
    assert check.counted == {key_id(bytes(KEYS[k].verify_key)): MEMBERS[k][0] for k in (0, 2, 4)}
    assert check.ignored == ()
    assert json.loads(json.dumps(check.as_dict()))["met"] is True


def test_the_threshold_missed_by_one_says_how_many_of_how_many() -> None:
    signed = memorandum()
    check = check_signatures(signed_by(signed, 0, 2), parse_memorandum(signed, "t"))
    assert not check.met
    assert check.summary().startswith("2 valid signatures of 3 needed (counted: shanghai")


def test_the_same_key_signing_twice_counts_once() -> None:
    signed = memorandum()
    envelope = {
        "signed": signed,
        "signatures": [
            raw_signature(signed, 0),
            raw_signature(signed, 0),
            raw_signature(signed, 1),
        ],
    }
    check = check_signatures(envelope, parse_memorandum(signed, "t"))
    assert check.valid == 2
    assert not check.met
    assert [(i.index, i.reason) for i in check.ignored] == [(1, IgnoreReason.DUPLICATE_KEYID)]


def test_a_keyid_is_looked_at_once_even_if_its_first_signature_is_bad() -> None:
    signed = memorandum()
    forged = {"key_id": key_id(bytes(KEYS[0].verify_key)), "sig": "00" * 64}
    envelope = {"signed": signed, "signatures": [forged, raw_signature(signed, 0)]}
    check = check_signatures(envelope, parse_memorandum(signed, "t"))
    assert check.valid == 0
    assert [i.reason for i in check.ignored] == [
        IgnoreReason.BAD_SIGNATURE,
        IgnoreReason.DUPLICATE_KEYID,
    ]


def test_two_keys_of_the_same_member_count_once() -> None:
    signed = memorandum(keys=TWO_KEYS)
    check = check_signatures(signed_by(signed, 0, 5, 1), parse_memorandum(signed, "t"))
    assert check.members == ("shanghai", "nanjing")
    (ignored,) = check.ignored
    assert ignored.reason is IgnoreReason.MEMBER_ALREADY_COUNTED
    assert ignored.member == "shanghai"
    assert "member already counted with another key" in check.summary()


def test_a_bad_signature_of_a_member_does_not_stop_its_other_key_from_counting() -> None:
    signed = memorandum(keys=TWO_KEYS)
    forged = {"key_id": key_id(bytes(KEYS[0].verify_key)), "sig": "00" * 64}
    envelope = {"signed": signed, "signatures": [forged, raw_signature(signed, 5)]}
    check = check_signatures(envelope, parse_memorandum(signed, "t"))
    assert check.members == ("shanghai",)
    assert check.ignored[0].reason is IgnoreReason.BAD_SIGNATURE


def test_a_key_of_a_non_member_is_ignored() -> None:
    signed = memorandum()
    check = check_signatures(signed_by(signed, 0, 1, 9), parse_memorandum(signed, "t"))
    assert check.valid == 2
    (ignored,) = check.ignored
    assert (ignored.reason, ignored.keyid) == (
        IgnoreReason.UNKNOWN_KEY,
        key_id(bytes(KEYS[9].verify_key)),
    )
    assert check.as_dict()["ignored"] == [
        {
            "index": 2,
            "key_id": key_id(bytes(KEYS[9].verify_key)),
            "reason": "not a key of any member",
            "member": None,
            "detail": "",
        }
    ]


@pytest.mark.parametrize(
    ("entry", "detail"),
    [
        (["key_id", "sig"], "is an object, not a list"),
        ({"key_id": "ab" * 32}, "has exactly key_id and sig"),
        ({"key_id": "ab" * 32, "sig": "cd" * 64, "method": "ed25519"}, "has exactly key_id"),
        ({"key_id": "AB" * 32, "sig": "cd" * 64}, "key_id is not 64 lowercase hex digits"),
        ({"key_id": 7, "sig": "cd" * 64}, "key_id is not 64 lowercase hex digits (found a number)"),
        ({"key_id": "ab" * 32, "sig": "cd" * 63}, "sig is not 128 lowercase hex digits"),
        ({"key_id": "ab" * 32, "sig": "zz" * 64}, "sig is not 128 lowercase hex digits"),
    ],
    ids=[
        "a list",
        "no sig",
        "an extra field",
        "uppercase keyid",
        "a number keyid",
        "a short sig",
        "a non-hex sig",
    ],
)
def test_a_malformed_signature_entry_is_ignored_with_its_reason(entry: Any, detail: str) -> None:
    signed = memorandum()
    envelope = signed_by(signed, 0, 1, 2)
    envelope["signatures"].insert(1, entry)
    check = check_signatures(envelope, parse_memorandum(signed, "t"))
    assert check.met
    (ignored,) = check.ignored
    assert (ignored.index, ignored.reason) == (1, IgnoreReason.MALFORMED)
    assert detail in ignored.detail


def test_a_signature_check_never_counts_a_member_twice() -> None:
    with pytest.raises(ValueError, match="counted twice"):
        SignatureCheck(2, {"a" * 64: "hefei", "b" * 64: "hefei"}, ())


def test_a_trusted_memorandum_with_a_false_keyid_is_refused_before_counting() -> None:
    signed = memorandum()
    forged = copy.deepcopy(signed)
    # hefei claims shanghai's public key under another keyid: one key would count twice
    forged["members"][3]["keys"][0]["public_key"] = signed["members"][0]["keys"][0]["public_key"]
    trusted = parse_memorandum(forged, "t")
    with pytest.raises(PolicyError, match=r"members\[3\]\(hefei\)\.keys\[0\].*not SHA-256"):
        check_signatures(signed_by(forged, 0), trusted)


# --------------------------------------------------------------------------- update rules


def test_a_first_install_is_trust_on_first_use_and_exposes_the_hash() -> None:
    envelope = signed_by(memorandum(), 0, 1, 2)
    result = accept(envelope, current=None, now=NOW)
    assert result.first_install
    assert result.installed is None
    assert result.hash == memorandum_hash(envelope["signed"])
    assert result.memorandum.version == 1
    assert "memorandum_hash" in (verify_new.__doc__ or "")
    assert "out of band" in (verify_new.__doc__ or "") or "another channel" in (
        verify_new.__doc__ or ""
    )


def test_a_refusal_names_the_rule_the_count_and_the_ignored_keys() -> None:
    envelope = signed_by(memorandum(), 0, 9)
    with pytest.raises(MemorandumRefused) as refusal:
        verify_new(envelope, current=None, now=NOW)
    message = str(refusal.value)
    assert "rule 1, signed by a threshold of its own keys" in message
    assert "1 valid signature of 3 needed" in message
    assert f"(key {key_id(bytes(KEYS[9].verify_key))[:16]}…) not a key of any member" in message
    assert memorandum_hash(envelope["signed"]).hex() in message


def test_an_older_version_is_refused_as_a_rollback() -> None:
    v1 = signed_by(memorandum(version=1), 0, 1, 2)
    v2 = signed_by(memorandum(version=2), 0, 1, 2)
    with pytest.raises(MemorandumRefused) as refusal:
        verify_new(v1, current=installed(v2), now=NOW)
    assert refusal.value.rules == ("version",)
    assert "version 1 is older than the installed version 2 (rollback refused" in str(refusal.value)


def test_a_different_document_with_the_installed_version_number_is_refused_as_a_replay() -> None:
    v2 = signed_by(memorandum(version=2), 0, 1, 2)
    other = signed_by(memorandum(version=2, title_en="Another title"), 0, 1, 2)
    with pytest.raises(MemorandumRefused) as refusal:
        verify_new(other, current=installed(v2), now=NOW)
    assert refusal.value.rules == ("version",)
    assert "replay refused" in str(refusal.value)


def test_the_installed_memorandum_offered_again_is_already_installed() -> None:
    v2 = signed_by(memorandum(version=2), 0, 1, 2)
    more_signatures = sign(v2, KEYS[3])
    for offered in (v2, more_signatures):
        with pytest.raises(MemorandumRefused, match="is already installed") as refusal:
            verify_new(offered, current=installed(v2), now=NOW)
        assert refusal.value.rules == ("already-installed",)


def test_a_memorandum_of_another_federation_is_refused() -> None:
    v1 = signed_by(memorandum(version=1), 0, 1, 2)
    other = signed_by(memorandum(version=2, federation="pearl-river"), 0, 1, 2)
    with pytest.raises(MemorandumRefused) as refusal:
        verify_new(other, current=installed(v1), now=NOW)
    assert refusal.value.rules == ("federation",)


def test_an_expired_memorandum_is_refused_naming_its_expiry() -> None:
    expired = signed_by(memorandum(expires=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)), 0, 1, 2)
    with pytest.raises(MemorandumRefused) as refusal:
        verify_new(expired, current=None, now=NOW)
    assert refusal.value.rules == ("expired",)
    assert "expired on 2026-01-01T00:00:00Z (now 2026-06-01T08:00:00Z)" in str(refusal.value)


def test_a_memorandum_expires_at_the_instant_named() -> None:
    m = parse_memorandum(memorandum(), "t")
    assert not is_expired(m, EXPIRES - dt.timedelta(microseconds=1))
    assert is_expired(m, EXPIRES)
    assert is_expired(m, EXPIRES.astimezone(dt.timezone(dt.timedelta(hours=8))))
    with pytest.raises(ValueError, match="time zone"):
        is_expired(m, dt.datetime(2026, 1, 1))


def test_every_failed_rule_is_listed_together() -> None:
    v2 = signed_by(memorandum(version=2), 0, 1, 2)
    bad = signed_by(memorandum(version=1, expires=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)), 9)
    with pytest.raises(MemorandumRefused) as refusal:
        verify_new(bad, current=installed(v2), now=NOW)
    assert refusal.value.rules == ("own-signatures", "installed-signatures", "version", "expired")
    message = str(refusal.value)
    assert "0 valid signatures of 3 needed" in message
    assert "rule 3, not expired" in message


def test_an_expired_installed_version_can_still_approve_its_successor() -> None:
    v1 = signed_by(memorandum(version=1), 0, 1, 2)
    later = EXPIRES + dt.timedelta(days=30)
    v2 = signed_by(memorandum(version=2, expires=EXPIRES + dt.timedelta(days=400)), 0, 1, 2)
    assert verify_new(v2, current=installed(v1), now=later).version == 2


def test_a_malformed_signature_entry_refuses_an_update_even_with_enough_signatures() -> None:
    # Counting ignores it, but the store could not read such an envelope back.
    envelope = signed_by(memorandum(), 0, 1, 2)
    envelope["signatures"].append({"key_id": "not hex", "sig": ""})
    with pytest.raises(PolicyError) as refusal:
        verify_new(envelope, current=None, now=NOW)
    assert str(refusal.value).startswith(
        "offered envelope: signatures[3]: key_id is not 64 lowercase hex digits"
    )
    assert "remove that entry, or have its member sign again" in str(refusal.value)


# --------------------------------------------------------------------------- tampering

TAMPERINGS: dict[str, Callable[[dict[str, Any]], None]] = {
    "the title": lambda s: s.update(title_en=s["title_en"] + "."),
    "the threshold": lambda s: s.update(threshold=1),
    "the version": lambda s: s.update(version=2),
    "the expiry": lambda s: s.update(expires="2099-12-31T00:00:00Z"),
    "a member's endpoint": lambda s: s["members"][1].update(endpoint="evil.example:7443"),
    "a rule's requesters": lambda s: s["rules"][0]["requesters"].append("hangzhou"),
    "a rule's modes": lambda s: s["rules"][0].update(modes=["full", "check"]),
    "a member's key": lambda s: s["members"][3].update(
        keys=[signing_key_entry(KEYS[9].verify_key)]
    ),
}


@pytest.mark.parametrize("tamper", TAMPERINGS.values(), ids=TAMPERINGS.keys())
def test_a_change_after_signing_breaks_every_signature(
    tamper: Callable[[dict[str, Any]], None],
) -> None:
    envelope = signed_by(memorandum(), 0, 1, 2)
    tamper(envelope["signed"])
    with pytest.raises(MemorandumRefused) as refusal:
        verify_new(envelope, current=None, now=NOW)
    assert refusal.value.rules == ("own-signatures",)
    assert str(refusal.value).count("bad signature") == 3


def leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from leaves(item, (*path, index))
    else:
        yield path


SIGNED = memorandum()
SIGNED_ENVELOPE = signed_by(SIGNED, 0, 1, 2, 3, 4)
TRUSTED = parse_memorandum(SIGNED, "t")


@settings(max_examples=60, deadline=None)
@given(path=st.sampled_from(list(leaves(SIGNED))), extra=st.characters(codec="utf-8"))
def test_any_changed_field_breaks_every_signature(path: tuple[Any, ...], extra: str) -> None:
    envelope = copy.deepcopy(SIGNED_ENVELOPE)
    *parents, last = path
    node = envelope["signed"]
    for step in parents:
        node = node[step]
    value = node[last]
    if isinstance(value, bool):
        node[last] = not value
    elif isinstance(value, int):
        node[last] = value + 1
    elif isinstance(value, str):
        node[last] = value + extra
    else:
        node[last] = "now a string"
    check = check_signatures(envelope, TRUSTED)
    assert check.valid == 0
    assert {i.reason for i in check.ignored} == {IgnoreReason.BAD_SIGNATURE}


# --------------------------------------------------------------------------- envelopes


def text_of(envelope: dict[str, Any]) -> str:
    return json.dumps(envelope, ensure_ascii=False)


def changed(change: Callable[[dict[str, Any]], Any]) -> str:
    envelope = signed_by(memorandum(), 0, 1, 2)
    change(envelope)
    return text_of(envelope)


def false_keyid(envelope: dict[str, Any]) -> None:
    envelope["signed"]["members"][3]["keys"][0]["key_id"] = "ab" * 32


MALFORMED: dict[str, tuple[Callable[[], str | bytes], str]] = {
    "not JSON": (lambda: "{", "not JSON: Expecting property name"),
    "not UTF-8": (lambda: b'{"signed": "\xff"}', "not UTF-8"),
    "a list at the top": (lambda: "[]", "an envelope is a JSON object, not list"),
    "an extra top-level key": (
        lambda: changed(lambda e: e.update(comment="x")),
        "unexpected top-level key(s) ['comment']",
    ),
    "no signatures list": (lambda: changed(lambda e: e.pop("signatures")), "no signatures list"),
    "signatures not a list": (
        lambda: changed(lambda e: e.update(signatures={})),
        "signatures is a list",
    ),
    "no signed part": (lambda: changed(lambda e: e.pop("signed")), "no signed part"),
    "a signed part that is not an object": (
        lambda: changed(lambda e: e.update(signed=[])),
        "signed is a JSON object",
    ),
    "a keyid that is not hex": (
        lambda: changed(lambda e: e["signatures"][1].update(key_id="zz" * 32)),
        "signatures[1]: key_id is not 64 lowercase hex digits",
    ),
    "an uppercase keyid": (
        lambda: changed(
            lambda e: e["signatures"][0].update(key_id=e["signatures"][0]["key_id"].upper())
        ),
        "signatures[0]: key_id is not 64 lowercase hex digits",
    ),
    "a sig that is not hex": (
        lambda: changed(lambda e: e["signatures"][2].update(sig="xy" * 64)),
        "signatures[2]: sig is not 128 lowercase hex digits",
    ),
    "a signature entry with an extra field": (
        lambda: changed(lambda e: e["signatures"][0].update(method="ed25519")),
        "signatures[0]: a signature entry has exactly key_id and sig",
    ),
    "a key twice in one object": (
        lambda: '{"signed": {}, "signatures": [], "signatures": []}',
        "key 'signatures' appears twice in one object",
    ),
    "a float in the signed part": (
        lambda: changed(lambda e: e["signed"].update(threshold=3.0)),
        "number 3.0 is not an integer",
    ),
    "NaN": (lambda: '{"signed": {"threshold": NaN}, "signatures": []}', "NaN is not JSON"),
    "an integer beyond 2**53": (
        lambda: changed(lambda e: e["signed"].update(version=2**53)),
        "not exactly representable in I-JSON",
    ),
    "an invalid memorandum": (
        lambda: changed(lambda e: e["signed"].update(wildcard="*")),
        "the memorandum is invalid: wildcard: Extra inputs are not permitted",
    ),
    "a keyid that is not the hash of its public key": (
        lambda: changed(false_keyid),
        "members[3](hefei).keys[0]: key_id abababababababab… is not SHA-256 of its public key",
    ),
}


@pytest.mark.parametrize(("make", "problem"), MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_envelope_is_refused_naming_the_problem(
    make: Callable[[], str | bytes], problem: str
) -> None:
    with pytest.raises(PolicyError) as refusal:
        load_envelope(make())
    assert problem in str(refusal.value)


def test_a_missing_envelope_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read the envelope: No such file"):
        load_envelope(tmp_path / "absent.json")


def test_an_envelope_loads_the_same_from_a_file_and_from_text(tmp_path: Path) -> None:
    envelope = signed_by(memorandum(), 0, 1, 2)
    path = tmp_path / "memorandum.json"
    path.write_text(json.dumps(envelope, indent=2, ensure_ascii=False), encoding="utf-8")
    from_file = load_envelope(path)
    assert from_file == load_envelope(str(path)) == load_envelope(text_of(envelope))
    assert from_file[0] == envelope
    assert verify_new(from_file[0], current=None, now=NOW) == from_file[1]


def test_an_envelope_dict_with_an_extra_key_is_refused_by_verify_new() -> None:
    envelope = signed_by(memorandum(), 0, 1, 2)
    envelope["note"] = "unsigned"
    with pytest.raises(PolicyError, match=r"unexpected top-level key\(s\) \['note'\]"):
        verify_new(envelope, current=None, now=NOW)


# --------------------------------------------------------------------------- signing


def test_signing_adds_a_signature_and_replaces_one_by_the_same_key() -> None:
    signed = memorandum()
    once = sign(signed, KEYS[0])
    assert once == {"signed": signed, "signatures": [raw_signature(signed, 0)]}
    twice = sign(sign(once, KEYS[1]), KEYS[0])
    assert [s["key_id"] for s in twice["signatures"]] == [
        key_id(bytes(KEYS[1].verify_key)),
        key_id(bytes(KEYS[0].verify_key)),
    ]
    assert len(once["signatures"]) == 1  # the argument is not modified


def test_signing_a_memorandum_straight_from_yaml_asks_for_to_json_data() -> None:
    data = yaml.safe_load(SOURCE)
    with pytest.raises(PolicyError, match="convert it with to_json_data"):
        sign(data, KEYS[0])


def test_the_signed_bytes_are_the_same_from_yaml_datetimes_and_from_json_strings() -> None:
    data = yaml.safe_load(SOURCE)
    data["members"] = [member(i, (i,)) for i in range(5)]
    from_yaml = to_json_data(parse_memorandum(data, "yaml"))
    assert from_yaml["expires"] == "2027-12-31T00:00:00Z"
    again = to_json_data(parse_memorandum(json.loads(json.dumps(from_yaml)), "json"))
    assert canonical_json(again) == canonical_json(from_yaml)
    assert memorandum_hash(again) == memorandum_hash(from_yaml)


def test_a_keyid_is_the_sha256_of_the_raw_public_key() -> None:
    entry = signing_key_entry(KEYS[0].verify_key)
    assert entry["public_key"] == bytes(KEYS[0].verify_key).hex()
    assert entry["key_id"] == hashlib.sha256(bytes(KEYS[0].verify_key)).hexdigest()
    with pytest.raises(ValueError, match="32 bytes"):
        key_id(b"short")


# --------------------------------------------------------------------------- the trust store


def test_an_empty_store_says_how_to_install(tmp_path: Path) -> None:
    store = TrustStore(tmp_path / "policy")
    for call in (store.current, lambda: store.current_or_expired(NOW)):
        with pytest.raises(PolicyError) as refusal:
            call()
        assert str(refusal.value) == NO_MEMORANDUM
    assert store.versions() == []


def test_the_store_keeps_the_last_good_version_and_the_history(tmp_path: Path) -> None:
    directory = tmp_path / "policy"
    store = TrustStore(directory)
    v1 = signed_by(memorandum(version=1), 0, 1, 2)
    v2 = signed_by(memorandum(version=2), 1, 2, 3)
    path = tmp_path / "v1-offered.json"
    path.write_text(text_of(v1), encoding="utf-8")
    assert store.install(path, NOW).version == 1
    accepted = store.install_accepted(v2, NOW)
    assert accepted.installed is not None and accepted.installed.met
    assert store.current_hash() == accepted.hash.hex()

    before = {p.name: p.read_bytes() for p in directory.iterdir()}
    bad = signed_by(memorandum(version=3, threshold=1), 4)  # one member signs a 1-of-5 version
    with pytest.raises(MemorandumRefused) as refusal:
        store.install(bad, NOW)
    assert refusal.value.rules == ("installed-signatures",)
    after = {p.name: p.read_bytes() for p in directory.iterdir()}
    assert after == before
    assert sorted(after) == [".lock", "current.json", "v1.json", "v2.json"]
    assert after["current.json"] == after["v2.json"]
    assert load_envelope(directory / "v1.json")[0] == v1

    reopened = TrustStore(directory)
    envelope, installed_now = reopened.current()
    assert envelope == v2
    assert installed_now.version == 2
    assert reopened.versions() == [1, 2]
    assert oct((directory / "current.json").stat().st_mode & 0o777) == "0o644"


def test_the_store_refuses_the_installed_version_again(tmp_path: Path) -> None:
    store = TrustStore(tmp_path)
    v1 = signed_by(memorandum(), 0, 1, 2)
    store.install(v1, NOW)
    with pytest.raises(MemorandumRefused, match="already installed"):
        store.install(v1, NOW)
    assert store.versions() == [1]


def test_an_expired_installed_memorandum_stops_answers_until_a_new_one_is_installed(
    tmp_path: Path,
) -> None:
    store = TrustStore(tmp_path)
    store.install(signed_by(memorandum(version=1), 0, 1, 2), NOW)
    later = EXPIRES + dt.timedelta(seconds=1)
    assert store.current_or_expired(EXPIRES - dt.timedelta(seconds=1))[1].version == 1
    with pytest.raises(MemorandumExpired) as expiry:
        store.current_or_expired(later)
    assert str(expiry.value) == (
        "memorandum version 1 expired on 2027-12-31T00:00:00Z; cross-city answers stop until "
        "a new version is installed (credit-node policy install FILE)"
    )
    assert expiry.value.expires == EXPIRES
    assert str(expired_error(store.current()[1])) == str(expiry.value)

    renewed = memorandum(version=2, expires=EXPIRES + dt.timedelta(days=365))
    store.install(signed_by(renewed, 0, 1, 2), later)
    assert store.current_or_expired(later)[1].version == 2


def test_a_damaged_current_file_is_refused_not_used_nor_replaced_on_first_use(
    tmp_path: Path,
) -> None:
    store = TrustStore(tmp_path)
    store.install(signed_by(memorandum(version=1), 0, 1, 2), NOW)
    current = tmp_path / "current.json"
    damaged = json.loads(current.read_text(encoding="utf-8"))
    damaged["signed"]["threshold"] = 1
    current.write_text(json.dumps(damaged), encoding="utf-8")
    with pytest.raises(PolicyError, match="the trust store is damaged"):
        store.current()
    with pytest.raises(PolicyError, match="the trust store is damaged"):
        store.install(signed_by(memorandum(version=2), 0, 1, 2), NOW)


def test_the_store_refuses_to_overwrite_a_different_history_file(tmp_path: Path) -> None:
    store = TrustStore(tmp_path)
    store.install(signed_by(memorandum(version=1), 0, 1, 2), NOW)
    stray = signed_by(memorandum(version=2, title_en="A stray draft"), 0, 1, 2)
    (tmp_path / "v2.json").write_text(text_of(stray), encoding="utf-8")
    with pytest.raises(PolicyError, match="already holds a different version 2"):
        store.install(signed_by(memorandum(version=2), 0, 1, 2), NOW)
    assert (tmp_path / "v2.json").read_text(encoding="utf-8") == text_of(stray)
    with pytest.raises(PolicyError, match="but the history holds version 2"):
        store.current()  # a version 2 nobody installed: inspect before answering


MALFORMED_ENTRIES: dict[str, tuple[Any, str]] = {
    "an entry without sig": (
        {"key_id": "ab" * 32},
        "a signature entry has exactly key_id and sig, not ['key_id']",
    ),
    "an entry with an extra key": (
        {"key_id": "ab" * 32, "sig": "cd" * 64, "method": "ed25519"},
        "a signature entry has exactly key_id and sig, not ['key_id', 'method', 'sig']",
    ),
    "a sig that is not hex": ({"key_id": "ab" * 32, "sig": "zz" * 64}, "sig is not 128 lowercase"),
    "a base64 sig": (
        {"key_id": "ab" * 32, "sig": "q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4k="},
        "sig is not 128 lowercase hex digits (an Ed25519 signature is 64 bytes; found a string "
        "of 44 characters)",
    ),
    "a key_id that is a number": (
        {"key_id": 7, "sig": "cd" * 64},
        "key_id is not 64 lowercase hex digits (found a number)",
    ),
    "a key_id that is null": (
        {"key_id": None, "sig": "cd" * 64},
        "key_id is not 64 lowercase hex digits (found null)",
    ),
    "an entry that is a list": (["key_id", "sig"], "a signature entry is an object, not a list"),
}


@pytest.mark.parametrize(("entry", "problem"), MALFORMED_ENTRIES.values(), ids=MALFORMED_ENTRIES)
def test_an_envelope_with_a_malformed_entry_is_refused_and_the_last_good_version_stays(
    tmp_path: Path, entry: Any, problem: str
) -> None:
    store = TrustStore(tmp_path)
    store.install(signed_by(memorandum(version=1), 0, 1, 2), NOW)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    offered = signed_by(memorandum(version=2), 0, 1, 2, 3)  # enough good signatures
    offered["signatures"].insert(1, entry)
    with pytest.raises(PolicyError) as refusal:
        store.install(offered, NOW)
    assert f"offered envelope: signatures[1]: {problem}" in str(refusal.value)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert TrustStore(tmp_path).current()[1].version == 1


class _EntryFromAnotherLibrary(Mapping[str, str]):
    """A signature entry that reads like a dict but is not one: ``json`` cannot write it."""

    def __init__(self, entry: dict[str, str]) -> None:
        self._entry = entry

    def __getitem__(self, key: str) -> str:
        return self._entry[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entry)

    def __len__(self) -> int:
        return len(self._entry)


def test_an_envelope_that_would_not_read_back_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    store = TrustStore(tmp_path)
    store.install(signed_by(memorandum(version=1), 0, 1, 2), NOW)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    offered = signed_by(memorandum(version=2), 0, 1, 2)
    offered["signatures"][0] = _EntryFromAnotherLibrary(offered["signatures"][0])
    assert accept(offered, current=store.current(), now=NOW).memorandum.version == 2
    with pytest.raises(PolicyError, match="memorandum version 2: the envelope cannot be written"):
        store.install(offered, NOW)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert store.current()[1].version == 1


def two_versions_installed(directory: Path) -> tuple[TrustStore, dict[str, Any], dict[str, Any]]:
    store = TrustStore(directory)
    v1 = signed_by(memorandum(version=1), 0, 1, 2)
    v2 = signed_by(memorandum(version=2), 0, 1, 2)
    store.install(v1, NOW)
    store.install(v2, NOW)
    assert store.current()[1].version == 2
    return store, v1, v2


def test_a_current_file_rolled_back_to_an_older_version_is_refused(tmp_path: Path) -> None:
    store, _, _ = two_versions_installed(tmp_path)
    (tmp_path / "current.json").write_bytes((tmp_path / "v1.json").read_bytes())
    for reader in (store, TrustStore(tmp_path)):  # the cached one notices, a new one too
        with pytest.raises(PolicyError) as refusal:
            reader.current()
        assert str(refusal.value) == (
            f"{tmp_path / 'current.json'} holds version 1 but the history holds version 2 "
            f"({tmp_path / 'v2.json'}): an install was interrupted or the current file was "
            "rolled back; install version 2 again to repair it (credit-node policy install "
            "FILE), or inspect the trust store"
        )
    with pytest.raises(PolicyError, match="history holds version 2"):
        store.current_hash()


def test_a_current_file_that_is_not_the_accepted_version_is_refused(tmp_path: Path) -> None:
    store, _, v2 = two_versions_installed(tmp_path)
    # the same version number, signed by a threshold of its own keys, never accepted
    other = signed_by(memorandum(version=2, threshold=1, keys=each(5, 6, 7, 8, 9)), 5)
    (tmp_path / "current.json").write_text(text_of(other), encoding="utf-8")
    with pytest.raises(PolicyError) as refusal:
        store.current()
    message = str(refusal.value)
    assert f"holds version 2 with sha256 {memorandum_hash(other['signed']).hex()}" in message
    assert f"has sha256 {memorandum_hash(v2['signed']).hex()}" in message
    assert "replaced without 'policy install'" in message
    with pytest.raises(PolicyError, match="replaced without 'policy install'"):
        store.install(signed_by(memorandum(version=3), 5), NOW)  # nor trusted for an update


def test_a_current_file_without_its_accepted_copy_is_refused(tmp_path: Path) -> None:
    store, _, _ = two_versions_installed(tmp_path)
    (tmp_path / "v2.json").unlink()
    with pytest.raises(PolicyError, match="the accepted copy of that version cannot be read"):
        store.current()


def test_an_install_interrupted_between_its_writes_is_refused_then_repaired_by_installing_again(
    tmp_path: Path,
) -> None:
    store = TrustStore(tmp_path)
    store.install(signed_by(memorandum(version=1), 0, 1, 2), NOW)
    v2 = signed_by(memorandum(version=2), 0, 1, 2)
    (tmp_path / "v2.json").write_text(text_of(v2), encoding="utf-8")  # then the power failed
    with pytest.raises(PolicyError, match="holds version 1 but the history holds version 2"):
        store.current()
    v3 = signed_by(memorandum(version=3), 0, 1, 2)
    with pytest.raises(PolicyError, match="install version 2 again to repair it"):
        store.install(v3, NOW)  # version 2's keys must approve version 3
    assert store.install(v2, NOW).version == 2
    assert store.current()[1].version == 2
    assert store.install(v3, NOW).version == 3


def test_a_failed_write_leaves_the_installed_version_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = TrustStore(tmp_path)
    store.install(signed_by(memorandum(version=1), 0, 1, 2), NOW)
    installed_bytes = (tmp_path / "current.json").read_bytes()
    real_replace = os.replace

    def failing_replace(src: Any, dst: Any) -> None:
        if Path(dst).name == "current.json":
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr("creditexchange.policy.trust.os.replace", failing_replace)
    v2 = signed_by(memorandum(version=2), 0, 1, 2)
    with pytest.raises(OSError, match="No space left"):
        store.install(v2, NOW)
    assert (tmp_path / "current.json").read_bytes() == installed_bytes
    assert store.current()[1].version == 1
    assert store.versions() == [1]  # the history did not get ahead of the current file
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]

    monkeypatch.undo()
    assert store.install(v2, NOW).version == 2  # the retry goes through


def test_the_store_hands_out_copies(tmp_path: Path) -> None:
    store = TrustStore(tmp_path)
    store.install(signed_by(memorandum(), 0, 1, 2), NOW)
    envelope, _ = store.current()
    envelope["signatures"].clear()
    assert len(store.current()[0]["signatures"]) == 3


def test_the_store_leaves_no_temporary_files(tmp_path: Path) -> None:
    store = TrustStore(tmp_path)
    for version in (1, 2, 3):
        store.install(signed_by(memorandum(version=version), 0, 1, 2), NOW)
    assert sorted(os.listdir(tmp_path)) == [
        ".lock",
        "current.json",
        "v1.json",
        "v2.json",
        "v3.json",
    ]


# --------------------------------------------------------------------------- canonical JSON


def test_rfc8785_section_3_2_3_sorts_keys_by_utf16_code_units() -> None:
    source = r"""{
      "\u20ac": "Euro Sign",
      "\r": "Carriage Return",
      "\ufb33": "Hebrew Letter Dalet With Dagesh",
      "1": "One",
      "\ud83d\ude00": "Emoji: Grinning Face",
      "\u0080": "Control",
      "\u00f6": "Latin Small Letter O With Diaeresis"
    }"""
    expected = (
        '{"\\r":"Carriage Return","1":"One","\u0080":"Control",'
        '"ö":"Latin Small Letter O With Diaeresis","€":"Euro Sign",'
        '"\U0001f600":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet With Dagesh"}'
    )
    assert canonical_json(json.loads(source)) == expected.encode("utf-8")
    # Python's str order puts U+FB33 before U+1F600; UTF-16 order does not.
    assert sorted(["\ufb33", "\U0001f600"]) == ["\ufb33", "\U0001f600"]


def test_rfc8785_section_3_2_2_serializes_strings_and_literals_like_ecmascript() -> None:
    source = r"""{
      "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
      "literals": [null, true, false]
    }"""
    expected = '{"literals":[null,true,false],"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    assert canonical_json(json.loads(source)) == expected.encode("utf-8")


def test_rfc8785_section_3_2_2_numbers_are_refused_as_floats() -> None:
    numbers = json.loads("[333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001]")
    with pytest.raises(CanonicalizationError, match=r"\$\[0\]: 333333333.3333333 is a float"):
        canonical_json(numbers)


# Vectors from the JCS reference implementation's testdata (cyberphone/json-canonicalization).
JCS_VECTORS = {
    "weird": (
        r"""{
          "\u20ac": "Euro Sign",
          "1": "One",
          "\u0080": "Control\u007f",
          "\ud83d\ude02": "Smiley",
          "\u00f6": "Latin Small Letter O With Diaeresis",
          "\ufb33": "Hebrew Letter Dalet With Dagesh",
          "</script>": "Browser Challenge"
        }""",
        '{"1":"One","</script>":"Browser Challenge","\u0080":"Control\u007f",'
        '"ö":"Latin Small Letter O With Diaeresis","€":"Euro Sign","😂":"Smiley",'
        '"\ufb33":"Hebrew Letter Dalet With Dagesh"}',
    ),
    "arrays": (
        '[56, {"d": true, "10": null, "1": [ ]}]',
        '[56,{"1":[],"10":null,"d":true}]',
    ),
    "structures (56.0 written as 56: floats are refused here)": (
        '{"1": {"f": {"f": "hi","F": 5} ,"\\n": 56}, "10": { }, "": "empty", "a": { },'
        ' "111": [ { } ], "A": { }}',
        '{"":"empty","1":{"\\n":56,"f":{"F":5,"f":"hi"}},"10":{},"111":[{}],"A":{},"a":{}}',
    ),
    "french": (
        '{"peach": "This sorting order", "péché": "is wrong according to French",'
        ' "pêche": "but canonicalization MUST", "sin": "ingnore locale"}',
        '{"peach":"This sorting order","péché":"is wrong according to French",'
        '"pêche":"but canonicalization MUST","sin":"ingnore locale"}',
    ),
    "unicode (no normalization)": (
        r'{"Unnormalized Unicode": "\u1e0d\u0307"}',
        '{"Unnormalized Unicode":"\u1e0d\u0307"}',
    ),
    "simple string": ('    "this is a test string 1235"', '"this is a test string 1235"'),
}


@pytest.mark.parametrize(("source", "expected"), JCS_VECTORS.values(), ids=JCS_VECTORS.keys())
def test_the_jcs_reference_vectors(source: str, expected: str) -> None:
    assert canonical_json(json.loads(source)) == expected.encode("utf-8")


def test_every_control_character_is_escaped_and_nothing_else() -> None:
    named = {0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r"}
    for code in range(0x20):
        escaped = named.get(code, f"\\u{code:04x}")
        assert canonical_json(chr(code)) == f'"{escaped}"'.encode()
    plain = "\x7f/\u2028\u2029<>&'é中😀"
    assert canonical_json(plain) == f'"{plain}"'.encode()
    assert canonical_json('"\\') == b'"\\"\\\\"'


def test_integers_within_2_53_are_written_as_decimals_and_others_refused() -> None:
    assert canonical_json([0, -1, MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER]) == (
        f"[0,-1,{MAX_SAFE_INTEGER},-{MAX_SAFE_INTEGER}]".encode()
    )
    assert canonical_json([True, False, None]) == b"[true,false,null]"
    for number in (MAX_SAFE_INTEGER + 1, -MAX_SAFE_INTEGER - 1, 10**30):
        with pytest.raises(CanonicalizationError, match="not exactly representable in I-JSON"):
            canonical_json({"n": [number]})


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (1.5, r"\$: 1.5 is a float; floats \(NaN and infinities included\) are refused"),
        (float("nan"), "nan is a float"),
        (float("inf"), "inf is a float"),
        ({"a": [1, 0.0]}, r"\$.a\[1\]: 0.0 is a float"),
        ((1, 2), r"a tuple is not a JSON value"),
        ({1, 2}, r"a set is not a JSON value"),
        (b"bytes", r"a bytes is not a JSON value"),
        ({"expires": dt.datetime(2027, 1, 1, tzinfo=dt.UTC)}, r"\$.expires: a datetime is not"),
        ({"d": dt.date(2027, 1, 1)}, r"\$.d: a date is not a JSON value"),
        ({1: "x"}, r"object key 1 is a int, not a string"),
        ({"s": "a\ud800b"}, r"\$.s: string has a lone surrogate"),
        ({"\udc00": 1}, r"object key has a lone surrogate"),
    ],
    ids=[
        "a float",
        "NaN",
        "infinity",
        "a nested float",
        "a tuple",
        "a set",
        "bytes",
        "a datetime",
        "a date",
        "an int key",
        "a lone surrogate",
        "a lone surrogate key",
    ],
)
def test_values_without_a_canonical_form_are_refused_saying_where(
    value: object, problem: str
) -> None:
    with pytest.raises(CanonicalizationError, match=problem):
        canonical_json(value)


# Keys drawn often from characters where UTF-16 and code point order disagree (U+E000..U+FFFF
# against the astral planes) or that need escaping.
TRICKY = st.sampled_from(
    ["\r", "1", "a", "\u0080", "ö", "€", "\ufb33", "\uffff", "😀", "😂", "\U00010000"]
)
json_keys = st.text(TRICKY | st.characters(codec="utf-8"), max_size=4)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER) | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(json_keys, children, max_size=6)
    ),
    max_leaves=25,
)


def reference(value: Any) -> Any:
    """The value with every object's keys in UTF-16 order, for json.dumps to write."""
    if isinstance(value, dict):
        ordered = sorted(value, key=lambda k: k.encode("utf-16-be"))
        return {k: reference(value[k]) for k in ordered}
    if isinstance(value, list):
        return [reference(v) for v in value]
    return value


@settings(max_examples=300)
@given(json_values)
def test_canonical_json_reads_back_as_the_same_value_and_is_idempotent(value: Any) -> None:
    canonical = canonical_json(value)
    assert json.loads(canonical) == value
    assert canonical_json(json.loads(canonical)) == canonical
    written = json.dumps(reference(value), ensure_ascii=False, separators=(",", ":"))
    assert canonical == written.encode("utf-8")


@given(st.dictionaries(json_keys, st.integers(-5, 5), min_size=2))
def test_canonical_json_ignores_the_order_keys_were_inserted_in(value: dict[str, int]) -> None:
    backwards = dict(reversed(list(value.items())))
    assert canonical_json(backwards) == canonical_json(value)

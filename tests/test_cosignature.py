"""Cosignatures (c2sp.org/tlog-cosignature, Ed25519 type 0x04), checked against
independent implementations.

Known answers:

* a real checkpoint of the CT log ``arche2025h1.staging.ct.transparency.dev`` as
  served with the cosignatures of four public witnesses, each running its own
  witness software, with their published verifier keys (as collected in the tests
  of the ``tlog_scales`` Python package);
* the example of C2SP tlog-cosignature.md (its signed message and its cosignature
  line's key id and timestamp);
* the verifier key ``remora.n621.de+da77ade7+…`` of the tests of
  transparency-dev/formats (note/note_cosigv1_test.go), a native 0x04 key.
"""

from __future__ import annotations

import base64
import hashlib

import nacl.signing
import pytest

from creditexchange.errors import NoteError
from creditexchange.node.ledger.cosignature import (
    ALG_COSIGNATURE_V1,
    Cosignature,
    CosignatureVerifier,
    Cosigner,
    cosignature_key_id,
    signed_message,
    verify_cosignatures,
    witness_name,
)
from creditexchange.node.ledger.note import Checkpoint, Signer, key_id, open_note, sign_note

# --- known answers ----------------------------------------------------------------------------

ARCHE_BODY = (
    "arche2025h1.staging.ct.transparency.dev\n"
    "1432088532\n"
    "U7WM79jrzyhGZ5/GUBTpM7NzwdyfFx61t3RovgcC4Ro=\n"
)
ARCHE_TIME = 1779573024
WITNESSES = {  # verifier key -> its cosignature line on ARCHE_BODY, as served
    "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2": (
        "— remora.n621.de 2net5wAAAABqEiEgPlfF3V06o0Y+fHM+J5J9s27wgxxcOVSpZ/2g/KSiXCg9DEZI"
        "+aVCIobWX9sXTynk5XeU/zZ0WBxtqB0DrAWfBw=="
    ),
    "transparency.dev/DEV:witness-little-garden+d8042a87+"
    "BCtusOxINQNUTN5Oj8HObRkh2yHf/MwYaGX4CPdiVEPM": (
        "— transparency.dev/DEV:witness-little-garden 2AQqhwAAAABqEiEgzgFIqqhbUoDwjMWE6UP8nd8/"
        "KYTzwZ2rhIgcqoXHAwVkjZr4AscylP3v7sEodkRAErumC2q44vdgJY096st5BQ=="
    ),
    "witness1.smartit.nu/witness1+a48c820f+BPSFWg9G6KPiO7QPryYO5Xq4oYJJ+kAvLKLSimDhoxMO": (
        "— witness1.smartit.nu/witness1 pIyCDwAAAABqEiEghIp82KWebrw7/oHQwlTAm3g2RKS4+eebl8eO0WH+"
        "/iEcxZ75W3u5hNI7TOQtmJbqmNWVuE0tgh0XwzdZsDsUAQ=="
    ),
    "witness.stagemole.eu+67f7aea0+BEqSG3yu9YrmcM3BHvQYTxwFj3uSWakQepafafpUqklv": (
        "— witness.stagemole.eu Z/euoAAAAABqEiEgw0i+7g2ENfDAWHmtRzCfKTHSDwYDJA2NmKeGi9Y8FtEyOUvV"
        "r+AJmIY/2TUFucgKi7lI7cUiOvKFYe/TmN9DAg=="
    ),
}
REMORA_VKEY = next(iter(WITNESSES))

SPEC_BODY = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
SPEC_LINE = (
    "— witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2"
    "oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA=="
)


@pytest.mark.parametrize(("vkey", "line"), list(WITNESSES.items()))
def test_the_cosignatures_of_four_public_witnesses_verify_on_the_checkpoint_they_signed(
    vkey: str, line: str
) -> None:
    verifier = CosignatureVerifier.from_vkey(vkey)
    assert verifier.vkey() == vkey  # the key id is derived exactly as those witnesses derive it
    cosignature = verifier.verify(ARCHE_BODY, line)
    assert cosignature.timestamp == ARCHE_TIME
    assert cosignature.line() == line  # parsed and written back byte for byte


@pytest.mark.parametrize(("vkey", "line"), list(WITNESSES.items()))
def test_a_real_cosignature_does_not_verify_on_another_tree_size(vkey: str, line: str) -> None:
    other = ARCHE_BODY.replace("1432088532", "1432088533")
    with pytest.raises(NoteError, match="does not verify on the checkpoint"):
        CosignatureVerifier.from_vkey(vkey).verify(other, line)


def test_a_cosignature_is_refused_by_a_verifier_of_another_witness() -> None:
    remora = CosignatureVerifier.from_vkey(REMORA_VKEY)
    other_line = list(WITNESSES.values())[1]
    with pytest.raises(NoteError, match=r"expected a cosignature by remora\.n621\.de\+da77ade7"):
        remora.verify(ARCHE_BODY, other_line)


def test_the_cosigned_real_checkpoint_verifies_all_four_and_ignores_unknown_lines() -> None:
    verifiers = [CosignatureVerifier.from_vkey(v) for v in WITNESSES]
    stranger = Cosigner("stranger.example/w", nacl.signing.SigningKey(bytes(32)))
    lines = [*WITNESSES.values(), stranger.cosign(ARCHE_BODY).line()]
    found = verify_cosignatures(ARCHE_BODY, lines, verifiers)
    assert sorted(c.name for c in found) == sorted(v.split("+")[0] for v in WITNESSES)


def test_the_signed_message_is_the_one_of_the_spec_example() -> None:
    assert signed_message(SPEC_BODY, 1679315147) == (
        b"cosignature/v1\n"
        b"time 1679315147\n"
        b"example.com/behind-the-sofa\n"
        b"20852163\n"
        b"CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    )
    assert signed_message(SPEC_BODY, 0).startswith(b"cosignature/v1\ntime 0\n")


def test_the_spec_examples_cosignature_line_carries_its_key_id_and_timestamp() -> None:
    cosignature = Cosignature.parse(SPEC_LINE)
    assert cosignature.name == "witness.example.com/w1"
    assert cosignature.key_id.hex() == "8d66cf3f"
    assert cosignature.timestamp == 1679315147  # 0x6418_50CB, big-endian
    assert cosignature.line() == SPEC_LINE


def test_the_key_id_commits_to_the_cosignature_type_byte() -> None:
    public_key = base64.b64decode("BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2")[1:]
    by_hand = hashlib.sha256(b"remora.n621.de\n\x04" + public_key).digest()[:4]
    assert cosignature_key_id("remora.n621.de", public_key) == by_hand == bytes.fromhex("da77ade7")
    # the same key signing notes (type 0x01) has another id: the two never mix
    assert key_id("remora.n621.de", public_key).hex() == "c66059b1"
    assert ALG_COSIGNATURE_V1 == 4


# --- our own cosignatures ---------------------------------------------------------------------

SEED = bytes(range(32))
NAME = witness_name("shenzhen", "3plus2")
BODY = Checkpoint("credit-exchange/3plus2/huizhou/audit", 42, bytes(range(32))).body()


def test_a_members_witness_name_sits_beside_its_logs_origin() -> None:
    assert NAME == "credit-exchange/3plus2/shenzhen/witness"


def test_a_cosignature_made_here_is_laid_out_as_the_spec_says() -> None:
    cosigner = Cosigner(NAME, nacl.signing.SigningKey(SEED))
    cosignature = cosigner.cosign(BODY, timestamp=1_767_225_600)
    name, b64 = cosignature.line().removeprefix("— ").split(" ")
    raw = base64.b64decode(b64)
    assert name == NAME and len(raw) == 4 + 8 + 64
    assert raw[:4] == hashlib.sha256(NAME.encode() + b"\n\x04" + cosigner.public_key).digest()[:4]
    assert raw[4:12] == (1_767_225_600).to_bytes(8, "big")
    message = b"cosignature/v1\ntime 1767225600\n" + BODY.encode()
    nacl.signing.VerifyKey(cosigner.public_key).verify(message, raw[12:])  # raises if not
    assert cosigner.verifier().verify(BODY, cosignature.line()) == cosignature


def test_a_cosignature_rides_a_signed_note_without_disturbing_the_logs_own_signature() -> None:
    log = Signer("credit-exchange/3plus2/huizhou/audit", nacl.signing.SigningKey(bytes(32)))
    note = sign_note(BODY, log)
    witness = Cosigner(NAME, nacl.signing.SigningKey(SEED))
    cosigned = note + witness.cosign(BODY).line() + "\n"
    text, signers = open_note(cosigned, [log.verifier()])  # the cosignature's key is unknown there
    assert text == BODY and signers == [log.verifier()]
    lines = cosigned[len(BODY) + 1 :].splitlines()
    assert [c.name for c in verify_cosignatures(BODY, lines, [witness.verifier()])] == [NAME]


def test_a_known_witness_whose_line_does_not_verify_is_an_error_not_ignored() -> None:
    witness = Cosigner(NAME, nacl.signing.SigningKey(SEED))
    forged = Cosignature(NAME, witness.key_id, 5, bytes(64)).line()
    with pytest.raises(NoteError, match="does not verify"):
        verify_cosignatures(BODY, [forged], [witness.verifier()])


def test_the_latest_cosignature_of_a_witness_is_the_one_kept() -> None:
    witness = Cosigner(NAME, nacl.signing.SigningKey(SEED))
    lines = [witness.cosign(BODY, t).line() for t in (30, 10, 20)]
    (kept,) = verify_cosignatures(BODY, lines, [witness.verifier()])
    assert kept.timestamp == 30


def _line(raw: bytes, name: str = NAME) -> str:
    return f"— {name} {base64.b64encode(raw).decode()}"


GOOD = bytes(4) + (7).to_bytes(8, "big") + bytes(64)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (f"- {NAME} AAAA", "start with an em dash"),
        (f"— {NAME}", "'— <witness name> <base64>'"),
        (_line(GOOD)[:-2] + "!!", "standard base64"),
        (_line(GOOD).rstrip("=") + "", "standard base64"),
        (_line(bytes(4) + bytes(64)), "not an Ed25519 cosignature/v1"),  # a plain note signature
        (_line(bytes(4) + (2**63).to_bytes(8, "big") + bytes(64)), "at most 2\\*\\*63-1"),
        (_line(GOOD, "a+b"), "without '\\+'"),
        (_line(GOOD, ""), "non-empty key name"),
    ],
)
def test_a_malformed_cosignature_line_is_refused_saying_what_is_wrong(
    line: str, message: str
) -> None:
    with pytest.raises(NoteError, match=message):
        Cosignature.parse(line)


def test_a_verifier_key_of_another_type_or_with_a_wrong_id_is_refused() -> None:
    with pytest.raises(NoteError, match="0x04"):
        CosignatureVerifier.from_vkey(Signer.generate("x.example/log").vkey())  # type 0x01
    with pytest.raises(NoteError, match="expected key id da77ade7"):
        CosignatureVerifier.from_vkey(REMORA_VKEY.replace("da77ade7", "00000000"))
    with pytest.raises(NoteError, match="expected cosignature key id"):
        CosignatureVerifier("remora.n621.de", bytes(4), bytes(32))


def test_a_timestamp_outside_zero_to_two_to_the_63_cannot_be_signed() -> None:
    witness = Cosigner(NAME, nacl.signing.SigningKey(SEED))
    for bad in (-1, 2**63):
        with pytest.raises(NoteError, match=r"0\.\.2\*\*63-1"):
            witness.cosign(BODY, bad)

"""Signed notes and checkpoints, checked against the Go sumdb/note known answers.

Known answers come from golang/mod sumdb/note/note_test.go (TestNewVerifier,
TestNewSigner, TestSign, TestOpen, TestVerifierList) and the example in
C2SP tlog-checkpoint.md.
"""

from __future__ import annotations

import base64

import nacl.signing
import pytest
from hypothesis import given
from hypothesis import strategies as st

from creditexchange.errors import NoteError
from creditexchange.node.ledger.note import (
    MAX_SIGNATURES,
    Checkpoint,
    Signer,
    Verifier,
    add_signature,
    key_id,
    open_note,
    sign_note,
)

# --- known answers (golang/mod sumdb/note/note_test.go) ---------------------------------------

PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = (
    "— PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    "— EnochRoot "
    "rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"
)
PETER_NOTE = TEXT + "\n" + PETER_SIG


def peter() -> Signer:
    return Signer.from_skey(PETER_SKEY)


def make_signer(name: str, seed_byte: int) -> Signer:
    return Signer(name=name, key=nacl.signing.SigningKey(bytes([seed_byte]) * 32))


ALICE = make_signer("alice.example/log", 1)
BOB = make_signer("bob.example/witness", 2)
CAROL = make_signer("carol.example/witness", 3)
ROOT = bytes(range(32))


def test_the_key_id_of_peter_neumann_is_c74f20a3_as_in_go() -> None:
    public_key = base64.b64decode("ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")[1:]
    assert key_id("PeterNeumann", public_key) == bytes.fromhex("c74f20a3")
    assert peter().key_id == bytes.fromhex("c74f20a3")


def test_the_verifier_key_derived_from_the_go_seed_is_the_go_verifier_key() -> None:
    assert peter().vkey() == PETER_VKEY
    assert peter().verifier() == Verifier.from_vkey(PETER_VKEY)


def test_the_go_signer_key_round_trips_through_from_skey_and_skey() -> None:
    assert peter().skey() == PETER_SKEY


def test_signing_the_go_text_reproduces_the_go_note_byte_for_byte() -> None:
    assert sign_note(TEXT, peter()) == PETER_NOTE
    assert peter().sign(TEXT) == PETER_SIG


def test_the_go_note_signed_twice_opens_with_either_known_key_and_ignores_the_other() -> None:
    note = TEXT + "\n" + PETER_SIG + ENOCH_SIG
    peter_v, enoch_v = Verifier.from_vkey(PETER_VKEY), Verifier.from_vkey(ENOCH_VKEY)
    assert open_note(note, [peter_v]) == (TEXT, [peter_v])
    assert open_note(note, [enoch_v]) == (TEXT, [enoch_v])
    assert open_note(note, [enoch_v, peter_v]) == (TEXT, [peter_v, enoch_v])


def test_adding_the_enoch_cosignature_to_the_go_note_keeps_peter_first() -> None:
    # Only the verifier key of EnochRoot is published, so check the cosigned form opens.
    cosigned = PETER_NOTE + ENOCH_SIG
    _, verified = open_note(cosigned, [Verifier.from_vkey(ENOCH_VKEY)])
    assert [v.name for v in verified] == ["EnochRoot"]


def test_every_substring_and_every_bumped_character_of_the_go_verifier_key_is_refused() -> None:
    for i in range(len(PETER_VKEY) + 1):
        for j in range(i + 1, len(PETER_VKEY) + 1):
            if (i, j) != (0, len(PETER_VKEY)):
                with pytest.raises(NoteError):
                    Verifier.from_vkey(PETER_VKEY[i:j])
    for i, ch in enumerate(PETER_VKEY):
        with pytest.raises(NoteError):
            Verifier.from_vkey(PETER_VKEY[:i] + chr(ord(ch) + 1) + PETER_VKEY[i + 1 :])


def test_every_bumped_character_of_the_go_signer_key_is_refused() -> None:
    for i, ch in enumerate(PETER_SKEY):
        with pytest.raises(NoteError):
            Signer.from_skey(PETER_SKEY[:i] + chr(ord(ch) + 1) + PETER_SKEY[i + 1 :])
    for cut in range(len(PETER_SKEY)):
        with pytest.raises(NoteError):
            Signer.from_skey(PETER_SKEY[:cut])


@pytest.mark.parametrize(
    ("vkey", "why"),
    [
        (
            "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
            "canonical standard base64",
        ),
        (
            "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWAA==",
            "followed by 32 bytes",
        ),
        ("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "algorithm"),
        ("PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "key id"),
        ("PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "lowercase hex"),
        ("Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "whitespace"),
        ("+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "non-empty"),
        ("PeterNeumann+c74f20a3", "separators"),
    ],
    ids=[
        "wrong key length, non-canonical base64 (Go vector)",
        "wrong key length",
        "unknown algorithm (Go vector)",
        "wrong key id",
        "uppercase key id",
        "name with a space",
        "empty name",
        "no key data",
    ],
)
def test_a_bad_verifier_key_is_refused_with_the_reason(vkey: str, why: str) -> None:
    with pytest.raises(NoteError, match=why):
        Verifier.from_vkey(vkey)


@pytest.mark.parametrize("name", ["a+b", "a b", "a\tb", "a\u00a0b", "a\u3000b", "", "a\nb"])
def test_a_key_name_with_plus_or_whitespace_or_nothing_is_refused(name: str) -> None:
    with pytest.raises(NoteError, match="key name"):
        Signer(name=name, key=nacl.signing.SigningKey(bytes(32)))
    with pytest.raises(NoteError, match="key name"):
        key_id(name, bytes(32))


def test_a_verifier_whose_key_id_does_not_match_its_name_and_key_is_refused() -> None:
    with pytest.raises(NoteError, match="expected key id"):
        Verifier(name=ALICE.name, key_id=BOB.key_id, public_key=ALICE.public_key)
    with pytest.raises(NoteError, match="expected key id"):
        Verifier(name=BOB.name, key_id=ALICE.key_id, public_key=ALICE.public_key)


def test_the_signer_repr_does_not_show_the_private_key() -> None:
    assert repr(peter()) == "Signer(name='PeterNeumann')"


# --- round trips ------------------------------------------------------------------------------


def test_a_signed_note_opens_to_its_text_and_signer() -> None:
    text = "alice.example/log\n7\n" + base64.b64encode(ROOT).decode() + "\n"
    assert open_note(sign_note(text, ALICE), [ALICE.verifier()]) == (text, [ALICE.verifier()])


def test_a_note_signed_by_two_signers_opens_with_both() -> None:
    note = sign_note(TEXT, ALICE, BOB)
    assert note.count("\n— ") == 2
    assert open_note(note, [BOB.verifier(), ALICE.verifier()]) == (
        TEXT,
        [ALICE.verifier(), BOB.verifier()],
    )


def test_a_cosignature_added_later_keeps_the_existing_lines_and_verifies() -> None:
    note = sign_note(TEXT, ALICE)
    cosigned = add_signature(note, BOB)
    assert cosigned.startswith(note)
    assert cosigned == note + BOB.sign(TEXT)
    twice = add_signature(cosigned, CAROL)
    verifiers = [ALICE.verifier(), BOB.verifier(), CAROL.verifier()]
    assert open_note(twice, verifiers) == (TEXT, verifiers)


def test_adding_a_signature_by_a_key_already_there_replaces_its_line() -> None:
    note = sign_note(TEXT, ALICE, BOB)
    assert add_signature(note, ALICE) == sign_note(TEXT, BOB, ALICE)


def test_the_same_signer_twice_gives_one_line() -> None:
    assert sign_note(TEXT, ALICE, ALICE) == sign_note(TEXT, ALICE)


def test_a_verifier_read_from_its_key_string_verifies_the_note() -> None:
    vkey = ALICE.vkey()
    verifier = Verifier.from_vkey(vkey)
    assert verifier == ALICE.verifier()
    assert verifier.vkey() == vkey
    assert open_note(sign_note(TEXT, ALICE), [verifier])[1] == [verifier]


def test_a_generated_signer_round_trips_through_its_key_strings() -> None:
    signer = Signer.generate("example.com/log42")
    assert Signer.from_skey(signer.skey()) == signer
    assert Verifier.from_vkey(signer.vkey()) == signer.verifier()


def test_verify_takes_the_raw_signature_without_the_key_id() -> None:
    raw = base64.b64decode(PETER_SIG.split(" ")[2])
    verifier = Verifier.from_vkey(PETER_VKEY)
    assert raw[:4] == verifier.key_id
    assert verifier.verify(TEXT, raw[4:])
    assert not verifier.verify(TEXT, raw)
    assert not verifier.verify(TEXT + "x", raw[4:])
    assert not verifier.verify("\ud800", raw[4:])


def test_a_text_with_blank_lines_of_its_own_round_trips() -> None:
    for text in ["\n", "a\n\n", "a\n\nb\n", "\n\n\n", "— looks like a signature\n\n"]:
        assert open_note(sign_note(text, ALICE), [ALICE.verifier()])[0] == text


def test_unknown_signatures_are_ignored_even_with_a_known_name_or_key_id() -> None:
    impostor = make_signer(ALICE.name, 9)  # same name, other key
    note = sign_note(TEXT, impostor, ALICE, BOB)
    assert open_note(note, [ALICE.verifier()]) == (TEXT, [ALICE.verifier()])


def test_duplicate_signature_lines_by_a_known_key_are_all_checked_and_reported_once() -> None:
    assert open_note(PETER_NOTE + PETER_SIG, [Verifier.from_vkey(PETER_VKEY)]) == (
        TEXT,
        [Verifier.from_vkey(PETER_VKEY)],
    )
    bad = PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]
    with pytest.raises(NoteError, match="does not verify"):
        open_note(PETER_NOTE + bad, [Verifier.from_vkey(PETER_VKEY)])


# --- refusals ---------------------------------------------------------------------------------

ALICE_LINE = ALICE.sign(TEXT)
ALICE_NOTE = TEXT + "\n" + ALICE_LINE

NOTE_REFUSALS: list[tuple[str, str, str]] = [
    ("text only, no blank line", TEXT, "blank line"),
    ("blank line but no signatures", TEXT + "\n", "at least one signature line"),
    ("missing final newline", ALICE_NOTE[:-1], "end with a newline"),
    ("hyphen instead of em dash", TEXT + "\n- " + ALICE_LINE[2:], "em dash"),
    ("no space after em dash", TEXT + "\n—" + ALICE_LINE[2:], "em dash"),
    ("bad base64", ALICE_NOTE.replace(ALICE_LINE.split(" ")[2][:4], "!!!!"), "base64"),
    ("missing base64 padding", ALICE_NOTE.replace("=\n", "\n"), "base64"),
    (
        "non-canonical base64",
        TEXT + "\n" + PETER_SIG.replace("AM=\n", "AN=\n"),
        "canonical",
    ),
    ("signature too short", TEXT + "\n— alice AAAA\n", "4-byte key id"),
    ("name with a space", TEXT + "\n— Bad Name " + PETER_SIG.split(" ")[2], "base64"),
    ("no name", TEXT + "\n—  " + PETER_SIG.split(" ")[2], "non-empty key name"),
    ("unexpected line after the signatures", PETER_NOTE + "Unexpected line.\n", "em dash"),
    ("control character", "\x01" + PETER_NOTE, "control characters"),
    ("carriage return", PETER_NOTE.replace("\n", "\r\n"), "control characters"),
    ("lone surrogate", "\udcff" + PETER_NOTE, "UTF-8"),
    (
        "too many signature lines",
        TEXT + "\n" + PETER_SIG * (MAX_SIGNATURES + 1),
        f"at most {MAX_SIGNATURES}",
    ),
    ("only unknown signers", TEXT + "\n" + ENOCH_SIG, "no signature by a known key"),
    ("tampered text", PETER_NOTE.replace("cryptography", "cryptographs"), "does not verify"),
    (
        "tampered signature (Go vector)",
        TEXT + "\n" + PETER_SIG[:60] + "ABCD" + PETER_SIG[60:],
        "does not verify",
    ),
    (
        "tampered key id makes the key unknown",
        PETER_NOTE.replace("x08g", "xxxx"),
        "no signature by a known key",
    ),
    (
        "known key bad even though another known key is good",
        PETER_NOTE.replace("cryptography", "cryptographs") + ALICE.sign(TEXT.replace("y ", "s ")),
        "does not verify",
    ),
]


@pytest.mark.parametrize(
    ("note", "why"),
    [(note, why) for _, note, why in NOTE_REFUSALS],
    ids=[case for case, _, _ in NOTE_REFUSALS],
)
def test_a_malformed_or_unverified_note_is_refused_with_the_reason(note: str, why: str) -> None:
    with pytest.raises(NoteError, match=why):
        open_note(note, [Verifier.from_vkey(PETER_VKEY), ALICE.verifier()])


def test_a_known_key_with_a_bad_signature_is_refused_even_beside_a_good_one() -> None:
    tampered = TEXT.replace("problem,", "problem;")
    forged = PETER_NOTE + ALICE.sign(tampered)
    with pytest.raises(NoteError, match="does not verify"):
        open_note(forged, [Verifier.from_vkey(PETER_VKEY), ALICE.verifier()])
    # With Alice unknown, her line is ignored and Peter's good signature carries the note.
    assert open_note(forged, [Verifier.from_vkey(PETER_VKEY)])[0] == TEXT


def test_no_known_keys_at_all_means_no_signature_by_a_known_key() -> None:
    with pytest.raises(NoteError, match="no signature by a known key"):
        open_note(PETER_NOTE, [])


def test_two_different_known_keys_with_the_same_name_and_key_id_are_refused() -> None:
    real = Verifier.from_vkey(PETER_VKEY)
    clash = object.__new__(Verifier)  # bypasses the key id check, as a forged list might
    object.__setattr__(clash, "name", real.name)
    object.__setattr__(clash, "key_id", real.key_id)
    object.__setattr__(clash, "public_key", bytes(32))
    with pytest.raises(NoteError, match="two different keys"):
        open_note(PETER_NOTE, [real, clash])
    assert open_note(PETER_NOTE, [real, real])[1] == [real]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("no final newline", "end with a newline"),
        ("", "end with a newline"),
        ("tab\there\n", "control characters"),
        ("\udc80\n", "UTF-8"),
    ],
)
def test_signing_refuses_a_text_that_no_reader_would_accept(text: str, why: str) -> None:
    with pytest.raises(NoteError, match=why):
        sign_note(text, ALICE)
    with pytest.raises(NoteError, match=why):
        ALICE.sign(text)


def test_signing_with_no_signer_is_refused() -> None:
    with pytest.raises(NoteError, match="at least one signer"):
        sign_note(TEXT)


def test_adding_a_signature_to_a_malformed_note_is_refused() -> None:
    with pytest.raises(NoteError, match="blank line"):
        add_signature(TEXT, ALICE)


# --- checkpoints ------------------------------------------------------------------------------

SPEC_CHECKPOINT = (
    "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
)


def test_the_checkpoint_from_the_c2sp_spec_parses_and_prints_back_unchanged() -> None:
    checkpoint = Checkpoint.parse(SPEC_CHECKPOINT)
    assert checkpoint.origin == "example.com/behind-the-sofa"
    assert checkpoint.size == 20852163
    assert checkpoint.root_hash == base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
    assert checkpoint.extensions == ()
    assert checkpoint.body() == SPEC_CHECKPOINT


def test_an_empty_tree_has_size_zero_and_extension_lines_round_trip() -> None:
    checkpoint = Checkpoint("o", 0, ROOT, ("ext one", "— ext two"))
    assert checkpoint.body().splitlines()[1] == "0"
    assert Checkpoint.parse(checkpoint.body()) == checkpoint


def test_a_signed_checkpoint_opens_and_parses() -> None:
    checkpoint = Checkpoint(ALICE.name, 12, ROOT)
    note = add_signature(sign_note(checkpoint.body(), ALICE), BOB)
    text, verified = open_note(note, [ALICE.verifier()])
    assert Checkpoint.parse(text) == checkpoint
    assert verified == [ALICE.verifier()]


HASH_B64 = base64.b64encode(ROOT).decode()
CHECKPOINT_REFUSALS: list[tuple[str, str, str]] = [
    ("leading zero size", f"o\n012\n{HASH_B64}\n", "leading zeros"),
    ("non-numeric size", f"o\ntwelve\n{HASH_B64}\n", "decimal digits"),
    ("negative size", f"o\n-1\n{HASH_B64}\n", "decimal digits"),
    ("plus sign", f"o\n+1\n{HASH_B64}\n", "decimal digits"),
    ("underscore in size", f"o\n1_000\n{HASH_B64}\n", "decimal digits"),
    ("non-ASCII digits", f"o\n\u0661\u0662\n{HASH_B64}\n", "decimal digits"),
    ("space before size", f"o\n 1\n{HASH_B64}\n", "decimal digits"),
    ("empty size", f"o\n\n{HASH_B64}\n", "decimal digits"),
    ("size over uint64", f"o\n{2**64}\n{HASH_B64}\n", "at most 2\\*\\*64-1"),
    ("31-byte hash", f"o\n1\n{base64.b64encode(ROOT[:31]).decode()}\n", "32-byte root hash"),
    ("33-byte hash", f"o\n1\n{base64.b64encode(ROOT + b'x').decode()}\n", "32-byte root hash"),
    ("bad base64 hash", f"o\n1\n{HASH_B64[:-2]}!=\n", "base64"),
    ("unpadded hash", f"o\n1\n{HASH_B64.rstrip('=')}\n", "base64"),
    ("hex hash", f"o\n1\n{ROOT.hex()}\n", "32-byte root hash"),
    ("empty origin", f"\n1\n{HASH_B64}\n", "non-empty origin"),
    ("missing root line", "o\n1\n", "root hash line is missing"),
    ("missing size line", "o\n", "tree size line is missing"),
    ("no final newline", f"o\n1\n{HASH_B64}", "end with a newline"),
    ("empty extension line", f"o\n1\n{HASH_B64}\n\n", "non-empty"),
    ("control character in origin", f"o\x00\n1\n{HASH_B64}\n", "control characters"),
]


@pytest.mark.parametrize(
    ("text", "why"),
    [(text, why) for _, text, why in CHECKPOINT_REFUSALS],
    ids=[case for case, _, _ in CHECKPOINT_REFUSALS],
)
def test_a_malformed_checkpoint_is_refused_with_the_reason(text: str, why: str) -> None:
    with pytest.raises(NoteError, match=why):
        Checkpoint.parse(text)


@pytest.mark.parametrize(
    ("origin", "size", "root_hash", "extensions", "why"),
    [
        ("", 1, ROOT, (), "non-empty"),
        ("a\nb", 1, ROOT, (), "control characters"),
        ("o", -1, ROOT, (), "tree size"),
        ("o", 2**64, ROOT, (), "tree size"),
        ("o", True, ROOT, (), "as an int"),
        ("o", 1, ROOT[:31], (), "32-byte root hash"),
        ("o", 1, ROOT, ("",), "non-empty"),
        ("o", 1, ROOT, ("a\nb",), "control characters"),
    ],
)
def test_a_checkpoint_that_cannot_be_written_cannot_be_built(
    origin: str, size: int, root_hash: bytes, extensions: tuple[str, ...], why: str
) -> None:
    with pytest.raises(NoteError, match=why):
        Checkpoint(origin, size, root_hash, extensions)


# --- properties -------------------------------------------------------------------------------

line_text = st.text(alphabet=st.characters(exclude_categories=("Cc", "Cs")), min_size=1)


@given(
    origin=line_text,
    size=st.integers(min_value=0, max_value=2**63),
    root_hash=st.binary(min_size=32, max_size=32),
    extensions=st.lists(line_text, max_size=3).map(tuple),
)
def test_any_checkpoint_round_trips_through_its_body(
    origin: str, size: int, root_hash: bytes, extensions: tuple[str, ...]
) -> None:
    checkpoint = Checkpoint(origin, size, root_hash, extensions)
    assert Checkpoint.parse(checkpoint.body()) == checkpoint


note_text = st.lists(
    st.text(alphabet=st.characters(exclude_categories=("Cc", "Cs")), max_size=20), min_size=1
).map(lambda lines: "".join(line + "\n" for line in lines))


@given(text=note_text, data=st.data())
def test_flipping_any_byte_of_a_signed_note_never_verifies_altered_text(
    text: str, data: st.DataObject
) -> None:
    note = sign_note(text, ALICE, BOB).encode("utf-8")
    index = data.draw(st.integers(min_value=0, max_value=len(note) - 1), label="index")
    mask = data.draw(st.integers(min_value=1, max_value=255), label="mask")
    mutated = bytearray(note)
    mutated[index] ^= mask
    # A byte reader would refuse invalid UTF-8; keep it as lone surrogates to test that too.
    altered = bytes(mutated).decode("utf-8", errors="surrogateescape")
    try:
        opened, _ = open_note(altered, [ALICE.verifier(), BOB.verifier()])
    except NoteError:
        return
    assert opened == text


@given(text=note_text)
def test_any_valid_text_round_trips_through_sign_and_open(text: str) -> None:
    assert open_note(sign_note(text, ALICE), [ALICE.verifier()]) == (text, [ALICE.verifier()])


def test_flipping_any_bit_of_the_go_note_never_verifies_altered_text() -> None:
    note = PETER_NOTE.encode("utf-8")
    verifiers = [Verifier.from_vkey(PETER_VKEY)]
    for index in range(len(note)):
        for bit in range(8):
            mutated = bytearray(note)
            mutated[index] ^= 1 << bit
            altered = bytes(mutated).decode("utf-8", errors="surrogateescape")
            try:
                opened, _ = open_note(altered, verifiers)
            except NoteError:
                continue
            assert opened == TEXT, (index, bit)

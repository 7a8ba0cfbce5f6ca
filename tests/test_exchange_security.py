"""The attack table: what a node does with a call it must not answer, and what it records.

A real three-member federation on loopback (huizhou and shenzhen on SQLite,
customs on PostgreSQL), real mutual TLS, the real memorandum. Each row sends one
attack to a provider (huizhou unless the row says otherwise) and checks both
halves of the promise in ARCHITECTURE.md ("Signed messages"): the call ends with
the proper gRPC status and a message saying what was wrong, and the refusal is
the provider's newest audit entry, naming the TLS peer as the requester, whatever
the request claims. Attacks that never reach the node's code (no certificate, a
foreign CA, a message past the transport's limit, calls past the concurrency
limit) must leave its ledger as it was.

The second table is the requester's side: a provider that lies (or a path that
alters its answer) is caught by the client, which raises ``AnswerRejected`` and
records the rejection in its own ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from certfactory import forge_certificate
from conftest import postgres_schema
from fedharness import Federation
from google.protobuf.message import Message
from ports import free_ports
from signedqueries import signed_queries
from sqlalchemy import text

from creditexchange.certs.authority import init_ca, issue, revoke
from creditexchange.certs.identity import member_dns_name
from creditexchange.clock import now_us
from creditexchange.devtools.sample import showcase_subject
from creditexchange.errors import AnswerRejected, ConfigError, ExchangeError, QueryRefused
from creditexchange.identifiers import uscc_check_character
from creditexchange.node.app.config import NodeConfig
from creditexchange.node.app.server import NodeServer
from creditexchange.node.app.wiring import requester_from
from creditexchange.node.database import open_database
from creditexchange.node.exchange.client import FederationClient
from creditexchange.node.exchange.envelope import seal
from creditexchange.node.exchange.protocol import (
    ANSWER,
    BATCH_CHECK_REQUEST,
    CHECK_REQUEST,
    QUERY_REQUEST,
    subject_tag,
)
from creditexchange.node.exchange.sealing import Opener
from creditexchange.node.ledger import merkle
from creditexchange.node.ledger.log import origin_for
from creditexchange.node.ledger.note import Signer, open_note, sign_note
from creditexchange.policy.document import Period
from creditexchange.policy.engine import quota_period_start
from creditexchange.policy.trust import key_id
from creditexchange.v1 import audit_pb2, exchange_pb2, exchange_pb2_grpc

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

MEMBERS = ("huizhou", "shenzhen", "customs")
ENTERPRISE = showcase_subject("huizhou", 2026)
Code = grpc.StatusCode


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    with postgres_schema() as pg_url:
        federation = Federation(
            tmp_path_factory.mktemp("federation"), MEMBERS, {"customs": pg_url}, subjects=40
        )
        try:
            yield federation
        finally:
            federation.close()


def _sql(fed: Federation, member: str, sql: str, **params: Any) -> list[Any]:
    database = open_database(fed.nodes[member].config.database_url)
    try:
        with database.begin() as conn:
            return [row[0] for row in conn.execute(text(sql), params)]
    finally:
        database.dispose()


# -- crafting and sending ---------------------------------------------------------------

_TYPES = {"Query": QUERY_REQUEST, "Check": CHECK_REQUEST, "BatchCheck": BATCH_CHECK_REQUEST}
_SINGLE: dict[str, Callable[..., Message]] = {
    "Query": exchange_pb2.QueryRequest,
    "Check": exchange_pb2.CheckRequest,
}


def _payload(
    fed: Federation,
    method: str,
    *,
    requester: str = "shenzhen",
    provider: str = "huizhou",
    subjects: tuple[str, ...] = (ENTERPRISE,),
    themes: tuple[str, ...] = (),
    **header: Any,
) -> bytes:
    """A request of ``method`` as the requester would serialize it, header fields overridable."""
    head = fed.header(requester, provider, **header)
    if method == "BatchCheck":
        request: Any = exchange_pb2.BatchCheckRequest(
            header=head, subject_ids=subjects, themes=themes
        )
    else:
        (subject,) = subjects
        request = _SINGLE[method](header=head, subject_id=subject, themes=themes)
    return bytes(request.SerializeToString())


def _signed(fed: Federation, method: str, signer: str = "shenzhen", **kw: Any) -> Any:
    return fed.envelope(_TYPES[method], _payload(fed, method, **kw), signer)


def _ledger_size(fed: Federation, member: str) -> int:
    size: int = fed.servers[member].ledger.log.size()
    return size


def _assert_refused_on_record(
    fed: Federation,
    error: grpc.aio.AioRpcError | None,
    code: grpc.StatusCode,
    says: tuple[str, ...],
    *,
    peer: str = "shenzhen",
    provider: str = "huizhou",
) -> None:
    """The call failed with ``code`` and the provider's newest entry records exactly that."""
    assert error is not None, "the attack was answered"
    assert error.code() == code, error.details()
    (entry,) = fed.ledger_entries(provider)
    assert entry["direction"] == "INCOMING"
    assert entry["requester"] == peer  # the TLS peer, never what the request claims
    assert entry["outcome"]["status"] == code.name
    assert entry["outcome"]["message"] == error.details()
    for words in says:
        assert words in (error.details() or ""), f"{words!r} not in {error.details()!r}"
    # the receipt in the trailing metadata points at this very entry
    (leaf,) = [v for k, v in error.trailing_metadata() or () if k == "audit-leaf-index"]
    assert int(leaf) == _ledger_size(fed, provider) - 1
    assert fed.entry_at(provider, int(leaf)).outcome.status == code.name


# -- the attack table ------------------------------------------------------------------


def _flip(data: bytes, at: int = -1) -> bytes:
    changed = bytearray(data)
    changed[at] ^= 0x01
    return bytes(changed)


def _signature_flipped(fed: Federation) -> Any:
    envelope = _signed(fed, "Query")
    envelope.signatures[0].sig = _flip(envelope.signatures[0].sig)
    return envelope


def _payload_flipped(fed: Federation) -> Any:
    envelope = _signed(fed, "Query")
    envelope.payload = _flip(envelope.payload)
    return envelope


def _unsigned(fed: Federation) -> Any:
    envelope = _signed(fed, "Query")
    del envelope.signatures[:]
    return envelope


def _check_sent_as_query(fed: Federation) -> Any:
    return fed.envelope(CHECK_REQUEST, _payload(fed, "Check"), "shenzhen")


def _random_bytes(fed: Federation) -> Any:
    noise = random.Random(2026).randbytes(512)
    return fed.envelope(QUERY_REQUEST, noise, "shenzhen")


def _no_header(fed: Federation) -> Any:
    request = exchange_pb2.QueryRequest(subject_id=ENTERPRISE)
    return fed.envelope(QUERY_REQUEST, request.SerializeToString(), "shenzhen")


def _oversized(fed: Federation) -> Any:
    # ~1.5 MB of subject ids: above the 1 MiB limit, below the transport's 4 MiB
    return _signed(fed, "BatchCheck", subjects=(ENTERPRISE,) * 75_000)


def _ciphertext_flipped(fed: Federation) -> Any:
    sealed = fed.sealed(_signed(fed, "Query"), "huizhou")
    sealed.ciphertext = _flip(sealed.ciphertext)
    return sealed


def _seconds_from_now(seconds: int) -> int:
    return now_us() + seconds * 1_000_000


def _individual_in_full(fed: Federation) -> Any:
    (subject,) = _sql(
        fed, "huizhou", "SELECT subject_id FROM subjects WHERE subject_type = 'individual' LIMIT 1"
    )
    return _signed(
        fed,
        "Query",
        subjects=(subject,),
        purpose="civil_service_hiring",
        case_reference="GWY-2026-17",
    )


@dataclass(frozen=True)
class Attack:
    method: str
    craft: Callable[[Federation], Any]  # an Envelope (sealed to the provider), or as sent
    code: grpc.StatusCode
    says: tuple[str, ...]


ATTACKS = [
    pytest.param(
        Attack("Query", _signature_flipped, Code.UNAUTHENTICATED, ("does not verify",)),
        id="signature-byte-flipped",
    ),
    pytest.param(
        Attack("Query", _payload_flipped, Code.UNAUTHENTICATED, ("does not verify", "altered")),
        id="payload-byte-flipped-after-signing",
    ),
    pytest.param(
        Attack(
            "Query",
            lambda fed: _signed(fed, "Query", signer="customs"),
            Code.UNAUTHENTICATED,
            ("signed with the key of customs", "the TLS peer is shenzhen"),
        ),
        id="signed-by-another-members-key",
    ),
    pytest.param(
        Attack("Query", _unsigned, Code.UNAUTHENTICATED, ("no signature",)),
        id="no-signature",
    ),
    pytest.param(
        Attack("Query", _check_sent_as_query, Code.UNAUTHENTICATED, ("payload type",)),
        id="check-envelope-sent-as-query",
    ),
    pytest.param(
        Attack(
            "Query",
            lambda fed: _signed(fed, "Query", created_unix_micros=_seconds_from_now(-600)),
            Code.UNAUTHENTICATED,
            ("created 600 s old", "±300 s"),
        ),
        id="stale-timestamp",
    ),
    pytest.param(
        Attack(
            "Query",
            lambda fed: _signed(fed, "Query", created_unix_micros=_seconds_from_now(600)),
            Code.UNAUTHENTICATED,
            ("600 s in the future",),
        ),
        id="future-timestamp",
    ),
    pytest.param(
        Attack(
            "Query",
            lambda fed: _signed(fed, "Query", memorandum_version=2),
            Code.FAILED_PRECONDITION,
            ("memorandum version 2", "holds version 1"),
        ),
        id="memorandum-version-mismatch",
    ),
    pytest.param(
        Attack(
            "Query",
            lambda fed: _signed(fed, "Query", purpose="customs_clearance"),
            Code.PERMISSION_DENIED,
            ("lets shenzhen ask huizhou", "customs_clearance"),
        ),
        id="purpose-not-permitted-to-this-requester",
    ),
    pytest.param(
        Attack(
            "Check",
            lambda fed: _signed(fed, "Check", purpose="civil_service_hiring"),
            Code.PERMISSION_DENIED,
            ("purpose civil_service_hiring does not cover subject type enterprise",),
        ),
        id="purpose-not-for-this-subject-type",
    ),
    pytest.param(
        Attack("Query", _individual_in_full, Code.PERMISSION_DENIED, ("forbid-individual-full",)),
        id="individual-in-full-mode",
    ),
    pytest.param(
        Attack(
            "Query",
            lambda fed: _signed(fed, "Query", case_reference=""),
            Code.FAILED_PRECONDITION,
            ("requires a case reference",),
        ),
        id="missing-case-reference",
    ),
    pytest.param(
        Attack("Query", _random_bytes, Code.INVALID_ARGUMENT, ("not a QueryRequest",)),
        id="payload-is-random-bytes",
    ),
    pytest.param(
        Attack("Query", _no_header, Code.INVALID_ARGUMENT, ("no header",)),
        id="no-header",
    ),
    pytest.param(
        Attack(
            "Query",
            lambda fed: _signed(fed, "Query", subjects=("91441300-NOT-AN-ID",)),
            Code.INVALID_ARGUMENT,
            ("unified social credit code or a resident identity number",),
        ),
        id="malformed-subject-id",
    ),
    pytest.param(
        Attack(
            "BatchCheck",
            lambda fed: _signed(fed, "BatchCheck", subjects=(ENTERPRISE, "123")),
            Code.INVALID_ARGUMENT,
            ("subject 2",),
        ),
        id="malformed-subject-in-a-batch",
    ),
    pytest.param(
        Attack(
            "Query",
            lambda fed: _signed(fed, "Query", provider="customs"),
            Code.INVALID_ARGUMENT,
            ("addressed to 'customs'", "this is huizhou"),
        ),
        id="header-names-another-provider",
    ),
    pytest.param(
        Attack(
            "Query",
            lambda fed: _signed(fed, "Query", requester="customs"),
            Code.INVALID_ARGUMENT,
            ("names requester 'customs'", "the caller is shenzhen"),
        ),
        id="header-names-another-requester",
    ),
    pytest.param(
        Attack(
            "Query",
            lambda fed: _signed(fed, "Query", nonce=b"short"),
            Code.INVALID_ARGUMENT,
            ("the nonce has 5 bytes",),
        ),
        id="nonce-too-short",
    ),
    pytest.param(
        Attack("BatchCheck", _oversized, Code.RESOURCE_EXHAUSTED, ("at most 1048576",)),
        id="message-over-the-size-limit",
    ),
    pytest.param(
        Attack(
            "Query",
            lambda fed: fed.sealed(_signed(fed, "Query"), "customs"),
            Code.INVALID_ARGUMENT,
            ("not to this node's key",),
        ),
        id="sealed-to-another-member",
    ),
    pytest.param(
        Attack("Query", _ciphertext_flipped, Code.INVALID_ARGUMENT, ("does not decrypt",)),
        id="sealed-request-altered",
    ),
    pytest.param(
        Attack(
            "Query",
            lambda fed: exchange_pb2.SealedRequest(ciphertext=b"x"),
            Code.INVALID_ARGUMENT,
            ("not sealed",),
        ),
        id="request-not-sealed",
    ),
    pytest.param(
        Attack(
            "Query",
            lambda fed: b"\xff\xff\xff\xff",
            Code.INVALID_ARGUMENT,
            ("not a SealedRequest",),
        ),
        id="bytes-that-do-not-decode",
    ),
    pytest.param(
        Attack(
            "Query",
            lambda fed: _signed(fed, "Query", case_reference="\u200b"),
            Code.INVALID_ARGUMENT,
            ("case_reference holds the control or format character U+200B",),
        ),
        id="case-reference-a-zero-width-space",
    ),
    pytest.param(
        Attack(
            "Query",
            lambda fed: _signed(fed, "Query", officer="officer\x07"),
            Code.INVALID_ARGUMENT,
            ("officer holds the control or format character U+0007",),
        ),
        id="officer-with-a-control-character",
    ),
    pytest.param(
        Attack(
            "Query",
            lambda fed: _signed(fed, "Query", case_reference="ＣＧ-2026-0001"),
            Code.INVALID_ARGUMENT,
            ("case_reference is not in Unicode NFKC form",),
        ),
        id="case-reference-not-nfkc",
    ),
    pytest.param(
        Attack(
            "Query",
            lambda fed: _signed(fed, "Query", case_reference="   "),
            Code.INVALID_ARGUMENT,
            ("case_reference holds no visible character",),
        ),
        id="case-reference-only-spaces",
    ),
    pytest.param(
        Attack(
            "Query",
            lambda fed: _signed(fed, "Query", officer="\u1160\u2800\u0903"),
            Code.INVALID_ARGUMENT,
            ("officer holds no visible character",),
        ),
        id="officer-of-hangul-filler-braille-blank-and-a-lone-mark",
    ),
    pytest.param(
        Attack(
            "BatchCheck",
            lambda fed: _signed(fed, "BatchCheck", subjects=(ENTERPRISE,) * 1001),
            Code.RESOURCE_EXHAUSTED,
            ("1001 subjects in one batch", "at most 1000"),
        ),
        id="batch-over-the-subject-limit",
    ),
]


@pytest.mark.parametrize("attack", ATTACKS)
def test_attack_is_refused_with_its_status_and_recorded(fed: Federation, attack: Attack) -> None:
    envelope = attack.craft(fed)
    answer, error = fed.raw("huizhou", attack.method, envelope, fed.credentials("shenzhen"))
    assert answer is None
    _assert_refused_on_record(fed, error, attack.code, attack.says)


def test_an_honest_call_passes_the_same_checks(fed: Federation) -> None:
    """The control row: the crafted request, unaltered, is answered."""
    answer, error = fed.raw("huizhou", "Query", _signed(fed, "Query"), fed.credentials("shenzhen"))
    assert error is None and answer is not None
    (entry,) = fed.ledger_entries("huizhou")
    assert entry["outcome"]["status"] == "OK" and entry["requester"] == "shenzhen"


# -- attacks that need their own set-up ----------------------------------------------


def test_certificate_of_a_non_member_from_the_federation_ca_is_refused(
    fed: Federation, tmp_path: Path
) -> None:
    zhuhai = issue("zhuhai", fed.root / "ca", out_dir=tmp_path)
    credentials = fed.credentials("shenzhen", cert=zhuhai.certificate_path, key=zhuhai.key_path)
    envelope = _signed(fed, "Query", requester="zhuhai")
    _, error = fed.raw("huizhou", "Query", envelope, credentials)
    _assert_refused_on_record(
        fed, error, Code.PERMISSION_DENIED, ("zhuhai is not a member",), peer="zhuhai"
    )


def test_revoked_certificate_is_refused_once_the_new_list_is_in_place(
    fed: Federation, tmp_path: Path
) -> None:
    ca = fed.root / "ca"
    second = issue("shenzhen", ca, out_dir=tmp_path)
    revoked = fed.credentials("shenzhen", cert=second.certificate_path, key=second.key_path)
    answer, _ = fed.raw("huizhou", "Check", _signed(fed, "Check"), revoked)
    assert answer is not None, "before the revocation the second certificate is good"

    revoke(second.record.serial_hex, ca)
    shutil.copy(ca / "crl.pem", fed.nodes["huizhou"].home / "tls" / "crl.pem")
    time.sleep(1.2)  # the watcher looks at the file at most once a second

    _, error = fed.raw("huizhou", "Check", _signed(fed, "Check"), revoked)
    _assert_refused_on_record(
        fed, error, Code.UNAUTHENTICATED, ("certificate of shenzhen is refused", "revoked")
    )
    answer, error = fed.raw("huizhou", "Check", _signed(fed, "Check"), fed.credentials("shenzhen"))
    assert error is None and answer is not None, "shenzhen's own certificate still works"


@pytest.mark.parametrize("provider", ["huizhou", "customs"], ids=["sqlite", "postgres"])
def test_replayed_request_is_refused_also_after_a_restart(fed: Federation, provider: str) -> None:
    envelope = _signed(fed, "Check", provider=provider)
    answer, error = fed.raw(provider, "Check", envelope, fed.credentials("shenzhen"))
    assert error is None and answer is not None

    _, error = fed.raw(provider, "Check", envelope, fed.credentials("shenzhen"))
    _assert_refused_on_record(fed, error, Code.UNAUTHENTICATED, ("replay",), provider=provider)

    fed.restart(provider)  # the nonces seen are in the store, not only in memory
    _, error = fed.raw(provider, "Check", envelope, fed.credentials("shenzhen"))
    _assert_refused_on_record(fed, error, Code.UNAUTHENTICATED, ("replay",), provider=provider)


@pytest.mark.parametrize(
    "themes",
    [pytest.param(("admin_penalty",), id="theme-asked"), pytest.param((), id="every-theme")],
)
def test_exhausted_quota_is_refused(fed: Federation, themes: tuple[str, ...]) -> None:
    # customs under huizhou-to-customs: no other test asks this, so the count is ours
    now = dt.datetime.now(dt.UTC)
    for start in {quota_period_start(Period.DAY, now + dt.timedelta(minutes=m)) for m in (0, 5)}:
        _sql(
            fed,
            "huizhou",
            "INSERT INTO quota_usage (requester, rule_id, period_start, used) "
            "VALUES ('customs', 'huizhou-to-customs', :start, 50000) "
            "ON CONFLICT (requester, rule_id, period_start) DO UPDATE SET used = 50000 "
            "RETURNING used",
            start=int(start.timestamp()),
        )
    envelope = _signed(
        fed,
        "Query",
        signer="customs",
        requester="customs",
        themes=themes,
        purpose="customs_clearance",
        legal_basis="中华人民共和国海关法",
        case_reference="BG-2026-123",
        officer="clearance-system",
    )
    _, error = fed.raw("huizhou", "Query", envelope, fed.credentials("customs"))
    _assert_refused_on_record(
        fed,
        error,
        Code.RESOURCE_EXHAUSTED,
        ("quota of 50000 per day exceeded for requester customs under rule huizhou-to-customs",),
        peer="customs",
    )


def _ca_certificate(fed: Federation) -> bytes:
    return (fed.root / "ca" / "ca.crt").read_bytes()


def _no_certificate(fed: Federation, tmp_path: Path) -> Any:
    return grpc.ssl_channel_credentials(root_certificates=_ca_certificate(fed))


def _certificate_of_another_ca(fed: Federation, tmp_path: Path) -> Any:
    init_ca(tmp_path / "rogue-ca", name="Rogue CA")
    rogue = issue("shenzhen", tmp_path / "rogue-ca", out_dir=tmp_path / "rogue")
    return fed.credentials("shenzhen", cert=rogue.certificate_path, key=rogue.key_path)


@pytest.mark.parametrize(
    "credentials",
    [
        pytest.param(_no_certificate, id="no-client-certificate"),
        pytest.param(_certificate_of_another_ca, id="certificate-of-another-ca"),
    ],
)
def test_handshake_without_a_federation_certificate_fails_before_the_node(
    fed: Federation, tmp_path: Path, credentials: Callable[[Federation, Path], Any]
) -> None:
    before = _ledger_size(fed, "huizhou")
    answer, error = fed.raw("huizhou", "Check", _signed(fed, "Check"), credentials(fed, tmp_path))
    assert answer is None and error is not None
    assert error.code() == Code.UNAVAILABLE, error.details()
    assert _ledger_size(fed, "huizhou") == before  # nothing reached the node: nothing to record


def test_message_past_the_transport_limit_is_refused_unread(fed: Federation) -> None:
    before = _ledger_size(fed, "huizhou")
    envelope = _signed(fed, "BatchCheck", subjects=(ENTERPRISE,) * 240_000)  # ~4.8 MB > 4 MiB
    _, error = fed.raw("huizhou", "BatchCheck", envelope, fed.credentials("shenzhen"))
    assert error is not None and error.code() == Code.RESOURCE_EXHAUSTED, error
    assert _ledger_size(fed, "huizhou") == before


# -- the requester's side: answers that must not be believed ---------------------------


class _Tamper(grpc.aio.UnaryUnaryClientInterceptor):
    """On the requester's channel: hands every genuine answer to ``change`` first."""

    def __init__(self) -> None:
        self.change: Callable[[Any], Any] = lambda envelope: envelope
        self.genuine: list[Any] = []

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        answer = await (await continuation(details, request))
        self.genuine.append(answer)
        return self.change(answer)


class _ClientOnTamperedChannel(FederationClient):
    """shenzhen's real client, whose channel to huizhou runs through a :class:`_Tamper`."""

    def __init__(self, fed: Federation, tamper: _Tamper) -> None:
        super().__init__(
            requester_from(fed.nodes["shenzhen"].config), ledger=fed.servers["shenzhen"].ledger
        )
        self.fed, self.tamper = fed, tamper
        self.tampered: grpc.aio.Channel | None = None

    def channel(self, member: str) -> grpc.aio.Channel:
        if self.tampered is None:
            self.tampered = grpc.aio.secure_channel(
                f"127.0.0.1:{self.fed.nodes[member].port}",
                self.fed.credentials("shenzhen"),
                options=[("grpc.ssl_target_name_override", member_dns_name(member))],
                interceptors=[self.tamper],
            )
        return self.tampered

    async def close(self) -> None:
        await self.__aexit__(None, None, None)
        if self.tampered is not None:
            await self.tampered.close()

    async def ask(self) -> Any:
        return await self.query(
            ENTERPRISE,
            to="huizhou",
            purpose="public_procurement",
            legal_basis="政府采购法第二十二条",
            case_reference="CG-2026-0001",
            officer="officer-7",
            check=True,
        )


@pytest.fixture(scope="module")
def requester(fed: Federation) -> Iterator[_ClientOnTamperedChannel]:
    client = _ClientOnTamperedChannel(fed, _Tamper())
    fed.run(client.__aenter__())
    try:
        fed.run(client.ask())  # a genuine answer passes: the channel alters nothing by itself
        yield client
    finally:
        fed.run(client.close())


def _resealed(fed: Federation, answer: exchange_pb2.Answer, signer: str = "huizhou") -> Any:
    """The altered answer signed again with ``signer``'s real key: a provider that lies."""
    return seal(ANSWER, answer.SerializeToString(), fed.signing_key(signer))


def _answer_of(envelope: Any) -> exchange_pb2.Answer:
    answer = exchange_pb2.Answer()
    answer.ParseFromString(envelope.payload)
    return answer


def _signed_by_requester(fed: Federation, tamper: _Tamper, envelope: Any) -> Any:
    return _resealed(fed, _answer_of(envelope), signer="shenzhen")


def _answer_of_another_request(fed: Federation, tamper: _Tamper, envelope: Any) -> Any:
    return tamper.genuine[0]  # the fixture's first answer, genuine but to another request


def _addressed_to_another_member(fed: Federation, tamper: _Tamper, envelope: Any) -> Any:
    answer = _answer_of(envelope)
    body = exchange_pb2.AnswerBody()
    body.ParseFromString(answer.body)
    body.requester = "customs"
    answer.body = body.SerializeToString(deterministic=True)
    return _resealed(fed, answer)


def _entry_altered(fed: Federation, tamper: _Tamper, envelope: Any) -> Any:
    answer = _answer_of(envelope)
    answer.receipt.entry = _flip(answer.receipt.entry)
    return _resealed(fed, answer)


def _entry_of_another_request(fed: Federation, tamper: _Tamper, envelope: Any) -> Any:
    answer = _answer_of(envelope)
    entry = audit_pb2.AuditEntry()
    entry.ParseFromString(answer.receipt.entry)
    entry.request_digest = os.urandom(32)
    answer.receipt.entry = entry.SerializeToString(deterministic=True)
    answer.receipt.leaf_hash = merkle.leaf_hash(answer.receipt.entry)
    return _resealed(fed, answer)


def _proof_altered(fed: Federation, tamper: _Tamper, envelope: Any) -> Any:
    answer = _answer_of(envelope)
    assert answer.receipt.inclusion_proof, "the ledger has more than one entry by now"
    answer.receipt.inclusion_proof[0] = _flip(answer.receipt.inclusion_proof[0])
    return _resealed(fed, answer)


def _checkpoint_by_another_key(fed: Federation, tamper: _Tamper, envelope: Any) -> Any:
    answer = _answer_of(envelope)
    origin = origin_for("huizhou")
    genuine_text, _ = open_note(
        answer.receipt.checkpoint, [Signer(origin, fed.signing_key("huizhou")).verifier()]
    )
    answer.receipt.checkpoint = sign_note(genuine_text, Signer(origin, fed.signing_key("customs")))
    return _resealed(fed, answer)


def _body_altered_after_signing(fed: Federation, tamper: _Tamper, envelope: Any) -> Any:
    answer = _answer_of(envelope)
    body = exchange_pb2.AnswerBody()
    body.ParseFromString(answer.body)
    body.subjects[0].themes[0].hit = not body.subjects[0].themes[0].hit
    answer.body = body.SerializeToString(deterministic=True)
    altered = exchange_pb2.Envelope()
    altered.CopyFrom(envelope)
    altered.payload = answer.SerializeToString()  # the provider's signature left as it was
    return altered


def _subject_replaced(fed: Federation, tamper: _Tamper, envelope: Any) -> Any:
    answer = _answer_of(envelope)
    body = exchange_pb2.AnswerBody()
    body.ParseFromString(answer.body)
    body.subjects[0].subject_id = showcase_subject("shenzhen", 2026)
    answer.body = body.SerializeToString(deterministic=True)
    return _resealed(fed, answer)


def _subject_tag_of_another(fed: Federation, tamper: _Tamper, envelope: Any) -> Any:
    """The same masked id, another person's answer: only the request's answer key tells."""
    answer = _answer_of(envelope)
    body = exchange_pb2.AnswerBody()
    body.ParseFromString(answer.body)
    body.subjects[0].subject_tag = subject_tag(os.urandom(32), ENTERPRISE)
    answer.body = body.SerializeToString(deterministic=True)
    return _resealed(fed, answer)


def _memorandum_hash_altered(fed: Federation, tamper: _Tamper, envelope: Any) -> Any:
    answer = _answer_of(envelope)
    body = exchange_pb2.AnswerBody()
    body.ParseFromString(answer.body)
    body.memorandum_hash = bytes(32)
    answer.body = body.SerializeToString(deterministic=True)
    return _resealed(fed, answer)


TAMPERINGS = [
    pytest.param(_subject_replaced, "about another subject", id="answer-about-another-subject"),
    pytest.param(
        _subject_tag_of_another, "about another subject", id="answer-tagged-for-another-subject"
    ),
    pytest.param(
        _memorandum_hash_altered, "whose hash differs", id="answer-under-another-memorandum"
    ),
    pytest.param(_signed_by_requester, "is not signed by it", id="re-signed-by-the-requester"),
    pytest.param(
        _answer_of_another_request, "bound to another request", id="answer-to-another-request"
    ),
    pytest.param(
        _addressed_to_another_member, "to 'customs', expected", id="addressed-to-another-member"
    ),
    pytest.param(_entry_altered, "does not hash to its leaf hash", id="receipt-entry-altered"),
    pytest.param(
        _entry_of_another_request,
        "does not record this request",
        id="receipt-entry-of-another-request",
    ),
    pytest.param(_proof_altered, "the receipt does not verify", id="inclusion-proof-altered"),
    pytest.param(
        _checkpoint_by_another_key,
        "found no signature by a known key",
        id="checkpoint-signed-by-another-key",
    ),
    pytest.param(
        _body_altered_after_signing, "is not signed by it", id="answer-altered-after-signing"
    ),
]


@pytest.mark.parametrize(("tampering", "says"), TAMPERINGS)
def test_requester_rejects_an_answer_that_does_not_verify_and_records_it(
    fed: Federation,
    requester: _ClientOnTamperedChannel,
    tampering: Callable[[Federation, _Tamper, Any], Any],
    says: str,
) -> None:
    tamper = requester.tamper
    tamper.change = lambda envelope: tampering(fed, tamper, envelope)
    try:
        with pytest.raises(AnswerRejected, match=says):
            fed.run(requester.ask())
    finally:
        tamper.change = lambda envelope: envelope
    (own,) = fed.ledger_entries("shenzhen")
    assert own["direction"] == "OUTGOING" and own["responder"] == "huizhou"
    assert own["outcome"]["status"] == "ANSWER_REJECTED"
    assert says in own["outcome"]["message"]


# -- overload ------------------------------------------------------------------------------


def test_calls_beyond_the_concurrency_limit_are_refused_and_none_is_lost(fed: Federation) -> None:
    """A second huizhou process (same store) that takes 2 calls at a time gets 40 at once."""
    node = fed.nodes["huizhou"]
    base = node.config
    config = NodeConfig(base.home, base.settings.model_copy(update={"max_concurrent_calls": 2}))
    server = NodeServer(config, port=free_ports(1)[0])
    fed.run(server.start())
    credentials = fed.credentials("shenzhen")
    envelopes = [fed.sealed(_signed(fed, "Check"), "huizhou") for _ in range(40)]
    before = _ledger_size(fed, "huizhou")

    async def storm() -> list[grpc.StatusCode]:
        async with grpc.aio.secure_channel(
            f"127.0.0.1:{server.port}",
            credentials,
            options=[("grpc.ssl_target_name_override", member_dns_name("huizhou"))],
        ) as channel:
            stub = exchange_pb2_grpc.CreditExchangeStub(channel)

            async def one(envelope: Any) -> grpc.StatusCode:
                try:
                    await stub.Check(envelope, timeout=20)
                except grpc.aio.AioRpcError as exc:
                    return exc.code()
                return Code.OK

            return list(await asyncio.gather(*(one(e) for e in envelopes)))

    try:
        codes = fed.run(storm(), timeout=30)
    finally:
        fed.run(server.stop(0))
    assert len(codes) == len(envelopes)  # every call came back: none hung, none lost
    assert set(codes) <= {Code.OK, Code.RESOURCE_EXHAUSTED}, codes
    assert codes.count(Code.RESOURCE_EXHAUSTED) > 0 and codes.count(Code.OK) > 0, codes
    # the answered calls are on the record; the refused ones are counted, not recorded
    assert _ledger_size(fed, "huizhou") - before == codes.count(Code.OK)
    overload = server.metrics.registry.get_sample_value(
        "credit_node_refusals_total", {"reason": "overload"}
    )
    assert overload == codes.count(Code.RESOURCE_EXHAUSTED)


# -- amplification and quotas under concurrency ------------------------------------------


def test_many_unknown_themes_are_refused_before_the_policy_with_a_small_record(
    fed: Federation,
) -> None:
    themes = ("admin_penalty", *(f"made-up-{i}" for i in range(10_000)))
    envelope = _signed(fed, "BatchCheck", subjects=(ENTERPRISE,) * 50, themes=themes)
    _, error = fed.raw("huizhou", "BatchCheck", envelope, fed.credentials("shenzhen"))
    _assert_refused_on_record(fed, error, Code.INVALID_ARGUMENT, ("unknown theme(s)",))
    assert error is not None and len(error.details() or "") <= 1000
    (entry,) = fed.ledger_entries("huizhou")
    assert not entry.get("theme_decisions")  # refused before any theme was decided


def test_a_theme_asked_many_times_is_answered_once(fed: Federation) -> None:
    envelope = _signed(fed, "Check", themes=("admin_penalty",) * 500)
    answer, error = fed.raw("huizhou", "Check", envelope, fed.credentials("shenzhen"))
    assert error is None and answer is not None
    body = exchange_pb2.AnswerBody()
    body.ParseFromString(_answer_of(answer).body)
    assert [t.theme for t in body.subjects[0].themes] == ["admin_penalty"]


def test_overlong_header_text_is_refused(fed: Federation) -> None:
    envelope = _signed(fed, "Query", legal_basis="条" * 100_000)
    _, error = fed.raw("huizhou", "Query", envelope, fed.credentials("shenzhen"))
    _assert_refused_on_record(fed, error, Code.INVALID_ARGUMENT, ("legal_basis has 100000",))


def test_concurrent_calls_never_exceed_a_quota_on_postgres(fed: Federation) -> None:
    # shenzhen asks customs (PostgreSQL) for bank credit under customs-bank-credit
    rule, limit = "customs-bank-credit", 5000
    now = dt.datetime.now(dt.UTC)
    starts = {quota_period_start(Period.DAY, now + dt.timedelta(minutes=m)) for m in (0, 5)}
    for start in starts:
        _sql(
            fed,
            "customs",
            "INSERT INTO quota_usage (requester, rule_id, period_start, used) "
            "VALUES ('shenzhen', :rule, :start, :used) "
            "ON CONFLICT (requester, rule_id, period_start) DO UPDATE SET used = :used "
            "RETURNING used",
            rule=rule,
            start=int(start.timestamp()),
            used=limit - 3,
        )
    graded = _sql(
        fed, "customs", "SELECT subject_id FROM records WHERE theme = 'customs_credit_grade'"
    )[0]
    envelopes = [
        fed.sealed(
            _signed(
                fed,
                "Check",
                provider="customs",
                subjects=(graded,),
                themes=("customs_credit_grade",),
                purpose="bank_credit",
                legal_basis="《征信业管理条例》",
                case_reference=f"LOAN-{i}",
                officer="bank",
            ),
            "customs",
        )
        for i in range(20)
    ]

    async def all_at_once() -> list[Any]:
        credentials = fed.credentials("shenzhen")
        target = f"127.0.0.1:{fed.nodes['customs'].port}"
        options = [("grpc.ssl_target_name_override", member_dns_name("customs"))]
        async with grpc.aio.secure_channel(target, credentials, options=options) as channel:
            stub = exchange_pb2_grpc.CreditExchangeStub(channel)

            async def one(envelope: Any) -> Any:
                try:
                    return await stub.Check(envelope, timeout=30)
                except grpc.aio.AioRpcError as exc:
                    return exc.code()

            return await asyncio.gather(*(one(e) for e in envelopes))

    results = fed.run(all_at_once())
    answered = [r for r in results if not isinstance(r, grpc.StatusCode)]
    assert len(answered) == 3
    assert {r for r in results if isinstance(r, grpc.StatusCode)} == {Code.RESOURCE_EXHAUSTED}
    stored = _sql(
        fed,
        "customs",
        "SELECT max(used) FROM quota_usage WHERE requester = 'shenzhen' AND rule_id = :rule",
        rule=rule,
    )
    assert stored == [limit]


def test_a_node_that_cannot_listen_says_so_and_stops_what_it_opened(fed: Federation) -> None:
    """Starting on an address it cannot bind fails, and leaves no ledger committer running."""

    async def committers() -> int:
        return sum(t.get_name() == "ledger-committer" for t in asyncio.all_tasks())

    before = fed.run(committers())
    base = fed.nodes["huizhou"].config
    elsewhere = base.settings.model_copy(update={"grpc_host": "192.0.2.1"})  # TEST-NET-1
    server = NodeServer(NodeConfig(base.home, elsewhere), port=free_ports(1)[0])
    with pytest.raises(ConfigError, match="cannot listen on"):
        fed.run(server.start())
    assert fed.run(committers()) == before
    with pytest.raises(ExchangeError, match="not running"):
        server.ledger  # noqa: B018 (the property refuses a node that is not running)


# -- hole by hole: what the attack on a running federation found ----------------------


def _uscc(kind: str, serial: int) -> str:
    """A valid unified social credit code: kind "91" an enterprise, "92" an individual business."""
    first17 = f"{kind}441300{serial:08d}0"
    return first17 + uscc_check_character(first17)


_QUOTA_CASES = [
    # provider (store), requester, rule, its daily limit, themes, purpose
    pytest.param(
        "huizhou", "shenzhen", "core-bank-credit", 20000, ("serious_dishonesty",), id="sqlite"
    ),
    pytest.param(
        "customs", "huizhou", "customs-bank-credit", 5000, ("customs_credit_grade",), id="postgres"
    ),
]


def _set_quota_used(fed: Federation, provider: str, requester: str, rule: str, used: int) -> None:
    now = dt.datetime.now(dt.UTC)
    for start in {quota_period_start(Period.DAY, now + dt.timedelta(minutes=m)) for m in (0, 5)}:
        _sql(
            fed,
            provider,
            "INSERT INTO quota_usage (requester, rule_id, period_start, used) "
            "VALUES (:requester, :rule, :start, :used) "
            "ON CONFLICT (requester, rule_id, period_start) DO UPDATE SET used = :used "
            "RETURNING used",
            requester=requester,
            rule=rule,
            start=int(start.timestamp()),
            used=used,
        )
    fed.restart(provider)  # the serving node reads the count afresh


def _mixed_batch(
    fed: Federation, provider: str, requester: str, themes: tuple[str, ...], first: int, n: int
) -> Any:
    subjects = tuple(_uscc(kind, first + i) for i in range(n) for kind in ("91", "92"))
    return _signed(
        fed,
        "BatchCheck",
        signer=requester,
        requester=requester,
        provider=provider,
        subjects=subjects,
        themes=themes,
        purpose="bank_credit",
        legal_basis="《征信业管理条例》",
        case_reference="",
        officer="bank-system",
    )


@pytest.mark.parametrize(("provider", "requester", "rule", "limit", "themes"), _QUOTA_CASES)
def test_a_batch_mixing_subject_types_is_charged_whole_against_a_quota(
    fed: Federation,
    provider: str,
    requester: str,
    rule: str,
    limit: int,
    themes: tuple[str, ...],
) -> None:
    """Hole 1: 2 enterprises + 2 individual businesses are 4 queries, not 2 and 2."""
    _set_quota_used(fed, provider, requester, rule, limit - 3)
    envelope = _mixed_batch(fed, provider, requester, themes, first=100, n=2)
    _, error = fed.raw(provider, "BatchCheck", envelope, fed.credentials(requester))
    _assert_refused_on_record(
        fed,
        error,
        Code.RESOURCE_EXHAUSTED,
        (
            f"quota of {limit} per day of rule {rule} exceeded",
            "asks about 4 subjects",
            "3 are left",
        ),
        peer=requester,
        provider=provider,
    )
    (entry,) = fed.ledger_entries(provider)
    assert not entry["decision"].get("allowed")
    assert entry["subject_count"] == 4 and "subject_hmacs" not in entry
    used = _sql(
        fed,
        provider,
        "SELECT max(used) FROM quota_usage WHERE requester = :r AND rule_id = :rule",
        r=requester,
        rule=rule,
    )
    assert used == [limit - 3], "a refused batch is not charged"


@pytest.mark.parametrize(("provider", "requester", "rule", "limit", "themes"), _QUOTA_CASES)
def test_concurrent_mixed_batches_of_one_requester_cannot_together_pass_a_quota(
    fed: Federation,
    provider: str,
    requester: str,
    rule: str,
    limit: int,
    themes: tuple[str, ...],
) -> None:
    """Hole 1: 8 batches of 2 subjects at once, 5 left: 2 answered, 6 refused whole."""
    _set_quota_used(fed, provider, requester, rule, limit - 5)
    sealed = [
        fed.sealed(
            _mixed_batch(fed, provider, requester, themes, first=200 + 10 * i, n=1), provider
        )
        for i in range(8)
    ]

    async def all_at_once() -> list[Any]:
        target = f"127.0.0.1:{fed.nodes[provider].port}"
        options = [("grpc.ssl_target_name_override", member_dns_name(provider))]
        async with grpc.aio.secure_channel(
            target, fed.credentials(requester), options=options
        ) as channel:
            stub = exchange_pb2_grpc.CreditExchangeStub(channel)

            async def one(request: Any) -> Any:
                try:
                    return await stub.BatchCheck(request, timeout=30)
                except grpc.aio.AioRpcError as exc:
                    return exc.code()

            return await asyncio.gather(*(one(r) for r in sealed))

    results = fed.run(all_at_once())
    refused = [r for r in results if isinstance(r, grpc.StatusCode)]
    assert len(results) - len(refused) == 2
    assert set(refused) == {Code.RESOURCE_EXHAUSTED}
    used = _sql(
        fed,
        provider,
        "SELECT max(used) FROM quota_usage WHERE requester = :r AND rule_id = :rule",
        r=requester,
        rule=rule,
    )
    assert used == [limit - 1]


def test_a_refusal_signed_by_the_provider_is_recorded_with_its_receipt(fed: Federation) -> None:
    """Hole 2: the requester keeps a refusal as the provider's only when the provider signed it."""
    with pytest.raises(QueryRefused) as refused:
        fed.ask(
            "shenzhen",
            ENTERPRISE,
            to="huizhou",
            purpose="public_procurement",  # allowed for other themes: the provider decides
            legal_basis="政府采购法第二十二条",
            case_reference="BG-1",
            officer="o-1",
            themes=["customs_credit_grade"],
        )
    assert refused.value.verified
    assert refused.value.status == "PERMISSION_DENIED"
    (theirs,) = fed.ledger_entries("huizhou")
    assert refused.value.leaf_index == _ledger_size(fed, "huizhou") - 1
    (own,) = fed.ledger_entries("shenzhen")
    assert own["outcome"]["status"] == "PERMISSION_DENIED"
    assert own["outcome"]["message"] == theirs["outcome"]["message"]
    assert int(own["remote_receipt"].get("leaf_index", 0)) == refused.value.leaf_index
    assert own["remote_receipt"]["checkpoint"].startswith("credit-exchange/3plus2/huizhou/audit\n")


def test_an_oversized_refused_batch_leaves_a_small_entry(fed: Federation) -> None:
    """Hole 5: sizes and counts come before anything is captured; no HMAC list is kept."""
    envelope = _signed(fed, "BatchCheck", subjects=(ENTERPRISE,) * 20_000, legal_basis="条" * 600)
    _, error = fed.raw("huizhou", "BatchCheck", envelope, fed.credentials("shenzhen"))
    _assert_refused_on_record(fed, error, Code.INVALID_ARGUMENT, ("legal_basis has 600",))
    index = _ledger_size(fed, "huizhou") - 1
    entry = fed.entry_at("huizhou", index)
    assert entry.subject_count == 20_000 and not entry.subject_hmacs and not entry.subject_hmac
    assert len(entry.legal_basis) == 512 and entry.legal_basis.endswith("…")
    assert entry.ByteSize() < 4096


@pytest.mark.parametrize("provider", ["huizhou", "customs"], ids=["sqlite", "postgres"])
def test_a_refused_request_with_900_kb_of_text_leaves_a_bounded_entry(
    fed: Federation, provider: str
) -> None:
    """Hole 5: a 900 KB legal basis is refused and its entry keeps 512 characters of it."""
    envelope = _signed(fed, "Query", provider=provider, legal_basis="x" * 900_000)
    _, error = fed.raw(provider, "Query", envelope, fed.credentials("shenzhen"))
    _assert_refused_on_record(
        fed, error, Code.INVALID_ARGUMENT, ("legal_basis has 900000",), provider=provider
    )
    entry = fed.entry_at(provider, _ledger_size(fed, provider) - 1)
    assert len(entry.legal_basis) == 512 and entry.ByteSize() < 4096


_SIDE_CALLS = {
    "GetMemorandum": ("/creditexchange.v1.CreditExchange/GetMemorandum", b""),
    "GetCheckpoint": ("/creditexchange.v1.Audit/GetCheckpoint", b""),
    "GetInclusionProof": ("/creditexchange.v1.Audit/GetInclusionProof", b"\x08\x01"),
    "health": ("/grpc.health.v1.Health/Check", b""),
}


def _side_call(fed: Federation, provider: str, method: str, body: bytes, credentials: Any) -> Any:
    async def call() -> Any:
        target = f"127.0.0.1:{fed.nodes[provider].port}"
        options = [
            ("grpc.ssl_target_name_override", member_dns_name(provider)),
            ("grpc.max_metadata_size", 1 << 20),
        ]
        async with grpc.aio.secure_channel(target, credentials, options=options) as channel:
            try:
                call: Any = channel.unary_unary(method)
                await call(body, timeout=10)
            except grpc.aio.AioRpcError as exc:
                return exc
            return None

    return fed.run(call())


def _reflection_list(fed: Federation, provider: str, credentials: Any) -> Any:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    async def call() -> Any:
        target = f"127.0.0.1:{fed.nodes[provider].port}"
        options = [("grpc.ssl_target_name_override", member_dns_name(provider))]
        async with grpc.aio.secure_channel(target, credentials, options=options) as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            try:
                async for _ in stub.ServerReflectionInfo(iter([request]), timeout=10):
                    pass
            except grpc.aio.AioRpcError as exc:
                return exc
            return None

    return fed.run(call())


def _assert_side_call_refused(
    fed: Federation, error: Any, code: grpc.StatusCode, says: str, peer: str, method: str
) -> None:
    assert error is not None, f"{method} answered"
    assert error.code() == code, error.details()
    assert says in (error.details() or "")
    (entry,) = fed.ledger_entries("huizhou")
    assert entry["kind"] == "SERVICE_CALL" and entry["note"] == method
    assert entry["requester"] == peer and entry["outcome"]["status"] == code.name


def test_side_services_answer_members_only(fed: Federation, tmp_path: Path) -> None:
    """Hole 6: a non-member certificate of the federation CA gets nothing from any service."""
    zhuhai = issue(
        "zhuhai", fed.root / "ca", out_dir=tmp_path, dns_names=("localhost",), ips=("127.0.0.1",)
    )
    credentials = fed.credentials("shenzhen", cert=zhuhai.certificate_path, key=zhuhai.key_path)
    for method, body in _SIDE_CALLS.values():
        error = _side_call(fed, "huizhou", method, body, credentials)
        _assert_side_call_refused(
            fed, error, Code.PERMISSION_DENIED, "zhuhai is not a member", "zhuhai", method
        )
    error = _reflection_list(fed, "huizhou", credentials)
    _assert_side_call_refused(
        fed,
        error,
        Code.PERMISSION_DENIED,
        "zhuhai is not a member",
        "zhuhai",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    )
    for method, body in _SIDE_CALLS.values():  # a member is answered
        assert _side_call(fed, "huizhou", method, body, fed.credentials("shenzhen")) is None


def test_a_side_call_that_does_not_decode_is_refused_on_record(fed: Federation) -> None:
    """Hole 7: no UNKNOWN for bytes that are not the method's message."""
    method = "/creditexchange.v1.Audit/GetInclusionProof"
    error = _side_call(fed, "huizhou", method, b"\xff\xff\xff", fed.credentials("shenzhen"))
    _assert_side_call_refused(
        fed, error, Code.INVALID_ARGUMENT, "does not decode", "shenzhen", method
    )


@contextlib.contextmanager
def _ledger_held(
    fed: Federation, member: str, meanwhile: Callable[[Any], object] | None = None
) -> Iterator[None]:
    """Another writer holds the member's ledger for a while: its appends wait. With
    ``meanwhile``, that writer does something in its transaction (given the connection)
    and commits it when it lets go; else it writes nothing."""
    database = open_database(fed.nodes[member].config.database_url)
    try:
        with database.connect() as conn:
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.begin()
                conn.exec_driver_sql("LOCK TABLE ledger_head IN ACCESS EXCLUSIVE MODE")
            try:
                yield
                if meanwhile is not None:
                    meanwhile(conn)
                    conn.commit()
            finally:
                conn.rollback()
    finally:
        database.dispose()


@pytest.mark.parametrize("provider", ["huizhou", "customs"], ids=["sqlite", "postgres"])
def test_a_caller_leaving_while_its_entry_is_made_durable_makes_no_second_entry(
    fed: Federation, provider: str
) -> None:
    """Hole 8: the deadline passes while the answer's entry waits for the disk: still one
    request, one entry."""
    before = _ledger_size(fed, provider)
    sealed = [fed.sealed(_signed(fed, "Check", provider=provider), provider) for _ in range(12)]
    with _ledger_held(fed, provider):
        codes = fed.run(_hurried(fed, provider, sealed))
        time.sleep(0.5)
    assert set(codes) == {Code.DEADLINE_EXCEEDED}, codes
    entries = _entries_since(fed, provider, before, len(sealed))
    assert sorted(e.nonce for e in entries) == sorted(_header_of(fed, r).nonce for r in sealed), (
        "each request is recorded exactly once"
    )


@pytest.mark.parametrize("provider", ["huizhou", "customs"], ids=["sqlite", "postgres"])
def test_a_caller_leaving_before_another_process_spends_its_nonce_leaves_a_refusal(
    fed: Federation, provider: str
) -> None:
    """The answers' entries wait for the disk, their callers give up, and meanwhile another
    process of the node (``serve --workers``, a second pod) spends their nonces: the store
    refuses the answers, and each call is still recorded once, as the replay it became."""
    before = _ledger_size(fed, provider)
    sealed = [fed.sealed(_signed(fed, "Check", provider=provider), provider) for _ in range(6)]
    headers = [_header_of(fed, r) for r in sealed]

    with _ledger_held(fed, provider, _spending(headers)):
        codes = fed.run(_hurried(fed, provider, sealed))
        time.sleep(0.5)
    assert set(codes) == {Code.DEADLINE_EXCEEDED}, codes
    entries = _entries_since(fed, provider, before, len(sealed))
    assert sorted(e.nonce for e in entries) == sorted(h.nonce for h in headers), (
        "each request is recorded exactly once"
    )
    for entry in entries:
        assert entry.outcome.status == "UNAUTHENTICATED", entry.outcome
        assert "the request is a replay" in entry.outcome.message
        assert "the caller had cancelled the call" in entry.outcome.message
        assert not entry.answer_digest and not entry.themes_answered


def test_a_quota_charge_of_a_caller_that_left_counts_once_the_store_has_decided(
    fed: Federation,
) -> None:
    """Four land-auction queries (a quota of 500 a day) wait for the disk, their callers
    give up, and another process spends two of their nonces meanwhile: two answers are
    recorded and counted, two replays recorded and not counted — in the store and in the
    node's running count alike."""
    provider, rule = "huizhou", "regional-land-auction"
    (subject,) = _sql(
        fed, provider, "SELECT subject_id FROM subjects WHERE subject_type = 'enterprise' LIMIT 1"
    )
    sealed = signed_queries(
        fed.nodes["shenzhen"],
        fed.nodes[provider],
        [subject],
        4,
        purpose="land_auction",
        themes=["admin_penalty"],
        legal_basis="《招标投标法》",
        officer="officer-7",
    )
    headers = [_header_of(fed, r) for r in sealed]
    start = quota_period_start(Period.DAY, dt.datetime.now(dt.UTC))
    quotas = fed.servers[provider]._provider.quotas  # type: ignore[union-attr]

    def counted() -> tuple[int, int]:
        stored = _sql(
            fed,
            provider,
            "SELECT COALESCE(SUM(used), 0) FROM quota_usage WHERE requester = 'shenzhen' "
            "AND rule_id = :rule AND period_start = :start",
            rule=rule,
            start=int(start.timestamp()),
        )
        return int(stored[0]), quotas.used("shenzhen", rule, start)

    stored_before, running_before = counted()
    before = _ledger_size(fed, provider)
    with _ledger_held(fed, provider, _spending(headers[:2])):
        codes = fed.run(_hurried(fed, provider, sealed, "Query"))
        time.sleep(0.5)
    assert set(codes) == {Code.DEADLINE_EXCEEDED}, codes
    entries = {e.nonce: e for e in _entries_since(fed, provider, before, len(sealed))}
    assert set(entries) == {h.nonce for h in headers}
    assert [entries[h.nonce].outcome.status for h in headers] == [
        "UNAUTHENTICATED",
        "UNAUTHENTICATED",
        "OK",
        "OK",
    ]
    stored, running = counted()
    assert (stored - stored_before, running - running_before) == (2, 2)


def _spending(headers: list[exchange_pb2.RequestHeader]) -> Callable[[Any], None]:
    """What another process of the node does when it answers these requests: it spends
    their nonces (shenzhen's)."""

    def spend(conn: Any) -> None:
        for header in headers:
            conn.execute(
                text(
                    "INSERT INTO request_nonces (requester, nonce, created_us) "
                    "VALUES ('shenzhen', :nonce, :created_us)"
                ),
                {"nonce": header.nonce, "created_us": header.created_unix_micros},
            )

    return spend


def _entries_since(
    fed: Federation, provider: str, before: int, n: int
) -> list[audit_pb2.AuditEntry]:
    """The provider's entries from index ``before`` on, once ``n`` have landed (within 10 s)
    and a while longer, in which a second entry of any call would land too."""
    deadline = time.monotonic() + 10
    while _ledger_size(fed, provider) - before < n and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    return [fed.entry_at(provider, i) for i in range(before, _ledger_size(fed, provider))]


async def _hurried(
    fed: Federation, provider: str, sealed: list[Any], method: str = "Check"
) -> list[Any]:
    """``sealed`` sent at once as shenzhen's calls of ``method``, each given up after 0.5 s."""
    target = f"127.0.0.1:{fed.nodes[provider].port}"
    options = [("grpc.ssl_target_name_override", member_dns_name(provider))]
    async with grpc.aio.secure_channel(target, fed.credentials("shenzhen"), options=options) as ch:
        stub = exchange_pb2_grpc.CreditExchangeStub(ch)

        async def one(request: Any) -> Any:
            try:
                return await getattr(stub, method)(request, timeout=0.5)
            except grpc.aio.AioRpcError as exc:
                return exc.code()

        return await asyncio.gather(*(one(r) for r in sealed))


def _header_of(fed: Federation, sealed: Any) -> exchange_pb2.RequestHeader:
    """The header inside a request this test sealed (it holds the provider's key)."""
    provider = "huizhou" if sealed.recipients[0].key_id == _key_id(fed, "huizhou") else "customs"
    envelope = Opener(fed.signing_key(provider)).open(sealed)
    request = exchange_pb2.CheckRequest()
    request.ParseFromString(envelope.payload)
    return request.header


def _key_id(fed: Federation, member: str) -> str:
    return key_id(bytes(fed.signing_key(member).verify_key))


def test_revocation_is_checked_before_the_signature(fed: Federation, tmp_path: Path) -> None:
    """Hole 10: a revoked certificate is refused as revoked, however the request is signed."""
    ca = fed.root / "ca"
    third = issue("shenzhen", ca, out_dir=tmp_path, dns_names=("localhost",), ips=("127.0.0.1",))
    revoke(third.record.serial_hex, ca)
    shutil.copy(ca / "crl.pem", fed.nodes["huizhou"].home / "tls" / "crl.pem")
    time.sleep(1.2)  # the watcher looks at the file at most once a second
    revoked = fed.credentials("shenzhen", cert=third.certificate_path, key=third.key_path)
    _, error = fed.raw("huizhou", "Query", _signature_flipped(fed), revoked)
    _assert_refused_on_record(fed, error, Code.UNAUTHENTICATED, ("revoked",))
    for method, body in _SIDE_CALLS.values():  # hole 6: every service checks revocation
        error = _side_call(fed, "huizhou", method, body, revoked)
        _assert_side_call_refused(fed, error, Code.UNAUTHENTICATED, "revoked", "shenzhen", method)


def test_the_client_refuses_invisible_or_control_text_before_sending(fed: Federation) -> None:
    """Hole 10: a case reference of a zero-width space never leaves the requester."""
    before = _ledger_size(fed, "huizhou")
    for case in ("\u200b", "CG\x00-1", "\u200e"):
        with pytest.raises(ExchangeError, match="case_reference"):
            fed.ask(
                "shenzhen",
                ENTERPRISE,
                to="huizhou",
                purpose="public_procurement",
                legal_basis="政府采购法第二十二条",
                case_reference=case,
                officer="officer-7",
            )
    assert _ledger_size(fed, "huizhou") == before


# -- impostors: certificates that name the wrong thing ------------------------------------


@pytest.mark.parametrize(
    ("dns_names", "says"),
    [
        pytest.param(["*.member.credit-exchange"], "'*.member.credit-exchange'", id="wildcard"),
        pytest.param(
            ["shenzhen.member.credit-exchange", "huizhou.member.credit-exchange"],
            "huizhou.member.credit-exchange",
            id="another-members-name",
        ),
    ],
)
def test_a_client_certificate_with_a_wildcard_or_another_members_name_is_refused(
    fed: Federation, tmp_path: Path, dns_names: list[str], says: str
) -> None:
    """Hole 2: a certificate the CA should never have issued is refused, and recorded."""
    forged = forge_certificate(fed.root / "ca", "shenzhen", dns_names=dns_names)
    key, cert = forged.write(tmp_path, "forged")
    _, error = fed.raw(
        "huizhou", "Query", _signed(fed, "Query"), fed.credentials("shenzhen", cert, key)
    )
    assert error is not None and error.code() == Code.UNAUTHENTICATED, error
    assert says in (error.details() or "")
    (entry,) = fed.ledger_entries("huizhou")
    assert entry["outcome"]["status"] == "UNAUTHENTICATED"
    assert entry["outcome"]["message"] == error.details()
    assert entry.get("requester", "") == ""  # a certificate that names no member names no one


class _Impostor:
    """A server that passes a requester's TLS checks for huizhou with a certificate it should
    not hold, keeps every byte it is sent, and refuses with a made-up, unsigned refusal."""

    def __init__(self, fed: Federation, cert: Path, key: Path, message: str) -> None:
        self.fed = fed
        self.message = message
        self.received: list[bytes] = []
        self.port = free_ports(1)[0]
        tls = fed.nodes["huizhou"].home / "tls"
        self.credentials = grpc.ssl_server_credentials(
            [(key.read_bytes(), cert.read_bytes())],
            root_certificates=(tls / "ca.crt").read_bytes(),
            require_client_auth=True,
        )
        self.server: grpc.aio.Server | None = None

    async def _refuse(self, request: bytes, context: Any) -> bytes:
        self.received.append(request)
        context.set_trailing_metadata(
            (("audit-leaf-index", "7"), ("audit-refusal-bin", b"\x0a\x03abc"))
        )
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, self.message)
        raise AssertionError("unreachable")

    async def _start(self) -> None:
        self.server = grpc.aio.server()
        handler = grpc.method_handlers_generic_handler(
            "creditexchange.v1.CreditExchange",
            {m: grpc.unary_unary_rpc_method_handler(self._refuse) for m in ("Query", "Check")},
        )
        self.server.add_generic_rpc_handlers((handler,))
        self.server.add_secure_port(f"127.0.0.1:{self.port}", self.credentials)
        await self.server.start()

    def __enter__(self) -> _Impostor:
        self.fed.run(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.server is not None
        self.fed.run(self.server.stop(0))


def _wildcard_impostor(fed: Federation, tmp_path: Path) -> tuple[Path, Path]:
    forged = forge_certificate(
        fed.root / "ca", "zhuhai", dns_names=["*.member.credit-exchange"], ips=["127.0.0.1"]
    )
    key, cert = forged.write(tmp_path, "impostor")
    return cert, key


def _revoked_huizhou(fed: Federation, tmp_path: Path) -> tuple[Path, Path]:
    ca = fed.root / "ca"
    old = issue("huizhou", ca, out_dir=tmp_path, dns_names=("localhost",), ips=("127.0.0.1",))
    revoke(old.record.serial_hex, ca)  # a leaked key, revoked: the client cannot see the CRL
    return old.certificate_path, old.key_path


@pytest.mark.parametrize(
    ("certificate", "message"),
    [
        pytest.param(_wildcard_impostor, "refused by huizhou", id="wildcard"),
        pytest.param(_revoked_huizhou, "refused by huizhou", id="revoked"),
        pytest.param(
            _revoked_huizhou, "refused by huizhou" + "!" * 200_000, id="revoked-200-kb-refusal"
        ),
    ],
)
def test_an_impostor_learns_nothing_of_the_query_and_its_refusal_is_no_receipt(
    fed: Federation,
    tmp_path: Path,
    certificate: Callable[[Federation, Path], tuple[Path, Path]],
    message: str,
) -> None:
    """Hole 2: the request reaches the impostor sealed to huizhou's key; its refusal, unsigned,
    is recorded as unverified."""
    (person,) = _sql(
        fed, "huizhou", "SELECT subject_id FROM subjects WHERE subject_type = 'individual' LIMIT 1"
    )
    cert, key = certificate(fed, tmp_path)
    with _Impostor(fed, cert, key, message) as impostor:
        requester = dataclasses.replace(
            requester_from(fed.nodes["shenzhen"].config),
            peers={"huizhou": f"127.0.0.1:{impostor.port}"},
        )

        async def ask() -> None:
            async with FederationClient(requester, ledger=fed.servers["shenzhen"].ledger) as c:
                await c.query(
                    person,
                    to="huizhou",
                    purpose="civil_service_hiring",
                    legal_basis="公务员法第二十六条",
                    case_reference="GWY-2026-0417",
                    officer="hr-officer-3",
                    check=True,
                )

        with pytest.raises(QueryRefused) as refused:
            fed.run(ask())
    assert not refused.value.verified and refused.value.leaf_index is None
    assert "unverified" in str(refused.value)
    (sent,) = impostor.received
    for secret in (person, person[-8:], "civil_service_hiring", "GWY-2026-0417", "hr-officer-3"):
        assert secret.encode() not in sent, f"the impostor read {secret!r}"
    assert "公务员法".encode() not in sent
    (own,) = fed.ledger_entries("shenzhen")
    assert own["direction"] == "OUTGOING" and own["outcome"]["status"] == "UNVERIFIED"
    assert "PERMISSION_DENIED: refused by huizhou" in own["outcome"]["message"]
    assert len(own["outcome"]["message"]) < 1200, "whatever a peer says, the record is bounded"
    assert "remote_receipt" not in own, "an unsigned refusal is never a receipt"


def test_open_streams_cannot_take_the_slots_of_calls(fed: Federation) -> None:
    """F1 of the review: a member holding health watches open cannot starve the queries;
    one certificate holds at most four streams."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    base = fed.nodes["huizhou"].config
    config = NodeConfig(base.home, base.settings.model_copy(update={"max_concurrent_calls": 2}))
    server = NodeServer(config, port=free_ports(1)[0])
    fed.run(server.start())
    sealed = fed.sealed(_signed(fed, "Check"), "huizhou")

    async def hold_streams_and_ask() -> tuple[list[Any], Any, Any]:
        options = [("grpc.ssl_target_name_override", member_dns_name("huizhou"))]
        async with grpc.aio.secure_channel(
            f"127.0.0.1:{server.port}", fed.credentials("shenzhen"), options=options
        ) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            watches = [health.Watch(health_pb2.HealthCheckRequest()) for _ in range(4)]
            for watch in watches:
                await watch.read()  # SERVING: the stream is open and stays so
            fifth = health.Watch(health_pb2.HealthCheckRequest())
            try:
                await fifth.read()
                refused: Any = None
            except grpc.aio.AioRpcError as exc:
                refused = exc
            answer = await exchange_pb2_grpc.CreditExchangeStub(channel).Check(sealed, timeout=10)
            for watch in watches:
                watch.cancel()
            return watches, refused, answer

    try:
        _, refused, answer = fed.run(hold_streams_and_ask())
    finally:
        fed.run(server.stop(0))
    assert refused is not None and refused.code() == Code.RESOURCE_EXHAUSTED
    assert "holds 4 streams open already" in (refused.details() or "")
    assert answer.payload, "the query was answered while four streams stayed open"


def test_a_flood_of_refused_calls_cannot_grow_the_ledger_without_bound(
    fed: Federation, tmp_path: Path
) -> None:
    """F4 of the review: a certificate refused hundreds of times a second is told to slow
    down and counted; its refusals beyond the budget are not recorded."""
    zhuhai = issue("zhuhai", fed.root / "ca", out_dir=tmp_path)
    credentials = fed.credentials("shenzhen", cert=zhuhai.certificate_path, key=zhuhai.key_path)
    budget = fed.servers["huizhou"]._provider.refusal_budget  # type: ignore[union-attr]
    before = _ledger_size(fed, "huizhou")
    calls = budget.burst + 150

    async def flood() -> tuple[list[grpc.StatusCode], float]:
        target = f"127.0.0.1:{fed.nodes['huizhou'].port}"
        options = [("grpc.ssl_target_name_override", member_dns_name("huizhou"))]
        started = time.monotonic()
        async with grpc.aio.secure_channel(target, credentials, options=options) as channel:
            call: Any = channel.unary_unary("/creditexchange.v1.Audit/GetCheckpoint")

            async def one() -> grpc.StatusCode:
                try:
                    await call(b"", timeout=20)
                except grpc.aio.AioRpcError as exc:
                    return exc.code()
                return Code.OK

            codes = []
            for _ in range(calls // 50):
                codes += await asyncio.gather(*(one() for _ in range(50)))
        return codes, time.monotonic() - started

    codes, elapsed = fed.run(flood())
    recorded = _ledger_size(fed, "huizhou") - before
    assert codes.count(Code.PERMISSION_DENIED) == recorded
    assert codes.count(Code.RESOURCE_EXHAUSTED) == len(codes) - recorded > 0
    assert recorded <= budget.burst + budget.per_second * elapsed + 1

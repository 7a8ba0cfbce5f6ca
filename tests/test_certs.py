"""The federation PKI as the CA operator and the nodes rely on it.

The CA is made once per module (key generation is cheap, but the gRPC tests
want several members); tests that change it (revocation) make their own.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import stat
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from certfactory import forge_certificate
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store
from typer.testing import CliRunner

from creditexchange.certs.authority import init_ca, issue, publish_crl, read_index, revoke
from creditexchange.certs.credentials import NodeCredentials, load_node_credentials
from creditexchange.certs.identity import (
    certificate_fingerprint,
    certificate_serial,
    member_dns_name,
    member_from_certificate,
    member_of,
    peer_certificate,
)
from creditexchange.certs.revocation import RevocationList, RevocationWatcher
from creditexchange.errors import (
    AuthorityError,
    CertificateError,
    CertificateRevoked,
    CredentialsError,
    InvalidMemberId,
    PeerIdentityError,
    RevocationListError,
    RevocationListExpired,
)
from creditexchange.node.cli import app

runner = CliRunner()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA with certificates for shenzhen (server) and huizhou (client)."""
    folder = tmp_path_factory.mktemp("pki") / "ca"
    init_ca(folder)
    issue("shenzhen", folder)
    issue("huizhou", folder)
    return folder


@pytest.fixture(scope="module")
def other_ca_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another CA, with the same name, and its own 'huizhou' and 'shenzhen'."""
    folder = tmp_path_factory.mktemp("other") / "ca"
    init_ca(folder)
    issue("huizhou", folder)
    issue("shenzhen", folder)
    return folder


@pytest.fixture
def fresh_ca(tmp_path: Path) -> Path:
    folder = tmp_path / "ca"
    init_ca(folder)
    return folder


# --- the CA ------------------------------------------------------------------------------


def test_a_new_ca_is_a_self_signed_p256_ca_with_its_key_0600_an_empty_index_and_crl(
    fresh_ca: Path,
) -> None:
    assert mode(fresh_ca / "ca.key") == 0o600
    ca = load_cert(fresh_ca / "ca.crt")
    assert ca.subject == ca.issuer
    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "Credit Exchange Federation CA"
    )
    public_key = ca.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert isinstance(public_key.curve, ec.SECP256R1)
    ca.verify_directly_issued_by(ca)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert read_index(fresh_ca) == []
    crl = RevocationList.load(fresh_ca / "crl.pem", fresh_ca / "ca.crt")
    assert crl.revoked == frozenset() and crl.number == 1
    assert not [p for p in fresh_ca.iterdir() if p.name.endswith(".tmp")]


def test_the_ca_key_never_exists_with_a_wider_mode_even_under_a_permissive_umask(
    tmp_path: Path,
) -> None:
    old = os.umask(0)
    try:
        init_ca(tmp_path / "ca")
    finally:
        os.umask(old)
    assert mode(tmp_path / "ca" / "ca.key") == 0o600


def test_an_existing_ca_is_never_overwritten(fresh_ca: Path) -> None:
    key_before = (fresh_ca / "ca.key").read_bytes()
    with pytest.raises(AuthorityError, match="already holds a CA"):
        init_ca(fresh_ca)
    assert (fresh_ca / "ca.key").read_bytes() == key_before


def test_a_folder_without_a_ca_is_named_as_such(tmp_path: Path) -> None:
    with pytest.raises(AuthorityError, match=r"is not a CA folder .*init-ca"):
        issue("huizhou", tmp_path)


# --- issuing -----------------------------------------------------------------------------


def test_an_issued_certificate_names_its_member_once_and_serves_both_ends_of_tls(
    ca_dir: Path,
) -> None:
    ca = load_cert(ca_dir / "ca.crt")
    cert = load_cert(ca_dir / "members" / "huizhou.crt")
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    # by default nothing but the member: no loopback names, no addresses
    assert list(san) == [
        x509.UniformResourceIdentifier("spiffe://credit-exchange/member/huizhou"),
        x509.DNSName("huizhou.member.credit-exchange"),
    ]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert cert.serial_number.bit_length() == 159
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=90) <= lifetime <= dt.timedelta(days=90, minutes=6)
    now = dt.datetime.now(dt.UTC)
    assert cert.not_valid_before_utc <= now <= cert.not_valid_after_utc
    # cryptography's RFC 5280 path validation accepts it as client and as server.
    store = Store([ca])
    PolicyBuilder().store(store).build_client_verifier().verify(cert, [])
    PolicyBuilder().store(store).build_server_verifier(
        x509.DNSName(member_dns_name("huizhou"))
    ).verify(cert, [])


def test_the_issued_key_is_0600_fits_its_certificate_and_is_recorded_in_the_index(
    ca_dir: Path,
) -> None:
    key_path = ca_dir / "members" / "huizhou.key"
    assert mode(key_path) == 0o600
    credentials = load_node_credentials(
        ca_dir / "members" / "huizhou.crt", key_path, ca_dir / "ca.crt"
    )
    assert credentials.member == "huizhou"
    assert b"PRIVATE KEY" not in repr(credentials).encode()
    [record] = [r for r in read_index(ca_dir) if r.member == "huizhou"]
    assert record.serial == credentials.serial
    assert record.fingerprint == certificate_fingerprint(credentials.certificate_pem)
    assert record.revoked_at is None


def test_extra_names_and_addresses_go_into_the_certificate(fresh_ca: Path, tmp_path: Path) -> None:
    issued = issue(
        "dongguan", fresh_ca, out_dir=tmp_path / "dg", days=30,
        dns_names=["Node.DG.example", "localhost"], ips=["10.0.0.7", "127.0.0.1", "::1"],
    )  # fmt: skip
    assert issued.key_path == tmp_path / "dg" / "dongguan.key"
    san = load_cert(issued.certificate_path).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert san.value.get_values_for_type(x509.DNSName) == [
        "dongguan.member.credit-exchange",
        "node.dg.example",  # DNS names are case-insensitive: written in lowercase
        "localhost",
    ]
    assert [str(ip) for ip in san.value.get_values_for_type(x509.IPAddress)] == [
        "10.0.0.7",
        "127.0.0.1",
        "::1",
    ]


def test_issuing_where_the_members_key_already_is_is_refused(fresh_ca: Path) -> None:
    issue("heyuan", fresh_ca)
    key_before = (fresh_ca / "members" / "heyuan.key").read_bytes()
    with pytest.raises(AuthorityError, match="never overwritten"):
        issue("heyuan", fresh_ca)
    assert (fresh_ca / "members" / "heyuan.key").read_bytes() == key_before
    assert len(read_index(fresh_ca)) == 1


@pytest.mark.parametrize(
    "member", ["", "h", "Huizhou", "1city", "hui_zhou", "hui zhou", "a" * 33, "../ca", "-x"]
)
def test_a_bad_member_id_is_refused(fresh_ca: Path, member: str) -> None:
    with pytest.raises(InvalidMemberId, match="is not valid"):
        issue(member, fresh_ca)
    assert read_index(fresh_ca) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ips": ["300.1.1.1"]}, "IPv4 or IPv6"),
        ({"dns_names": ["bad name"]}, "not a valid host name"),
        ({"days": 0}, "at least 1 day"),
        ({"days": 10_000}, "outlive the CA"),
    ],
)
def test_bad_issuing_arguments_are_refused(
    fresh_ca: Path, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(AuthorityError, match=message):
        issue("shanwei", fresh_ca, **kwargs)
    assert read_index(fresh_ca) == []


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("*.member.credit-exchange", r"in the federation's member namespace"),
        ("shenzhen.member.credit-exchange", r"may carry only huizhou\.member\.credit-exchange"),
        ("Shenzhen.Member.Credit-Exchange", r"member namespace"),
        ("node.shenzhen.member.credit-exchange", r"member namespace"),
        ("member.credit-exchange", r"member namespace"),
        ("*.example.org", r"is a wildcard"),
        ("*", r"is a wildcard"),
        ("bad_name", r"'bad_name' is not a valid host name .*RFC 1123"),
        ("node..example", r"not a valid host name \(the label ''\)"),
        ("node.example.", r"not a valid host name"),
        ("-node.example", r"the label '-node'"),
        ("node-.example", r"the label 'node-'"),
        ("a" * 64 + ".example", r"not a valid host name"),
        (".".join(["a" * 63] * 4), r"\(255 characters\)"),
        ("节点.example", r"not a valid host name"),
        ("", r"not a valid host name"),
    ],
)
def test_the_ca_refuses_a_name_that_is_not_the_members_to_carry(
    fresh_ca: Path, name: str, message: str
) -> None:
    with pytest.raises(AuthorityError, match=message) as refused:
        issue("huizhou", fresh_ca, dns_names=["hz-node.example", name])
    assert "--dns" in str(refused.value)  # and says what to give instead
    assert read_index(fresh_ca) == []
    assert not (fresh_ca / "members" / "huizhou.key").exists()


def test_the_ca_accepts_the_members_own_name_and_long_valid_host_names(fresh_ca: Path) -> None:
    longest = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])  # 253 characters
    issued = issue("huizhou", fresh_ca, dns_names=["HUIZHOU.member.credit-exchange", longest])
    san = load_cert(issued.certificate_path).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert san.value.get_values_for_type(x509.DNSName) == [
        "huizhou.member.credit-exchange",
        longest,
    ]


# --- revocation --------------------------------------------------------------------------


def test_a_revoked_serial_is_listed_on_a_new_crl_signed_by_the_ca(fresh_ca: Path) -> None:
    kept = issue("customs", fresh_ca).record
    gone = issue("shanwei", fresh_ca).record
    before = RevocationList.load(fresh_ca / "crl.pem", fresh_ca / "ca.crt")
    record = revoke(gone.serial_hex.upper(), fresh_ca, reason="superseded")
    assert record.revoked_at is not None and record.reason == "superseded"
    crl = RevocationList.load(fresh_ca / "crl.pem", fresh_ca / "ca.crt")
    assert crl.number > before.number
    assert crl.is_revoked(gone.serial) and not crl.is_revoked(kept.serial)
    [entry] = x509.load_pem_x509_crl((fresh_ca / "crl.pem").read_bytes())
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == (
        x509.ReasonFlags.superseded
    )
    with pytest.raises(CertificateRevoked, match=gone.serial_hex):
        crl.check(gone.serial)
    crl.check(kept.serial)
    assert [r.revoked_at is not None for r in read_index(fresh_ca)] == [False, True]


def test_revoking_twice_keeps_the_first_date_and_reason(fresh_ca: Path) -> None:
    serial = issue("heyuan", fresh_ca).record.serial_hex
    first = revoke(serial, fresh_ca, reason="keyCompromise")
    again = revoke(serial, fresh_ca, reason="superseded")
    assert again == first
    assert RevocationList.load(fresh_ca / "crl.pem", fresh_ca / "ca.crt").revoked == {first.serial}


@pytest.mark.parametrize(
    ("serial", "reason", "message"),
    [
        ("abcdef", "keyCompromise", "no certificate with serial abcdef"),
        ("not-hex", "keyCompromise", "not hexadecimal"),
        ("abcdef", "certificateHold", "is not one of"),
    ],
)
def test_revoking_an_unknown_serial_or_with_an_unknown_reason_is_refused(
    fresh_ca: Path, serial: str, reason: str, message: str
) -> None:
    with pytest.raises(AuthorityError, match=message):
        revoke(serial, fresh_ca, reason=reason)


def test_publishing_again_refreshes_next_update_with_a_higher_number(fresh_ca: Path) -> None:
    before = RevocationList.load(fresh_ca / "crl.pem", fresh_ca / "ca.crt")
    after = publish_crl(fresh_ca, days=30)
    assert after.number == before.number + 1
    assert after.next_update > before.next_update
    assert after == RevocationList.load(fresh_ca / "crl.pem", fresh_ca / "ca.crt")


def test_a_list_past_its_next_update_is_refused_by_check(fresh_ca: Path) -> None:
    crl = RevocationList.load(fresh_ca / "crl.pem", fresh_ca / "ca.crt")
    later = crl.next_update + dt.timedelta(seconds=1)
    assert not crl.expired() and crl.expired(later)
    with pytest.raises(RevocationListExpired, match="certs crl"):
        crl.check(12345, now=later)


def _der_flipped(pem: bytes, position: float) -> bytes:
    der = bytearray(x509.load_pem_x509_crl(pem).public_bytes(serialization.Encoding.DER))
    der[int(len(der) * position)] ^= 0x01
    return b"".join(
        [
            b"-----BEGIN X509 CRL-----\n",
            base64.encodebytes(bytes(der)),
            b"-----END X509 CRL-----\n",
        ]
    )


@pytest.mark.parametrize("position", [0.3, 0.5, 0.7, 0.95])
def test_a_crl_with_one_byte_changed_is_refused(fresh_ca: Path, position: float) -> None:
    serial = issue("huizhou", fresh_ca).record.serial_hex
    revoke(serial, fresh_ca)
    crl_path = fresh_ca / "crl.pem"
    crl_path.write_bytes(_der_flipped(crl_path.read_bytes(), position))
    with pytest.raises(RevocationListError):
        RevocationList.load(crl_path, fresh_ca / "ca.crt")


def test_a_crl_that_is_not_pem_is_refused(fresh_ca: Path) -> None:
    (fresh_ca / "crl.pem").write_bytes(b"")
    with pytest.raises(RevocationListError, match=r"not a PEM X\.509 CRL"):
        RevocationList.load(fresh_ca / "crl.pem", fresh_ca / "ca.crt")


def test_a_crl_signed_by_another_ca_of_the_same_name_is_refused(
    fresh_ca: Path, other_ca_dir: Path
) -> None:
    with pytest.raises(RevocationListError, match="does not verify with the federation CA"):
        RevocationList.load(other_ca_dir / "crl.pem", fresh_ca / "ca.crt")


def test_a_crl_issued_under_another_name_is_refused(fresh_ca: Path, tmp_path: Path) -> None:
    init_ca(tmp_path / "rogue", name="Rogue CA")
    with pytest.raises(RevocationListError, match="issued by 'CN=Rogue CA'"):
        RevocationList.load(tmp_path / "rogue" / "crl.pem", fresh_ca / "ca.crt")


# --- the watcher a server uses -----------------------------------------------------------


def test_the_watcher_picks_up_a_new_list_and_keeps_the_last_good_one_when_a_new_one_is_bad(
    fresh_ca: Path,
) -> None:
    problems: list[CertificateError] = []
    crl_path = fresh_ca / "crl.pem"
    watcher = RevocationWatcher(
        crl_path, fresh_ca / "ca.crt", check_interval=0, on_error=problems.append
    )
    serial = issue("huizhou", fresh_ca).record.serial
    watcher.check(serial)
    revoke(format(serial, "x"), fresh_ca)
    assert watcher.current().is_revoked(serial)
    good = watcher.current()

    crl_path.write_bytes(_der_flipped(crl_path.read_bytes(), 0.95))  # tampered
    assert watcher.current() is good
    assert len(problems) == 1 and watcher.last_error is problems[0]
    assert watcher.current() is good and len(problems) == 1  # reported once, not every call
    with pytest.raises(CertificateRevoked):
        watcher.check(serial)

    crl_path.unlink()  # gone
    assert watcher.current() is good
    assert len(problems) == 2

    publish_crl(fresh_ca)  # a good one again
    assert watcher.current().number == good.number + 1
    assert watcher.last_error is None


def test_the_watcher_refuses_an_older_list_that_would_unrevoke(fresh_ca: Path) -> None:
    problems: list[CertificateError] = []
    crl_path = fresh_ca / "crl.pem"
    older = crl_path.read_bytes()
    serial = issue("huizhou", fresh_ca).record.serial
    revoke(format(serial, "x"), fresh_ca)
    watcher = RevocationWatcher(
        crl_path, fresh_ca / "ca.crt", check_interval=0, on_error=problems.append
    )
    crl_path.write_bytes(older)  # validly signed, but from before the revocation
    assert watcher.current().is_revoked(serial)
    assert "an older list is refused" in str(problems[0])


def test_the_watcher_does_not_start_without_a_good_list(fresh_ca: Path) -> None:
    (fresh_ca / "crl.pem").write_bytes(b"garbage")
    with pytest.raises(RevocationListError):
        RevocationWatcher(fresh_ca / "crl.pem", fresh_ca / "ca.crt")


def test_the_watcher_looks_at_the_file_at_most_once_per_interval(fresh_ca: Path) -> None:
    watcher = RevocationWatcher(fresh_ca / "crl.pem", fresh_ca / "ca.crt", check_interval=3600)
    first = watcher.current()
    publish_crl(fresh_ca)
    assert watcher.current() is first


# --- reading a peer's identity -----------------------------------------------------------


def _self_signed(names: list[x509.GeneralName] | None) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "peer")])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
    )
    if names is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


URI = x509.UniformResourceIdentifier


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (None, "no subjectAltName"),
        ([x509.DNSName("huizhou.member.credit-exchange")], "has 0 URI SANs"),
        (
            [
                URI("spiffe://credit-exchange/member/huizhou"),
                URI("spiffe://credit-exchange/member/shenzhen"),
            ],
            "has 2 URI SANs",
        ),
        ([URI("spiffe://other-federation/member/huizhou")], "expected a URI spiffe://credit"),
        ([URI("spiffe://credit-exchange/node/huizhou")], "expected a URI spiffe://credit"),
        ([URI("spiffe://credit-exchange/member/Hui_Zhou")], "is not valid"),
        ([URI("spiffe://credit-exchange/member/huizhou/x")], "is not valid"),
    ],
)
def test_a_peer_certificate_that_does_not_name_exactly_one_member_is_refused(
    names: list[x509.GeneralName] | None, message: str
) -> None:
    with pytest.raises(PeerIdentityError, match=message):
        member_from_certificate(_self_signed(names))


@pytest.mark.parametrize(
    ("dns_names", "message"),
    [
        (["*.member.credit-exchange"], r"'\*\.member\.credit-exchange' is in the .* namespace"),
        (["huizhou.member.credit-exchange", "*.example.org"], r"'\*\.example\.org' is a wildcard"),
        (
            ["huizhou.member.credit-exchange", "shenzhen.member.credit-exchange"],
            r"of huizhou is refused: .*'shenzhen\.member\.credit-exchange'.* may carry only "
            r"huizhou\.member\.credit-exchange",
        ),
        (["SHENZHEN.member.credit-exchange."], r"member namespace"),
        (["x.shenzhen.member.credit-exchange"], r"member namespace"),
        (["member.credit-exchange"], r"member namespace"),
        (["h*.example.org"], r"is a wildcard"),
    ],
)
def test_a_peer_certificate_with_a_wildcard_or_another_members_name_is_refused(
    ca_dir: Path, dns_names: list[str], message: str
) -> None:
    forged = forge_certificate(ca_dir, "huizhou", dns_names=dns_names)
    with pytest.raises(PeerIdentityError, match=message):
        peer_certificate(forged.certificate_pem)
    with pytest.raises(PeerIdentityError, match=message):
        member_of(forged.certificate)


def test_a_peer_certificate_with_its_own_name_and_other_hosts_is_accepted(ca_dir: Path) -> None:
    forged = forge_certificate(
        ca_dir,
        "huizhou",
        dns_names=["Huizhou.Member.Credit-Exchange.", "hz-node.example", "localhost"],
        ips=["127.0.0.1"],
    )
    assert peer_certificate(forged.certificate_pem).member == "huizhou"
    assert member_of(forge_certificate(ca_dir, "huizhou", dns_names=[]).certificate) == "huizhou"


def test_node_credentials_refuse_a_certificate_with_a_wildcard(
    ca_dir: Path, tmp_path: Path
) -> None:
    forged = forge_certificate(ca_dir, "huizhou", dns_names=["*.member.credit-exchange"])
    key_path, certificate_path = forged.write(tmp_path, "huizhou")
    with pytest.raises(CredentialsError, match="member namespace"):
        load_node_credentials(certificate_path, key_path, ca_dir / "ca.crt")


def test_a_peer_certificate_that_is_not_pem_is_refused() -> None:
    with pytest.raises(PeerIdentityError, match=r"not a PEM X\.509 certificate"):
        member_from_certificate(b"hello")


def test_a_peer_certificate_is_parsed_once_per_distinct_certificate(ca_dir: Path) -> None:
    pem = (ca_dir / "members" / "shenzhen.crt").read_bytes()
    cert = x509.load_pem_x509_certificate(pem)
    peer_certificate.cache_clear()
    assert member_from_certificate(pem) == "shenzhen"
    assert certificate_serial(pem) == cert.serial_number
    assert certificate_fingerprint(pem) == cert.fingerprint(hashes.SHA256()).hex()
    assert peer_certificate(pem).not_after == cert.not_valid_after_utc
    info = peer_certificate.cache_info()
    assert (info.misses, info.hits) == (1, 3)


# --- the node's own credentials ----------------------------------------------------------


def test_node_credentials_refuse_a_key_readable_by_others(ca_dir: Path, tmp_path: Path) -> None:
    key = tmp_path / "huizhou.key"
    key.write_bytes((ca_dir / "members" / "huizhou.key").read_bytes())
    key.chmod(0o644)
    with pytest.raises(CredentialsError, match="chmod 600"):
        load_node_credentials(ca_dir / "members" / "huizhou.crt", key, ca_dir / "ca.crt")


def test_node_credentials_refuse_a_certificate_from_another_ca_or_another_key(
    ca_dir: Path, other_ca_dir: Path
) -> None:
    members, others = ca_dir / "members", other_ca_dir / "members"
    with pytest.raises(CredentialsError, match="not issued by the CA"):
        load_node_credentials(others / "huizhou.crt", others / "huizhou.key", ca_dir / "ca.crt")
    with pytest.raises(CredentialsError, match="is not the key of"):
        load_node_credentials(members / "huizhou.crt", members / "shenzhen.key", ca_dir / "ca.crt")


def test_node_credentials_refuse_an_expired_certificate(ca_dir: Path) -> None:
    members = ca_dir / "members"
    with pytest.raises(CredentialsError, match="not now"):
        load_node_credentials(
            members / "huizhou.crt", members / "huizhou.key", ca_dir / "ca.crt",
            now=dt.datetime.now(dt.UTC) + dt.timedelta(days=91),
        )  # fmt: skip


# --- the command line --------------------------------------------------------------------


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["certs", *args])
    return result.exit_code, result.output


def test_the_ca_operator_runs_the_whole_cycle_from_the_command_line(tmp_path: Path) -> None:
    ca = str(tmp_path / "ca")
    code, output = cli("init-ca", "--out", ca)
    assert code == 0, output
    assert "ca.key (mode 600" in output

    code, output = cli(
        "issue", "huizhou", "--ca", ca, "--days", "30",
        "--dns", "hz.example", "--ip", "10.1.2.3", "--out", str(tmp_path / "hz"),
    )  # fmt: skip
    assert code == 0, output
    assert str(tmp_path / "hz" / "huizhou.key") in output
    assert "huizhou.member.credit-exchange" in output
    san = load_cert(tmp_path / "hz" / "huizhou.crt").extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert "hz.example" in san.value.get_values_for_type(x509.DNSName)
    assert mode(tmp_path / "hz" / "huizhou.key") == 0o600
    code, output = cli("issue", "shenzhen", "--ca", ca)
    assert code == 0, output
    san = load_cert(Path(ca) / "members" / "shenzhen.crt").extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert san.value.get_values_for_type(x509.DNSName) == ["shenzhen.member.credit-exchange"]
    assert san.value.get_values_for_type(x509.IPAddress) == []  # loopback only when asked for

    [record, _] = read_index(Path(ca))
    code, output = cli("revoke", record.serial_hex, "--ca", ca, "--reason", "superseded")
    assert code == 0, output
    assert "revoked" in output and "copy it to every node" in output

    code, output = cli("crl", "--ca", ca)
    assert code == 0, output
    assert "CRL number 3, 1 revoked" in output

    code, output = cli("list", "--ca", ca)
    assert code == 0, output
    assert record.serial_hex in output and "superseded" in output and "shenzhen" in output

    code, output = cli("list", "--ca", ca, "--json")
    assert code == 0, output
    assert '"reason": "superseded"' in output

    everything = "".join(p.read_text() for p in (tmp_path / "hz").iterdir())
    assert "PRIVATE KEY" in everything  # the key is in its file ...
    assert "PRIVATE KEY" not in output  # ... and never on the screen


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["init-ca", "--out", "{ca}"], "already holds a CA"),
        (["issue", "Bad_Id", "--ca", "{ca}"], "is not valid"),
        (["issue", "heyuan", "--ca", "{ca}", "--ip", "nope"], "IPv4 or IPv6"),
        (["issue", "heyuan", "--ca", "{ca}", "--dns", "*.member.credit-exchange"], "namespace"),
        (["issue", "heyuan", "--ca", "{ca}", "--dns", "*.example.org"], "is a wildcard"),
        (["issue", "heyuan", "--ca", "{ca}", "--dns", "bad_name"], "not a valid host name"),
        (["revoke", "abc", "--ca", "{ca}"], "no certificate with serial abc"),
        (["list", "--ca", "{ca}/nowhere"], "is not a CA folder"),
    ],
)
def test_operator_mistakes_exit_2_with_a_message(
    fresh_ca: Path, args: list[str], message: str
) -> None:
    code, output = cli(*(a.format(ca=fresh_ca) for a in args))
    assert code == 2, output
    assert message in output


# --- mutual TLS with grpc ----------------------------------------------------------------

WHO_AM_I = "/creditexchange.test.Identity/WhoAmI"


def credentials_of(ca_dir: Path, member: str) -> NodeCredentials:
    members = ca_dir / "members"
    return load_node_credentials(
        members / f"{member}.crt", members / f"{member}.key", ca_dir / "ca.crt"
    )


@pytest.fixture(scope="module")
def server(ca_dir: Path) -> Iterator[int]:
    """shenzhen's node: mutual TLS with the federation CA; answers with the caller's member id.

    The handler does what the real server does with the peer certificate: read
    the member from it, and refuse a revoked serial (UNAUTHENTICATED).
    """
    me = credentials_of(ca_dir, "shenzhen")
    watcher = RevocationWatcher(ca_dir / "crl.pem", ca_dir / "ca.crt", check_interval=0)

    def who_am_i(request: bytes, context: grpc.ServicerContext) -> bytes:
        pem = cast(bytes, context.auth_context()["x509_pem_cert"][0])
        try:
            watcher.check(certificate_serial(pem))
            return member_from_certificate(pem).encode()
        except CertificateError as exc:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
            raise  # not reached: abort raises

    handler = grpc.method_handlers_generic_handler(
        "creditexchange.test.Identity",
        {"WhoAmI": grpc.unary_unary_rpc_method_handler(who_am_i)},  # bytes in, bytes out
    )
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    grpc_server.add_generic_rpc_handlers((handler,))
    port = grpc_server.add_secure_port(
        "127.0.0.1:0",
        grpc.ssl_server_credentials(
            [(me.private_key_pem, me.certificate_pem)],
            root_certificates=me.ca_pem,
            require_client_auth=True,
        ),
    )
    grpc_server.start()
    yield port
    grpc_server.stop(grace=None)


def call(port: int, credentials: grpc.ChannelCredentials, expect: str = "shenzhen") -> str:
    options = [("grpc.ssl_target_name_override", member_dns_name(expect))]
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials, options=options) as channel:
        who: Any = channel.unary_unary(WHO_AM_I)
        answer: bytes = who(b"", timeout=10)
    return answer.decode()


def client_credentials(
    ca_dir: Path, member: str, trust: Path | None = None
) -> grpc.ChannelCredentials:
    mine = credentials_of(ca_dir, member)
    return grpc.ssl_channel_credentials(
        root_certificates=(trust or ca_dir / "ca.crt").read_bytes(),
        private_key=mine.private_key_pem,
        certificate_chain=mine.certificate_pem,
    )


def test_a_member_with_an_issued_certificate_is_known_to_the_server_by_its_member_id(
    server: int, ca_dir: Path
) -> None:
    assert call(server, client_credentials(ca_dir, "huizhou")) == "huizhou"


def test_many_calls_at_once_all_see_their_own_member(server: int, ca_dir: Path) -> None:
    results: list[str] = []
    creds = client_credentials(ca_dir, "huizhou")
    threads = [
        threading.Thread(target=lambda: results.append(call(server, creds))) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["huizhou"] * 8


def test_a_client_without_a_certificate_fails_the_handshake(server: int, ca_dir: Path) -> None:
    anonymous = grpc.ssl_channel_credentials(root_certificates=(ca_dir / "ca.crt").read_bytes())
    with pytest.raises(grpc.RpcError) as caught:
        call(server, anonymous)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_client_with_a_certificate_from_another_ca_fails_the_handshake(
    server: int, ca_dir: Path, other_ca_dir: Path
) -> None:
    foreign = client_credentials(other_ca_dir, "huizhou", trust=ca_dir / "ca.crt")
    with pytest.raises(grpc.RpcError) as caught:
        call(server, foreign)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_client_expecting_another_member_refuses_the_server(server: int, ca_dir: Path) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        call(server, client_credentials(ca_dir, "huizhou"), expect="dongguan")
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_client_refuses_a_server_from_another_ca(server: int, other_ca_dir: Path) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        call(server, client_credentials(other_ca_dir, "huizhou"))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_client_whose_certificate_carries_a_wildcard_is_refused_by_the_server(
    server: int, ca_dir: Path
) -> None:
    forged = forge_certificate(
        ca_dir, "huizhou", dns_names=["huizhou.member.credit-exchange", "*.member.credit-exchange"]
    )
    creds = grpc.ssl_channel_credentials(
        root_certificates=(ca_dir / "ca.crt").read_bytes(),
        private_key=forged.key_pem,
        certificate_chain=forged.certificate_pem,
    )
    with pytest.raises(grpc.RpcError) as caught:
        call(server, creds)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "member namespace" in (caught.value.details() or "")


def test_a_revoked_member_is_refused_after_the_new_crl_is_published(
    server: int, ca_dir: Path, tmp_path: Path
) -> None:
    issued = issue("customs", ca_dir, out_dir=tmp_path)
    creds = grpc.ssl_channel_credentials(
        root_certificates=(ca_dir / "ca.crt").read_bytes(),
        private_key=issued.key_path.read_bytes(),
        certificate_chain=issued.certificate_path.read_bytes(),
    )
    assert call(server, creds) == "customs"
    revoke(issued.record.serial_hex, ca_dir)
    with pytest.raises(grpc.RpcError) as caught:
        call(server, creds)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "is revoked" in (caught.value.details() or "")

"""The gateway over TLS with the operator's certificate, and its refusal to serve in
clear beyond loopback."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import tomli_w
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fedharness import Federation
from gatewayharness import GatewayHarness

from creditexchange.devtools.provision import set_settings
from creditexchange.errors import ConfigError
from creditexchange.gateway.server import tls_files

pytestmark = [pytest.mark.slow]


def _certificate(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gateway.credit.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "gateway.crt", folder / "gateway.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def _unset(home: Path, *names: str) -> None:
    path = home / "node.toml"
    current = tomllib.loads(path.read_text())
    header = path.read_text().splitlines()[0]
    path.write_text(
        header + "\n" + tomli_w.dumps({k: v for k, v in current.items() if k not in names})
    )


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    federation = Federation(tmp_path_factory.mktemp("tls"), ("huizhou", "shenzhen"), {}, 10)
    try:
        yield federation
    finally:
        federation.close()


def test_the_gateway_serves_https_with_the_operators_certificate(fed: Federation) -> None:
    home = fed.nodes["shenzhen"].home
    cert, key = _certificate(home)
    set_settings(home, gateway_tls_cert=str(cert), gateway_tls_key=str(key))
    gateway = GatewayHarness(fed, "shenzhen")
    try:
        assert gateway.url.startswith("https://")
        context = ssl.create_default_context(cafile=str(cert))
        reply = httpx.get(gateway.url + "/healthz", verify=context)
        assert reply.status_code == 200 and reply.json()["member"] == "shenzhen"
        with pytest.raises(httpx.HTTPError):  # nothing in clear on the TLS port
            httpx.get(gateway.url.replace("https://", "http://") + "/healthz", timeout=5)
    finally:
        gateway.close()
        _unset(home, "gateway_tls_cert", "gateway_tls_key")


def test_no_clear_text_beyond_loopback_and_no_key_others_can_read(fed: Federation) -> None:
    home = fed.nodes["huizhou"].home
    set_settings(home, gateway_host="0.0.0.0")
    try:
        with pytest.raises(ConfigError, match="without TLS"):
            tls_files(fed.nodes["huizhou"].config)
        cert, key = _certificate(home)
        key.chmod(0o644)
        set_settings(home, gateway_tls_cert=str(cert), gateway_tls_key=str(key))
        with pytest.raises(ConfigError, match=r"gateway\.key is readable by group and others"):
            tls_files(fed.nodes["huizhou"].config)
    finally:
        set_settings(home, gateway_host="127.0.0.1")
        _unset(home, "gateway_tls_cert", "gateway_tls_key")

"""The node's own mutual-TLS identity, read from its home: what the server presents,
what its clients present, and what ``credit-node health`` probes with.

Kept apart from :mod:`~creditexchange.node.app.wiring` so that a health probe imports
only the settings, the certificates and gRPC.
"""

from __future__ import annotations

import grpc

from creditexchange.certs.credentials import NodeCredentials, load_node_credentials
from creditexchange.errors import CertificateError, ConfigError
from creditexchange.node.app.config import NodeConfig

__all__ = ["channel_credentials", "tls_credentials"]


def tls_credentials(config: NodeConfig) -> NodeCredentials:
    """The node's own certificate, key and CA, cross-checked; a ConfigError says what to fix."""
    hint = (
        f"issue one with 'credit-node certs issue {config.member_id} --ca CA_DIR' and set "
        "tls_cert / tls_key / tls_ca in node.toml"
    )
    try:
        credentials = load_node_credentials(
            config.tls_cert_path, config.tls_key_path, config.tls_ca_path
        )
    except CertificateError as exc:
        raise ConfigError(f"{exc}; {hint}") from None
    if credentials.member != config.member_id:
        raise ConfigError(
            f"{config.tls_cert_path} is the certificate of {credentials.member}, this node is "
            f"{config.member_id}; {hint}"
        )
    return credentials


def channel_credentials(tls: NodeCredentials) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=tls.ca_pem,
        private_key=tls.private_key_pem,
        certificate_chain=tls.certificate_pem,
    )

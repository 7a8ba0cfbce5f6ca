"""Signed, sealed Query envelopes from one provisioned node to another, as a client sends them.

For load that bypasses the project's client: the scale-out tests and the exchange
benchmark send these over their own gRPC channels.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from creditexchange.clock import now_us
from creditexchange.devtools.provision import ProvisionedNode
from creditexchange.node.app.keys import load_signing_key
from creditexchange.node.exchange.envelope import seal
from creditexchange.node.exchange.protocol import QUERY_REQUEST
from creditexchange.node.exchange.sealing import seal_request
from creditexchange.policy.trust import key_id
from creditexchange.v1 import exchange_pb2


def signed_queries(
    requester: ProvisionedNode,
    provider: ProvisionedNode,
    subjects: Sequence[str],
    n: int,
    *,
    purpose: str,
    themes: Sequence[str],
    legal_basis: str,
    officer: str,
) -> list[Any]:
    """``n`` queries about ``subjects`` in turn, each with a fresh nonce and its own case
    reference, signed by ``requester`` and sealed to ``provider``'s key."""
    key = load_signing_key(requester.config.signing_key_path)
    provider_key = load_signing_key(provider.config.signing_key_path).verify_key
    recipients = {key_id(bytes(provider_key)): provider_key}
    sealed = []
    for i in range(n):
        header = exchange_pb2.RequestHeader(
            requester=requester.member,
            provider=provider.member,
            nonce=os.urandom(32),
            created_unix_micros=now_us(),
            memorandum_version=1,
            purpose=purpose,
            legal_basis=legal_basis,
            case_reference=f"CASE-{purpose}-{i}",
            officer=officer,
        )
        request = exchange_pb2.QueryRequest(
            header=header, subject_id=subjects[i % len(subjects)], themes=list(themes)
        )
        envelope = seal(QUERY_REQUEST, request.SerializeToString(), key)
        sealed.append(seal_request(envelope, recipients))
    return sealed

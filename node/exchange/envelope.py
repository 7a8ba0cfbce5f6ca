"""Signed envelopes in the manner of DSSE: exact bytes, signed with Ed25519.

A request or answer travels as ``Envelope{payload_type, payload, signatures}``;
each signature is over the pre-authentication encoding

    PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body

so a verifier checks the bytes it received, never a re-encoding of them. The
digest of an envelope, ``SHA-256(PAE(type, payload))``, names the message
whatever signatures it carries: answers and audit entries refer to requests by it.
The payload types of the protocol's messages are in ``protocol``.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping

import nacl.exceptions
import nacl.signing

from creditexchange.errors import EnvelopeError
from creditexchange.policy.trust import key_id
from creditexchange.v1 import exchange_pb2

__all__ = ["digest", "open_envelope", "pae", "seal"]


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding of a payload and its type."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


def digest(envelope: exchange_pb2.Envelope) -> bytes:
    """SHA-256 of the envelope's PAE: the message's identity, signatures aside."""
    return hashlib.sha256(pae(envelope.payload_type, envelope.payload)).digest()


def seal(
    payload_type: str, payload: bytes, signing_key: nacl.signing.SigningKey
) -> exchange_pb2.Envelope:
    """An envelope of ``payload`` signed by ``signing_key``."""
    signature = signing_key.sign(pae(payload_type, payload)).signature
    return exchange_pb2.Envelope(
        payload_type=payload_type,
        payload=payload,
        signatures=[
            exchange_pb2.Signature(key_id=_key_id(bytes(signing_key.verify_key)), sig=signature)
        ],
    )


@functools.lru_cache(maxsize=64)
def _key_id(public_key: bytes) -> str:
    """``key_id`` of a signer's public key, worked out once per key (a node signs every
    answer with the same one)."""
    return key_id(public_key)


def open_envelope(
    envelope: exchange_pb2.Envelope,
    expected_type: str,
    keys: Mapping[str, nacl.signing.VerifyKey],
) -> str:
    """Check the type and that one signature verifies with one of ``keys``; its key id.

    ``keys`` maps key id to verify key: the keys the signer is allowed to use.
    A signature by any other key, or one that does not verify, is an error; so
    is an envelope with no signature that counts.
    """
    if envelope.payload_type != expected_type:
        raise EnvelopeError(
            f"payload type {envelope.payload_type!r} where {expected_type!r} was expected"
        )
    if not envelope.signatures:
        raise EnvelopeError("the envelope carries no signature")
    message = pae(envelope.payload_type, envelope.payload)
    foreign: list[str] = []
    for signature in envelope.signatures:
        verify_key = keys.get(signature.key_id)
        if verify_key is None:
            foreign.append(signature.key_id[:16] or "(empty)")
            continue
        try:
            verify_key.verify(message, signature.sig)
        except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
            raise EnvelopeError(
                f"the signature by key {signature.key_id[:16]}… does not verify: the message "
                "was altered or signed with another key"
            ) from None
        return signature.key_id
    raise EnvelopeError(
        f"signed by key(s) {', '.join(foreign)} that the memorandum does not list for the "
        "expected signer"
    )

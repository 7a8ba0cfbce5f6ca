"""Sealed requests: a signed request readable by the addressed member only.

A requester cannot tell from TLS alone that the server it reached is the member
it addresses: the client side of gRPC checks the certificate chain and the name,
but it cannot consult the federation's revocation list or the memorandum's pins,
and a certificate wrongly issued (a wildcard, another member's name) or revoked
still completes the handshake. So the request carries its own confidentiality:
the signed :class:`Envelope` is encrypted (libsodium ``secretbox``, XSalsa20-
Poly1305) under a fresh content key, and the content key is sealed (``crypto_box_seal``)
to each Ed25519 key the memorandum lists for the addressee, converted to X25519.
Only the holder of such a key — the member the memorandum names — can open it;
an impostor with any certificate sees ciphertext, and its refusal, unsigned by
that key, is never taken for the provider's (``client``).

The sealed key names the memorandum key it is sealed to, so a member rotating
its key (both listed) can open requests sealed to either while the rotation
lasts. Sealing costs the requester one X25519 operation per listed key and the
provider one, a fraction of the signature checks of the same call.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import nacl.exceptions
import nacl.public
import nacl.secret
import nacl.signing
import nacl.utils
from google.protobuf.message import DecodeError

from creditexchange.errors import EnvelopeError
from creditexchange.policy.trust import key_id
from creditexchange.v1 import exchange_pb2

__all__ = ["Opener", "seal_request"]


@functools.lru_cache(maxsize=256)
def _recipient(public_key: bytes) -> nacl.public.SealedBox[nacl.public.PublicKey]:
    """The sealed box to an Ed25519 public key, as X25519 (cached: the memorandum's keys)."""
    verify_key = nacl.signing.VerifyKey(public_key)
    return nacl.public.SealedBox(verify_key.to_curve25519_public_key())


def seal_request(
    envelope: exchange_pb2.Envelope, recipients: Mapping[str, nacl.signing.VerifyKey]
) -> exchange_pb2.SealedRequest:
    """``envelope`` encrypted for the holders of ``recipients`` (key id -> memorandum key)."""
    if not recipients:
        raise EnvelopeError(
            "the memorandum lists no key for the addressee: a request cannot be sealed to it"
        )
    content_key = nacl.utils.random(nacl.secret.SecretBox.KEY_SIZE)
    ciphertext = nacl.secret.SecretBox(content_key).encrypt(envelope.SerializeToString())
    return exchange_pb2.SealedRequest(
        recipients=[
            exchange_pb2.SealedKey(
                key_id=kid, sealed_key=_recipient(bytes(key)).encrypt(content_key)
            )
            for kid, key in recipients.items()
        ],
        ciphertext=bytes(ciphertext),
    )


class Opener:
    """Opens the requests sealed to this node's signing key."""

    def __init__(self, signing_key: nacl.signing.SigningKey) -> None:
        self.key_id = key_id(bytes(signing_key.verify_key))
        self._box = nacl.public.SealedBox(signing_key.to_curve25519_private_key())

    def open(self, sealed: exchange_pb2.SealedRequest) -> exchange_pb2.Envelope:
        """The signed envelope inside; :class:`EnvelopeError` saying why it cannot be had."""
        mine = [r for r in sealed.recipients if r.key_id == self.key_id]
        if not mine:
            if not sealed.recipients:
                raise EnvelopeError(
                    "the request is not sealed: seal it to the provider's memorandum key"
                )
            named = ", ".join(r.key_id[:16] or "(empty)" for r in sealed.recipients[:4])
            raise EnvelopeError(
                f"the request is sealed to key(s) {named}, not to this node's key "
                f"{self.key_id[:16]}…: seal it to the key the memorandum lists for the provider"
            )
        try:
            content_key = self._box.decrypt(mine[0].sealed_key)
            plain = nacl.secret.SecretBox(content_key).decrypt(sealed.ciphertext)
        except (nacl.exceptions.CryptoError, ValueError, TypeError):
            raise EnvelopeError(
                "the sealed request does not decrypt with this node's key: it was altered "
                "or sealed wrongly"
            ) from None
        envelope = exchange_pb2.Envelope()
        try:
            envelope.ParseFromString(plain)
        except DecodeError:
            raise EnvelopeError("the sealed request does not hold an envelope") from None
        return envelope

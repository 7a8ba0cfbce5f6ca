"""The federation PKI: one CA, one certificate per member node, a signed revocation list.

``authority`` is the CA operator's side (create the CA, issue, revoke, publish
the CRL), ``identity`` how a member id is written into a certificate and read
back from a peer's, ``revocation`` how a node trusts the CRL and picks up a new
one, and ``credentials`` a node's own key and certificate checked together.
Its errors are the ``CertificateError`` branch of ``creditexchange.errors``.
"""

from __future__ import annotations

__all__: list[str] = []

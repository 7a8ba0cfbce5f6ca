"""The PKI's exception tree, in one place.

Every error says what was expected, what was found and, where it helps, what to
do. They derive from :class:`node.errors.NodeError`, so the command line reports
them like any other node error (message on stderr, exit status 2).

    CertificateError
    ├── AuthorityError          the CA folder is missing, incomplete or would be
    │                           overwritten; an unknown serial; a bad argument
    ├── InvalidMemberId         a member id that is not ``^[a-z][a-z0-9-]{1,31}$``
    ├── RevocationListError     a CRL that cannot be read, is not signed by the
    │                           federation CA, or would roll back a newer one
    ├── PeerIdentityError       a peer certificate that does not name exactly one member
    └── CredentialsError        this node's own key / certificate / CA files do not fit
"""

from __future__ import annotations

from creditexchange.node.errors import NodeError


class CertificateError(NodeError):
    """Base of every error of the federation PKI."""


class AuthorityError(CertificateError):
    pass


class InvalidMemberId(CertificateError):
    pass


class RevocationListError(CertificateError):
    pass


class PeerIdentityError(CertificateError):
    pass


class CredentialsError(CertificateError):
    pass

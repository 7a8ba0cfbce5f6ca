"""The project's one exception tree, with its one root.

Every error says what was expected, what was found and, where it helps, what to
do. The command line catches :class:`CreditExchangeError` alone and turns it into
a message and an exit status (``creditexchange.node.cli.common``); a provider
turns one into a gRPC status (``creditexchange.node.exchange.protocol``). Nothing
catches these to carry on as if all were well. Errors about a bad value (an
identifier, a signed note, a proof) are also ``ValueError``\\ s.

A message quotes text read from a file (a column name, a cell, a key) only as
:func:`excerpt` shows it: short, quoted, control characters visible. Whatever a
file holds — a key pointed to by a link, binary garbage — an error shows at
most a few dozen characters of it.

    CreditExchangeError
    ├── ConfigError              a node setting is missing or wrong (names the setting)
    │   └── InsecurePermissions  a home file or folder other users can reach (the chmod)
    ├── NotFound                 a subject or record that is not in the store
    ├── InvalidIdentifier        an identifier fails its standard (what and where)
    ├── PublicityViolation       a stated publicity end outside its theme's rule
    ├── CatalogError             the catalog file is invalid, or a theme is unknown
    ├── DatabaseError            the database cannot be opened or is at the wrong schema
    ├── ImportFileError          an import file cannot be read at all (encoding, format)
    ├── ObjectionError           an objection that cannot be opened, noted or closed
    ├── RepairError              a credit repair refused (what blocks it, when it can be)
    ├── LedgerError              the audit ledger cannot do what was asked
    │   └── ConcurrentWriter     another process advanced the log; nothing was written
    ├── NoteError                a signed note or checkpoint malformed or not verifying
    ├── ProofError               a Merkle proof that does not verify
    ├── PolicyError              a memorandum that cannot be loaded, verified or installed
    │   ├── CanonicalizationError   a value with no RFC 8785 canonical form
    │   ├── CorpusError          a decision test corpus that cannot be read
    │   ├── MemorandumExpired    the installed memorandum has expired (fail closed)
    │   └── MemorandumRefused    an offered memorandum failed the update rules
    ├── CertificateError         the federation PKI
    │   ├── AuthorityError       the CA folder is missing, incomplete or would be
    │   │                        overwritten; an unknown serial; a bad argument
    │   ├── InvalidMemberId      a member id that is not ``^[a-z][a-z0-9-]{1,31}$``
    │   ├── RevocationListError  a CRL that cannot be read, is not signed by the CA,
    │   │   │                    or would roll back a newer one
    │   │   ├── CertificateRevoked     the certificate is on the revocation list
    │   │   └── RevocationListExpired  the list in force is past its next_update
    │   ├── PeerIdentityError    a peer certificate that does not name exactly one member
    │   └── CredentialsError     this node's own key / certificate / CA files do not fit
    ├── ExchangeError            a cross-city call between members
    │   ├── EnvelopeError        an envelope malformed, or its signature not verifying
    │   ├── Refused              a provider refuses a call (its status, message, reason)
    │   ├── QueryRefused         the asked provider refused (its status and message)
    │   └── AnswerRejected       an answer that did not verify; it must not be used
    ├── ReportError              a consolidated report that cannot be built, read or rendered
    ├── AccessError              a REST gateway key: unknown, revoked, or used beyond its
    │                            registration (a purpose, a subject type, a role)
    ├── ScreeningError           a measures catalog that cannot be loaded, or a screening or
    │   │                        its feedback that cannot be made as asked
    │   ├── UnknownScene         a scene the measures catalog does not list
    │   ├── UnknownScreening     no screening has that id
    │   ├── NotYourScreening     the screening was made by another partner system
    │   └── UnscreenedFeedback   feedback on a subject or measure the screening did not find
    ├── ApiProblem               a REST gateway refusal, answered as an RFC 9457 problem
    │                            document (its HTTP status, type, title and detail)
    └── FederationSetupError     provisioning or starting a local federation failed
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

__all__ = [
    "EXCERPT_CHARS",
    "AccessError",
    "AnswerRejected",
    "ApiProblem",
    "AuthorityError",
    "CanonicalizationError",
    "CatalogError",
    "CertificateError",
    "CertificateRevoked",
    "ConcurrentWriter",
    "ConfigError",
    "CorpusError",
    "CredentialsError",
    "CreditExchangeError",
    "DatabaseError",
    "EnvelopeError",
    "ExchangeError",
    "FederationSetupError",
    "ImportFileError",
    "InsecurePermissions",
    "InvalidIdentifier",
    "InvalidMemberId",
    "LedgerError",
    "MemorandumExpired",
    "MemorandumRefused",
    "NotFound",
    "NotYourScreening",
    "NoteError",
    "ObjectionError",
    "PeerIdentityError",
    "PolicyError",
    "ProofError",
    "PublicityViolation",
    "QueryRefused",
    "Refused",
    "RepairError",
    "ReportError",
    "RevocationListError",
    "RevocationListExpired",
    "ScreeningError",
    "UnknownScene",
    "UnknownScreening",
    "UnscreenedFeedback",
    "describe_validation_error",
    "excerpt",
]


class CreditExchangeError(Exception):
    """Base of every error the project reports to an operator, a peer or a program."""


class ConfigError(CreditExchangeError):
    pass


class InsecurePermissions(ConfigError):
    """A node home, or a file or folder in it, that other users can read or write.

    The node holds personal data and secrets; like ssh with a private key, it
    refuses to run until the message's ``chmod`` has been done.
    """


class NotFound(CreditExchangeError):
    pass


class InvalidIdentifier(CreditExchangeError, ValueError):
    """An identifier that fails its standard; the message says what and where."""


class PublicityViolation(CreditExchangeError, ValueError):
    """A stated publicity end outside the rule's bounds."""


class CatalogError(CreditExchangeError):
    pass


class DatabaseError(CreditExchangeError):
    pass


class ImportFileError(CreditExchangeError):
    """A file the importer cannot read at all: wrong encoding, no header, bad format."""


class ObjectionError(CreditExchangeError):
    """An objection that cannot be opened, noted or closed as asked; says why."""


class RepairError(CreditExchangeError):
    """A credit repair refused: what blocks it and, where it will pass, from when."""


class LedgerError(CreditExchangeError):
    """The ledger cannot do what was asked; the message says why."""


class ConcurrentWriter(LedgerError):
    """Another process advanced the log under this one; nothing was written.

    The log forgets its frontier when it raises this, so the next commit starts
    from the real head; the appender retries the batch once.
    """


class NoteError(CreditExchangeError, ValueError):
    """A note, key string or checkpoint that is malformed or does not verify."""


class ProofError(CreditExchangeError, ValueError):
    """A proof, or the claim it is checked against, did not verify; the message says why."""


class PolicyError(CreditExchangeError):
    """A memorandum that cannot be loaded, verified or installed; says what and where."""


class CanonicalizationError(PolicyError, ValueError):
    """A value that has no RFC 8785 canonical form here; the message says where."""


class CorpusError(PolicyError):
    """A corpus that cannot be read; says which case and which key."""


class MemorandumExpired(PolicyError):
    """The installed memorandum has expired: cross-city answers stop (fail closed)."""

    def __init__(self, version: int, expires: dt.datetime) -> None:
        shown = expires.isoformat()
        if shown.endswith("+00:00"):
            shown = shown[:-6] + "Z"
        super().__init__(
            f"memorandum version {version} expired on {shown}; "
            "cross-city answers stop until a new version is installed "
            "(credit-node policy install FILE)"
        )
        self.version = version
        self.expires = expires


class MemorandumRefused(PolicyError):
    """An offered memorandum failed the update rules; ``rules`` names which.

    Rule names: ``own-signatures`` (rule 1), ``installed-signatures``,
    ``version``, ``federation`` (rule 2), ``expired`` (rule 3), and
    ``already-installed`` (the installed content offered again).
    """

    def __init__(self, message: str, rules: tuple[str, ...], version: int) -> None:
        super().__init__(message)
        self.rules = rules
        self.version = version


class CertificateError(CreditExchangeError):
    """Base of every error of the federation PKI."""


class AuthorityError(CertificateError):
    pass


class InvalidMemberId(CertificateError):
    pass


class RevocationListError(CertificateError):
    pass


class CertificateRevoked(RevocationListError):
    """The peer's certificate is on the federation's revocation list."""


class RevocationListExpired(RevocationListError):
    """The list in force is past its next_update: the CA must publish a new one."""


class PeerIdentityError(CertificateError):
    pass


class CredentialsError(CertificateError):
    pass


class ExchangeError(CreditExchangeError):
    """Base of the errors of cross-city calls."""


class EnvelopeError(ExchangeError):
    """An envelope is malformed or its signature does not verify; the message says which."""


class Refused(ExchangeError):
    """A provider refuses a call with ``status`` (a gRPC status name) and ``message``.

    ``reason`` labels the refusal in metrics (``signature``, ``replay``, ``policy``…).
    A refusal travels to the caller in a trailer, so its message is bounded.
    """

    MAX_MESSAGE_CHARS = 1000

    def __init__(self, status: str, message: str, reason: str) -> None:
        if len(message) > self.MAX_MESSAGE_CHARS:  # a trailer holds 16 KiB at most
            message = message[: self.MAX_MESSAGE_CHARS - 1] + "…"
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason


class QueryRefused(ExchangeError):
    """The call was refused; ``status`` is the gRPC status name. ``verified``: the
    refusal was signed by the provider (and ``leaf_index`` is its audit entry);
    otherwise nothing shows that the provider, rather than an impostor or the
    network, said it."""

    def __init__(
        self,
        provider: str,
        status: str,
        message: str,
        leaf_index: int | None,
        *,
        verified: bool = True,
    ) -> None:
        if verified:
            where = f" (its audit entry {leaf_index})" if leaf_index is not None else ""
            text = f"{provider} refused the query{where}: {status}: {message}"
        else:
            text = (
                f"the call to {provider} failed: {status}: {message} (unverified: no refusal "
                f"signed by {provider} came with it)"
            )
        super().__init__(text)
        self.provider = provider
        self.status = status
        self.detail = message
        self.leaf_index = leaf_index if verified else None
        self.verified = verified


class AnswerRejected(ExchangeError):
    """The answer did not verify; it must not be used."""


class ReportError(CreditExchangeError):
    """A consolidated report that cannot be built, read or rendered; says what to do."""


class AccessError(CreditExchangeError):
    pass


class ScreeningError(CreditExchangeError):
    pass


class UnknownScene(ScreeningError):
    """The scene named is not in the measures catalog."""


class UnknownScreening(ScreeningError):
    """No screening has this id."""


class NotYourScreening(ScreeningError):
    """The screening was made by another partner system."""


class UnscreenedFeedback(ScreeningError):
    """Feedback on a subject the screening did not name, or on a measure it did not find."""


class ApiProblem(CreditExchangeError):
    """A refusal of the REST gateway: ``status`` (HTTP), ``slug`` (its problem type),
    ``title``, ``detail`` (what was wrong, what to do), response ``headers`` and
    ``extra`` members of the problem document."""

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = extra


class FederationSetupError(CreditExchangeError):
    """Provisioning or starting a federation on this machine failed; says what to do."""


def _location(loc: tuple[int | str, ...], data: Any) -> str:
    """``themes[3](admin_penalty).fields[2](fine_amount).type``: list items named by code."""
    parts: list[str] = []
    node = data
    for item in loc:
        if isinstance(item, int) and not isinstance(item, bool) and parts:
            name = None
            if isinstance(node, list) and isinstance(node[item], dict):
                name = next(
                    (
                        node[item][k]
                        for k in ("code", "id", "name")
                        if isinstance(node[item].get(k), str)
                    ),
                    None,
                )
            parts[-1] += f"[{item}]" + (f"({name})" if name else "")
        else:
            parts.append(str(item))
        try:
            node = node[item]
        except (KeyError, IndexError, TypeError):
            node = None
    return ".".join(parts)


def describe_validation_error(exc: ValidationError, data: Any) -> str:
    """Every problem of a refused document (catalog, memorandum, corpus), each with its
    exact place, in one line."""
    return "; ".join(
        (f"{_location(tuple(e['loc']), data)}: " if e["loc"] else "")
        + e["msg"].removeprefix("Value error, ")
        for e in exc.errors()
    )


EXCERPT_CHARS = 40
"""How many characters of a file's text an error message shows at most."""


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """``text`` as an error may quote it: in quotes, at most ``limit`` characters shown.

    Control and other non-printable characters (newlines, NUL, escape sequences,
    bidirectional overrides) appear escaped as in ``repr`` (``\\n``, ``\\x1b``,
    ``\\u202e``), counted as the characters they take; a longer text is cut, marked
    with ``…``. Only the first ``limit`` characters of ``text`` are ever looked at.
    """
    shown: list[str] = []
    used = 0
    for char in text[:limit]:
        if char == "'" or char == "\\":
            escaped = "\\" + char
        elif char.isprintable():
            escaped = char
        else:
            escaped = char.encode("unicode_escape").decode("ascii")
        if used + len(escaped) > limit:
            return "'" + "".join(shown) + "'…"
        shown.append(escaped)
        used += len(escaped)
    return "'" + "".join(shown) + ("'…" if len(text) > limit else "'")

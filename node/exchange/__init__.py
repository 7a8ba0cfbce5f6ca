"""Cross-city queries between members: signed gRPC calls over mutual TLS.

``protocol`` is what both sides agree on (methods, payload types, trailers, the
audit entry of a call, statuses); ``envelope`` the DSSE signatures; the provider
side is ``checks`` → ``deciding`` → ``answers``, run by ``provider`` and served
by ``server``, with ``replay``, ``quotas``, ``readers``, ``federation`` (the
installed memorandum) and ``metrics``; the requester side is ``client``.
"""

from __future__ import annotations

__all__: list[str] = []

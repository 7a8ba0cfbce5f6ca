"""A member's REST gateway, served for real (uvicorn on a loopback port) beside its
running node in a :class:`fedharness.Federation`, and keys to call it with.

    gw = GatewayHarness(fed, "huizhou")
    key = gw.partner("land-centre", ["land_auction"])
    httpx.get(gw.url + "/v1/...", headers=gw.headers(key))
    gw.close()
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fedharness import Federation
from prometheus_client import CollectorRegistry

from creditexchange.gateway.access import KeyRegistry, Role
from creditexchange.gateway.context import Gateway, GatewayLimits
from creditexchange.gateway.metrics import GatewayMetrics
from creditexchange.gateway.server import GatewayServer
from creditexchange.node.app.wiring import open_audit_log, open_regional_client
from creditexchange.node.database import open_database


class GatewayHarness:
    def __init__(
        self, fed: Federation, member: str, *, limits: GatewayLimits | None = None
    ) -> None:
        self.fed = fed
        self.member = member
        config = fed.nodes[member].config
        server = fed.servers[member]
        self.database = open_database(config.database_url)
        self.region = open_regional_client(config, ledger=server.ledger, database=self.database)
        fed.run(self.region.__aenter__())
        self.keys = KeyRegistry(self.database)
        self.gateway = Gateway(
            config=config,
            region=self.region,
            database=self.database,
            ledger=server.ledger,
            log=open_audit_log(config, self.database),
            keys=self.keys,
            metrics=GatewayMetrics(CollectorRegistry()),
            limits=limits or GatewayLimits(),
        )
        self.server = GatewayServer(self.gateway, host="127.0.0.1", port=0)
        fed.run(self.server.__aenter__())
        self.url = self.server.url

    def partner(
        self,
        name: str,
        purposes: Sequence[str],
        *,
        subject_types: Sequence[str] = (),
        rate_per_min: int = 100_000,
    ) -> str:
        """Register a partner system; its key."""
        known = list(self.region.federation.memorandum.purpose_by_code)
        _, key = self.keys.add(
            name,
            Role.PARTNER,
            purposes=purposes,
            known_purposes=known,
            subject_types=subject_types,
            rate_per_min=rate_per_min,
        )
        return key

    def auditor(self, name: str, *, rate_per_min: int = 100_000) -> str:
        _, key = self.keys.add(name, Role.AUDITOR, rate_per_min=rate_per_min)
        return key

    @staticmethod
    def headers(key: str, officer: str = "officer-9", **more: str) -> dict[str, Any]:
        return {"Authorization": f"Bearer {key}", "X-Officer": officer, **more}

    def close(self) -> None:
        self.fed.run(self.server.__aexit__(None, None, None))
        self.fed.run(self.region.__aexit__(None, None, None))
        self.database.dispose()

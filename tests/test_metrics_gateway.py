"""The gateway run alone (``credit-node gateway``, the node serving elsewhere on the same
database) serves its own metrics: the gateway's, and the circuit of every member its
reports ask, as the partners' fan-outs left them.

shenzhen's gateway runs in a process of its own beside a real two-member federation on
loopback; a partner asks it for reports while huizhou answers, then while huizhou is
down, and the gateway's /metrics is scraped over HTTP. (A gateway served beside its node,
``credit-node serve``, exports the same gauge on the node's endpoint:
tests/test_deploy_monitoring.py.)
"""

from __future__ import annotations

import socket
import time
import urllib.request
from collections.abc import Iterator

import httpx
import pytest
from fedharness import Federation
from ports import free_ports
from prometheus_client.parser import text_string_to_metric_families
from synchelpers import cli_process, stop

from creditexchange.devtools.provision import set_settings
from creditexchange.devtools.sample import showcase_subject
from creditexchange.gateway.access import KeyRegistry, Role
from creditexchange.node.app.wiring import federation_view
from creditexchange.node.database import open_database

pytestmark = pytest.mark.slow

GATEWAY, ASKED = "shenzhen", "huizhou"
REPORT = {"purpose": "public_procurement", "legal_basis": "政府采购法第二十二条", "case": "CG-9"}


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _circuits(metrics_port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    assert "credit_gateway_requests_total{" in text  # the gateway's own metrics, same endpoint
    return {
        sample.labels["member"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "credit_node_member_circuit"
    }


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Federation, str, int, int]]:
    """The federation, a partner's key and the standalone gateway's HTTP and metrics ports."""
    fed = Federation(tmp_path_factory.mktemp("gateway-metrics"), (ASKED, GATEWAY), {}, subjects=5)
    process = None
    try:
        node = fed.nodes[GATEWAY]
        gateway_port, metrics_port = free_ports(2)
        set_settings(node.home, gateway_port=gateway_port, metrics_port=metrics_port)
        database = open_database(node.config.database_url)
        try:
            purposes = federation_view(node.config).current().memorandum.purpose_by_code
            _, key = KeyRegistry(database).add(
                "tender-centre",
                Role.PARTNER,
                purposes=[REPORT["purpose"]],
                known_purposes=list(purposes),
            )
        finally:
            database.dispose()
        process = cli_process("gateway", "--home", str(node.home), "--log-level", "WARNING")
        deadline = time.monotonic() + 60
        while not (_listening(gateway_port) and _listening(metrics_port)):
            assert process.is_alive(), f"credit-node gateway exited ({process.exitcode})"
            assert time.monotonic() < deadline, "credit-node gateway did not listen in 60 s"
            time.sleep(0.05)
        yield fed, key, gateway_port, metrics_port
    finally:
        if process is not None:
            stop(process)
        fed.close()


def test_the_gateway_alone_exports_the_circuits_of_the_members_its_reports_ask(
    region: tuple[Federation, str, int, int],
) -> None:
    fed, key, gateway_port, metrics_port = region
    subject = showcase_subject(ASKED, 2026)
    headers = {"Authorization": f"Bearer {key}", "X-Officer": "officer-3"}

    def report() -> str:
        with httpx.Client(base_url=f"http://127.0.0.1:{gateway_port}", timeout=30) as http:
            response = http.get(f"/v1/subjects/{subject}/report", params=REPORT, headers=headers)
        assert response.status_code == 200, response.text
        (asked,) = [m for m in response.json()["members"] if m["member"] == ASKED]
        status: str = asked["status"]
        return status

    assert report() == "answered"
    assert _circuits(metrics_port) == {ASKED: 0.0}
    fed.stop(ASKED)
    assert [report() for _ in range(4)] == ["unavailable"] * 3 + ["skipped"]
    assert _circuits(metrics_port) == {ASKED: 2.0}

"""The gateway's OpenAPI description, run as a property: for every operation it
describes, generated requests (valid and invalid) sent to the live gateway over real
HTTP, beside a real federation on loopback, never get a 5xx, and every answer conforms
to the description (its status, media type, schema and headers).

The description is read from the running server's ``/openapi.json``, so every route
that is in the application when the test runs is covered, whoever wrote it. Calls carry
a valid key and officer: an auditor's key on the auditors' routes, a partner's key
(registered for every purpose of the memorandum) on the others, so generated input
reaches the routes' own code instead of stopping at authentication. The run is
derandomised (the same cases every time) and bounded per operation.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from fedharness import Federation
from gatewayharness import GatewayHarness
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.slow

MEMBERS = ("huizhou", "shenzhen", "dongguan")
EXAMPLES = 25
"""Generated cases per operation and mode (valid, then invalid input)."""
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


class Live:
    """shenzhen's gateway, served for real, with a partner's and an auditor's key."""

    def __init__(self, root: Path) -> None:
        self.fed = Federation(root, MEMBERS, {}, subjects=10)
        self.gw = GatewayHarness(self.fed, "shenzhen")
        purposes = list(self.gw.region.federation.memorandum.purpose_by_code)
        self.partner = self.gw.partner("fuzz-partner", purposes)
        self.auditor = self.gw.auditor("fuzz-auditor")

    def headers(self, path: str) -> dict[str, Any]:
        key = self.auditor if path.startswith("/v1/audit") else self.partner
        return self.gw.headers(key, officer="fuzz-officer-1")

    def close(self) -> None:
        self.gw.close()
        self.fed.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    running = Live(tmp_path_factory.mktemp("gateway-openapi"))
    try:
        yield running
    finally:
        running.close()


def test_the_description_covers_the_partner_routes_in_both_languages(live: Live) -> None:
    described = httpx.get(live.gw.url + "/openapi.json", timeout=10).json()
    paths = described["paths"]
    for path, method in (
        ("/v1/subjects/{id}/report", "get"),
        ("/v1/subjects/{id}", "get"),
        ("/v1/checks", "post"),
        ("/v1/reports/verify", "post"),
    ):
        operation = paths[path][method]
        assert operation["tags"] == ["partners"]
        text = operation["description"]
        assert any("\u4e00" <= c <= "\u9fff" for c in text) and "the" in text
        assert {"200", "401", "403", "422", "429"} <= set(operation["responses"])
        problem = operation["responses"]["403"]["content"]
        assert list(problem) == ["application/problem+json"]
    models = described["components"]["schemas"]
    for name in ("Report", "OwnRecords", "CheckRequest", "CheckResult", "Verification"):
        assert models[name].get("examples"), name
        for field in models[name]["properties"].values():
            assert field.get("description") or "$ref" in field or "allOf" in field, name


def test_no_generated_request_gets_a_server_error_or_an_undescribed_answer(
    live: Live,
) -> None:
    gateway = schemathesis.openapi.from_url(live.gw.url + "/openapi.json")
    operations = []
    for result in gateway.get_all_operations():
        assert isinstance(result, Ok), f"the description has an invalid operation: {result}"
        operations.append(result.ok())
    assert len(operations) >= 4
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES,
                derandomize=True,
                deadline=None,
                database=None,
                phases=[Phase.explicit, Phase.generate],  # a failure is reported, not shrunk
                suppress_health_check=list(HealthCheck),
            )
            def sent(case: schemathesis.Case[Any]) -> None:
                response = case.call(headers=live.headers(case.operation.path), timeout=30)
                statuses[response.status_code] += 1
                case.validate_response(response, checks=CHECKS)

            try:
                sent()
            except (Exception, BaseExceptionGroup) as exc:  # run all; show every failure
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    print(f"{len(operations)} operations, {sum(statuses.values())} calls: {dict(statuses)}")
    assert not failures, "\n\n".join(failures)
    assert not [s for s in statuses if s >= 500], statuses
    assert statuses[200] > 0 and sum(statuses.values()) >= len(operations) * EXAMPLES

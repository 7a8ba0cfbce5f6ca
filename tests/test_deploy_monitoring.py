"""The monitoring files in deploy/monitoring/ hold up: the alert rules and the scrape
configuration pass promtool, every alert has unit tests that show it firing and staying
silent, the Grafana dashboard is well formed, and every metric and label the alerts and
the dashboard use is one a real serving node exports on its /metrics endpoint.

The last check starts a real three-member federation on loopback (SQLite stores), drives
every kind of series the files use (an answered and a refused query, witness rounds, a
rolled-back peer ledger, a fan-out, feed sync) and scrapes huizhou's /metrics over HTTP.
A metric is taken as exported only when the exposition holds samples of that exact series
name (``credit_node_query_seconds_bucket``, not only its family), so its labels can be
compared too. The one exception, :data:`DECLARED_ONLY`, is a series this federation cannot
produce without an impostor: it must be declared on /metrics (``# TYPE``), and its label
names are read from the node's own registry.

promtool comes from Prometheus (Debian: ``apt-get install prometheus``). Locally a missing
promtool skips those tests; in CI (CI=true) it fails them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from fedharness import Federation
from ports import free_ports
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from creditexchange.devtools.sample import showcase_subject
from creditexchange.errors import CreditExchangeError, QueryRefused
from creditexchange.node.app.wiring import open_regional_client
from creditexchange.node.federation.report import consolidated_report

MONITORING = Path(__file__).resolve().parent.parent / "deploy" / "monitoring"
ALERTS = MONITORING / "alerts.yml"
ALERTS_TEST = MONITORING / "alerts_test.yml"
PROMETHEUS = MONITORING / "prometheus.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"

SCRAPED = "huizhou"  # the node whose /metrics is read
MEMBERS = (SCRAPED, "shenzhen", "customs")  # customs publishes the feeds huizhou syncs
ROLLED_BACK = "shenzhen"
PROCUREMENT = {
    "purpose": "public_procurement",
    "legal_basis": "政府采购法第二十二条",
    "case_reference": "CG-2026-0001",
    "officer": "officer-7",
}
IN_CI = os.environ.get("CI") == "true"
DECLARED_ONLY = {
    # a refused feed batch needs an impostor publisher (tests/test_sync_faults.py)
    "credit_node_sync_alarms_total": ("credit_node_sync_alarms", "counter"),
}


# --- promtool ---------------------------------------------------------------------------


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool in deploy/monitoring/; skipped when it is missing (fatal in CI)."""
    found = shutil.which("promtool")
    if found is None:
        message = "promtool is not installed (Debian: apt-get install prometheus)"
        if IN_CI:
            pytest.fail(f"{message}; CI must have it", pytrace=False)
        pytest.skip(message)
    return subprocess.run(
        [found, *args], cwd=MONITORING, capture_output=True, text=True, check=False, timeout=120
    )


def test_the_alert_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", ALERTS.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_fires_and_stays_silent_as_its_unit_tests_say() -> None:
    result = promtool("test", "rules", ALERTS_TEST.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_scrape_configuration_passes_promtool_check() -> None:
    result = promtool("check", "config", PROMETHEUS.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_dashboard_expression_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each panel's query, as a recording rule (Grafana's own variables
    replaced by values Prometheus understands)."""
    rules = [
        {"record": f"dashboard:panel_{panel['id']}:{target['refId'].lower()}", "expr": expr}
        for panel, target in dashboard_targets()
        for expr in [as_promql(target["expr"])]
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


# --- the alert rules as an operator reads them -----------------------------------------


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_every_alert_says_how_long_how_bad_and_what_to_do() -> None:
    rules = alert_rules()
    assert rules
    for rule in rules:
        name = rule["alert"]
        assert "for" in rule, f"{name} has no for:"
        assert rule.get("labels", {}).get("severity") in {"critical", "warning"}, name
        annotations = rule.get("annotations", {})
        assert annotations.get("summary", "").strip(), f"{name} has no summary"
        assert len(annotations.get("description", "")) > 80, f"{name}: describe what to do"


def test_every_alert_has_a_case_that_fires_and_one_that_does_not() -> None:
    cases = [
        case
        for test in yaml.safe_load(ALERTS_TEST.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    for rule in alert_rules():
        name = rule["alert"]
        outcomes = [bool(c.get("exp_alerts")) for c in cases if c["alertname"] == name]
        assert True in outcomes, f"no test shows {name} firing"
        assert False in outcomes, f"no test shows {name} staying silent"


# --- the dashboard ----------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def panels() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for panel in dashboard()["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))  # inside a collapsed row
    return found


def dashboard_targets() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(p, t) for p in panels() for t in p.get("targets", [])]


def as_promql(expr: str) -> str:
    """A dashboard query with Grafana's variables replaced, as Prometheus receives it."""
    for variable, value in (
        ("$__rate_interval", "5m"),
        ("$__interval", "1m"),
        ("$__range", "6h"),
        ("$member", ".*"),
    ):
        expr = expr.replace(variable, value)
    return expr


def test_the_dashboard_panels_each_have_a_title_a_query_and_their_own_id() -> None:
    board = dashboard()
    assert 38 <= board["schemaVersion"] <= 41
    assert [i["name"] for i in board["__inputs"]] == ["DS_PROMETHEUS"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["member"]["type"] == "query"
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids)), f"panel ids repeat: {sorted(ids)}"
    for panel in panels():
        assert panel.get("title", "").strip(), f"panel {panel['id']} has no title"
        exprs = [t.get("expr", "") for t in panel.get("targets", [])]
        assert exprs and all(e.strip() for e in exprs), f"{panel['title']}: no query"
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert all("$member" in e for e in exprs), f"{panel['title']}: not filtered by member"


# --- every metric and label used is one a node exports ----------------------------------

_NAME = re.compile(r"\b(credit_[a-z0-9_]+|up)\b\s*(\{[^{}]*\})?")
_MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_BY = re.compile(r"\bby\s*\(([^)]*)\)")
_TEMPLATE_LABEL = re.compile(r"\$labels\.([A-Za-z_][A-Za-z0-9_]*)")
_LEGEND_LABEL = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


@dataclass(frozen=True)
class Use:
    """One PromQL expression of a monitoring file, with the labels its text shows."""

    where: str
    expr: str
    shown: frozenset[str] = frozenset()  # labels an annotation or legend reads


def _names(labels: str) -> set[str]:
    return {n.strip() for n in labels.split(",") if n.strip()}


def problems_of(use: Use, exported: dict[str, set[str]], target_labels: set[str]) -> list[str]:
    """What in ``use`` the exposition does not hold: a series name with no samples, a
    selector, grouping or shown label that no series it names carries."""
    found: list[str] = []
    carried: set[str] = set(target_labels)
    for name, selector in _NAME.findall(use.expr):
        labels = exported.get(name) if name != "up" else set()
        if labels is None:
            found.append(f"{use.where}: {name} is not on a node's /metrics")
            continue
        carried |= labels
        for label in _MATCHER.findall(selector or ""):
            if label not in labels | target_labels:
                found.append(f"{use.where}: {name} has no label {label!r}")
    for group in _GROUPING.findall(use.expr):
        for label in _names(group) - carried:
            found.append(f"{use.where}: no series used has the label {label!r}")
    kept = set().union(*(_names(g) for g in _BY.findall(use.expr))) or carried
    for label in use.shown - kept:
        found.append(f"{use.where}: shows {label!r}, which its result does not carry")
    return found


def target_labels() -> set[str]:
    """``job``, ``instance`` and the labels prometheus.yml gives its targets."""
    config = yaml.safe_load(PROMETHEUS.read_text())
    labels = {"job", "instance"}
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            labels |= set(static.get("labels", {}))
    return labels


def uses() -> list[Use]:
    found = [
        Use(
            f"alerts.yml {rule['alert']}",
            rule["expr"],
            frozenset(
                label
                for text in rule.get("annotations", {}).values()
                for label in _TEMPLATE_LABEL.findall(text)
            ),
        )
        for rule in alert_rules()
    ]
    found += [
        Use(
            f"dashboard panel {panel['title']!r}",
            target["expr"],
            frozenset(_LEGEND_LABEL.findall(target.get("legendFormat", ""))),
        )
        for panel, target in dashboard_targets()
    ]
    for variable in dashboard()["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query["query"])
            assert match, f"variable {variable['name']}: {query['query']}"
            found.append(Use(f"variable {variable['name']}", match[1], frozenset({match[2]})))
    return found


def exported_series(text: str) -> dict[str, set[str]]:
    """Each sample name of an exposition, with every label name its samples carry."""
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def declared_families(text: str) -> set[tuple[str, str]]:
    """Each family an exposition declares (``# TYPE``), samples or not: (name, type)."""
    return {(f.name, f.type) for f in text_string_to_metric_families(text)}


def with_declared_only(text: str, registry: CollectorRegistry) -> dict[str, set[str]]:
    """The exposition's series, and those of :data:`DECLARED_ONLY` that have no samples
    yet, with the label names the node's registry gives them."""
    series = exported_series(text)
    declared = declared_families(text)
    collectors = registry._names_to_collectors
    for name, family in DECLARED_ONLY.items():
        collector = collectors.get(name)
        if name in series or family not in declared or collector is None:
            continue
        assert isinstance(collector, MetricWrapperBase)
        series[name] = set(collector._labelnames)
    return series


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        body: bytes = response.read()
    return body.decode()


def _copy_sqlite(url: str, into: Path) -> None:
    database = Path(url.removeprefix("sqlite:///"))
    into.mkdir(parents=True, exist_ok=True)
    for path in database.parent.glob(database.name + "*"):  # the file, its -wal and -shm
        shutil.copy2(path, into / path.name)


def _restore_sqlite(url: str, copy: Path) -> None:
    database = Path(url.removeprefix("sqlite:///"))
    for path in database.parent.glob(database.name + "*"):
        path.unlink()
    for path in copy.iterdir():
        shutil.copy2(path, database.parent / path.name)


def _drive(fed: Federation) -> None:
    """Make huizhou export a sample of every series the monitoring files use."""
    subject = showcase_subject(SCRAPED, 2026)
    fed.ask("shenzhen", subject, to=SCRAPED, **PROCUREMENT)  # queries, latency, ledger
    with pytest.raises(QueryRefused):  # no rule covers the theme: a policy refusal
        fed.ask("shenzhen", subject, to=SCRAPED, themes=["customs_credit_grade"], **PROCUREMENT)

    def grow_peer() -> None:
        with contextlib.suppress(QueryRefused):
            fed.ask(SCRAPED, showcase_subject(ROLLED_BACK, 2026), to=ROLLED_BACK, **PROCUREMENT)

    witness = fed.servers[SCRAPED].witness
    grow_peer()
    fed.run(witness.round())  # rounds and sizes
    backup = fed.root / "backup"
    url = fed.nodes[ROLLED_BACK].config.database_url
    fed.stop(ROLLED_BACK)
    _copy_sqlite(url, backup)
    fed.start(ROLLED_BACK)
    grow_peer()
    grow_peer()
    fed.run(witness.round())  # huizhou cosigns the grown ledger...
    fed.stop(ROLLED_BACK)
    _restore_sqlite(url, backup)  # ...which is then restored from last night's backup
    fed.start(ROLLED_BACK)
    fed.run(witness.round())  # a rollback alarm

    async def fan_out() -> None:
        # What a regional client given the node's metrics exports (see the report).
        server = fed.servers[SCRAPED]
        config = fed.nodes[SCRAPED].config
        region = open_regional_client(config, ledger=server.ledger, metrics=server.metrics)
        async with region:
            with contextlib.suppress(CreditExchangeError):
                await consolidated_report(
                    region,
                    subject,
                    purpose=PROCUREMENT["purpose"],
                    legal_basis=PROCUREMENT["legal_basis"],
                    case_reference=PROCUREMENT["case_reference"],
                    officer=PROCUREMENT["officer"],
                )

    fed.run(fan_out())


@pytest.fixture(scope="module")
def exposition(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, set[str]]]:
    """huizhou's /metrics series, once every series the monitoring files use has samples
    (or, for :data:`DECLARED_ONLY`, is declared)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("CREDIT_NODE_SYNC_FEEDS", "true")
    mp.setenv("CREDIT_NODE_PUBLISH_INTERVAL_S", "1")
    try:
        fed = Federation(tmp_path_factory.mktemp("monitoring"), MEMBERS, {}, subjects=20)
        try:
            (port,) = free_ports(1)
            mp.setenv("CREDIT_NODE_METRICS_PORT", str(port))
            mp.setenv("CREDIT_NODE_METRICS_HOST", "127.0.0.1")
            fed.restart(SCRAPED)  # with its metrics endpoint
            mp.delenv("CREDIT_NODE_METRICS_PORT")
            _drive(fed)
            wanted = {name for use in uses() for name, _ in _NAME.findall(use.expr) if name != "up"}
            registry = fed.servers[SCRAPED].metrics.registry
            deadline = time.monotonic() + 60  # the feeds sync in the background
            while True:
                text = scrape(port)
                series = with_declared_only(text, registry)
                if wanted <= set(series) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert 'kind="rollback"' in text  # the alarm was driven, not only declared
            yield series
        finally:
            fed.close()
    finally:
        mp.undo()


@pytest.mark.slow
def test_every_metric_and_label_used_is_on_a_real_nodes_metrics(
    exposition: dict[str, set[str]],
) -> None:
    labels = target_labels()
    found = [problem for use in uses() for problem in problems_of(use, exposition, labels)]
    assert not found, "\n".join(found)


@pytest.mark.slow
def test_a_misspelt_metric_or_label_is_caught(exposition: dict[str, set[str]]) -> None:
    exported = exposition
    labels = target_labels()
    misspelt = [
        Use("metric", "rate(credit_node_querys_total[5m])"),
        Use("selector", 'credit_node_refusals_total{peer="x"}'),
        Use("grouping", "sum by (node, peer) (rate(credit_node_refusals_total[5m]))"),
        Use("histogram", "credit_node_witness_size_bucket"),
        Use("shown", "sum by (node) (credit_node_sync_lag_entries)", frozenset({"theme"})),
    ]
    for use in misspelt:
        assert problems_of(use, exported, labels), use.where
    assert not problems_of(
        Use("fine", "sum by (node, reason) (rate(credit_node_refusals_total[5m]))"),
        exported,
        labels,
    )

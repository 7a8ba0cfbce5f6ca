"""The monitoring files in deploy/monitoring/ hold up: the alert rules and the scrape
configuration pass promtool, every alert has unit tests that show it firing and staying
silent, the Grafana dashboard is well formed, and every metric and label the alerts and
the dashboard use is one a real serving node exports on its /metrics endpoint, with the
values the node really has.

The last checks start a real three-member federation on loopback (SQLite stores), drive
every kind of series the files use — an answered, a quota-counted and a refused query,
witness rounds and a rolled-back peer ledger, customs restored from a backup under its
subscribers (a rewritten feed: a sync alarm), reports through huizhou's REST gateway
while customs is down (its circuit opens) — and scrape huizhou's /metrics over HTTP. A
metric is taken as exported only when the exposition holds samples of that exact series
name (``credit_node_query_seconds_bucket``, not only its family), so its labels can be
compared too; the gauges read from the store are compared with the store itself.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fedharness import Federation
from ports import free_ports
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from synchelpers import customs_feed_log, set_statuses, wait_until

from creditexchange.devtools.sample import showcase_subject
from creditexchange.errors import QueryRefused
from creditexchange.gateway.access import Role
from creditexchange.gateway.server import GatewayServer, open_gateway
from creditexchange.node.app.wiring import federation_view, open_audit_log
from creditexchange.node.database import open_database
from creditexchange.node.database.models import RECORDS
from creditexchange.node.records.repository import RecordStatus
from creditexchange.node.sync.subscribe import Alarm, read_cursor

MONITORING = Path(__file__).resolve().parent.parent / "deploy" / "monitoring"
ALERTS = MONITORING / "alerts.yml"
ALERTS_TEST = MONITORING / "alerts_test.yml"
PROMETHEUS = MONITORING / "prometheus.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"

SCRAPED = "huizhou"  # the node whose /metrics is read
PUBLISHER = "customs"  # publishes the feeds huizhou syncs; restored from a backup, then down
MEMBERS = (SCRAPED, "shenzhen", PUBLISHER)
ROLLED_BACK = "shenzhen"
REWRITTEN = "customs_credit_grade"  # the feed customs' restore rewrites
PROCUREMENT = {
    "purpose": "public_procurement",
    "legal_basis": "政府采购法第二十二条",
    "case_reference": "CG-2026-0001",
    "officer": "officer-7",
}
BANK_CREDIT = {  # rules with a quota cover it
    "purpose": "bank_credit",
    "legal_basis": "国办发〔2021〕52号",
    "case_reference": "LOAN-2026-55",
    "officer": "officer-7",
}
REPORTS_WHILE_DOWN = 4  # three failures open a breaker; the fourth report skips the member
IN_CI = os.environ.get("CI") == "true"


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


def sample_values(text: str, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """The value of each sample named ``name`` in an exposition, by its labels."""
    return {
        frozenset(sample.labels.items()): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


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


@dataclass
class Driven:
    """What driving huizhou did that its gauges must show."""

    charged: dict[str, int] = field(default_factory=dict)  # rule id -> its quota limit
    report_statuses: list[dict[str, str]] = field(default_factory=list)  # member -> status


def _quota_limits(fed: Federation) -> dict[str, int]:
    """Rule id -> quota limit of every rule with a quota in huizhou's memorandum."""
    memorandum = federation_view(fed.nodes[SCRAPED].config).current().memorandum
    return {r.id: r.quota.limit for r in memorandum.rules if r.quota is not None}


def _rewrite_publishers_feed(fed: Federation) -> None:
    """customs withdraws a credit grade, huizhou syncs the change, then customs is restored
    from the backup taken just before and the grade is repaired instead: customs' feed now
    signs another history than the one huizhou applied, which huizhou's subscriber refuses
    with a sync alarm (kind "rewritten") the next time it follows that feed."""
    config = fed.nodes[PUBLISHER].config
    url = config.database_url
    fed.stop(PUBLISHER)
    _copy_sqlite(url, fed.root / "customs-backup")
    store = open_database(url)
    try:
        with store.connect() as conn:
            key = conn.execute(
                select(RECORDS.c.record_key)
                .where(RECORDS.c.theme == REWRITTEN)
                .order_by(RECORDS.c.record_key)
                .limit(1)
            ).scalar_one()
        before = customs_feed_log(config, store).size(REWRITTEN)
        set_statuses(store, REWRITTEN, [key], RecordStatus.EXPIRED)
    finally:
        store.dispose()
    fed.start(PUBLISHER)  # publishes the withdrawal at once
    published = open_database(url)
    subscriber = open_database(fed.nodes[SCRAPED].config.database_url)
    try:

        def synced() -> bool:
            size = customs_feed_log(config, published).size(REWRITTEN)
            return size > before and read_cursor(subscriber, PUBLISHER, REWRITTEN).size == size

        wait_until(synced, 60, f"huizhou syncing customs' {REWRITTEN} past {before} changes")
    finally:
        published.dispose()
        subscriber.dispose()
    fed.stop(PUBLISHER)
    _restore_sqlite(url, fed.root / "customs-backup")
    restored = open_database(url)
    try:
        set_statuses(restored, REWRITTEN, [key], RecordStatus.REPAIRED)
    finally:
        restored.dispose()
    fed.start(PUBLISHER)
    subscriber = open_database(fed.nodes[SCRAPED].config.database_url)
    try:  # the subscriber waits longer each time the publisher was away: give it time

        def refused() -> bool:
            return read_cursor(subscriber, PUBLISHER, REWRITTEN).stopped

        wait_until(refused, 120, f"huizhou stopping customs' rewritten {REWRITTEN} feed")
    finally:
        subscriber.dispose()


async def _reports_through_the_gateway(fed: Federation, subject: str) -> list[dict[str, str]]:
    """Consolidated reports asked of huizhou's REST gateway, opened as ``credit-node serve``
    opens it beside the node (its ledger and metrics); each report's member statuses."""
    server = fed.servers[SCRAPED]
    config = fed.nodes[SCRAPED].config
    statuses = []
    async with (
        open_gateway(config, ledger=server.ledger, metrics=server.metrics) as gateway,
        GatewayServer(gateway, host="127.0.0.1", port=0) as served,
    ):
        _, key = gateway.keys.add(
            "tender-centre",
            Role.PARTNER,
            purposes=[PROCUREMENT["purpose"]],
            known_purposes=list(gateway.region.federation.memorandum.purpose_by_code),
        )
        params = {k: PROCUREMENT[k] for k in ("purpose", "legal_basis")}
        params["case"] = PROCUREMENT["case_reference"]
        headers = {"Authorization": f"Bearer {key}", "X-Officer": PROCUREMENT["officer"]}
        async with httpx.AsyncClient(base_url=served.url, timeout=30) as http:
            for _ in range(REPORTS_WHILE_DOWN):
                response = await http.get(
                    f"/v1/subjects/{subject}/report", params=params, headers=headers
                )
                assert response.status_code == 200, response.text
                members = response.json()["members"]
                statuses.append({m["member"]: m["status"] for m in members})
    return statuses


def _drive(fed: Federation) -> Driven:
    """Make huizhou export a sample of every series the monitoring files use."""
    driven = Driven()
    subject = showcase_subject(SCRAPED, 2026)
    fed.ask("shenzhen", subject, to=SCRAPED, **PROCUREMENT)  # queries, latency, ledger
    answer = fed.ask("shenzhen", subject, to=SCRAPED, **BANK_CREDIT)  # counted in quotas
    limits = _quota_limits(fed)
    applied = {rule for s in answer.subjects for t in s.themes if t.allowed for rule in t.rule_ids}
    driven.charged = {rule: limits[rule] for rule in applied if rule in limits}
    with pytest.raises(QueryRefused):  # no rule covers the theme: a policy refusal
        fed.ask("shenzhen", subject, to=SCRAPED, themes=["customs_credit_grade"], **PROCUREMENT)
    _rewrite_publishers_feed(fed)
    fed.stop(PUBLISHER)  # unreachable from now on: its circuit opens
    driven.report_statuses = fed.run(_reports_through_the_gateway(fed, subject), timeout=120)

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
    return driven


@dataclass(frozen=True)
class Exposition:
    """huizhou's /metrics as scraped once every series the monitoring files use had
    samples, with what was driven and the store's own figures around the last scrape."""

    text: str
    series: dict[str, set[str]]
    driven: Driven
    ledger: tuple[int, int, float | None]  # size read before the scrape, after it; exported
    last_entry_us: int  # the time inside the ledger's last entry


def _ledger_around_a_scrape(fed: Federation, port: int) -> tuple[int, int, float | None, str]:
    """The ledger's size in huizhou's database read just before and just after a scrape,
    and what the scrape said, once the three agree (the gauge's read is reused for a few
    seconds, and the sync may still append); the last such triple otherwise."""
    config = fed.nodes[SCRAPED].config
    database = open_database(config.database_url)
    try:
        log = open_audit_log(config, database)
        deadline = time.monotonic() + 30
        while True:
            before = log.size()
            text = scrape(port)
            after = log.size()
            exported = sample_values(text, "credit_node_ledger_size").get(frozenset())
            if before == after == exported or time.monotonic() > deadline:
                return before, after, exported, text
            time.sleep(0.5)
    finally:
        database.dispose()


def _entry_time_us(fed: Federation, index: int) -> int:
    """The time inside huizhou's ledger entry ``index``."""
    stamp: int = fed.entry_at(SCRAPED, index).time_unix_micros
    return stamp


@pytest.fixture(scope="module")
def exposition(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exposition]:
    """huizhou's /metrics, once every series the monitoring files use has samples."""
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
            driven = _drive(fed)
            wanted = {name for use in uses() for name, _ in _NAME.findall(use.expr) if name != "up"}
            deadline = time.monotonic() + 60  # the feeds sync, and alarm, in the background
            while True:
                series = exported_series(scrape(port))
                if wanted <= set(series) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            before, after, exported, text = _ledger_around_a_scrape(fed, port)
            yield Exposition(
                text=text,
                series=exported_series(text),
                driven=driven,
                ledger=(before, after, exported),
                last_entry_us=_entry_time_us(fed, before - 1),
            )
        finally:
            fed.close()
    finally:
        mp.undo()


@pytest.mark.slow
def test_every_metric_and_label_used_is_on_a_real_nodes_metrics(exposition: Exposition) -> None:
    labels = target_labels()
    found = [problem for use in uses() for problem in problems_of(use, exposition.series, labels)]
    assert not found, "\n".join(found)


@pytest.mark.slow
def test_a_misspelt_metric_or_label_is_caught(exposition: Exposition) -> None:
    exported = exposition.series
    labels = target_labels()
    misspelt = [
        Use("metric", "rate(credit_node_querys_total[5m])"),
        Use("selector", 'credit_node_refusals_total{peer="x"}'),
        Use("grouping", "sum by (node, peer) (rate(credit_node_refusals_total[5m]))"),
        Use("histogram", "credit_node_witness_size_bucket"),
        Use("shown", "sum by (node) (credit_node_sync_lag_entries)", frozenset({"theme"})),
        Use("gauge label", 'credit_node_quota_used{purpose="bank_credit"}'),
    ]
    for use in misspelt:
        assert problems_of(use, exported, labels), use.where
    assert not problems_of(
        Use("fine", "sum by (node, reason) (rate(credit_node_refusals_total[5m]))"),
        exported,
        labels,
    )


@pytest.mark.slow
def test_the_quota_gauges_count_the_query_a_requester_made_under_each_rule(
    exposition: Exposition,
) -> None:
    """shenzhen asked once for bank credit: 1 under each rule with a quota that applied,
    against the memorandum's limit; nothing else was counted at huizhou."""
    charged = exposition.driven.charged
    assert charged, "the bank credit query applied no rule with a quota"
    used = sample_values(exposition.text, "credit_node_quota_used")
    limit = sample_values(exposition.text, "credit_node_quota_limit")
    assert used, "credit_node_quota_used is not on huizhou's /metrics"
    assert set(used) == set(limit)
    counted = {
        frozenset({("requester", "shenzhen"), ("rule", rule)}): q for rule, q in charged.items()
    }
    for key, quota in counted.items():
        assert (used[key], limit[key]) == (1.0, quota), sorted(key)
    rest = {key: value for key, value in used.items() if key not in counted}
    assert rest and set(rest.values()) == {0.0}  # other rules and requesters: nothing yet
    assert all(dict(labels)["requester"] != SCRAPED for labels in used)


@pytest.mark.slow
def test_the_ledger_gauges_are_the_ledger_in_the_database(exposition: Exposition) -> None:
    before, after, exported = exposition.ledger
    assert exported is not None, "credit_node_ledger_size is not on huizhou's /metrics"
    assert before == after == exported > 0
    stamps = sample_values(exposition.text, "credit_node_ledger_last_checkpoint_timestamp_seconds")
    signed = stamps.get(frozenset())
    assert signed is not None, "no checkpoint time on huizhou's /metrics"
    # the head's checkpoint is signed when its batch commits: after its entries were made
    assert exposition.last_entry_us / 1e6 <= signed <= time.time()


@pytest.mark.slow
def test_a_member_that_keeps_failing_opens_its_circuit_on_the_node_serving_the_gateway(
    exposition: Exposition,
) -> None:
    statuses = exposition.driven.report_statuses
    assert [s[PUBLISHER] for s in statuses] == ["unavailable"] * 3 + ["skipped"]
    assert {s[ROLLED_BACK] for s in statuses} == {"answered"}
    circuit = {
        dict(labels)["member"]: value
        for labels, value in sample_values(exposition.text, "credit_node_member_circuit").items()
    }
    assert circuit == {PUBLISHER: 2.0, ROLLED_BACK: 0.0}


@pytest.mark.slow
def test_a_feed_rewritten_under_its_subscriber_raises_a_real_sync_alarm(
    exposition: Exposition,
) -> None:
    alarms = sample_values(exposition.text, "credit_node_sync_alarms_total")
    key = frozenset({("publisher", PUBLISHER), ("theme", REWRITTEN), ("kind", Alarm.REWRITTEN)})
    assert alarms == {key: 1.0}

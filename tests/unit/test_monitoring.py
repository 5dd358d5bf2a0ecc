"""deploy/monitoring/: the alert rules pass promtool's own checks and unit tests
(alerts.test.yml: every alert firing and not firing), every alert has a runbook in
docs/operations.md, and the rules and the Grafana dashboard use only metrics the code exports."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from logins.core import metrics
from tests.helpers import REPO, require_binary

MONITORING = REPO / "deploy" / "monitoring"
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}


def exported_series() -> set[str]:
    """Every series name logins.core.metrics exports (what /metrics shows), from its objects."""
    names = set()
    for value in vars(metrics).values():
        describe = getattr(value, "describe", None)
        if describe is None or not callable(describe) or isinstance(value, type):
            continue
        for family in describe():
            names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
    return names


PROMETHEUS_OWN = {"up"}  # the series Prometheus writes for every scrape


def referenced(expr: str) -> set[str]:
    """The metric names an expression reads: ours (logins_*) and Prometheus' `up`."""
    ours = set(re.findall(r"\blogins_[a-z0-9_]+\b", expr))
    return ours | {name for name in PROMETHEUS_OWN if re.search(rf"\b{name}\{{", expr)}


def rules() -> list[dict[str, Any]]:
    data = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    return json.loads((MONITORING / "grafana-dashboard.json").read_text())


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = require_binary("promtool", "prometheus")
    return subprocess.run(
        [binary, *args], cwd=MONITORING, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_exported_names_are_the_issue_s_contract() -> None:
    names = exported_series()
    for name in (
        "logins_commit_latency_seconds_bucket",
        "logins_queue_messages",
        "logins_held_messages",
        "logins_last_commit_timestamp_seconds",
        "logins_messages_total",
        "logins_rejected_total",
        "logins_db_retries_total",
    ):
        assert name in names
    bounds = metrics.LATENCY_BUCKETS
    assert bounds[0] == 0.01 and bounds[-1] == 3600 and list(bounds) == sorted(bounds)


def test_promtool_checks_the_rules_and_the_example_config() -> None:
    checked = promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout
    config = promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr


def test_promtool_unit_tests_of_every_alert_pass() -> None:
    tested = promtool("test", "rules", "alerts.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_is_tested_firing_and_not_firing_and_has_a_runbook() -> None:
    cases = yaml.safe_load((MONITORING / "alerts.test.yml").read_text())["tests"]
    checks = [c for case in cases for c in case["alert_rule_test"]]
    operations = (REPO / "docs" / "operations.md").read_text()
    for rule in rules():
        name = rule["alert"]
        assert any(c["alertname"] == name and c["exp_alerts"] for c in checks), name
        assert any(c["alertname"] == name and not c["exp_alerts"] for c in checks), name
        assert rule["annotations"]["runbook"] == f"docs/operations.md#{name.lower()}"
        assert re.search(rf"^#### {name}$", operations, re.M), f"no runbook for {name}"
        assert rule["labels"]["severity"] in ("warning", "critical")


def test_the_rules_use_only_exported_metrics() -> None:
    names = exported_series() | PROMETHEUS_OWN
    for rule in rules():
        used = referenced(rule["expr"])
        assert used and used <= names, (rule["alert"], used - names)


def test_the_dashboard_is_complete_and_uses_only_exported_metrics() -> None:
    board = dashboard()
    for key in ("title", "uid", "schemaVersion", "panels", "time", "templating"):
        assert key in board, key
    assert isinstance(board["schemaVersion"], int) and board["uid"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    names = exported_series() | PROMETHEUS_OWN
    ids, used = set(), set()
    for panel in board["panels"]:
        assert panel["id"] not in ids, panel["id"]
        ids.add(panel["id"])
        assert panel["type"] in ("timeseries", "stat") and panel["title"]
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) for k in "xywh") and grid["x"] + grid["w"] <= 24
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(set(refs)) == len(refs)
        for target in panel["targets"]:
            found = referenced(target["expr"])
            assert found and found <= names, (panel["title"], found - names)
            assert '{job="$job"' in target["expr"], panel["title"]
            used |= found
    for required in (
        "logins_messages_total",  # throughput by outcome
        "logins_commit_latency_seconds_bucket",  # lag percentiles
        "logins_queue_messages",  # queue depth
        "logins_held_messages",
        "logins_rejected_total",  # rejected by reason
        "logins_db_retries_total",
    ):
        assert required in used, required


@pytest.mark.parametrize("expr", ["sum(rate(logins_nope_total[5m]))"])
def test_the_name_check_catches_a_metric_the_code_does_not_export(expr: str) -> None:
    assert not referenced(expr) <= exported_series()


def test_a_missing_promtool_fails_under_ci_and_skips_with_its_reason_elsewhere(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing installed here
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="apt-get install prometheus"):
        require_binary("promtool", "prometheus")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="promtool is not installed"):
        require_binary("promtool", "prometheus")

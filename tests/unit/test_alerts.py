"""The alert rules in `monitoring/alerts/`: valid PromQL (promtool), each one firing on its
fault and silent on an honest neighbour (promtool's unit tests), over metrics we export, with
a severity, a summary and a runbook entry that exists."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "monitoring" / "alerts"
RULES = ALERTS / "shipyard.rules.yml"
# Series that other exporters give: node_exporter's textfile collector stamps drift.prom.
FOREIGN = {"node_textfile_mtime_seconds"}
# promtool comes with Debian's prometheus package, which `make tools` and `make unit` install.


def _alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def _exported() -> set[str]:
    """Series names as Prometheus sees them, read from where the code declares them."""
    suffixes = {"Counter": ["_total"], "Histogram": ["_bucket", "_sum", "_count"], "Gauge": [""]}
    declared = r"(Counter|Histogram|Gauge)\(\s*(?:name=)?\"(shipyard_\w+)\""
    names: set[str] = set()
    for path in (ROOT / "src" / "shipyard").rglob("*.py"):
        for kind, name in re.findall(declared, path.read_text()):
            names |= {name + s for s in suffixes[kind]}
    report = (ROOT / "src/shipyard/monitoring/report.py").read_text()
    names |= set(re.findall(r"\"(shipyard_drift_\w+)\": \(", report))
    from shipyard.monitoring.report import ESTIMATED  # written only where judged

    return names | set(ESTIMATED.values())


def test_rules_are_valid_promql() -> None:
    out = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_broken_rule_is_refused_by_name(tmp_path: Path) -> None:
    broken = yaml.safe_load(RULES.read_text())
    broken["groups"][0]["rules"][0]["expr"] = "sum(rate(shipyard_http_requests_total[5m]) >"
    path = tmp_path / "broken.yml"
    path.write_text(yaml.safe_dump(broken))
    out = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    assert out.returncode != 0
    assert "ShipyardHighErrorRate" in out.stdout + out.stderr


def test_each_alert_fires_on_its_fault_and_stays_silent_otherwise() -> None:
    out = subprocess.run(
        ["promtool", "test", "rules", "tests.yml"], cwd=ALERTS, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    cases = yaml.safe_load((ALERTS / "tests.yml").read_text())["tests"]
    checks = [check for case in cases for check in case["alert_rule_test"]]
    fired = {check["alertname"] for check in checks if check["exp_alerts"]}
    silent = {check["alertname"] for check in checks if not check["exp_alerts"]}
    names = {a["alert"] for a in _alerts()}
    assert names <= fired, f"no firing case: {sorted(names - fired)}"
    assert names <= silent, f"no silent case: {sorted(names - silent)}"


def test_rules_read_only_metrics_we_export() -> None:
    exported = _exported() | FOREIGN
    # the reader finds each kind of declaration (the test can fail)
    assert {"shipyard_http_requests_total", "shipyard_webhook_deliveries_total"} <= exported
    assert {"shipyard_prediction_score_bucket", "shipyard_drift_exit_code"} <= exported
    assert "shipyard_canary_rejected_timestamp_seconds" in exported  # a Gauge
    for alert in _alerts():
        used = set(re.findall(r"\b([a-z_][a-z0-9_]*)\{", alert["expr"]))
        used |= set(re.findall(r"\b(shipyard_[a-z0-9_]+)", alert["expr"]))
        unknown = used - exported
        assert not unknown, f"{alert['alert']}: reads {sorted(unknown)}, which nothing exports"


def test_each_alert_has_a_severity_a_summary_and_a_runbook_entry() -> None:
    readme = (ROOT / "README.md").read_text()
    for alert in _alerts():
        name = alert["alert"]
        assert alert["labels"]["severity"] in {"critical", "warning"}, name
        assert alert["annotations"]["summary"], name
        anchor = alert["annotations"]["runbook_url"].removeprefix("README.md#")
        assert anchor == f"alert-{name.lower()}", name
        assert f'<a id="{anchor}"></a>' in readme, f"{name}: no runbook entry in README.md"


def test_alertmanager_routing_is_valid_and_sends_to_the_receiver(tmp_path: Path) -> None:
    path = ALERTS.parent / "alertmanager.yml"
    out = subprocess.run(["amtool", "check-config", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    routing = yaml.safe_load(path.read_text())
    hook = routing["receivers"][0]["webhook_configs"][0]
    assert (
        hook["url"].endswith("/alerts") and hook["http_config"]["authorization"]["type"] == "Bearer"
    )
    routing["route"]["receiver"] = "nobody"  # a route to a receiver that does not exist
    broken = tmp_path / "alertmanager.yml"
    broken.write_text(yaml.safe_dump(routing))
    out = subprocess.run(["amtool", "check-config", str(broken)], capture_output=True, text=True)
    assert out.returncode != 0 and "nobody" in out.stdout + out.stderr


def test_the_policy_acts_only_on_alerts_that_exist() -> None:
    from shipyard.policy import load_policy

    acts = load_policy(ROOT / "registry" / "policy.yaml").alerts
    names = {a["alert"] for a in _alerts()}
    assert acts.rollback and acts.retrain  # the test can fail
    assert set(acts.rollback) | set(acts.retrain) <= names


def test_an_alert_is_acted_on_only_when_firing_on_a_model_in_the_policy() -> None:
    import pytest

    from shipyard.policy import AlertsPolicy
    from shipyard.webhook.alerts import Notification, authorize, plan
    from shipyard.webhook.delivery import Rejected

    with pytest.raises(Rejected) as off:
        authorize(None, "Bearer anything")
    assert off.value.status == 403  # no token configured: no alert acts
    with pytest.raises(Rejected) as wrong:
        authorize("secret", "Bearer secreT")
    assert wrong.value.status == 401
    authorize("secret", "Bearer secret")

    def alert(name: str, status: str = "firing", **labels: str) -> dict[str, Any]:
        return {
            "status": status,
            "labels": {"alertname": name, **labels},
            "startsAt": "2026-12-06T10:00:00Z",
            "fingerprint": "ab",
        }

    model = {"model_name": "fd", "model_version": "3"}
    notice = Notification.model_validate(
        {
            "version": "4",
            "alerts": [
                alert("Down", **model),
                alert("Down", status="resolved", **model),
                alert("Down"),  # no model labels: nothing to act on
                alert("Drift", **model),
                alert("Other", **model),
            ],
        }
    )
    planned, skipped = plan(notice, AlertsPolicy(rollback=["Down"], retrain=["Drift"]))
    assert [(p.kind, p.name) for p in planned] == [("rollback", "Down"), ("retrain", "Drift")]
    assert planned[0].key != planned[1].key  # one record each
    assert skipped == [
        "Down: resolved",
        "Down: no model_name and model_version labels to act on",
        "Other: no action in the policy",
    ]
    with pytest.raises(ValueError, match="both rollback and retrain"):
        AlertsPolicy(rollback=["Down"], retrain=["Down"])


def test_the_dashboard_file_is_its_definition_and_reads_only_exported_metrics() -> None:
    from shipyard.monitoring.dashboard import charts, render

    committed = (ROOT / "monitoring" / "grafana" / "shipyard.json").read_text()
    assert committed == render(), "run `shipyard monitor dashboard` and commit its output"
    exported = _exported()
    for chart in charts():
        for query in chart.queries:
            used = set(re.findall(r"\b(shipyard_[a-z0-9_]+)", query.expr))
            assert used and used <= exported, (chart.title, sorted(used - exported))


def test_local_mode_starts_shipyard_retrain_in_the_background_with_its_log(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """The real command, in a folder with no labels: it starts, and its refusal is logged."""
    import time

    from shipyard.webhook.alerts import local_retrain

    monkeypatch.setenv("SHIPYARD_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.chdir(tmp_path)
    outcome = local_retrain("fraud-detector", "2", "alert ShipyardDriftRetrainTriggered")
    assert outcome.startswith("fraud-detector: retraining started for v2")
    log = next((tmp_path / "runtime" / "alerts").glob("retrain-fraud-detector-*.log"))
    assert str(log) in outcome
    deadline = time.monotonic() + 120
    while "error" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert "error" in log.read_text(), log.read_text()

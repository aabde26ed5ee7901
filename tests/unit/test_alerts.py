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
    return names


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

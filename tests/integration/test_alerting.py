"""Alerts that act: a real Prometheus evaluates the rules of `monitoring/alerts/`, a real
Alertmanager routes them with `monitoring/alertmanager.yml`, and `shipyard webhook serve`
rolls @champion back on its 5xx alert and asks GitHub (a loopback stand-in) for retraining on
its drift alert, once each, as `registry/policy.yaml` says. Then what the receiver refuses:
no or a wrong token, malformed notifications, and alerts about a version that is not
@champion."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from shipyard import promotion, registry
from shipyard.deploy.processes import free_port
from shipyard.policy import load_policy
from tests.conftest import REPO
from tests.integration import exposition
from tests.integration.registry_fixtures import NAME, register
from tests.integration.test_webhook import SECRET, GitHub, until, up

pytestmark = pytest.mark.slow
TOKEN = "alert-token-for-tests"
BIN = Path(sys.executable).parent


class Target:
    """What node_exporter and a service would expose for one champion: the drift check's
    triggered flag, then (once `failing`) requests counted at each scrape, a sixth of them 5xx."""

    def __init__(self, version: str) -> None:
        self.version, self.scrapes, self.failing = version, 0, False
        self.address = exposition.serve(self.text)

    def text(self) -> str:
        model = f'model_name="{NAME}",model_version="{self.version}"'
        out = f"shipyard_drift_retrain_triggered{{{model}}} 1\n"
        if self.failing:
            self.scrapes += 1
            n = self.scrapes
            labels = f'{model},path="/predict"'
            out += (
                f'shipyard_http_requests_total{{{labels},status="200"}} {100 * n}\n'
                f'shipyard_http_requests_total{{{labels},status="500"}} {20 * n}\n'
            )
        return out


def start(argv: list[str], log: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
    out = log.open("wb")
    return subprocess.Popen(argv, stdout=out, stderr=out, start_new_session=True, **kwargs)


def stop(*procs: subprocess.Popen[bytes]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


@pytest.fixture
def champions(tmp_path: Path) -> tuple[str, str]:
    """v1 then v2 promoted: v2 is @champion, v1 @previous."""
    policy = load_policy(REPO / "registry" / "policy.yaml")
    v1 = register(tmp_path)
    promotion.promote(NAME, v1, "champion", policy)
    v2 = register(tmp_path, seed=1, canary="passed")
    promotion.promote(NAME, v2, "champion", policy)
    return v1, v2


@pytest.fixture
def receiver(tmp_path: Path, champions: tuple[str, str]) -> Iterator[dict[str, Any]]:
    """`shipyard webhook serve` on the test's store, with a GitHub stand-in."""
    github = GitHub()
    port = free_port()
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "SHIPYARD_WEBHOOK_SECRET": SECRET,
        "SHIPYARD_ALERT_TOKEN": TOKEN,
        "GITHUB_REPOSITORY": "acme/shipyard",
        "GITHUB_TOKEN": "test-token",
        "GITHUB_API_URL": github.url,
    }
    policy = str(REPO / "registry" / "policy.yaml")
    argv = [str(BIN / "shipyard"), "webhook", "serve", "--port", str(port), "--policy", policy]
    proc = start(argv, tmp_path / "webhook.log", cwd=tmp_path, env=env)
    try:
        until(lambda: up(f"http://127.0.0.1:{port}/livez"), 60, "webhook receiver")
        yield {
            "url": f"http://127.0.0.1:{port}/alerts",
            "port": port,
            "github": github,
            "versions": champions,
            "log": tmp_path / "webhook.log",
        }
    finally:
        stop(proc)


def audit(tmp: Path) -> list[dict[str, Any]]:
    path = Path(os.environ["SHIPYARD_RUNTIME_DIR"]) / "audit" / "alerts.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def champion() -> str | None:
    mv = registry.version_by_alias(NAME, "champion")
    return None if mv is None else str(mv.version)


def test_prometheus_and_alertmanager_fire_into_the_receiver_which_acts_once(
    tmp_path: Path, receiver: dict[str, Any]
) -> None:
    v1, v2 = receiver["versions"]
    target = Target(v2)
    # The rules as shipped, less their `for:` (a test does not wait 5 minutes for a page).
    rules = yaml.safe_load((REPO / "monitoring" / "alerts" / "shipyard.rules.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("for", None)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    # The routing as shipped, pointed at this receiver and token, with short waits.
    routing = yaml.safe_load((REPO / "monitoring" / "alertmanager.yml").read_text())
    routing["route"].update(group_wait="1s", group_interval="1s")
    hook = routing["receivers"][0]["webhook_configs"][0]
    hook["url"] = receiver["url"]
    (tmp_path / "token").write_text(TOKEN)
    hook["http_config"]["authorization"]["credentials_file"] = str(tmp_path / "token")
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(routing))
    am_port, prom_port = free_port(), free_port()
    prometheus_config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp_path / "rules.yml")],
        "alerting": {
            "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]
        },
        "scrape_configs": [
            {"job_name": "shipyard", "static_configs": [{"targets": [target.address]}]}
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(prometheus_config))
    alertmanager = start(
        [
            shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager",
            f"--config.file={tmp_path / 'alertmanager.yml'}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=",
        ],
        tmp_path / "alertmanager.log",
    )
    prometheus = start(
        [
            shutil.which("prometheus") or "/usr/bin/prometheus",
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        tmp_path / "prometheus.log",
    )
    github: GitHub = receiver["github"]
    try:
        # Drift first: retraining is asked for v2 while it is @champion.
        until(lambda: len(github.calls) >= 1, 90, "the drift-detected dispatch")
        target.failing = True
        until(lambda: champion() == v1, 90, "the rollback of v2 on its 5xx alert")
        time.sleep(4)  # Alertmanager sends again every group_interval: nothing more happens
    finally:
        stop(prometheus, alertmanager)
    assert champion() == v1 and registry.version_by_alias(NAME, "previous") is None
    rolled = registry.resolve(NAME, v2).tags["shipyard.rolled_back"]
    assert rolled.startswith("alert ShipyardHighErrorRate firing since ")
    assert [c["body"]["event_type"] for c in github.calls] == ["drift-detected"]
    assert github.calls[0]["body"]["client_payload"]["version"] == v2
    # The rollback is a signed decision, like a promotion; the alerts audit has one per action.
    records = promotion_audit()
    assert records[-1]["action"] == "rollback" and records[-1]["replaced"] == v2
    acted = [(a["alert"], a["action"], a["version"]) for a in audit(tmp_path)]
    assert acted == [
        ("ShipyardDriftRetrainTriggered", "retrain", v2),
        ("ShipyardHighErrorRate", "rollback", v2),
    ]
    log = receiver["log"].read_text()
    assert "alerts: fraud-detector: v" in log and re.search(r"\b401\b", log) is None


def promotion_audit() -> list[dict[str, Any]]:
    path = Path(os.environ["SHIPYARD_RUNTIME_DIR"]) / promotion.AUDIT_LOG
    return [json.loads(line) for line in path.read_text().splitlines()]


def notification(*alerts: dict[str, Any]) -> bytes:
    return json.dumps({"version": "4", "status": "firing", "alerts": list(alerts)}).encode()


def alert(name: str, version: str, status: str = "firing", fp: str = "a1b2") -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": name, "model_name": NAME, "model_version": version},
        "annotations": {"summary": "test"},
        "startsAt": "2026-12-06T10:00:00Z",
        "fingerprint": fp,
    }


def test_the_receiver_refuses_what_it_must_and_acts_only_on_the_champion(
    tmp_path: Path, receiver: dict[str, Any]
) -> None:
    v1, v2 = receiver["versions"]
    url, github = receiver["url"], receiver["github"]
    auth = {"Authorization": f"Bearer {TOKEN}"}

    def post(body: bytes, headers: dict[str, str]) -> httpx.Response:
        return httpx.post(url, content=body, headers=headers, timeout=30)

    rollback = notification(alert("ShipyardHighErrorRate", v2))
    assert post(rollback, {}).status_code == 401
    assert post(rollback, {"Authorization": "Bearer wrong"}).status_code == 401
    assert post(rollback, {"Authorization": TOKEN}).status_code == 401  # no scheme
    bad = [
        (b"not json", "alerts: "),
        (b'{"version": "3", "alerts": []}', "alerts: version: "),
        (notification({**alert("X", v2), "fingerprint": "../../x"}), "alerts.0.fingerprint"),
        (notification({**alert("X", v2), "status": "maybe"}), "alerts.0.status"),
    ]
    for body, reason in bad:
        answer = post(body, auth)
        assert answer.status_code == 400 and reason in answer.json()["status"], answer.text
    huge = httpx.post(url, content=b"x" * 1_000_001, headers=auth, timeout=30)
    assert huge.status_code == 413
    assert champion() == v2 and not github.calls and not audit(tmp_path)
    # Not the champion's version, resolved, not in the policy, or another model: nothing.
    quiet = notification(
        alert("ShipyardHighErrorRate", v1, fp="c1"),
        alert("ShipyardHighErrorRate", v2, status="resolved", fp="c2"),
        alert("ShipyardHighLatencyP99", v2, fp="c3"),
        {
            **alert("ShipyardHighErrorRate", v2, fp="c4"),
            "labels": {
                "alertname": "ShipyardHighErrorRate",
                "model_name": "nobody",
                "model_version": v2,
            },
        },
    )
    answer = post(quiet, auth)
    assert answer.status_code == 200, answer.text
    assert "v1 is not @champion; nothing to roll back" in answer.json()["status"]
    assert "nobody: no such registered model" in answer.json()["status"]
    assert champion() == v2 and not github.calls
    # The champion's own alert rolls back once; Alertmanager's repeat does nothing more.
    assert post(rollback, auth).status_code == 200
    assert champion() == v1
    again = post(rollback, auth)
    assert again.status_code == 200 and "duplicate" in again.json()["status"]
    assert champion() == v1
    # v1 has no @previous now: an alert on it changes nothing, and says why.
    stuck = post(notification(alert("ShipyardHighErrorRate", v1, fp="e1")), auth)
    assert "no @previous version to roll back to; v1 stays" in stuck.json()["status"]
    assert champion() == v1
    # GitHub failing: 502, so Alertmanager sends it again, and then it is sent once.
    github.failures = 1
    retrain = notification(alert("ShipyardDriftRetrainTriggered", v1, fp="d1"))
    assert post(retrain, auth).status_code == 502
    assert post(retrain, auth).status_code == 200
    assert post(retrain, auth).status_code == 200
    assert [c["body"]["event_type"] for c in github.calls] == ["drift-detected"]

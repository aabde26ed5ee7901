"""The closed loop, every transition: data -> v1 champion -> drift -> retrain -> v2 canaried to
champion -> a skewed v3 rejected in shadow, with clients unharmed and nothing left running."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psutil
import pytest

from shipyard.deploy.state import DeploymentState

pytestmark = pytest.mark.slow
NAME = "fraud-detector"


def decisions(repo: Path) -> list[dict[str, Any]]:
    lines = (repo / ".shipyard" / "audit" / "promotions.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_the_demo_runs_to_the_end(demo: dict[str, Any]) -> None:
    result = demo["result"]
    assert result.returncode == 0, result.stderr[-4000:]
    assert "fraud-detector: versions" in result.stdout
    figures = demo["figures"]
    assert list(figures["steps"]) == [
        "pipeline",
        "first champion",
        "live traffic",
        "retrain",
        "canary",
        "bad version",
        "stop",
    ]
    assert figures["peak_memory_bytes"] > 0


def test_versions_and_aliases(demo: dict[str, Any]) -> None:
    figures = demo["figures"]
    assert (figures["v1"], figures["v2"], figures["v3"]) == ("1", "2", "3")
    versions = figures["versions"]
    assert versions["1"]["aliases"] == ["previous"]
    assert versions["2"]["aliases"] == ["champion"]
    assert versions["3"]["aliases"] == ["candidate"]  # passed the pipeline, not the canary
    v1, v2, v3 = (versions[v]["tags"] for v in ("1", "2", "3"))
    assert v2["shipyard.data_hash"] != v1["shipyard.data_hash"]  # retrained on a new data version
    assert v3["shipyard.data_hash"] == v2["shipyard.data_hash"]  # same data, skewed features
    assert "shipyard.demo.skew" in v3 and "shipyard.demo.skew" not in v2
    assert v2["shipyard.canary.result"] == "passed"
    assert v3["shipyard.canary.result"] == "rejected"
    assert v3["shipyard.canary.failed_gate"].split()[0] in {
        "max_score_psi",
        "max_score_ks",
        "positive_rate_ratio",
    }


def test_decision_records(demo: dict[str, Any]) -> None:
    made = [(d["version"], d["to"], d["decision"]) for d in decisions(demo["repo"])]
    assert made == [
        ("1", "champion", "passed"),
        ("2", "challenger", "passed"),
        ("2", "champion", "passed"),
        ("3", "challenger", "passed"),
    ]
    records = decisions(demo["repo"])
    assert any("first model" in note for note in records[0]["notes"])
    champion_v2 = records[2]
    assert champion_v2["evidence"]["canary"]["strategy"] == "canary"
    assert champion_v2["evidence"]["canary"]["stable_version"] == "1"
    assert records[3]["strategy"] == "shadow"
    assert all(g["passed"] for g in records[3]["gates"])  # every offline gate let v3 through


def test_drift_triggered_the_retraining(demo: dict[str, Any]) -> None:
    figures, repo = demo["figures"], demo["repo"]
    assert [d["exit"] for d in figures["drift"]] == [0, 3, 4]
    reports = sorted((repo / "monitoring" / "reports" / NAME / "1").glob("*.json"))
    assert len(reports) == 3
    last = json.loads(reports[-1].read_text())
    assert last["decision"]["triggered"] is True
    assert last["lineage"]["bento_tag"].startswith(f"{NAME}-service:v1-")
    html = (repo / last["paths"]["html"]).read_text()
    assert "Runbook" in html and last["lineage"]["git_sha"] in html
    prom = (repo / "monitoring" / "reports" / NAME / "drift.prom").read_text()
    assert (
        'shipyard_drift_retrain_triggered{model_name="fraud-detector",model_version="1"} 1.0'
        in prom
    )
    live = sorted((repo / "data").glob("live-*.csv"))
    assert len(live) == 1  # the labelled live data became one new file of the data version
    served = sum(t["sent"] for k, t in figures["traffic"].items() if k[:4] in ("calm", "drif"))
    assert len(live[0].read_text().splitlines()) - 1 == served


def test_clients_never_failed_and_never_saw_the_bad_version(demo: dict[str, Any]) -> None:
    traffic = demo["figures"]["traffic"]
    assert all(t["failed"] == 0 for t in traffic.values()), traffic
    assert set(traffic["canary"]["by_variant"]) == {"stable", "canary"}
    assert set(traffic["bad version"]["by_variant"]) == {"stable"}  # shadowed: stable answered


def test_the_rollback_left_v2_serving(demo: dict[str, Any]) -> None:
    path = demo["repo"] / ".shipyard" / "deploy" / f"{NAME}.json"
    state = DeploymentState.parse(path.read_text(), str(path))
    assert state.version == "3" and state.status == "rejected"
    assert state.stable.version == "2"
    assert state.strategy == "shadow"
    assert all(not step.passed for step in state.history)


def test_nothing_is_left_running(demo: dict[str, Any]) -> None:
    assert demo["figures"]["left_running"] == 0
    assert demo["figures"]["stray_processes"] == 0  # the orderly stop got every process
    root = str(demo["workdir"])
    running = []
    for proc in psutil.process_iter(["pid", "cwd", "cmdline"]):
        cwd, cmd = proc.info["cwd"] or "", " ".join(proc.info["cmdline"] or [])
        if cwd.startswith(root) or root in cmd:
            running.append((proc.info["pid"], cmd))
    assert running == []

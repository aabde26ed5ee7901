"""Drift checks on what the e2e demo left behind: its prediction log, reports and store.

The demo judged its windows; these check the other outcomes (too few rows, a log whose
schema changed, the Evidently UI) and the false-alarm rate of the tiny world.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from shipyard.deploy import processes
from tests.integration.workspace import env, sh

pytestmark = pytest.mark.slow
NAME = "fraud-detector"


def shipyard(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["shipyard", *args], cwd=repo, env=env(), capture_output=True, text=True, check=False
    )


@pytest.fixture(scope="module")
def loop(demo: dict[str, Any]) -> dict[str, Any]:
    assert demo["result"].returncode == 0, demo["result"].stderr[-3000:]
    return {"repo": demo["repo"]}


def test_monitor_ui_serves_the_workspace(loop: dict[str, Any]) -> None:
    import urllib.request

    port = processes.free_port()
    log = loop["repo"] / "ui.log"
    ui = ["shipyard", "monitor", "ui", "--port", str(port)]
    pid = processes.start(ui, log, env(), cwd=loop["repo"])
    try:
        processes.wait_ready(f"http://127.0.0.1:{port}/", pid, log, timeout=120)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/projects", timeout=10) as r:
            assert NAME in r.read().decode()
    finally:
        processes.stop(pid)


def test_too_few_rows_cannot_be_judged(loop: dict[str, Any]) -> None:
    result = shipyard(
        loop["repo"], "drift", "check", NAME, "--window", "2020-01-01T00:00/2020-01-02T00:00"
    )
    assert result.returncode == 5, result.stderr[-2000:]
    assert "0 rows in the window; at least 300 needed" in result.stdout  # tiny.yaml


def test_a_log_whose_schema_differs_cannot_be_judged(loop: dict[str, Any]) -> None:
    """Records with a feature the reference does not have: exit 5, naming the column."""
    folder = loop["repo"] / ".shipyard" / "predictions" / NAME
    served = [
        record
        for path in sorted(folder.glob("predictions-2*.jsonl"))
        for record in map(json.loads, path.read_text().splitlines())
        if record["model_version"] == "1"
    ][:400]
    lines = []
    for i, record in enumerate(served):
        record["timestamp"] = f"2021-01-01T00:{i // 60:02d}:{i % 60:02d}.000+00:00"
        record["features"]["channel_score"] = 0.5
        lines.append(json.dumps(record))
    (folder / "predictions-schema-test.jsonl").write_text("\n".join(lines) + "\n")
    window = "2021-01-01T00:00/2021-01-01T01:00"
    check = ["drift", "check", NAME, "--version", "1", "--window", window]  # v1 served them
    result = shipyard(loop["repo"], *check)
    assert result.returncode == 5, result.stderr[-2000:]
    assert "added ['channel_score'], removed []" in result.stdout


FALSE_ALARM = """
import json, sys
import pandas as pd
from shipyard import registry, tracking
from shipyard.config import load_params
from shipyard.policy import load_policy
from shipyard.data.replay import live_features
from shipyard.data.simulator import Simulator
from shipyard.monitoring.drift import judge
from shipyard.monitoring.policy import load_monitoring_policy
from shipyard.monitoring.reference import load_reference

params = load_params()
tracking.configure(params.base)
policy = load_monitoring_policy("monitoring/policy.yaml")
reference = load_reference("fraud-detector", "1")
model = registry.load_model("fraud-detector", "1")
world = Simulator(n_customers=250, n_terminals=500, seed=11)
start = world.period(int(sys.argv[1]), int(sys.argv[1]) + 1)["tx_datetime"].min()
history = pd.read_parquet("artifacts/validated/data.parquet")
history = history[history["tx_datetime"] < start]  # without the retrained live data
drifted = []
for first in range(int(sys.argv[1]), int(sys.argv[2]), 2):
    live = world.period(first, first + 2)
    live["transaction_id"] = live["transaction_id"].astype("Int64")
    features = live_features(history, live, params)
    features["score"] = model.predict_proba(features[reference.features])[:, 1]
    drifted.append(judge(reference, features, policy).drifted)
    history = pd.concat([history, live], ignore_index=True)
print(json.dumps(drifted))
"""


def test_stationary_periods_raise_no_alarm(loop: dict[str, Any]) -> None:
    """Five stationary two-day windows after training: none may count as drifted."""
    out = sh(loop["repo"], "python", "-c", FALSE_ALARM, "61", "71").stdout
    assert json.loads(out.strip().splitlines()[-1]) == [False] * 5

"""Shared fixtures: fresh params per test, an isolated MLflow store, no runs left open."""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def raw_params() -> dict[str, Any]:
    return copy.deepcopy(yaml.safe_load((REPO / "params.yaml").read_text()))


@pytest.fixture(autouse=True)
def isolated_tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test gets its own sqlite store and must close every run it opens."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("SHIPYARD_DECISION_KEY", "test-decision-key")  # decisions are signed
    yield
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None and mlflow.active_run() is not None:
        run_id = mlflow.active_run().info.run_id
        while mlflow.active_run() is not None:
            mlflow.end_run()
        pytest.fail(f"test left MLflow run {run_id} open")

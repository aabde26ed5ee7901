"""The textfile a finished canary leaves for node_exporter: the model's last canary only, so a
rejection stops being news once a later canary of the model ends."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shipyard.deploy.outcome import export


def series(path: Path) -> dict[str, dict[str, str]]:
    return {
        sample.name: sample.labels
        for family in text_string_to_metric_families(path.read_text())
        for sample in family.samples
    }


def test_a_rejection_names_its_gate_and_a_later_pass_clears_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHIPYARD_RUNTIME_DIR", str(tmp_path))
    path = export("fd", "3", "rejected", "max_score_psi = 0.41 (<= 0.2)")
    assert path == tmp_path / "metrics" / "canary-fd.prom"
    got = series(path)
    assert got["shipyard_canary_rejected_timestamp_seconds"] == {
        "model_name": "fd",
        "model_version": "3",
        "gate": "max_score_psi",
    }
    assert got["shipyard_canary_decision_timestamp_seconds"]["result"] == "rejected"
    export("fd", "4", "passed")
    got = series(path)
    assert "shipyard_canary_rejected_timestamp_seconds" not in got
    assert got["shipyard_canary_decision_timestamp_seconds"] == {
        "model_name": "fd",
        "model_version": "4",
        "result": "passed",
    }
    export("other", "1", "aborted")  # one file per model: fd's stays as it was
    assert series(path)["shipyard_canary_decision_timestamp_seconds"]["model_version"] == "4"

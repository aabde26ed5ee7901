"""`shipyard drift check` on a window where features drifted and the label-free estimate is
judged: the version's model is loaded from the store, each drifted feature's drift undone and
the window rescored, and the report's header names the features that cost the most."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import REPO
from tests.integration import scoring_world

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    with scoring_world.registered(tmp_path_factory.mktemp("explain"), raw) as w:
        yield w


def with_reference(world: dict[str, Any]) -> tuple[str, list[str]]:
    """Give @champion the reference sample register gives a version: its training rows'
    features, labels and scores, logged to its run."""
    from mlflow import MlflowClient

    from shipyard import registry
    from shipyard.pipeline.featurize import featurize
    from shipyard.tags import TAG

    params, model = world["params"], world["model"]
    splits, cols = featurize(world["history"], params)
    sample = splits["train"][[*cols.all, params.data.target]].copy()
    sample["score"] = model.predict_proba(sample[cols.all])[:, 1]
    path = world["root"] / "reference.parquet"
    sample.to_parquet(path, index=False)
    mv = registry.resolve(scoring_world.NAME, "@champion")
    MlflowClient().log_artifact(mv.run_id, str(path), "reference")
    uri = f"runs:/{mv.run_id}/reference/reference.parquet"
    registry.set_version_tags(scoring_world.NAME, str(mv.version), {TAG["reference_uri"]: uri})
    return str(mv.version), list(cols.all)


def test_the_report_names_the_drifted_features_by_the_quality_they_cost(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from shipyard.data.replay import live_features
    from shipyard.data.simulator import Drift, Simulator
    from shipyard.monitoring import job
    from shipyard.monitoring.policy import load_monitoring_policy
    from shipyard.serving.predlog import PredictionLog

    version, fields = with_reference(world)
    params, model = world["params"], world["model"]
    sim = Simulator(n_customers=300, n_terminals=600, seed=5)
    live = sim.period(60, 66, Drift(amount_inflation=2.0, new_terminal_share=0.5))
    features = live_features(world["history"], live, params)
    scores = model.predict_proba(features[fields])[:, 1]
    log = PredictionLog(job.prediction_log(scoring_world.NAME))
    for i, (row, score) in enumerate(zip(features[fields].to_dict("records"), scores, strict=True)):
        log.append(
            {
                "request_id": f"r{i}",
                "timestamp": f"2026-03-01T{i % 24:02d}:00:00.000+00:00",
                "model_name": scoring_world.NAME,
                "model_version": version,
                "features": row,
                "score": float(score),
                "decision": bool(score > 0.5),
            }
        )
    log.close()
    monkeypatch.chdir(world["root"])  # reports and the workspace go where the policy says
    policy = load_monitoring_policy(REPO / "monitoring" / "policy.yaml")
    summary = job.check(
        scoring_world.NAME,
        "@champion",
        "2026-03-01T00:00/2026-03-02T00:00",
        policy,
        budget=0.01,
        target=params.data.target,
    )
    assert summary["estimated_quality"]["not_judged"] is None, summary["estimated_quality"]
    drifted = summary["drifted_features"]
    assert drifted, summary["feature_drift"]
    explained = summary["explained"]
    assert sorted(e["feature"] for e in explained) == sorted(drifted)
    gains = [e["gain"] for e in explained]
    assert all(g is not None for g in gains) and gains == sorted(gains, reverse=True)
    assert np.isfinite(gains).all()
    html = Path(summary["paths"]["html"]).read_text()
    assert "drifted features by cost" in html and explained[0]["text"] in html
    assert pd.Series(gains).abs().max() > 0  # the model reads at least one of them
    # The Evidently workspace's run carries the estimate beside the drift figures.
    from evidently.ui.workspace import Workspace

    workspace = Workspace.create(str(world["root"] / policy.workspace))
    project = workspace.search_project(scoring_world.NAME)[0]
    (run,) = workspace.list_runs(project.id)
    stored = workspace.get_run(project.id, run).dict()["metadata"]["shipyard_estimated_quality"]
    want = summary["estimated_quality"]["average_precision"]
    assert float(stored["average_precision"]) == pytest.approx(want, abs=1e-4)

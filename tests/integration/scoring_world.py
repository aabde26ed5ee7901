"""One registered version and the simulated transactions it scores, for the batch and the
stream tests: a version trained on featurize's output of 60 simulated days, and 80 days of raw
transactions, the 60 as history, then 20 new ones."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from shipyard.config import parse_params
from shipyard.data.simulator import Simulator
from shipyard.pipeline.featurize import featurize
from tests.conftest import REPO

NAME = "fraud-detector"


@contextmanager
def registered(root: Path, raw: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The store, runtime folder and params under `root`, set in this process's environment
    (MLflow's URI, the runtime folder) until the block ends; `NAME@champion` is the version."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from shipyard import registry, tracking
    from shipyard.metrics import budget_threshold
    from shipyard.models import storage
    from shipyard.schema import dump_ranges, field_ranges
    from shipyard.serving.buckets import dump_bounds, reference_bounds
    from shipyard.tags import TAG

    old = dict(os.environ)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    os.environ["SHIPYARD_RUNTIME_DIR"] = str(root / "runtime")
    raw["base"]["tracking"]["artifact_root"] = str(root / "mlartifacts")
    raw["featurize"]["split"] = {"validation": 0.15, "test": 0.15, "gap_days": 0}
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    (root / "registry").mkdir()
    (root / "registry" / "policy.yaml").write_text((REPO / "registry" / "policy.yaml").read_text())
    params = parse_params(raw, "params.yaml")
    sim = Simulator(n_customers=300, n_terminals=600, seed=5)
    history = sim.period(0, 60)
    later = sim.period(60, 80)
    splits, cols = featurize(history, params)
    train = splits["train"]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    model.fit(train[cols.all], train[params.data.target])
    scores = model.predict_proba(train[cols.all])[:, 1]

    def register(fitted: Any) -> str:
        """A new version of NAME: `fitted` with the tags a pipeline run gives."""
        with tracking.pipeline_run("pipeline", {}), tracking.candidate_run("logreg", {}) as rid:
            logged = tracking.log_model(
                fitted, train[cols.all].head(3), storage.trusted_types(fitted), []
            )
        tags = {
            "shipyard.threshold_at_budget": f"{budget_threshold(scores, 0.01):.6g}",
            TAG["field_ranges"]: dump_ranges(field_ranges(train, cols.numeric, {})),
            TAG["score_buckets"]: dump_bounds(reference_bounds(scores)),
            "shipyard.data_hash": "md5:test",
        }
        return str(registry.register_version(logged["model_uri"], NAME, rid, tags))

    try:
        tracking.configure(params.base)
        registry.set_alias(NAME, "champion", register(model))
        table = pd.concat([history, later], ignore_index=True)
        yield {
            "root": root,
            "params": params,
            "later": later,
            "table": table,
            "history": history,
            "model": model,
            "register": register,
        }
    finally:
        os.environ.clear()
        os.environ.update(old)

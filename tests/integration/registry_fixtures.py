"""Registered versions built in-process on small synthetic data, against the test's own store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TARGET = "tx_fraud"
NAME = "fraud-detector"


def frame(n: int = 3000, seed: int = 0, extra: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    y = (1.5 * x1 + x2 + rng.normal(scale=1.0, size=n) > 2.2).astype(int)
    out = pd.DataFrame({"tx_amount": x1, "risk": x2, TARGET: y})
    if extra:
        out["channel_score"] = rng.normal(size=n)
    return out


def register(
    tmp: Path,
    *,
    noise: bool = False,
    seed: int = 0,
    extra: bool = False,
    tags: dict[str, str] | None = None,
    test: pd.DataFrame | None = None,
    fault: str | None = None,
) -> str:
    """Fit, log and register one version the way the pipeline does; returns its number.

    `fault` breaks the model the way real ones break, to see which canary gate catches it:
    `diverged` (NaN weights: every request a 500), `collapsed` (zero weights: one constant
    score) or `slow` (thousands of boosting rounds: each model call costs tens of ms).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from shipyard import registry, tracking
    from shipyard.config import BaseSection, TrackingConfig
    from shipyard.models import storage

    tracking.configure(BaseSection(seed=0, model_name=NAME, tracking=TrackingConfig()))
    train = frame(seed=100 + seed, extra=extra)
    features = [c for c in train.columns if c != TARGET]
    y = train[TARGET].to_numpy()
    if noise:  # a model that learned nothing useful
        y = np.random.default_rng(seed).permutation(y)
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(train[features], y)
    if fault == "diverged":
        model[-1].coef_[:] = np.nan
    elif fault == "collapsed":
        model[-1].coef_[:] = 0.0
    elif fault == "slow":
        from sklearn.ensemble import HistGradientBoostingClassifier

        slow = HistGradientBoostingClassifier(
            max_iter=6000, learning_rate=0.002, max_leaf_nodes=4, early_stopping=False
        )
        model = make_pipeline(StandardScaler(), slow).fit(train[features], y)
    elif fault is not None:
        raise ValueError(f"unknown fault {fault!r}")
    test = frame(seed=7, extra=extra) if test is None else test
    path = tmp / f"test-{seed}-{noise}-{extra}-{fault}.parquet"
    test.to_parquet(path, index=False)
    with tracking.pipeline_run("pipeline", {}), tracking.candidate_run("logreg", {}) as run_id:
        logged = tracking.log_model(
            model, train[features].head(3), storage.trusted_types(model), []
        )
        tracking.log_artifact(path, "evaluation")
    all_tags: dict[str, Any] = {
        "shipyard.gates.pipeline": "passed",
        "shipyard.metrics.test.roc_auc": "0.9",
        "shipyard.metrics.test.average_precision": "0.7",
        "shipyard.metrics.test.brier": "0.01",
        "shipyard.test_uri": f"runs:/{run_id}/evaluation/{path.name}",
        "shipyard.data_hash": "md5:test",
        "shipyard.git_sha": "abc123",
    }
    all_tags.update(tags or {})
    return registry.register_version(logged["model_uri"], NAME, run_id, all_tags)

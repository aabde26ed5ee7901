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


# fault -> what it does to the model or its decisions (see `fit`)
FAULTS = (
    "diverged",
    "collapsed",
    "slow",
    "shrunk",
    "inflated",
    "silent",
    "noisy",
    "segment",
)
BUDGET = 0.01  # alerts per scored record, as the pipeline's `evaluate.alert_budget`
SEGMENT = 1.0  # `segment`: records with tx_amount above this are the ones it gets wrong
SLOW_STEPS = 500  # `slow`: about 40 ms a call here, whether it scores one record or 3,000


def fit(
    *,
    noise: bool = False,
    seed: int = 0,
    extra: bool = False,
    fault: str | None = None,
    logit_shift: float = 2.0,
) -> tuple[Any, list[str], float]:
    """A model, its features and its decision threshold, the way the pipeline makes them.

    The threshold is the model's own at the alert budget on its training rows, as `evaluate`
    computes it. `fault` breaks the model the way real ones break, to see which gate catches
    it: `diverged` (NaN weights: every request a 500), `collapsed` (zero weights: one constant
    score), `slow` (hundreds of pass-through steps before the model: tens of ms per call, the
    same scores), `shrunk` and `inflated` (the same ranking, log-odds moved by `logit_shift`:
    a calibration bug), `silent` (never alerts) and `noisy` (alerts ten times as often) with
    honest scores, and `segment` (trained where the labels of one range of tx_amount were
    lost: wrong on that segment only).
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from shipyard.metrics import budget_threshold

    if fault is not None and fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}")
    train = frame(seed=100 + seed, extra=extra)
    features = [c for c in train.columns if c != TARGET]
    y = train[TARGET].to_numpy()
    if noise:  # a model that learned nothing useful
        y = np.random.default_rng(seed).permutation(y)
    model: Any = make_pipeline(StandardScaler(), LogisticRegression())
    if fault == "slow":
        # Each pass-through step adds its input checks to every call. Thousands of boosting
        # rounds were as slow, but 6,000 trees took 19 s to check and save with skops, and
        # 2 s more to load in each server.
        idle = [StandardScaler(with_mean=False, with_std=False) for _ in range(SLOW_STEPS)]
        model = make_pipeline(*idle, StandardScaler(), LogisticRegression())
    elif fault == "segment":
        y = np.where(train["tx_amount"].to_numpy() > SEGMENT, 0, y)
        model = HistGradientBoostingClassifier(max_iter=100, random_state=seed)
    model.fit(train[features], y)
    if fault == "diverged":
        model[-1].coef_[:] = np.nan
    elif fault == "collapsed":
        model[-1].coef_[:] = 0.0
    elif fault in ("shrunk", "inflated"):
        model[-1].intercept_ += -logit_shift if fault == "shrunk" else logit_shift
    scores = model.predict_proba(train[features])[:, 1]
    budget = 10 * BUDGET if fault == "noisy" else BUDGET
    threshold = 1.0 if fault == "silent" else budget_threshold(scores, budget)
    if fault in ("diverged", "collapsed"):
        threshold = 0.5
    return model, features, threshold


def register(
    tmp: Path,
    *,
    noise: bool = False,
    seed: int = 0,
    extra: bool = False,
    tags: dict[str, str] | None = None,
    test: pd.DataFrame | None = None,
    fault: str | None = None,
    canary: str | None = None,
) -> str:
    """Fit (see `fit`), log and register one version the way the pipeline does.

    `canary` records a canary result signed the way the canary controller signs it.
    """
    from shipyard import grant, promotion, registry, tracking
    from shipyard.config import BaseSection, TrackingConfig
    from shipyard.models import storage
    from shipyard.schema import dump_ranges, field_ranges
    from shipyard.serving.buckets import dump_bounds, reference_bounds
    from shipyard.tags import TAG

    tracking.configure(BaseSection(seed=0, model_name=NAME, tracking=TrackingConfig()))
    model, features, threshold = fit(noise=noise, seed=seed, extra=extra, fault=fault)
    train = frame(seed=100 + seed, extra=extra)
    with np.errstate(all="ignore"):
        reference = model.predict_proba(train[features])[:, 1]
    bounds = reference_bounds(reference) if np.isfinite(reference).all() else (0.5, 1.0)
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
        "shipyard.threshold_at_budget": f"{threshold:.6g}",
        TAG["score_buckets"]: dump_bounds(bounds),
        TAG["label_column"]: TARGET,
        TAG["field_ranges"]: dump_ranges(field_ranges(train, features, {})),
    }
    all_tags.update(tags or {})
    version = registry.register_version(logged["model_uri"], NAME, run_id, all_tags)
    if canary is not None:
        mv = registry.resolve(NAME, version)
        registry.set_version_tags(NAME, version, grant.stamp(mv, promotion.CANARY_TAG, canary))
    return version

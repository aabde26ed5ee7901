"""One window of live traffic against the serving version's reference, judged by Evidently.

Evidently computes per-feature drift and prediction-score drift with the methods of
`monitoring/policy.yaml`. Data quality (missing values, values outside the reference's
range, unseen categories) and live quality against the version's test-time metrics, when
labels have arrived, are plain pandas and our own metrics, so each figure has one owner.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from shipyard.monitoring.estimate import Estimate
from shipyard.monitoring.policy import MonitoringPolicy
from shipyard.monitoring.reference import Reference

P_VALUE_METHODS = {"ks", "chisquare", "z", "anderson"}  # drift when the p-value is below


@dataclass
class Judgement:
    rows: int  # rows in the window
    sampled: int  # rows judged after sampling
    feature_drift: dict[str, float] = field(default_factory=dict)  # feature -> statistic
    drifted_features: list[str] = field(default_factory=list)
    drift_share: float = 0.0
    score_drift: float = math.nan
    score_drifted: bool = False
    data_quality: dict[str, dict[str, float]] = field(default_factory=dict)
    data_quality_problems: list[str] = field(default_factory=list)
    live_quality: dict[str, dict[str, float]] = field(default_factory=dict)
    quality_dropped: list[str] = field(default_factory=list)
    estimated_dropped: list[str] = field(default_factory=list)  # from scores, before labels
    reasons: list[str] = field(default_factory=list)
    snapshot: Any = None  # the Evidently run, for HTML and the workspace

    @property
    def drifted(self) -> bool:
        return bool(self.reasons)

    def summary(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "snapshot"}
        out["drifted"] = self.drifted
        return out


def _kinds(ref: Reference) -> tuple[list[str], list[str]]:
    numeric = [f for f in ref.features if pd.api.types.is_numeric_dtype(ref.frame[f])]
    return numeric, [f for f in ref.features if f not in numeric]


def _is_drift(method: str, value: float, threshold: float) -> bool:
    if method in P_VALUE_METHODS:
        return bool(value < threshold)
    return bool(value >= threshold)


def _evidently(
    ref: Reference,
    current: pd.DataFrame,
    policy: MonitoringPolicy,
    metadata: dict[str, dict[str, str]] | None = None,
) -> Any:
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    numeric, categorical = _kinds(ref)
    cfg = policy.drift
    judged = [f for f in ref.features if f not in cfg.exclude]
    definition = DataDefinition(
        numerical_columns=[*numeric, "score"], categorical_columns=categorical
    )
    columns = [*ref.features, "score"]
    report = Report(
        [
            DataDriftPreset(
                columns=judged,
                num_method=cfg.numerical_method,
                num_threshold=cfg.numerical_threshold,
                cat_method=cfg.categorical_method,
                cat_threshold=cfg.categorical_threshold,
                drift_share=cfg.drift_share,
            ),
            ValueDrift(column="score", method=cfg.score_method, threshold=cfg.score_threshold),
        ]
    )
    return report.run(
        current_data=Dataset.from_pandas(current[columns], data_definition=definition),
        reference_data=Dataset.from_pandas(ref.frame[columns], data_definition=definition),
        metadata=dict(metadata or {}),
    )


def estimated_metadata(estimated: Estimate | None) -> dict[str, dict[str, str]]:
    """The label-free estimate as the Evidently run's metadata, so the workspace that
    `shipyard monitor ui` serves carries it beside the drift figures."""
    if estimated is None:
        return {}
    if estimated.not_judged is not None:
        return {"shipyard_estimated_quality": {"not_judged": estimated.not_judged}}
    figures = {
        name: f"{value:.4f}"
        for name in ("average_precision", "roc_auc", "precision_at_budget")
        if (value := getattr(estimated, name)) is not None
    }
    return {"shipyard_estimated_quality": figures}


def _data_quality(ref: Reference, current: pd.DataFrame) -> dict[str, dict[str, float]]:
    numeric, categorical = _kinds(ref)
    out: dict[str, dict[str, float]] = {}
    for f in ref.features:
        col = current[f]
        figures = {"missing_share": float(col.isna().mean())}
        if f in numeric:
            low, high = ref.frame[f].min(), ref.frame[f].max()
            values = pd.to_numeric(col, errors="coerce")
            figures["out_of_range_share"] = float(((values < low) | (values > high)).mean())
        elif f in categorical:
            seen = set(ref.frame[f].dropna().astype(str))
            figures["unseen_category_share"] = float(
                (~col.dropna().astype(str).isin(seen)).sum() / max(len(col), 1)
            )
        out[f] = figures
    return out


def _quality_problems(quality: dict[str, dict[str, float]], policy: MonitoringPolicy) -> list[str]:
    bounds = {
        "missing_share": policy.quality.max_missing_share,
        "out_of_range_share": policy.quality.max_out_of_range_share,
        "unseen_category_share": policy.quality.max_unseen_category_share,
    }
    return [
        f"{feature}: {name} {value:.3f} > {bounds[name]}"
        for feature, figures in quality.items()
        for name, value in figures.items()
        if value > bounds[name]
    ]


def _live_quality(
    ref: Reference, labelled: pd.DataFrame, policy: MonitoringPolicy, budget: float
) -> tuple[dict[str, dict[str, float]], list[str]]:
    from shipyard.metrics import quality

    y = labelled["label"].to_numpy().astype(int)
    if len(labelled) < policy.quality.min_labelled_rows or len(np.unique(y)) < 2:
        return {}, []
    live = quality(y, labelled["score"].to_numpy(dtype=float), budget)
    out: dict[str, dict[str, float]] = {}
    dropped: list[str] = []
    for metric, allowed in policy.quality.max_drop.items():
        test = ref.tags.test_metrics.get(metric, float("nan"))
        out[metric] = {"live": live[metric], "test": test, "drop": test - live[metric]}
        if test - live[metric] > allowed:
            dropped.append(f"{metric} {live[metric]:.3f} vs {test:.3f} at test (drop > {allowed})")
    return out, dropped


def judge(
    ref: Reference,
    window: pd.DataFrame,
    policy: MonitoringPolicy,
    labelled: pd.DataFrame | None = None,
    budget: float = 0.01,
    rows: int | None = None,
    estimated: Estimate | None = None,
) -> Judgement:
    """Drift, data quality and live quality of one window; `window` has at least min_rows.

    `rows` is the window's size when `window` is already a sample of it. `estimated`: the
    window's label-free quality estimate, held to `quality.max_estimated_drop`.
    """
    cap, seed = policy.window.sample_rows, policy.window.seed
    current = window if len(window) <= cap else window.sample(n=cap, random_state=seed)
    sampled_ref = ref  # the same cap on both sides: more rows change no verdict
    if len(ref.frame) > cap:
        sampled_ref = replace(ref, frame=ref.frame.sample(n=cap, random_state=seed))
    j = Judgement(rows=rows or len(window), sampled=len(current))
    j.snapshot = _evidently(sampled_ref, current, policy, estimated_metadata(estimated))
    cfg = policy.drift
    numeric, _ = _kinds(ref)
    for metric in j.snapshot.dict()["metrics"]:
        conf = metric.get("config", {})
        if not conf.get("type", "").endswith(":ValueDrift"):
            continue
        column, value = conf["column"], float(metric["value"])
        if column == "score":
            j.score_drift = value
            j.score_drifted = _is_drift(cfg.score_method, value, cfg.score_threshold)
            continue
        j.feature_drift[column] = value
        method, threshold = (
            (cfg.numerical_method, cfg.numerical_threshold)
            if column in numeric
            else (cfg.categorical_method, cfg.categorical_threshold)
        )
        if _is_drift(method, value, threshold):
            j.drifted_features.append(column)
    judged = [f for f in ref.features if f not in cfg.exclude]
    j.drift_share = len(j.drifted_features) / max(len(judged), 1)
    j.data_quality = _data_quality(ref, current)
    j.data_quality_problems = _quality_problems(j.data_quality, policy)
    if labelled is not None and not labelled.empty:
        j.live_quality, j.quality_dropped = _live_quality(ref, labelled, policy, budget)
    if j.drift_share >= cfg.drift_share:
        j.reasons.append(
            f"{len(j.drifted_features)} of {len(judged)} features drifted "
            f"({', '.join(j.drifted_features)})"
        )
    if j.score_drifted:
        j.reasons.append(f"prediction score drifted ({cfg.score_method} {j.score_drift:.3f})")
    j.reasons += [f"live quality dropped: {d}" for d in j.quality_dropped]
    if estimated is not None:
        j.estimated_dropped = estimated.drops(policy.quality.max_estimated_drop)
    j.reasons += [f"estimated quality dropped (no labels): {d}" for d in j.estimated_dropped]
    return j

"""Model quality estimated from scores alone, before the labels arrive (confidence-based
performance estimation, CBPE, as NannyML describes it).

The version's reference scores and labels fit a calibration map (isotonic: monotone, no
shape assumed). In a live window each row's calibrated score is read as its probability of
being positive, so every confusion-matrix count at every threshold has an expected value,
and ROC AUC, average precision and precision at the alert budget follow from those.

What it can see: quality that moves because the scores moved (covariate shift, a model that
ranks worse on new inputs while staying calibrated). What it cannot: a change in P(label |
score) itself (concept drift, or label shift that breaks the calibration); only realised
labels show that. Where the reference has few rows (the highest scores, where positives are
rare) the calibration is noisy, and live scores beyond the reference's range take its edge
value: a window that moves there is estimated less closely.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from shipyard.monitoring.policy import QualityMetric


@dataclass(frozen=True)
class Estimate:
    """Estimated figures for one window, or why there are none."""

    rows: int
    roc_auc: float | None = None
    average_precision: float | None = None
    precision_at_budget: float | None = None
    expected_positives: float | None = None
    not_judged: str | None = None  # the reason, when no figure is given
    # The same estimate on the reference's own scores: what a drop is measured from. The
    # estimator's bias is then on both sides, unlike against the version's test figures.
    baseline: Estimate | None = None

    def drops(self, allowed: Mapping[QualityMetric, float]) -> list[str]:
        """Each figure that fell from the baseline by more than it may, as a reason."""
        if self.not_judged is not None or self.baseline is None:
            return []
        out = []
        for metric, bound in sorted(allowed.items()):
            now, then = getattr(self, metric), getattr(self.baseline, metric)
            if now is not None and then is not None and then - now > bound:
                out.append(f"{metric} {now:.3f} vs {then:.3f} on the reference (drop > {bound})")
        return out


@dataclass(frozen=True)
class Calibration:
    """Reference scores -> probability of the positive label."""

    model: Any  # a fitted sklearn IsotonicRegression
    scores: np.ndarray  # the reference's scores it was fitted on

    @classmethod
    def fit(cls, scores: np.ndarray, labels: np.ndarray) -> Calibration:
        from sklearn.isotonic import IsotonicRegression

        y = np.asarray(labels, dtype="float64")
        model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        x = np.asarray(scores, dtype="float64")
        model.fit(x, y)
        return cls(model, x)

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(np.asarray(scores, dtype="float64")))


def _too_few(rows: int, min_rows: int) -> Estimate:
    return Estimate(rows, not_judged=f"{rows} rows, fewer than {min_rows}")


def estimate(
    scores: np.ndarray,
    calibration: Calibration,
    alert_budget: float,
    min_rows: int = 500,
    min_expected_positives: float = 5.0,
) -> Estimate:
    """Expected ROC AUC, average precision and precision at the top `alert_budget` share of
    scores. A window too small, or with too few expected positives for a ranking figure to
    mean anything, is not judged, with the reason."""
    values = np.asarray(scores, dtype="float64")
    values = values[np.isfinite(values)]
    n = len(values)
    if n < min_rows:
        return _too_few(n, min_rows)
    p = calibration.probabilities(values)
    positives = float(p.sum())
    if positives < min_expected_positives or n - positives < min_expected_positives:
        return Estimate(
            n,
            expected_positives=positives,
            not_judged=f"{positives:.1f} expected positives of {n} rows: too few to rank",
        )
    # Rows by descending score; tied scores form one threshold step, as in sklearn.
    order = np.argsort(-values, kind="stable")
    ranked, prob = values[order], p[order]
    last = np.r_[np.flatnonzero(np.diff(ranked) != 0), n - 1]  # each step's last row
    tp = np.cumsum(prob)[last]
    fp = np.cumsum(1.0 - prob)[last]
    tpr = np.r_[0.0, tp / positives]
    fpr = np.r_[0.0, fp / (n - positives)]
    roc_auc = float(np.trapezoid(tpr, fpr))
    precision = tp / (tp + fp)
    average_precision = float(np.sum(np.diff(tpr) * precision))
    top = max(1, int(np.ceil(alert_budget * n)))
    return Estimate(
        n,
        roc_auc=roc_auc,
        average_precision=average_precision,
        precision_at_budget=float(prob[:top].mean()),
        expected_positives=positives,
    )


MIN_CALIBRATION_POSITIVES = 30  # fewer positives in the reference: no calibration to trust


def calibrate(reference: pd.DataFrame, target: str) -> Calibration | str:
    """The version's calibration, fitted on its reference sample (its rows' labels and the
    scores the version gave them at registration), or why there is none."""
    if target not in reference.columns:
        return f"the reference has no label column '{target}'"
    labels = reference[target].to_numpy(dtype="float64")
    known = np.isfinite(labels)
    positives = int(labels[known].sum())
    if positives < MIN_CALIBRATION_POSITIVES:
        return (
            f"the reference has {positives} positive labels; "
            f"at least {MIN_CALIBRATION_POSITIVES} are needed to calibrate"
        )
    return Calibration.fit(reference["score"].to_numpy()[known], labels[known])


def for_window(
    reference: pd.DataFrame, target: str, scores: np.ndarray, budget: float, min_rows: int
) -> Estimate:
    """The window's estimate, calibrated on the version's reference sample."""
    return calibrated(calibrate(reference, target), scores, budget, min_rows)


def calibrated(
    scale: Calibration | str, scores: np.ndarray, budget: float, min_rows: int
) -> Estimate:
    """The window's estimate with `scale` (or its reason for none), with the same estimate
    on the reference's scores beside it."""
    n = int(np.isfinite(np.asarray(scores, dtype="float64")).sum())
    if n < min_rows:  # the window's own reason first: it holds whatever the reference
        return _too_few(n, min_rows)
    if isinstance(scale, str):
        return Estimate(n, not_judged=scale)
    window = estimate(scores, scale, budget, min_rows=min_rows)
    if window.not_judged is not None:
        return window
    return replace(window, baseline=estimate(scale.scores, scale, budget, min_rows=1))

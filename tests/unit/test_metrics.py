"""The promotion bootstrap's fast path gives the figures sklearn gives on the drawn rows."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

from shipyard import metrics


def reference(
    y: np.ndarray, new: np.ndarray, old: np.ndarray, metric: str, relative: bool
) -> list[float]:
    """The plain loop: sklearn on the resampled rows, one draw at a time."""
    score = {
        "average_precision": average_precision_score,
        "roc_auc": roc_auc_score,
        "log_loss": lambda t, p: log_loss(t, np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1]),
        "brier": lambda t, p: float(np.mean((p - t) ** 2)),
    }[metric]
    rng = np.random.default_rng(0)
    out = []
    for _ in range(60):
        idx = rng.integers(0, len(y), len(y))
        if y[idx].min() == y[idx].max():
            continue
        a, b = score(y[idx], new[idx]), score(y[idx], old[idx])
        out.append((a - b) / b if relative else a - b)
    return out


@pytest.mark.parametrize("metric", metrics.FAST)
@pytest.mark.parametrize("relative", [False, True])
def test_weighted_draws_equal_sklearn_on_the_drawn_rows(metric: str, relative: bool) -> None:
    rng = np.random.default_rng(7)
    y = (rng.random(3000) < 0.03).astype(int)
    new = np.round(np.clip(rng.normal(0.05 + 0.2 * y, 0.1), 0, 1), 2)  # many ties, and 0s
    old = np.round(np.clip(rng.normal(0.05 + 0.1 * y, 0.1), 0, 1), 3)
    want = reference(y, new, old, metric, relative)
    got = metrics.paired_bootstrap_delta(
        y, new, old, metric, budget=0.01, resamples=60, confidence=0.9, seed=0, relative=relative
    )
    lo, hi = np.percentile(want, [5, 95])
    assert got["resamples"] == len(want)
    assert got["ci_low"] == pytest.approx(lo, rel=1e-9, abs=1e-12)
    assert got["ci_high"] == pytest.approx(hi, rel=1e-9, abs=1e-12)


def test_an_unknown_metric_is_an_error() -> None:
    y = np.array([0, 1] * 10)
    with pytest.raises(ValueError, match="no paired comparison for metric 'f1'"):
        metrics.paired_bootstrap_delta(
            y, y * 0.5, y * 0.4, "f1", budget=0.1, resamples=4, confidence=0.9, seed=0
        )

"""Model quality figures shared by evaluate, promotion gates and live monitoring.

sklearn (about 1 s to import) is imported by the functions that call it: the deployment
controller, the webhook and `promote` import this module through the gates, and most of
them never compute a point metric.
"""

from __future__ import annotations

import numpy as np

HIGHER_IS_BETTER = {
    "roc_auc": True,
    "average_precision": True,
    "precision_at_budget": True,
    "brier": False,
    "log_loss": False,
    "latency_ms_p50": False,
}


def budget_threshold(scores: np.ndarray, budget: float) -> float:
    """The score above which the top `budget` share of rows raise an alert."""
    k = max(1, int(np.ceil(len(scores) * budget)))
    return float(np.sort(scores)[::-1][k - 1])


def precision_at_budget(y: np.ndarray, scores: np.ndarray, budget: float) -> float:
    """Share of true positives among the `budget` share of rows an analyst team can review."""
    k = max(1, int(np.ceil(len(scores) * budget)))
    top = np.argsort(-scores, kind="stable")[:k]
    return float(np.mean(y[top]))


def quality(y: np.ndarray, scores: np.ndarray, budget: float) -> dict[str, float]:
    if len(np.unique(y)) < 2:
        raise ValueError("quality needs both classes present in the labels")
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

    return {
        "roc_auc": float(roc_auc_score(y, scores)),
        "average_precision": float(average_precision_score(y, scores)),
        "precision_at_budget": precision_at_budget(y, scores, budget),
        "brier": float(brier_score_loss(y, scores)),
    }


def _thin(rows: list[dict[str, float]], limit: int = 200) -> list[dict[str, float]]:
    if len(rows) <= limit:
        return rows
    keep = np.unique(np.linspace(0, len(rows) - 1, limit).round().astype(int))
    return [rows[i] for i in keep]


def roc_points(y: np.ndarray, scores: np.ndarray) -> list[dict[str, float]]:
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, scores)
    return _thin([{"fpr": float(a), "tpr": float(b)} for a, b in zip(fpr, tpr, strict=True)])


def pr_points(y: np.ndarray, scores: np.ndarray) -> list[dict[str, float]]:
    from sklearn.metrics import precision_recall_curve

    precision, recall, _ = precision_recall_curve(y, scores)
    pts = zip(recall, precision, strict=True)
    return _thin([{"recall": float(r), "precision": float(p)} for r, p in pts])


def confusion_rows(y: np.ndarray, scores: np.ndarray, threshold: float) -> list[dict[str, int]]:
    predicted = (scores >= threshold).astype(int)
    return [{"actual": int(a), "predicted": int(p)} for a, p in zip(y, predicted, strict=True)]


def _metric(name: str, y: np.ndarray, p: np.ndarray, budget: float) -> float:
    """Every metric a paired comparison may use; an unknown name is an error, never AP."""
    from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

    if name == "precision_at_budget":
        return precision_at_budget(y, p, budget)
    if name == "roc_auc":
        return float(roc_auc_score(y, p))
    if name == "average_precision":
        return float(average_precision_score(y, p))
    if name == "brier":
        return float(brier_score_loss(y, p))
    if name == "log_loss":
        return float(log_loss(y, np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1]))
    raise ValueError(f"no paired comparison for metric {name!r}")


def alerts(scores: np.ndarray, threshold: float) -> int:
    """Records a model alerts on at its decision threshold (as serving decides: >=)."""
    return int(np.count_nonzero(scores >= threshold))


class _Sorted:
    """One model's scores sorted once, so each bootstrap draw's metric is a few weighted
    cumulative sums instead of a sort and an sklearn call (promotion draws 500 of them on
    each of two metrics and two models)."""

    def __init__(self, y: np.ndarray, p: np.ndarray) -> None:
        self.order = np.argsort(-p, kind="mergesort")
        self.y = y[self.order].astype(float)
        ranked = p[self.order]
        self.ends = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]  # tie groups
        clipped = np.clip(p, 1e-15, 1 - 1e-15)
        self.log_loss = -(y * np.log(clipped) + (1 - y) * np.log(1 - clipped))
        self.brier = (p - y) ** 2

    def metric(self, name: str, w: np.ndarray) -> float:
        """`name` on the rows drawn with multiplicities `w`: equal to it on the drawn rows."""
        if name in ("log_loss", "brier"):
            return float((w * getattr(self, name)).sum() / w.sum())  # no BLAS threads
        ws = w[self.order]
        total = np.cumsum(ws)[self.ends]
        keep = np.diff(total, prepend=0.0) > 0  # a tie group no draw picked is no threshold
        tp = np.cumsum(ws * self.y)[self.ends][keep]
        fp = total[keep] - tp
        if name == "average_precision":
            recall = tp / tp[-1]
            return float(np.sum(np.diff(recall, prepend=0.0) * tp / total[keep]))
        if name == "roc_auc":
            return float(np.trapezoid(np.r_[0.0, tp / tp[-1]], np.r_[0.0, fp / fp[-1]]))
        raise ValueError(f"no paired comparison for metric {name!r}")


FAST = ("average_precision", "roc_auc", "log_loss", "brier")


def paired_bootstrap_delta(
    y: np.ndarray,
    new: np.ndarray,
    old: np.ndarray,
    metric: str,
    *,
    budget: float,
    resamples: int,
    confidence: float,
    seed: int,
    relative: bool = False,
) -> dict[str, float]:
    """metric(new) - metric(old) on the same rows, with a percentile bootstrap interval.

    Rows are resampled once per draw for both models, so the interval reflects the
    difference between them, not the noise of each on its own. `relative` divides each
    difference by the old model's figure on the same draw (for a loss, whose scale follows
    the base rate).
    """

    def change(new_value: float, old_value: float) -> float:
        return (new_value - old_value) / old_value if relative else new_value - old_value

    rng = np.random.default_rng(seed)
    n = len(y)
    fast = (_Sorted(y, new), _Sorted(y, old)) if metric in FAST else None
    deltas = []
    for _ in range(resamples):
        idx = rng.integers(0, n, n)
        if y[idx].min() == y[idx].max():
            continue  # a draw without both classes has no ranking metric
        if fast is not None:
            w = np.bincount(idx, minlength=n).astype(float)
            deltas.append(change(fast[0].metric(metric, w), fast[1].metric(metric, w)))
        else:
            drawn = _metric(metric, y[idx], new[idx], budget)
            deltas.append(change(drawn, _metric(metric, y[idx], old[idx], budget)))
    if len(deltas) < resamples // 2:
        raise ValueError("too few positives in the test set for a bootstrap interval")
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(deltas, [tail, 100 - tail])
    new_value, old_value = _metric(metric, y, new, budget), _metric(metric, y, old, budget)
    return {
        "challenger": new_value,
        "champion": old_value,
        "delta": change(new_value, old_value),
        "ci_low": float(lo),
        "ci_high": float(hi),
        "confidence": confidence,
        "resamples": float(len(deltas)),
    }

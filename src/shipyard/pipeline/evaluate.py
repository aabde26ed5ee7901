"""evaluate: score every candidate, pick the best on validation, report it on test."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shipyard import metrics, tracking
from shipyard.artifacts import EVAL, FEATURES, MODELS, atomic_dir, progress, read_json, write_json
from shipyard.config import EvaluateSection, Params
from shipyard.models import storage
from shipyard.pipeline.featurize import FeatureColumns
from shipyard.pipeline.train import RUNS_FILE


def latency_ms_p50(model: Any, rows: pd.DataFrame) -> float:
    """Median wall time of a one-row predict: what a single request pays for the model."""
    timings = []
    for i in range(len(rows)):
        one = rows.iloc[i : i + 1]
        start = time.perf_counter()
        model.predict_proba(one)
        timings.append((time.perf_counter() - start) * 1000)
    return float(np.median(timings))


def pick_best(scores: dict[str, dict[str, dict[str, float]]], select_by: str) -> str:
    """Best validation figure wins; the test set is only ever reported, never used to choose."""
    sign = 1 if metrics.HIGHER_IS_BETTER[select_by] else -1
    return max(sorted(scores), key=lambda name: sign * scores[name]["validation"][select_by])


def score_candidates(
    loaded: dict[str, Any],
    splits: dict[str, pd.DataFrame],
    cols: FeatureColumns,
    target: str,
    cfg: EvaluateSection,
) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, np.ndarray]]:
    scores: dict[str, dict[str, dict[str, float]]] = {}
    test_scores: dict[str, np.ndarray] = {}
    for name, model in loaded.items():
        scores[name] = {}
        for split, frame in splits.items():
            p = model.predict_proba(frame[cols.all])[:, 1]
            scores[name][split] = metrics.quality(frame[target].to_numpy(), p, cfg.alert_budget)
            if split == "test":
                test_scores[name] = p
        sample = splits["test"][cols.all].head(cfg.latency_rows)
        scores[name]["test"]["latency_ms_p50"] = latency_ms_p50(model, sample)
        progress(
            "evaluate",
            f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores[name]["test"].items()),
        )
    return scores, test_scores


def _figures(y: np.ndarray, p: np.ndarray, threshold: float, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay

    for label, draw in (
        ("roc", lambda ax: RocCurveDisplay.from_predictions(y, p, ax=ax, name=name)),
        ("pr", lambda ax: PrecisionRecallDisplay.from_predictions(y, p, ax=ax, name=name)),
        (
            "confusion",
            lambda ax: ConfusionMatrixDisplay.from_predictions(
                y, (p >= threshold).astype(int), ax=ax
            ),
        ),
    ):
        fig, ax = plt.subplots(figsize=(5, 4))
        draw(ax)
        ax.set_title(f"{name}: {label} (test)")
        tracking.log_figure(fig, f"plots/{label}.png")
        plt.close(fig)


def run(params: Params) -> None:
    with atomic_dir(EVAL) as out:
        evaluate(params, out)


def evaluate(params: Params, out: Path) -> None:
    cfg, target = params.evaluate, params.data.target
    runs = read_json(MODELS / RUNS_FILE)
    cols = FeatureColumns.load(FEATURES / "features.json")
    splits = {s: pd.read_parquet(FEATURES / f"{s}.parquet") for s in ("validation", "test")}
    loaded = {
        name: storage.load(MODELS / name / "model.skops", c["trusted_types"])
        for name, c in runs["candidates"].items()
    }
    scores, test_scores = score_candidates(loaded, splits, cols, target, cfg)
    best = pick_best(scores, cfg.select_by)
    y = splits["test"][target].to_numpy()
    p = test_scores[best]
    threshold = metrics.budget_threshold(p, cfg.alert_budget)
    progress("evaluate", f"best by validation {cfg.select_by}: {best}")

    tracking.configure(params.base)
    with tracking.pipeline_run("", {}, run_id=runs["parent_run_id"]):
        tracking.log_metrics({f"test_{k}": v for k, v in scores[best]["test"].items()})
        tracking.set_tags({"shipyard.best_candidate": best})
        for name, c in runs["candidates"].items():
            with tracking.candidate_run(name, {}, run_id=c["run_id"]):
                for split, values in scores[name].items():
                    tracking.log_metrics({f"{split}_{k}": v for k, v in values.items()})
                cut = metrics.budget_threshold(test_scores[name], cfg.alert_budget)
                _figures(y, test_scores[name], cut, name)

    write_json(
        out / "metrics.json",
        {
            "test": scores[best]["test"],
            "validation": scores[best]["validation"],
            "threshold_at_budget": threshold,
        },
    )
    write_json(
        out / "candidates.json", {"best": best, "select_by": cfg.select_by, "scores": scores}
    )
    plots = out / "plots"
    plots.mkdir()
    write_json(plots / "roc.json", metrics.roc_points(y, p))
    write_json(plots / "prc.json", metrics.pr_points(y, p))
    write_json(plots / "confusion.json", metrics.confusion_rows(y, p, threshold))

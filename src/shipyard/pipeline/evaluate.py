"""evaluate: score every candidate, pick the best on validation, report it on test.

`evaluate` is the pure core over loaded models and frames; `run` reads, logs and writes."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shipyard import metrics, tracking
from shipyard.artifacts import Layout, atomic_dir, progress, write_json
from shipyard.config import EvaluateSection, Params
from shipyard.pipeline.featurize import FeatureColumns
from shipyard.pipeline.train import TrainingRuns

METRICS_FILE = "metrics.json"
CANDIDATES_FILE = "candidates.json"
JUDGED = ("validation", "test")  # chosen on the first, reported on the second


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


@dataclass(frozen=True)
class Evaluation:
    """Every candidate's figures and the one chosen; what `run` logs and writes."""

    scores: dict[str, dict[str, dict[str, float]]]
    test_scores: dict[str, np.ndarray]
    best: str
    select_by: str
    threshold: float  # the best candidate's alert-budget cut on test

    def summary(self) -> dict[str, Any]:
        """`metrics.json`: what `dvc metrics show` prints and register gates on."""
        best = self.scores[self.best]
        return {
            "test": best["test"],
            "validation": best["validation"],
            "threshold_at_budget": self.threshold,
        }


def evaluate(
    loaded: dict[str, Any],
    splits: dict[str, pd.DataFrame],
    cols: FeatureColumns,
    target: str,
    cfg: EvaluateSection,
) -> Evaluation:
    """The pure core: score, choose on validation, cut the threshold on test."""
    scores, test_scores = score_candidates(loaded, splits, cols, target, cfg)
    best = pick_best(scores, cfg.select_by)
    threshold = metrics.budget_threshold(test_scores[best], cfg.alert_budget)
    return Evaluation(scores, test_scores, best, cfg.select_by, threshold)


def run(params: Params, layout: Layout) -> None:
    with atomic_dir(layout.eval) as out:  # a failure also removes a stale output
        runs = TrainingRuns.load(layout.models)
        cols = FeatureColumns.load(layout.features / "features.json")
        splits = {s: pd.read_parquet(layout.features / f"{s}.parquet") for s in JUDGED}
        loaded = {name: runs.load_model(layout.models, name) for name in runs.candidates}
        result = evaluate(loaded, splits, cols, params.data.target, params.evaluate)
        progress("evaluate", f"best by validation {result.select_by}: {result.best}")
        y = splits["test"][params.data.target].to_numpy()
        _log(params, runs, result, y)
        _write(out, result, y)


def _log(params: Params, runs: TrainingRuns, result: Evaluation, y: np.ndarray) -> None:
    tracking.configure(params.base)
    with tracking.pipeline_run("", {}, run_id=runs.parent_run_id):
        tracking.log_metrics(
            {f"test_{k}": v for k, v in result.scores[result.best]["test"].items()}
        )
        tracking.set_tags({"shipyard.best_candidate": result.best})
        for name, c in runs.candidates.items():
            with tracking.candidate_run(name, {}, run_id=c.run_id):
                for split, values in result.scores[name].items():
                    tracking.log_metrics({f"{split}_{k}": v for k, v in values.items()})
                p = result.test_scores[name]
                _figures(y, p, metrics.budget_threshold(p, params.evaluate.alert_budget), name)


def _write(out: Path, result: Evaluation, y: np.ndarray) -> None:
    p = result.test_scores[result.best]
    write_json(out / METRICS_FILE, result.summary())
    write_json(
        out / CANDIDATES_FILE,
        {"best": result.best, "select_by": result.select_by, "scores": result.scores},
    )
    plots = out / "plots"
    plots.mkdir()
    write_json(plots / "roc.json", metrics.roc_points(y, p))
    write_json(plots / "prc.json", metrics.pr_points(y, p))
    write_json(plots / "confusion.json", metrics.confusion_rows(y, p, result.threshold))

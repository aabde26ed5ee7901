"""train: fit every candidate in params.train, one nested MLflow run each."""

from __future__ import annotations

import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.pipeline import Pipeline

from shipyard import models, tracking
from shipyard.artifacts import FEATURES, MODELS, atomic_dir, progress, write_json
from shipyard.config import CandidateSpec, Params
from shipyard.lineage import TRAIN_SECTIONS, lineage_tags
from shipyard.models import storage
from shipyard.pipeline.featurize import FeatureColumns
from shipyard.tags import TAG

RUNS_FILE = "runs.json"


def fit_candidate(
    spec: CandidateSpec, train: pd.DataFrame, cols: FeatureColumns, target: str, seed: int
) -> Pipeline:
    model = models.build(spec, cols.numeric, cols.categorical, seed)
    model.fit(train[cols.all], train[target].to_numpy())
    return model


def requirements(spec: CandidateSpec) -> list[str]:
    """Pinned from this environment, so a served model gets what it was trained with."""
    names = ["numpy", "pandas", "scikit-learn", "scipy", "skops"]
    if spec.type == "torch_mlp":
        names.append("torch")
    return [f"{n}=={version(n).split('+')[0]}" for n in names]


def _fit_details(model: Pipeline) -> dict[str, float]:
    est: Any = model.named_steps["model"]
    details: dict[str, float] = {}
    if hasattr(est, "best_epoch_"):
        details["best_epoch"] = est.best_epoch_
        details["best_validation_loss"] = min(est.validation_loss_)
    if hasattr(est, "n_iter_"):
        n_iter = est.n_iter_
        details["n_iter"] = float(n_iter if isinstance(n_iter, int) else max(n_iter))
    return details


def run(params: Params, root: Path = Path()) -> None:
    train = pd.read_parquet(FEATURES / "train.parquet")
    cols = FeatureColumns.load(FEATURES / "features.json")
    target = params.data.target
    tags = lineage_tags(params, TRAIN_SECTIONS, root)
    experiment_id = tracking.configure(params.base)
    example = train[cols.all].head(5)
    record: dict[str, Any] = {"experiment_id": experiment_id, "tags": tags, "candidates": {}}
    with (
        atomic_dir(MODELS) as out,
        tracking.pipeline_run(
            f"pipeline {tags[TAG['git_sha']][:8]}", {**tags, "shipyard.stage": "pipeline"}
        ) as parent_id,
    ):
        record["parent_run_id"] = parent_id
        total = len(params.train.candidates)
        for i, (name, spec) in enumerate(params.train.candidates.items(), 1):
            progress("train", f"[{i}/{total}] fitting {name} ({spec.type}) on {len(train)} rows")
            started = time.perf_counter()
            model = fit_candidate(spec, train, cols, target, params.base.seed)
            seconds = time.perf_counter() - started
            (out / name).mkdir()
            trusted = storage.save(model, out / name / "model.skops")
            with tracking.candidate_run(name, {**tags, TAG["candidate"]: name}) as run_id:
                tracking.log_params({"candidate": name, **spec.model_dump()})
                tracking.log_metrics({"fit_seconds": seconds, **_fit_details(model)})
                logged = tracking.log_model(model, example, trusted, requirements(spec))
            record["candidates"][name] = {
                "type": spec.type,
                "run_id": run_id,
                "trusted_types": trusted,
                "fit_seconds": round(seconds, 3),
                **logged,
            }
            progress(
                "train",
                f"[{i}/{total}] {name} fitted in {seconds:.1f}s, logged as {logged['model_id']}",
            )
        write_json(out / RUNS_FILE, record)

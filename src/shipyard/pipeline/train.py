"""train: fit every candidate in params.train, one nested MLflow run each.

`fit_candidate` is the pure core; `run` reads the features and logs to MLflow."""

from __future__ import annotations

import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel
from sklearn.pipeline import Pipeline

from shipyard import models, tracking
from shipyard.artifacts import Layout, atomic_dir, progress, write_json
from shipyard.config import CandidateSpec, Params
from shipyard.lineage import TRAIN_SECTIONS, lineage_tags
from shipyard.models import storage
from shipyard.pipeline.featurize import FeatureColumns
from shipyard.tags import TAG

RUNS_FILE = "runs.json"
MODEL_FILE = "model.skops"


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


def fit_details(model: Pipeline) -> dict[str, float]:
    est: Any = model.named_steps["model"]
    details: dict[str, float] = {}
    if hasattr(est, "best_epoch_"):
        details["best_epoch"] = est.best_epoch_
        details["best_validation_loss"] = min(est.validation_loss_)
    if hasattr(est, "n_iter_"):
        n_iter = est.n_iter_
        details["n_iter"] = float(n_iter if isinstance(n_iter, int) else max(n_iter))
    return details


class CandidateRun(BaseModel):
    """One fitted candidate: where MLflow holds it and which types its skops file may load."""

    type: str
    run_id: str
    model_uri: str
    model_id: str
    trusted_types: list[str]
    fit_seconds: float


class TrainingRuns(BaseModel):
    """What train hands evaluate and register (`runs.json`): a record, not string keys."""

    experiment_id: str
    parent_run_id: str
    tags: dict[str, str]
    candidates: dict[str, CandidateRun]

    @classmethod
    def load(cls, models: Path) -> TrainingRuns:
        return cls.model_validate_json((models / RUNS_FILE).read_text())

    def load_model(self, models: Path, name: str) -> Any:
        """The candidate's skops file, loading only the types train recorded for it."""
        return storage.load(models / name / MODEL_FILE, self.candidates[name].trusted_types)


def run(params: Params, layout: Layout) -> None:
    train = pd.read_parquet(layout.features / "train.parquet")
    cols = FeatureColumns.load(layout.features / "features.json")
    tags = lineage_tags(params, TRAIN_SECTIONS)
    experiment_id = tracking.configure(params.base)
    with (
        atomic_dir(layout.models) as out,
        tracking.pipeline_run(
            f"pipeline {tags[TAG['git_sha']][:8]}", {**tags, "shipyard.stage": "pipeline"}
        ) as parent_id,
    ):
        total = len(params.train.candidates)
        candidates = {
            name: _fit_and_log(name, f"[{i}/{total}]", spec, train, cols, params, tags, out)
            for i, (name, spec) in enumerate(params.train.candidates.items(), 1)
        }
        runs = TrainingRuns(
            experiment_id=experiment_id, parent_run_id=parent_id, tags=tags, candidates=candidates
        )
        write_json(out / RUNS_FILE, runs.model_dump())


def _fit_and_log(
    name: str,
    counter: str,
    spec: CandidateSpec,
    train: pd.DataFrame,
    cols: FeatureColumns,
    params: Params,
    tags: dict[str, str],
    out: Path,
) -> CandidateRun:
    label = f"{counter} {name}"
    progress("train", f"{label}: fitting {spec.type} on {len(train)} rows")
    started = time.perf_counter()
    model = fit_candidate(spec, train, cols, params.data.target, params.base.seed)
    seconds = time.perf_counter() - started
    (out / name).mkdir()
    trusted = storage.save(model, out / name / MODEL_FILE)
    with tracking.candidate_run(name, {**tags, TAG["candidate"]: name}) as run_id:
        tracking.log_params({"candidate": name, **spec.model_dump()})
        tracking.log_metrics({"fit_seconds": seconds, **fit_details(model)})
        logged = tracking.log_model(model, train[cols.all].head(5), trusted, requirements(spec))
    progress("train", f"{label}: fitted in {seconds:.1f}s, logged as {logged['model_id']}")
    return CandidateRun(
        type=spec.type,
        run_id=run_id,
        model_uri=logged["model_uri"],
        model_id=logged["model_id"],
        trusted_types=trusted,
        fit_seconds=round(seconds, 3),
    )

"""The only module that talks to MLflow tracking: store location, runs, logged models.

The embedded default is a sqlite store with a local artifact folder under `.shipyard/`;
MLFLOW_TRACKING_URI points every command at a server instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import scipy.special  # noqa: F401  (before MLflow's modules: see `models.storage.skops_io`)

# isort: split
import mlflow
from mlflow.models import infer_signature

from shipyard.config import BaseSection


def tracking_uri(base: BaseSection) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or base.tracking.uri


def configure(base: BaseSection) -> str:
    """Point MLflow at the store and experiment; returns the experiment id."""
    embedded = not os.environ.get("MLFLOW_TRACKING_URI")
    uri = tracking_uri(base)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    exported = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(exported["MLFLOW_REGISTRY_URI"] or uri)
    for key, value in exported.items():  # MLflow exports these; keep the user's environment
        if value is None:
            os.environ.pop(key, None)
    name = base.tracking.experiment
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        experiment_id: str = found.experiment_id
    else:
        location = None
        if embedded:
            root: Path | None = Path(base.tracking.artifact_root)
        elif uri.startswith("sqlite:///"):  # a local store named by env: artifacts beside it
            root = Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts"
        else:  # a server chooses its own artifact store
            root = None
        if root is not None:
            root = root.resolve()
            root.mkdir(parents=True, exist_ok=True)
            location = root.as_uri()
        experiment_id = mlflow.create_experiment(name, artifact_location=location)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


@contextmanager
def pipeline_run(name: str, tags: dict[str, str], run_id: str | None = None) -> Iterator[str]:
    """The parent run of one pipeline run; later stages reopen it by id."""
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else name, tags=tags) as run:
        yield run.info.run_id


@contextmanager
def candidate_run(name: str, tags: dict[str, str], run_id: str | None = None) -> Iterator[str]:
    """A nested run per candidate model, under the active pipeline run."""
    with mlflow.start_run(
        run_id=run_id, run_name=None if run_id else name, nested=True, tags=tags
    ) as run:
        yield run.info.run_id


def log_params(params: dict[str, Any]) -> None:
    mlflow.log_params({k: v for k, v in params.items() if v is not None})


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


def log_artifact(path: Path, folder: str | None = None) -> None:
    mlflow.log_artifact(str(path), artifact_path=folder)


def log_figure(figure: Any, name: str) -> None:
    mlflow.log_figure(figure, name)


def log_model(
    model: Any, example: Any, trusted: list[str], requirements: list[str]
) -> dict[str, str]:
    """Log a fitted pipeline in skops format with its signature and input example.

    The pyfunc flavour returns `predict_proba`, so a served model answers with scores.
    """
    signature = infer_signature(example, model.predict_proba(example))
    info = mlflow.sklearn.log_model(
        model,
        name="model",
        serialization_format="skops",
        skops_trusted_types=trusted,
        signature=signature,
        input_example=example,
        pip_requirements=requirements,
        pyfunc_predict_fn="predict_proba",
    )
    return {"model_uri": info.model_uri, "model_id": str(info.model_id)}


def set_tags(tags: dict[str, str]) -> None:
    mlflow.set_tags(tags)

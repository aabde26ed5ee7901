"""The MLflow model registry: versions, aliases and their tags.

Aliases (stages are deprecated): `candidate` passed the pipeline gates, `challenger` passed
promotion, `champion` serves all traffic, `previous` is the last champion.
"""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow import MlflowClient

from shipyard import tracking  # noqa: F401  (configures telemetry before mlflow loads)

CANDIDATE = "candidate"
CHALLENGER = "challenger"
CHAMPION = "champion"
PREVIOUS = "previous"


def register_version(model_uri: str, name: str, run_id: str, tags: dict[str, str]) -> str:
    """A new version of `name` pointing at the logged model, tagged before anyone can alias it."""
    mv = mlflow.register_model(model_uri, name, tags={**tags, "shipyard.run_id": run_id})
    return str(mv.version)


def set_alias(name: str, alias: str, version: str) -> None:
    MlflowClient().set_registered_model_alias(name, alias, version)


def version_by_alias(name: str, alias: str) -> Any:
    return MlflowClient().get_model_version_by_alias(name, alias)

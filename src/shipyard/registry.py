"""The MLflow model registry: versions, aliases, their tags, and safe loading.

Aliases (stages are deprecated): `candidate` passed the pipeline gates, `challenger` passed
promotion, `champion` serves all traffic, `previous` is the last champion.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import scipy.special  # noqa: F401  (before MLflow's modules: see `models.storage.skops_io`)

# isort: split
import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from shipyard.errors import ShipyardError
from shipyard.tags import TAG

CANDIDATE = "candidate"
CHALLENGER = "challenger"
CHAMPION = "champion"
PREVIOUS = "previous"


def client(uri: str | None = None) -> MlflowClient:
    """A client for the registry at `uri` (tracking and registry alike), else the env's."""
    return MlflowClient(tracking_uri=uri, registry_uri=uri) if uri else MlflowClient()


def versions(name: str, uri: str | None = None) -> list[Any]:
    """Every version of `name`, with its tags (search results carry them)."""
    return list(client(uri).search_model_versions(f"name='{name}'"))


def create_webhook(name: str, url: str, events: list[Any], secret: str, uri: str) -> None:
    """Register a webhook on the MLflow server at `uri` (a SQL-backed server)."""
    client(uri).create_webhook(name=name, url=url, events=events, secret=secret)


def register_version(model_uri: str, name: str, run_id: str, tags: dict[str, str]) -> str:
    """A new version of `name` pointing at the logged model, tagged before anyone can alias it."""
    mv = mlflow.register_model(model_uri, name, tags={**tags, TAG["run_id"]: run_id})
    return str(mv.version)


def set_alias(name: str, alias: str, version: str) -> None:
    MlflowClient().set_registered_model_alias(name, alias, version)


def delete_alias(name: str, alias: str) -> None:
    MlflowClient().delete_registered_model_alias(name, alias)


def version_by_alias(name: str, alias: str, uri: str | None = None) -> Any | None:
    """The version holding `alias`, or None when no version holds it."""
    try:
        return client(uri).get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def resolve(name: str, ref: str) -> Any:
    """A version from `3` or `@candidate`, or a one-line error naming what was not found."""
    client = MlflowClient()
    try:
        if ref.startswith("@"):
            return client.get_model_version_by_alias(name, ref[1:])
        return client.get_model_version(name, ref)
    except MlflowException:
        raise ShipyardError(f"{name}: no version {ref}") from None


def set_version_tags(name: str, version: str, tags: dict[str, str]) -> None:
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)


def log_version_json(run_id: str, payload: dict[str, Any], path: str) -> None:
    """Attach a JSON document to the run behind a version (decision records, canary results)."""
    MlflowClient().log_text(run_id, json.dumps(payload, indent=2, sort_keys=True), path)


def download(uri: str, dest: Path) -> Path:
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dest)))


def load_model(name: str, version: str) -> Any:
    """The version's fitted pipeline, read with skops and our allow-list, never with pickle."""
    from shipyard.models import storage  # sklearn: here, not in every registry user

    with tempfile.TemporaryDirectory(prefix="shipyard-model-") as tmp:
        root = download(f"models:/{name}/{version}", Path(tmp))
        try:
            return storage.load_mlflow_model(root)
        except TypeError as err:
            raise ShipyardError(f"{name} version {version}: {err}") from None


def signature(name: str, version: str) -> dict[str, str]:
    """Input field name -> type, from the version's logged signature.

    Reads the MLmodel file into a folder removed after: `mlflow.models.get_model_info` downloads
    it into a temporary folder it never removes, one per call.
    """
    from mlflow.models import Model

    with tempfile.TemporaryDirectory(prefix="shipyard-mlmodel-") as tmp:
        info = Model.load(download(f"models:/{name}/{version}/MLmodel", Path(tmp))).get_model_info()
    if info.signature is None:
        return {}
    return {str(col.name): col.type.name for col in info.signature.inputs.inputs}

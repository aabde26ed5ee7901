"""What a batch needs of one registered version: the fitted model, the fields it takes, the
threshold it alerts at, the ranges the API would accept, and where it came from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shipyard.config import Params
from shipyard.errors import ShipyardError
from shipyard.history import feature_names
from shipyard.policy import Policy


@dataclass(frozen=True)
class ScoringModel:
    name: str
    version: str
    uri: str  # the Bento tag when the version was packaged, else models:/NAME/VERSION
    fields: list[str]  # in the signature's order
    threshold: float
    field_ranges: dict[str, tuple[float, float]]
    data_hash: str

    @property
    def lineage(self) -> dict[str, str]:
        return {"model_name": self.name, "model_version": self.version, "model_uri": self.uri}


def parse_ref(text: str) -> tuple[str, str]:
    """`fraud-detector@champion` or `fraud-detector@3` -> (name, "@champion" or "3")."""
    name, sep, ref = text.rpartition("@")
    if not sep or not name or not ref:
        raise ShipyardError(f"model {text!r}: expected NAME@ALIAS or NAME@VERSION")
    return name, ref if ref.isdigit() else f"@{ref}"


def resolve(text: str, params: Params, policy: Policy) -> ScoringModel:
    """The version named by `text`, checked against what this params file computes."""
    from shipyard import bento, registry
    from shipyard.tags import VersionTags

    name, ref = parse_ref(text)
    mv = registry.resolve(name, ref)
    version, tags = str(mv.version), VersionTags.of(mv)
    fields = list(registry.signature(name, version))
    if not fields:
        raise ShipyardError(f"{name} version {version}: no input signature; it cannot be scored")
    computed = set(params.data.features.numeric) | set(params.data.features.categorical)
    computed |= set(feature_names(params.featurize))
    unknown = [f for f in fields if f not in computed]
    if unknown:
        raise ShipyardError(
            f"{name} version {version}: takes field {unknown[0]!r}, which the data and "
            "featurize sections of the params file do not compute"
        )
    return ScoringModel(
        name=name,
        version=version,
        uri=tags.bento_tag or f"models:/{name}/{version}",
        fields=fields,
        threshold=bento.decision_threshold(policy, tags),
        field_ranges=dict(tags.field_ranges or {}),
        data_hash=tags.data_hash,
    )


def load(model: ScoringModel) -> Any:
    """The fitted pipeline, through skops and the allow-list (never pickle)."""
    from shipyard import registry

    return registry.load_model(model.name, model.version)


def download(model: ScoringModel, dest: Path) -> Path:
    """The logged model folder, for engines whose workers load it themselves."""
    from shipyard import registry

    return registry.download(f"models:/{model.name}/{model.version}", dest)

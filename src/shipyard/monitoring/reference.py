"""The serving version's own training reference, stored with it at registration."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from shipyard.errors import ShipyardError
from shipyard.tags import VersionTags


@dataclass(frozen=True)
class Reference:
    name: str
    version: str
    frame: pd.DataFrame  # features, the label and the training-time score
    features: list[str]
    tags: VersionTags


def load_reference(name: str, ref: str) -> Reference:
    """Version REF's reference sample; its feature list is the model's signature."""
    from shipyard import registry

    mv = registry.resolve(name, ref)
    uri = VersionTags.of(mv).reference_uri
    if not uri:
        raise ShipyardError(f"drift: {name} version {mv.version} has no reference sample tag")
    with tempfile.TemporaryDirectory(prefix="shipyard-ref-") as tmp:
        path = registry.download(uri, Path(tmp))
        frame = pd.read_parquet(path)
    features = list(registry.signature(name, str(mv.version)))
    missing = [f for f in features if f not in frame.columns]
    if missing or "score" not in frame.columns:
        raise ShipyardError(
            f"drift: reference of version {mv.version} lacks {missing or ['score']}"
        )
    return Reference(name, str(mv.version), frame, features, VersionTags.of(mv))

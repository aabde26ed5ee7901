"""The deliberately bad version: the real train, evaluate and register stages, run on features
where one column arrived in the wrong unit (an export in hundreds of dollars).

Trained and tested on the same wrong unit, it passes every offline gate, and the champion
does worse than it on its own frozen test set. Only live traffic, in the right unit, shows
that its scores are off: that is the canary's job.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from shipyard.artifacts import Layout
from shipyard.demo.config import Skew
from shipyard.errors import ShipyardError
from shipyard.pipeline.featurize import SPLITS

STAGES = ("train", "evaluate", "register")
TAG = "shipyard.demo.skew"


@dataclass(frozen=True)
class SkewedPipeline:
    """The repo's own stages, pointed at a narrowed params file and an artifacts root of
    their own; run from the repo, so lineage (git, DVC data hash) is the repo's."""

    params: Path
    layout: Layout

    def stage_args(self, stage: str) -> list[str]:
        return [
            "shipyard",
            "stage",
            stage,
            "--params",
            str(self.params),
            "--artifacts",
            str(self.layout.root),
        ]


def prepare(repo: Path, dest: Path, skew: Skew) -> SkewedPipeline:
    """Its params (one candidate) and the skewed features, under `dest` (relative to `repo`)."""
    params: dict[str, Any] = yaml.safe_load((repo / "params.yaml").read_text())
    candidates = params["train"]["candidates"]
    if skew.candidate not in candidates:
        raise ShipyardError(f"demo: skew.candidate '{skew.candidate}' is not in train.candidates")
    params["train"]["candidates"] = {skew.candidate: candidates[skew.candidate]}
    shutil.rmtree(repo / dest, ignore_errors=True)
    source, target = Layout(repo / "artifacts").features, Layout(repo / dest / "artifacts").features
    target.mkdir(parents=True)
    (repo / dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copy2(source / "features.json", target / "features.json")
    for split in SPLITS:
        frame = pd.read_parquet(source / f"{split}.parquet")
        if skew.feature not in frame.columns:
            raise ShipyardError(f"demo: skew.feature '{skew.feature}' is not a feature column")
        frame[skew.feature] = frame[skew.feature] * skew.factor
        frame.to_parquet(target / f"{split}.parquet", index=False)
    return SkewedPipeline(dest / "params.yaml", Layout(dest / "artifacts"))


def describe(skew: Skew) -> str:
    return f"{skew.feature} x{skew.factor:g} in training and test data"

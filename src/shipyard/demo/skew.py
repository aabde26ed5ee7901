"""The deliberately bad version: the real train, evaluate and register stages, run on features
where one column arrived in the wrong unit (an export in hundreds of dollars).

Trained and tested on the same wrong unit, it passes every offline gate, and the champion
does worse than it on its own frozen test set. Only live traffic, in the right unit, shows
that its scores are off: that is the canary's job.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from shipyard.artifacts import FEATURES
from shipyard.demo.config import Skew
from shipyard.errors import ShipyardError

STAGES = ("train", "evaluate", "register")
TAG = "shipyard.demo.skew"


def prepare(repo: Path, dest: Path, skew: Skew) -> Path:
    """A stage folder beside the copy: its params (one candidate) and the skewed features."""
    params: dict[str, Any] = yaml.safe_load((repo / "params.yaml").read_text())
    candidates = params["train"]["candidates"]
    if skew.candidate not in candidates:
        raise ShipyardError(f"demo: skew.candidate '{skew.candidate}' is not in train.candidates")
    params["train"]["candidates"] = {skew.candidate: candidates[skew.candidate]}
    shutil.rmtree(dest, ignore_errors=True)
    (dest / FEATURES).mkdir(parents=True)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copy2(repo / "data.dvc", dest / "data.dvc")  # the data version is the same
    shutil.copy2(repo / FEATURES / "features.json", dest / FEATURES / "features.json")
    for split in ("train", "validation", "test"):
        frame = pd.read_parquet(repo / FEATURES / f"{split}.parquet")
        if skew.feature not in frame.columns:
            raise ShipyardError(f"demo: skew.feature '{skew.feature}' is not a feature column")
        frame[skew.feature] = frame[skew.feature] * skew.factor
        frame.to_parquet(dest / FEATURES / f"{split}.parquet", index=False)
    return dest


def describe(skew: Skew) -> str:
    return f"{skew.feature} x{skew.factor:g} in training and test data"

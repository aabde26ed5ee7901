"""featurize: history features, then a time-ordered train/validation/test split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from shipyard.artifacts import Layout, atomic_dir, progress, write_json
from shipyard.config import DataSection, FeaturizeSection, Params, SplitConfig
from shipyard.errors import ShipyardError
from shipyard.history import feature_names, history_features

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class FeatureColumns:
    """What the model takes: named fields, split by the transform they need."""

    numeric: list[str]
    categorical: list[str]

    @property
    def all(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    @classmethod
    def load(cls, path: Path) -> FeatureColumns:
        raw = pd.read_json(path, typ="series")
        return cls(numeric=list(raw["numeric"]), categorical=list(raw["categorical"]))


def feature_columns(data: DataSection, cfg: FeaturizeSection) -> FeatureColumns:
    return FeatureColumns(
        numeric=[*data.features.numeric, *feature_names(cfg)],
        categorical=list(data.features.categorical),
    )


def split_by_time(frame: pd.DataFrame, timestamp: str, cfg: SplitConfig) -> dict[str, pd.DataFrame]:
    """Cut the time axis at quantiles so one instant never lands in two splits."""
    ts = frame[timestamp]
    t_val = pd.Timestamp(ts.quantile(1 - cfg.validation - cfg.test))
    t_test = pd.Timestamp(ts.quantile(1 - cfg.test))
    gap = pd.Timedelta(days=cfg.gap_days)
    parts: dict[str, pd.DataFrame] = {
        "train": frame[ts < t_val],
        "validation": frame[(ts >= t_val + gap) & (ts < t_test)],
        "test": frame[ts >= t_test + gap],
    }
    for name, part in parts.items():
        if part.empty:
            raise ShipyardError(f"featurize.split: split '{name}' is empty; widen it or add data")
    return {k: v.reset_index(drop=True) for k, v in parts.items()}


def featurize(
    frame: pd.DataFrame, params: Params
) -> tuple[dict[str, pd.DataFrame], FeatureColumns]:
    data, cfg = params.data, params.featurize
    cols = feature_columns(data, cfg)
    history = history_features(frame, cfg, data.timestamp, data.target)
    raw = frame[[c for c in cols.all if c not in history.columns]]
    table = pd.concat([frame[[data.id, data.timestamp, data.target]], raw, history], axis=1)
    for c in cols.numeric:
        table[c] = table[c].astype("float64")
    for c in cols.categorical:
        table[c] = table[c].astype("string").fillna("__missing__").astype(object)
    table = table.sort_values([data.timestamp, data.id], kind="stable")
    return split_by_time(table, data.timestamp, cfg.split), cols


def run(params: Params, layout: Layout) -> None:
    with atomic_dir(layout.features) as out:
        frame = pd.read_parquet(layout.validated / "data.parquet")
        progress("featurize", f"computing history features on {len(frame)} rows")
        splits, cols = featurize(frame, params)
        for name, part in splits.items():
            part.to_parquet(out / f"{name}.parquet", index=False)
        ts = params.data.timestamp
        write_json(
            out / "features.json",
            {
                "numeric": cols.numeric,
                "categorical": cols.categorical,
                "splits": {
                    name: {
                        "rows": len(p),
                        "positives": int(p[params.data.target].sum()),
                        "from": str(p[ts].min()),
                        "to": str(p[ts].max()),
                    }
                    for name, p in splits.items()
                },
            },
        )
    sizes = ", ".join(f"{k} {len(v)}" for k, v in splits.items())
    progress("featurize", f"{len(cols.all)} features; {sizes}")

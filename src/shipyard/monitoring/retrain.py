"""`shipyard retrain`: labelled live data becomes a new data version and a new @candidate.

Old data files are never rewritten: the labelled rows go to a new file under `data/`,
`dvc add` records the new version in `data.dvc`, and `dvc repro` trains, evaluates and
registers. Each labels file is used once; it moves aside only after the new data version
and the pipeline run both succeeded.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from shipyard.artifacts import atomic_file, progress
from shipyard.config import Params
from shipyard.errors import ShipyardError
from shipyard.monitoring.labels import labels_dir
from shipyard.monitoring.logreader import logged_request_ids
from shipyard.monitoring.policy import MonitoringPolicy


def _dvc(*args: str) -> None:
    dvc = str(Path(sys.executable).with_name("dvc"))
    progress("retrain", f"dvc {' '.join(args)}")
    result = subprocess.run([dvc, *args], check=False)
    if result.returncode != 0:
        raise ShipyardError(f"retrain: `dvc {' '.join(args)}` exited {result.returncode}")


def live_rows(model: str, params: Params, log_folder: Path) -> tuple[pd.DataFrame, list[Path]]:
    """Labelled rows of served requests, in the data contract's columns and order."""
    parts = sorted(labels_dir(model).glob("labels-*.parquet"))
    if not parts:
        return pd.DataFrame(), []
    frame = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    frame = frame.drop_duplicates("request_id", keep="last")
    frame = frame[frame["request_id"].isin(logged_request_ids(log_folder))]
    columns = list(params.data.columns)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ShipyardError(f"retrain: labels lack data contract columns {missing}")
    return frame[columns].sort_values(params.data.timestamp).reset_index(drop=True), parts


def retrain(model: str, params: Params, policy: MonitoringPolicy) -> dict[str, Any]:
    from shipyard import registry, tracking
    from shipyard.monitoring.job import prediction_log

    data_dir = Path(params.data.path)
    if not data_dir.is_dir() or params.data.format != "csv":
        raise ShipyardError(f"retrain: data.path '{data_dir}' must be a folder of CSV files")
    rows, parts = live_rows(model, params, prediction_log(model))
    if rows.empty:
        raise ShipyardError(
            f"retrain: no labelled live data for {model}; store outcomes with "
            "`shipyard monitor labels FILE` first"
        )
    tracking.configure(params.base)
    before = registry.version_by_alias(model, registry.CANDIDATE)
    target = data_dir / f"live-{time.strftime('%Y%m%dT%H%M%S')}.csv"
    with atomic_file(target) as scratch:
        rows.to_csv(scratch, index=False)
    progress("retrain", f"{len(rows)} labelled live rows -> {target}")
    try:
        _dvc("add", str(data_dir))
    except ShipyardError:
        target.unlink(missing_ok=True)  # no new data version: leave data/ as it was
        raise
    _dvc("repro")
    after = registry.version_by_alias(model, registry.CANDIDATE)
    if after is None or (before is not None and after.version == before.version):
        raise ShipyardError("retrain: dvc repro registered no new @candidate")
    used = labels_dir(model) / "used"
    used.mkdir(exist_ok=True)
    for part in parts:
        part.rename(used / part.name)
    return {"rows": len(rows), "file": str(target), "version": str(after.version)}

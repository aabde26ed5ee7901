"""Delayed ground truth: outcomes that arrive after the prediction, joined by request id.

A labels file is in the data contract's raw format (the columns of `data/`, the id column
holding the request id the client sent). Every ingested file is kept whole under the runtime
folder: the drift job joins its labels to logged predictions, and `shipyard retrain` turns the
labelled rows into a new data file.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pandas as pd

from shipyard.artifacts import atomic_file
from shipyard.config import DataSection
from shipyard.errors import ValidationFailed
from shipyard.runtime import runtime_dir


def labels_dir(model: str) -> Path:
    return runtime_dir() / "monitoring" / model / "labels"


def _read(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise ValidationFailed(str(path), None, "exists", "no such file")
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except Exception as err:  # pandas and pyarrow raise many unrelated types for a bad file
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValidationFailed(str(path), None, "format", f"unreadable ({reason})") from None


def binary_label(values: pd.Series, data: DataSection, source: str) -> pd.Series:
    """The target column as 0/1, whatever the dataset calls its two classes."""
    text = values.astype(str)
    positive, negative = str(data.positive_label), str(data.negative_label)
    bad = ~text.isin([positive, negative])
    if bad.any():
        raise ValidationFailed(
            source,
            data.target,
            "label",
            f"value {text[bad].iloc[0]!r} is neither {positive!r} nor {negative!r}",
        )
    return (text == positive).astype(int)


def ingest(path: Path, model: str, data: DataSection, logged_ids: set[str]) -> dict[str, Any]:
    """Validate and store one labels file; labels for unknown request ids are kept, counted."""
    frame = _read(path)
    for column in (data.id, data.target):
        if column not in frame.columns:
            raise ValidationFailed(str(path), column, "required", "column missing")
    if frame.empty:
        raise ValidationFailed(str(path), None, "min_rows", "file has no rows")
    frame["label"] = binary_label(frame[data.target], data, str(path))
    frame["request_id"] = frame[data.id].astype(str)
    known = frame["request_id"].isin(logged_ids)
    folder = labels_dir(model)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"labels-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.parquet"
    with atomic_file(target) as scratch:
        texts = {c: str for c in frame.columns if frame[c].dtype == object}
        frame.astype(texts).to_parquet(scratch, index=False)
    return {
        "rows": len(frame),
        "matched": int(known.sum()),
        "unknown_request_ids": int((~known).sum()),
        "stored": str(target),
    }


def load_labels(model: str) -> pd.DataFrame:
    """Every stored label, the latest per request id."""
    parts = sorted(labels_dir(model).glob("labels-*.parquet"))
    if not parts:
        return pd.DataFrame(columns=["request_id", "label"])
    frame = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    return frame.drop_duplicates("request_id", keep="last").reset_index(drop=True)

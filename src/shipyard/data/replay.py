"""Replay a period of raw transactions against a running service, as live clients would.

Each row's features are computed the way training computed them: history windows over the
training data plus the rows before it, with labels of the replayed period still unknown.
The request id is the row's id, so outcomes that arrive later join back to the prediction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from shipyard.artifacts import progress
from shipyard.config import Params
from shipyard.errors import ShipyardError
from shipyard.history import history_features
from shipyard.pipeline.featurize import feature_columns


@dataclass(frozen=True)
class ReplayResult:
    sent: int
    failed: int
    seconds: float
    first_error: str


def live_features(history: pd.DataFrame, live: pd.DataFrame, params: Params) -> pd.DataFrame:
    """Feature rows for `live`, in its order, as the service's signature names them."""
    data, cfg = params.data, params.featurize
    cols = feature_columns(data, cfg)
    both = pd.concat(
        [history.assign(_live=False), live.assign(_live=True, **{data.target: np.nan})],
        ignore_index=True,
    ).sort_values([data.timestamp, data.id], kind="stable")
    feats = history_features(both, cfg, data.timestamp, data.target)
    raw = both[[c for c in cols.all if c not in feats.columns]]
    table = pd.concat([both[[data.id, "_live"]], raw, feats], axis=1)
    table = table[table["_live"]].drop(columns="_live")
    for c in cols.numeric:
        table[c] = table[c].astype("float64")
    for c in cols.categorical:
        table[c] = table[c].astype("string").fillna("__missing__").astype(object)
    order = {rid: i for i, rid in enumerate(live[data.id])}
    table = table.sort_values(data.id, key=lambda s: s.map(order))
    return table.reset_index(drop=True)


def replay(
    url: str,
    features: pd.DataFrame,
    id_column: str,
    *,
    concurrency: int = 8,
    api_key: str | None = None,
) -> ReplayResult:
    """POST every row to `url`/predict with `concurrency` clients; errors are counted."""
    from shipyard import traffic

    if not url.startswith(("http://", "https://")):
        raise ShipyardError(f"replay: '{url}' is not an http(s) URL")
    payloads = traffic.bodies(features, id_column)
    start = time.monotonic()
    clients = traffic.Clients(url, payloads, threads=concurrency, api_key=api_key)
    tally = clients.wait()
    seconds = time.monotonic() - start
    progress("replay", f"{len(payloads)} requests in {seconds:.1f} s, {tally.failed} failed")
    return ReplayResult(len(payloads), tally.failed, seconds, tally.first_error)


def load_period(path: Path, params: Params, labels: bool = True) -> pd.DataFrame:
    """A raw period file, typed by the data contract (the same check `validate` applies).
    Without `labels`, the file may leave the label column out, as a payment flow's live
    transactions do: it is then checked as if every row had the negative label, which the
    caller must not use."""
    from shipyard.data.source import _read_csv
    from shipyard.schema import apply_contract

    frame = _read_csv(path)
    data = params.data
    if not labels and data.target not in frame.columns:
        frame[data.target] = str(data.negative_label)
    return apply_contract(frame, data, str(path))

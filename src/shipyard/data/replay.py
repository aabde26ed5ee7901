"""Replay a period of raw transactions against a running service, as live clients would.

Each row's features are computed the way training computed them: history windows over the
training data plus the rows before it, with labels of the replayed period still unknown.
The request id is the row's id, so outcomes that arrive later join back to the prediction.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def _post(url: str, body: bytes, headers: dict[str, str]) -> str:
    request = urllib.request.Request(url, body, headers)  # noqa: S310 (scheme checked)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310
            resp.read()
            return ""
    except urllib.error.HTTPError as err:
        return f"{err.code} {err.read()[:200]!r}"
    except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
        return f"unreachable: {err}"


def replay(
    url: str,
    features: pd.DataFrame,
    id_column: str,
    *,
    concurrency: int = 8,
    api_key: str | None = None,
) -> ReplayResult:
    """POST every row to `url`/predict with `concurrency` clients; errors are counted."""
    if not url.startswith(("http://", "https://")):
        raise ShipyardError(f"replay: '{url}' is not an http(s) URL")
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    names = [c for c in features.columns if c != id_column]
    bodies: list[bytes] = []
    for row in features.itertuples(index=False):
        record: dict[str, Any] = dict(zip(features.columns, row, strict=True))
        payload = {"features": {n: record[n] for n in names}, "request_id": str(record[id_column])}
        bodies.append(json.dumps(payload, default=float).encode())
    endpoint = url.rstrip("/") + "/predict"
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        errors = [e for e in pool.map(lambda b: _post(endpoint, b, headers), bodies) if e]
    seconds = time.monotonic() - start
    progress("replay", f"{len(bodies)} requests in {seconds:.1f} s, {len(errors)} failed")
    return ReplayResult(len(bodies), len(errors), seconds, errors[0] if errors else "")


def load_period(path: Path, params: Params) -> pd.DataFrame:
    """A raw period file, typed by the data contract (the same check `validate` applies)."""
    from shipyard.data.source import _read_csv
    from shipyard.schema import apply_contract

    return apply_contract(_read_csv(path), params.data, str(path))

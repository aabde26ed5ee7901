"""Histogram buckets of the service's metrics, shared with the PromQL that reads them.

Score buckets are not fixed: a fraud model puts about 99 % of its scores below 0.05, so equal
widths on [0, 1] would leave the canary's score gates looking at 1 % of the traffic. Each
version's bounds are quantiles of its own reference scores, taken at registration, and every
variant compared with it is packaged with the same bounds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

# Equal shares of the reference, plus the tail where the alerts are: at a 1 % alert budget
# the decision threshold sits near the 99th percentile.
QUANTILES = (*(i / 20 for i in range(1, 20)), 0.98, 0.99, 0.995, 0.999)


def reference_bounds(scores: Sequence[float] | np.ndarray) -> tuple[float, ...]:
    """Upper bucket bounds at the reference's quantiles, rounded and without ties.

    Ties (a tree model's repeated scores) merge buckets rather than leave empty ones, and
    1.0 closes the range so `+Inf` only ever holds nothing.
    """
    values = np.asarray(scores, dtype=float)
    if values.size == 0 or not np.isfinite(values).all():
        raise ValueError("reference scores must be a non-empty set of finite numbers")
    bounds = sorted({float(f"{q:.4g}") for q in np.quantile(values, QUANTILES)} - {0.0})
    return (*[b for b in bounds if 0 < b < 1], 1.0)


def check_bounds(bounds: Sequence[float]) -> tuple[float, ...]:
    out = tuple(float(b) for b in bounds)
    if not out or any(not 0 < b <= 1 for b in out) or list(out) != sorted(set(out)):
        raise ValueError("score buckets must rise strictly inside (0, 1]")
    return out


def dump_bounds(bounds: Sequence[float]) -> str:
    return json.dumps(list(bounds), separators=(",", ":"))

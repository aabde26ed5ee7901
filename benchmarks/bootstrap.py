"""Claim: the promotion gates' paired bootstrap (500 draws, average precision and log loss,
challenger and champion) is many times faster than the sklearn loop a user would write, at
the same interval to 1e-9.

Synthetic, seeded: 50,000 frozen test rows at a 1 % fraud rate, scores with ties. Both sides
draw the same rows (same seed). Run with `.venv/bin/python -m benchmarks.bootstrap`.
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.metrics import average_precision_score, log_loss

from shipyard import metrics

ROWS, RESAMPLES = 50_000, 500


def sklearn_loop(y: np.ndarray, new: np.ndarray, old: np.ndarray, name: str) -> float:
    score = average_precision_score if name == "average_precision" else log_loss
    rng = np.random.default_rng(0)
    deltas = []
    for _ in range(RESAMPLES):
        idx = rng.integers(0, len(y), len(y))
        deltas.append(score(y[idx], new[idx]) - score(y[idx], old[idx]))
    return float(np.percentile(deltas, 2.5))


def main() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random(ROWS) < 0.01).astype(int)
    new = np.round(np.clip(rng.normal(0.02 + 0.3 * y, 0.08), 1e-4, 1 - 1e-4), 4)
    old = np.round(np.clip(rng.normal(0.02 + 0.25 * y, 0.08), 1e-4, 1 - 1e-4), 4)
    print(f"paired bootstrap, {ROWS} rows, {RESAMPLES} draws, challenger and champion")
    print(f"  {'metric':<18} {'sklearn loop s':>15} {'ours s':>8} {'speed-up':>9}  same interval")
    for name in ("average_precision", "log_loss"):
        start = time.perf_counter()
        want = sklearn_loop(y, new, old, name)
        slow = time.perf_counter() - start
        start = time.perf_counter()
        got = metrics.paired_bootstrap_delta(
            y, new, old, name, budget=0.01, resamples=RESAMPLES, confidence=0.95, seed=0
        )["ci_low"]
        fast = time.perf_counter() - start
        same = abs(got - want) <= 1e-9 * max(1.0, abs(want))
        print(f"  {name:<18} {slow:15.2f} {fast:8.2f} {slow / fast:8.1f}x  {same}")


if __name__ == "__main__":
    main()

"""How often Python's cyclic garbage collector runs in our processes.

Loading MLflow, scikit-learn, pandas and a model builds a heap of long-lived objects, and at
Python's default thresholds (700, 10, 10) the collector walked that heap again and again as
it grew. Rarer collections still collect every cycle, so long-running processes can keep
them.

At exit, the interpreter's last full collection walked that same heap once more, for nothing:
the process's memory goes back whole. Frozen first, it is skipped: 0.3 s for a command that
imports MLflow, over a second for one that holds a model and its data. Python never promised
finalizers of objects still alive at exit, so nothing it did is lost. `benchmarks/collector.py`
measures both.
"""

from __future__ import annotations

import atexit
import gc

THRESHOLDS = (50_000, 50, 100)


def collect_less() -> None:
    """For a process's whole life: a command, a test worker."""
    gc.set_threshold(*THRESHOLDS)
    atexit.register(gc.freeze)  # registered first, run last: after every other exit handler

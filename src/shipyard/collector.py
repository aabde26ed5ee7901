"""How often Python's cyclic garbage collector runs in our processes.

Loading MLflow, scikit-learn, pandas and a model builds a heap of long-lived objects, and at
Python's default thresholds (700, 10, 10) the collector walked that heap again and again as
it grew. `benchmarks/gc_thresholds.py` measures what it cost a command. Rarer collections
still collect every cycle, so long-running processes can keep them.
"""

from __future__ import annotations

import gc

THRESHOLDS = (50_000, 50, 100)


def collect_less() -> None:
    """For a process's whole life: a command, a test worker."""
    gc.set_threshold(*THRESHOLDS)

"""Histogram buckets of the service's metrics, shared with the PromQL that reads them."""

from __future__ import annotations

SCORE_BUCKETS = tuple(round(i * 0.05, 2) for i in range(21))  # 0.0, 0.05, ..., 1.0
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

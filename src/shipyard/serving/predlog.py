"""Append-only, batched prediction log for drift checks.

Each process writes its own JSON-lines file and flushes whole lines in one `write` plus
`fsync`, every `batch` records or `interval` seconds. A killed server loses at most the
records not yet flushed; what was flushed before is never rewritten.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any


class PredictionLog:
    def __init__(self, folder: Path, batch: int = 64, interval: float = 1.0) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S")
        self.path = folder / f"predictions-{stamp}-{os.getpid()}.jsonl"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._batch = batch
        self._pending: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, args=(interval,), daemon=True)
        self._thread.start()

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n"
        with self._lock:
            self._pending.append(line)
            if len(self._pending) >= self._batch:
                self._flush_locked()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if not self._pending:
            return
        data = "".join(self._pending).encode()
        self._pending = []
        os.write(self._fd, data)
        os.fsync(self._fd)

    def _tick(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self.flush()
        os.close(self._fd)


def read_log(folder: Path) -> tuple[list[dict[str, Any]], int]:
    """Every complete record in `folder`, and how many lines were corrupt or truncated."""
    records, bad = [], 0
    for path in sorted(folder.glob("predictions-*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                bad += 1
    return records, bad

"""Append-only, batched prediction log for drift checks.

Each process writes its own JSON-lines file. A writer thread flushes whole lines in one
`write` plus `fsync`, every `batch` records or `interval` seconds, so the event loop that
appends never waits on the disk: in the loop, the two calls halved the service's throughput on
100-record requests. A killed server loses at most the records not yet flushed; what was
flushed before is never rewritten. Past `backlog` unflushed records, `append` flushes itself:
a disk slower than the traffic slows the service instead of filling its memory.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import orjson


class PredictionLog:
    """`writer=False`: no writer thread; records reach the disk when the owner calls `flush`
    (or `append` passes `backlog`). The stream consumer flushes each batch before it
    acknowledges it anyway, and a thread woken halfway through its appends only contended
    for the GIL and the file with it."""

    def __init__(
        self,
        folder: Path,
        batch: int = 64,
        interval: float = 1.0,
        backlog: int = 100_000,
        writer: bool = True,
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S")
        self.path = folder / f"predictions-{stamp}-{os.getpid()}.jsonl"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._batch, self._backlog = batch, backlog
        self._pending: list[bytes] = []
        self._lock = threading.Lock()  # guards `_pending`
        self._writing = threading.Lock()  # one writer at a time keeps lines in order
        self._due = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if writer:
            self._thread = threading.Thread(target=self._write_loop, args=(interval,), daemon=True)
            self._thread.start()

    def append(self, record: dict[str, Any]) -> None:
        line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        if b"null" in line:  # orjson writes NaN and Infinity as null: refuse them instead
            json.dumps(record, allow_nan=False)
        with self._lock:
            self._pending.append(line)
            waiting = len(self._pending)
        if waiting >= self._backlog:
            self.flush()
        elif waiting >= self._batch and self._thread is not None:
            self._due.set()

    def flush(self) -> None:
        with self._writing:
            with self._lock:
                lines, self._pending = self._pending, []
            if lines:
                os.write(self._fd, b"".join(lines))
                os.fsync(self._fd)

    def _write_loop(self, interval: float) -> None:
        while not self._stop.is_set():
            self._due.wait(interval)
            self._due.clear()
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self._due.set()
        if self._thread is not None:
            self._thread.join()
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

"""The gitignored runtime folder: local stores, locks, audit logs, prediction logs.

`SHIPYARD_RUNTIME_DIR` moves it; nothing here ever goes into `monitoring/` or `registry/`.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

LOCK_ENV = "SHIPYARD_LOCK_URI"


def runtime_dir() -> Path:
    return Path(os.environ.get("SHIPYARD_RUNTIME_DIR", ".shipyard"))


@contextmanager
def lock(name: str) -> Iterator[None]:
    """An exclusive lock: across machines when `SHIPYARD_LOCK_URI` names a PostgreSQL database
    (an advisory lock there), else across the processes of this machine (a file lock). Either
    is released when its holder exits or crashes."""
    uri = os.environ.get(LOCK_ENV)
    if uri:
        from shipyard.locks import advisory

        with advisory(uri, name):
            yield
        return
    path = runtime_dir() / "locks" / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def append_jsonl(relative: str, record: dict[str, Any]) -> Path:
    """Append one JSON line and fsync it: an audit trail survives a crash right after."""
    path = runtime_dir() / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=True, default=str) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return path

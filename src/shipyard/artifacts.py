"""Outputs appear whole or not at all: a failed stage leaves nothing for the next one, and a
reader never sees half a file."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ARTIFACTS = Path("artifacts")
VALIDATED = ARTIFACTS / "validated"
FEATURES = ARTIFACTS / "features"
MODELS = ARTIFACTS / "models"
EVAL = ARTIFACTS / "eval"
REGISTERED = ARTIFACTS / "registered"

_START = time.monotonic()


def progress(step: str, message: str) -> None:
    """One progress line on stderr, so stdout stays clean for results."""
    print(f"[{time.monotonic() - _START:6.1f}s] {step}: {message}", file=sys.stderr, flush=True)


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a scratch folder that replaces `target` only if the block succeeds."""
    scratch = target.with_name(f".{target.name}.partial")
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.rmtree(target, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        yield scratch
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    scratch.rename(target)


@contextmanager
def atomic_file(target: Path, mode: int | None = None) -> Iterator[Path]:
    """Yield a scratch path beside `target` that replaces it, synced, only if the block
    succeeds. `mode` creates the scratch file with those permissions first (secrets)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_name(f".{target.name}.partial")
    scratch.unlink(missing_ok=True)
    if mode is not None:
        os.close(os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode))
    try:
        yield scratch
        with open(scratch, "rb+") as handle:
            os.fsync(handle.fileno())
    except BaseException:
        scratch.unlink(missing_ok=True)
        raise
    os.replace(scratch, target)


def write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())

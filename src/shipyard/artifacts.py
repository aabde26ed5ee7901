"""Outputs appear whole or not at all: a failed stage leaves nothing for the next one, and a
reader never sees half a file."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Layout:
    """Where each stage reads and writes, under one root: a parameter, not a working-directory
    constant, so a second pipeline (the demo's skewed version, a test) runs beside the first."""

    root: Path = Path("artifacts")

    @property
    def validated(self) -> Path:
        return self.root / "validated"

    @property
    def features(self) -> Path:
        return self.root / "features"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def registered(self) -> Path:
        return self.root / "registered"


_START = time.monotonic()
LEVEL_ENV = "SHIPYARD_LOG_LEVEL"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
log = logging.getLogger("shipyard.progress")


class _Elapsed(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        step = getattr(record, "step", record.name)
        return f"[{record.created - _WALL_START:6.1f}s] {step}: {record.getMessage()}"


_WALL_START = time.time() - (time.monotonic() - _START)


class _Stderr(logging.StreamHandler):
    """Whatever sys.stderr is at the time of the line (click's and pytest's captures swap it)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _handler() -> None:
    """Progress goes to stderr (stdout stays clean for results), at SHIPYARD_LOG_LEVEL."""
    if log.handlers:
        return
    level = os.environ.get(LEVEL_ENV, "INFO").upper()
    if level not in LEVELS:
        from shipyard.errors import ShipyardError

        raise ShipyardError(f"{LEVEL_ENV}: {level!r} is not one of {', '.join(LEVELS)}")
    handler = _Stderr()
    handler.setFormatter(_Elapsed())
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False  # one line each, whatever the host application configured


def progress(step: str, message: str) -> None:
    """One progress line: `[  12.3s] step: message`."""
    _handler()
    log.info(message, extra={"step": step})


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

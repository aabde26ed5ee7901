"""Small helpers: time a command several times and print figures side by side."""

from __future__ import annotations

import atexit
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

Way = TypeVar("Way")

VENV_BIN = Path(sys.executable).parent


def env() -> dict[str, str]:
    out = dict(os.environ)
    out["PATH"] = f"{VENV_BIN}{os.pathsep}{out.get('PATH', '')}"
    out.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    out.setdefault("DVC_NO_ANALYTICS", "1")
    return out


def scratch(prefix: str) -> Path:
    """A temporary folder for one benchmark's stores, logs and servers, removed when it exits
    (each run left hundreds of MB of logs and stores behind). `KEEP_SCRATCH=1` keeps it, to
    read a failed run's logs."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if os.environ.get("KEEP_SCRATCH"):
        print(f"scratch folder kept: {path}", file=sys.stderr)
    else:
        atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def time_command(cmd: list[str], runs: int, cwd: Path | None = None) -> list[float]:
    """Wall seconds of each run, after one unmeasured warm-up (file caches, .pyc)."""
    subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, check=True)
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, check=True)
        timings.append(time.perf_counter() - start)
    return timings


def table(title: str, rows: list[tuple[str, list[float]]], goal: str) -> None:
    print(f"\n{title}  (goal: {goal})")
    print(f"  {'command':<44} {'median s':>9} {'min s':>7} {'max s':>7}  runs")
    for label, t in rows:
        med = statistics.median(t)
        print(f"  {label:<44} {med:9.3f} {min(t):7.3f} {max(t):7.3f}  {len(t)}")


def alternating_medians(
    ways: dict[str, Way], runs: int, measure: Callable[[Way, int], tuple[float, ...]]
) -> dict[str, list[float]]:
    """Each way measured `runs` times in turns, so that the machine's drift during the run hits
    every way alike; the median of each figure `measure` returns, per way."""
    figures: dict[str, list[tuple[float, ...]]] = {label: [] for label in ways}
    for run in range(runs):
        for label, way in ways.items():
            figures[label].append(measure(way, run))
    return {
        label: [statistics.median(column) for column in zip(*rows, strict=True)]
        for label, rows in figures.items()
    }

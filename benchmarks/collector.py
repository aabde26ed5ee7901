"""Claim: a `shipyard` command spends about 2 s less CPU (a third) since the CLI collects
cycles less often and skips the collection at exit (`shipyard.collector`: thresholds of
50,000, 50 and 100, and the heap frozen once the command is done).

Every stage, promotion, deployment controller, drift check and scoring run imports MLflow,
scikit-learn and pandas; at Python's default thresholds (700, 10, 10) the collector walked
that growing heap of modules again and again while it loaded, and the interpreter walked it
once more at exit. Same run, alternating, `RUNS` each, one command that loads all of it:
`shipyard score` embedded on 3,000 rows of the pipeline's data, with the registered version
of `make pipeline` (which `make benchmarks` runs).
- ours: the `shipyard` command as installed;
- without the freeze at exit: the same command, its exit handler taken out;
- baseline: Python's defaults (the default thresholds put back after `shipyard.cli` loads,
  and no freeze at exit);
- floor: the same command with the collector off (`gc.disable()`, and the freeze at exit),
  which no long-running command could afford.
Run with `.venv/bin/python -m benchmarks.collector`.
"""

from __future__ import annotations

import json
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._timing import VENV_BIN, env, scratch

ROOT = Path(__file__).resolve().parents[1]
RUNS = 7
ROWS = 3000
AFTER_IMPORT = (
    "import atexit, gc, sys; from shipyard.cli import main; {}; sys.argv[0] = 'shipyard'; main()"
)
NO_FREEZE = "atexit.unregister(gc.freeze)"


def run(cmd: list[str], out: Path) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user and system) of one run."""
    shutil.rmtree(out, ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"collector: {' '.join(cmd[:3])} failed:\n{done.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    record = json.loads((ROOT / "artifacts/registered/registration.json").read_text())
    tmp = scratch("bench-collector-")
    lines = (ROOT / "data/transactions.csv").read_text().splitlines()[: ROWS + 1]
    (tmp / "rows.csv").write_text("\n".join(lines) + "\n")
    args = ["score", f"fraud-detector@{record['version']}", "--input", str(tmp / "rows.csv")]
    args += ["--output", str(tmp / "out")]
    py = str(VENV_BIN / "python")
    commands = {
        "ours: shipyard score": [str(VENV_BIN / "shipyard"), *args],
        "without the freeze at exit": [py, "-c", AFTER_IMPORT.format(NO_FREEZE), *args],
        "baseline: Python's defaults": [
            py,
            "-c",
            AFTER_IMPORT.format(f"gc.set_threshold(700, 10, 10); {NO_FREEZE}"),
            *args,
        ],
        "floor: collector off": [py, "-c", AFTER_IMPORT.format("gc.disable()"), *args],
    }
    run(commands["ours: shipyard score"], tmp / "out")  # warm-up: file caches, .pyc
    figures: dict[str, list[tuple[float, float]]] = {label: [] for label in commands}
    for _ in range(RUNS):
        for label, cmd in commands.items():
            figures[label].append(run(cmd, tmp / "out"))
    print(f"\n`shipyard score` embedded, {ROWS:,} rows (medians of {RUNS}, alternating)")
    print(f"  {'command':<32} {'wall s':>7} {'CPU s':>7}")
    for label, runs in figures.items():
        wall, cpu = (statistics.median(r[i] for r in runs) for i in range(2))
        print(f"  {label:<32} {wall:7.2f} {cpu:7.2f}")
    ours, base = (
        statistics.median(r[1] for r in figures[label])
        for label in ("ours: shipyard score", "baseline: Python's defaults")
    )
    print(f"  CPU saved per command: {base - ours:.2f} s ({(base - ours) / base:.0%})")


if __name__ == "__main__":
    main()

"""Claim: `dvc repro` with nothing changed finishes in under 3 s and reruns nothing.

Run it after `make pipeline` (the pipeline must be up to date). Baseline, same run: `dvc --version`,
the floor any dvc command pays to start.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmarks._timing import VENV_BIN, env, table, time_command

RUNS = 5


def main() -> None:
    root = Path(__file__).resolve().parents[1]
    dvc = str(VENV_BIN / "dvc")
    status = subprocess.run([dvc, "status"], cwd=root, env=env(), capture_output=True, text=True)
    if "up to date" not in status.stdout:
        sys.exit("noop_repro: the pipeline is not up to date; run `make pipeline` first")
    repro = subprocess.run([dvc, "repro"], cwd=root, env=env(), capture_output=True, text=True)
    if "Running stage" in repro.stdout:
        sys.exit("noop_repro: dvc repro reran a stage; the no-op claim does not hold")
    rows = [
        ("dvc --version  (baseline)", time_command([dvc, "--version"], RUNS, root)),
        ("dvc status", time_command([dvc, "status"], RUNS, root)),
        ("dvc repro  (nothing changed)", time_command([dvc, "repro"], RUNS, root)),
    ]
    table("No-op dvc repro", rows, "< 3 s, no stage rerun")


if __name__ == "__main__":
    main()

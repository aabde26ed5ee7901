"""Claim: `make demo` on a fresh clone finishes in under 5 minutes on 2 cores, excluding the
first dependency install.

Clones HEAD into a temporary folder, reuses this checkout's .venv (the excluded install), and
times each step of `make demo` as make announces it. Baseline, same run: the time to simulate
and write the raw data alone, the floor of any pipeline run on it.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._timing import env


def main() -> None:
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="shipyard-demo-") as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "--quiet", str(root), str(clone)], check=True)
        (clone / ".venv").symlink_to(root / ".venv")
        steps: list[tuple[str, float]] = []
        start = time.perf_counter()
        # -o: treat the shared .venv as up to date, so make neither rebuilds nor repoints it.
        proc = subprocess.Popen(
            ["make", "-o", ".venv/.installed", "demo"],
            cwd=clone,
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(".venv/bin/"):
                steps.append((line.strip(), time.perf_counter()))
        if proc.wait() != 0:
            sys.exit("demo_walltime: make demo failed")
        total = time.perf_counter() - start
        ends = [t for _, t in steps[1:]] + [start + total]
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-c",
                "from shipyard.data.simulator import Simulator, write_csv;"
                f"write_csv(Simulator().period(0, 120), {str(Path(tmp) / 'raw.csv')!r})",
            ],
            check=True,
            env=env(),
        )
        floor = time.perf_counter() - started
    print("\nmake demo on a fresh clone  (goal: < 300 s on 2 cores, install excluded)")
    for (cmd, begin), end in zip(steps, ends, strict=True):
        print(f"  {cmd.removeprefix('.venv/bin/'):<40} {end - begin:8.1f} s")
    print(f"  {'total':<40} {total:8.1f} s")
    print(f"  {'baseline: simulate + write raw data':<40} {floor:8.1f} s")


if __name__ == "__main__":
    main()

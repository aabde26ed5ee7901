"""Claim: on a fresh clone on this 2-core machine, pytest (every suite, slow and end-to-end
ones included) takes at most 10 minutes, `make test` with `.venv` built at most 12, and
building `.venv` from the lock with a warm package cache at most 2.

Clones HEAD into a temporary folder. `.venv` is built there with the Makefile's own recipe
(`make venv`), timed, and then `make test` runs on it, timed; pytest's own figure is read
from its last line. The figures before this change are printed beside them: they were
measured the same way on this machine (see the README's "For developers").

Run with `.venv/bin/python -m benchmarks.suite_walltime` on an otherwise idle machine: the
suites share the machine's two cores with nothing else.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BEFORE = {"venv": 240.0, "pytest": 1498.0, "make test": 1600.0}  # stop 23's fresh-clone CI
TARGET = {"venv": 120.0, "pytest": 600.0, "make test": 720.0}


def timed(cmd: list[str], cwd: Path, log: Path) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    start = time.perf_counter()
    with log.open("wb") as out:
        done = subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.stderr.write(log.read_text()[-4000:])
        sys.exit(f"suite_walltime: {' '.join(cmd)} failed; log {log}")
    return seconds


def main() -> None:
    root = Path(__file__).resolve().parents[1]
    keep = Path(tempfile.mkdtemp(prefix="shipyard-suite-"))
    clone = keep / "clone"
    subprocess.run(["git", "clone", "--quiet", str(root), str(clone)], check=True)
    figures = {"venv": timed(["make", "venv"], clone, keep / "venv.log")}
    figures["make test"] = timed(["make", "test"], clone, keep / "test.log")
    last = (keep / "test.log").read_text().strip().splitlines()[-1]
    found = re.search(r" in ([0-9.]+)s", last)
    if found is None:
        sys.exit(f"suite_walltime: no pytest summary in {keep / 'test.log'}: {last!r}")
    figures["pytest"] = float(found.group(1))
    print(f"\nfresh clone of HEAD, {os.cpu_count()} cores  (logs in {keep})")
    print(f"  {'figure':<12} {'now s':>8} {'target s':>9} {'before s':>9}  met")
    for name in ("venv", "pytest", "make test"):
        now = figures[name]
        print(
            f"  {name:<12} {now:8.0f} {TARGET[name]:9.0f} {BEFORE[name]:9.0f}  "
            f"{'yes' if now <= TARGET[name] else 'NO'}"
        )
    print(f"  pytest summary: {last}")


if __name__ == "__main__":
    main()

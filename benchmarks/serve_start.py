"""Claim: `bentoml serve` is ready about a second sooner, and its parent process spends about
half the CPU, since the service module imports sklearn and pandas only in the worker.

Every deployment, canary step, shadow and test server starts one. The parent (BentoML's
arbiter) imports the service module only to read its definition, then starts the worker,
which loads the model. Same run, same Bento, alternating, `RUNS` starts each:
- ours: `bentoml serve TAG`, as `shipyard serve` and deployments run it;
- baseline: the same command in a parent that imports `sklearn.pipeline` and `pandas` first,
  which is what the service module's top-level imports made it do before.
Needs the repository's registered version (`make pipeline`, which `make benchmarks` runs).
Run with `.venv/bin/python -m benchmarks.serve_start`.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
import time
from pathlib import Path

import httpx
import psutil

from benchmarks._timing import VENV_BIN, env, scratch
from benchmarks.serving import free_port

ROOT = Path(__file__).resolve().parents[1]
RUNS = 5
BASELINE = (
    "import sys, sklearn.pipeline, pandas; from bentoml_cli.cli import cli; "
    "sys.argv[0] = 'bentoml'; sys.exit(cli())"
)


def start(parent: list[str], tag: str, tmp: Path) -> tuple[float, float, float]:
    """Seconds to /readyz, then CPU seconds of the parent and of its workers by then."""
    port = free_port()
    cmd = [*parent, "serve", tag, "--host", "127.0.0.1", "--port", str(port)]
    extra = {"SHIPYARD_PREDICTION_LOG": str(tmp / "predictions"), "OMP_NUM_THREADS": "1"}
    began = time.monotonic()
    proc = subprocess.Popen(
        cmd, env={**env(), **extra}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    parent_cpu, workers = 0.0, {}
    try:
        root = psutil.Process(proc.pid)
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"serve_start: {' '.join(cmd)} exited {proc.returncode}")
            for child in root.children(recursive=True):
                with contextlib.suppress(psutil.Error):  # gone between listing and reading
                    workers[child.pid] = sum(child.cpu_times()[:2])
            parent_cpu = sum(root.cpu_times()[:2])
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() - began > 120:
                raise SystemExit("serve_start: not ready in 120 s")
            time.sleep(0.05)
        return time.monotonic() - began, parent_cpu, sum(workers.values())
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    from shipyard import bento, tracking
    from shipyard.config import load_params
    from shipyard.policy import load_policy

    version = json.loads((ROOT / "artifacts/registered/registration.json").read_text())["version"]
    tracking.configure(load_params(ROOT / "params.yaml").base)
    tag = bento.package("fraud-detector", version, load_policy(ROOT / "registry/policy.yaml"))
    tmp = scratch("bench-serve-start-")
    parents = {
        "ours: bentoml serve": [str(VENV_BIN / "bentoml")],
        "baseline: parent imports sklearn, pandas": [str(VENV_BIN / "python"), "-c", BASELINE],
    }
    figures: dict[str, list[tuple[float, float, float]]] = {label: [] for label in parents}
    start(parents["ours: bentoml serve"], tag, tmp)  # warm-up: file caches, .pyc
    for _ in range(RUNS):
        for label, parent in parents.items():
            figures[label].append(start(parent, tag, tmp))
    print(f"\n`bentoml serve {tag}` until /readyz (medians of {RUNS}, alternating)")
    print(f"  {'start':<44} {'ready s':>8} {'parent CPU s':>13} {'worker CPU s':>13}")
    for label, runs in figures.items():
        ready, parent_cpu, worker_cpu = (statistics.median(r[i] for r in runs) for i in range(3))
        print(f"  {label:<44} {ready:8.2f} {parent_cpu:13.2f} {worker_cpu:13.2f}")


if __name__ == "__main__":
    main()

"""Claim: the operations the loop performs cost about as much on the team stack (MLflow server
on PostgreSQL, artifacts through it to S3) as on the embedded sqlite store, and promotions
stay serialised, not lost, with 4 promoters at once.

For each backend, in the same run: register (log a model and its frozen test set, register a
version with its tags), promote to @challenger with every gate, alias lookup and version
search (medians), then 4 concurrent `shipyard promote` processes, 2 promotions each:
promotions per minute, and how many processes failed (none should: they promote to
@challenger, judged against one champion). On the stack each promoter has its own working
folder, as on its own machine; on sqlite they share one runtime folder and its file lock.
The stack is moto's S3 server on loopback, not AWS: its figures are the server's and the
database's cost, without a network.

Run with `.venv/bin/python -m benchmarks.registry`.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from tests.integration.registry_fixtures import NAME, register

from benchmarks._timing import env, scratch
from shipyard import stack

ROOT = Path(__file__).resolve().parents[1]
PROMOTERS, EACH = 4, 2


def median_ms(call: Callable[[], Any], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def runtime(machine: Path, extra_env: dict[str, str]) -> str:
    """On the team stack each promoter is a machine of its own; on sqlite they share one."""
    if "SHIPYARD_LOCK_URI" in extra_env:
        return str(machine / "runtime")
    return os.environ["SHIPYARD_RUNTIME_DIR"]


def measure(label: str, tmp: Path, extra_env: dict[str, str]) -> dict[str, Any]:
    from mlflow import MlflowClient

    from shipyard import promotion, registry
    from shipyard.policy import load_policy

    os.environ.update(extra_env)
    policy_path = ROOT / "registry" / "policy.yaml"
    policy = load_policy(policy_path)
    print(f"registry: {label}: registering", file=sys.stderr)
    start = time.perf_counter()
    first = register(tmp)
    register_ms = (time.perf_counter() - start) * 1000
    promotion.promote(NAME, first, "champion", policy)
    versions = [register(tmp) for _ in range(PROMOTERS * EACH + 1)]
    start = time.perf_counter()
    promotion.promote(NAME, versions.pop(), "challenger", policy)
    promote_ms = (time.perf_counter() - start) * 1000
    lookup_ms = median_ms(lambda: registry.version_by_alias(NAME, registry.CHAMPION), 30)
    client = MlflowClient()
    search_ms = median_ms(lambda: client.search_model_versions(f"name='{NAME}'"), 20)

    print(f"registry: {label}: {PROMOTERS} promoters", file=sys.stderr)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    procs = []
    start = time.perf_counter()
    for i in range(PROMOTERS):
        machine = tmp / f"promoter-{i}"
        machine.mkdir()
        (machine / "params.yaml").write_text(yaml.safe_dump(params))
        mine = versions[i * EACH : (i + 1) * EACH]
        script = " && ".join(
            f"shipyard promote {NAME} {v} --to challenger --policy {policy_path}" for v in mine
        )
        procs.append(
            subprocess.Popen(
                ["bash", "-c", script],
                cwd=machine,
                env={**env(), **extra_env, "SHIPYARD_RUNTIME_DIR": runtime(machine, extra_env)},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    failed = sum(1 for p in procs if p.wait() != 0)
    wall = time.perf_counter() - start
    return {
        "register": register_ms,
        "promote": promote_ms,
        "lookup": lookup_ms,
        "search": search_ms,
        "per_minute": PROMOTERS * EACH / wall * 60,
        "failed": failed,
    }


def main() -> None:
    base = scratch("bench-registry-")
    os.environ["SHIPYARD_DECISION_KEY"] = "benchmark-decision-key"
    os.environ["SHIPYARD_RUNTIME_DIR"] = str(base / "runtime")
    sqlite = {"MLFLOW_TRACKING_URI": f"sqlite:///{base / 'sqlite' / 'mlflow.db'}"}
    (base / "sqlite").mkdir()
    results = {"sqlite": measure("sqlite", base / "sqlite", sqlite)}
    folder = base / "stack"
    running = stack.up(folder, say=lambda line: print(line, file=sys.stderr))
    try:
        (base / "team").mkdir()
        os.environ.pop("SHIPYARD_LOCK_URI", None)
        results["stack"] = measure("stack", base / "team", running.client_env())
    finally:
        stack.down(folder)
    print("\nRegistry operations (ms, medians where repeated), same run")
    print(f"  {'operation':<38} {'sqlite':>10} {'team stack':>11}")
    rows = [
        ("register (model, test set, tags)", "register", "{:10.0f}"),
        ("promote to @challenger, every gate", "promote", "{:10.0f}"),
        ("alias lookup", "lookup", "{:10.1f}"),
        ("search versions of one model", "search", "{:10.1f}"),
        (f"promotions/min, {PROMOTERS} promoters", "per_minute", "{:10.1f}"),
        ("promoter processes that failed", "failed", "{:10d}"),
    ]
    for label, key, fmt in rows:
        a, b = results["sqlite"][key], results["stack"][key]
        print(f"  {label:<38} {fmt.format(a)} {fmt.format(b).rjust(11)}")


if __name__ == "__main__":
    main()

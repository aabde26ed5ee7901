"""Claim: the team stack's `mlflow server` with one worker (`stack.SERVER_WORKERS`) costs about
3 s less CPU and 300 MB less memory than with two, the count it ran before, and is ready as
soon (both import MLflow in parallel on two cores, so readiness barely moves).

Every `shipyard stack up` starts one: the promotion, webhook, stores and transfer tests, the
e2e demo on the stack, and a developer's laptop. One worker still answers concurrent requests
(its thread pool); each more imports MLflow again. Same run, alternating, `RUNS` stacks each:
`stack.up` to `/health`, then `REQUESTS` registry searches (so every worker has served), then
the CPU and resident memory of the server's process tree (the `mlflow server` command, its
uvicorn and any spawned workers).
Run with `.venv/bin/python -m benchmarks.stack_start`.
"""

from __future__ import annotations

import time

import httpx
import psutil

from benchmarks._timing import alternating_medians, scratch
from shipyard import stack
from shipyard.deploy import processes

RUNS = 3
REQUESTS = 20


def one(workers: int, run: int) -> tuple[float, float, float]:
    folder = scratch(f"stack-{workers}-{run}-")
    start = time.perf_counter()
    running = stack.up(folder, say=lambda _: None, server_workers=workers)
    ready = time.perf_counter() - start
    try:
        url = f"{running.tracking_uri}/api/2.0/mlflow/registered-models/search"
        with httpx.Client(verify=processes.client_tls(), timeout=30) as client:
            for _ in range(REQUESTS):
                client.get(url, params={"max_results": 10}).raise_for_status()
        server = psutil.Process(running.mlflow_pid)
        tree = [server, *server.children(recursive=True)]
        cpu = sum(p.cpu_times().user + p.cpu_times().system for p in tree)
        rss = sum(p.memory_info().rss for p in tree) / 2**20
    finally:
        stack.down(folder)
    return ready, cpu, rss


def main() -> None:
    ways = {f"ours: {stack.SERVER_WORKERS} worker": stack.SERVER_WORKERS, "baseline: 2 workers": 2}
    medians = alternating_medians(ways, RUNS, one)
    print(f"\n`shipyard stack up`'s server, medians of {RUNS} (alternating)")
    print(f"  {'':<24} {'ready s':>8} {'server CPU s':>13} {'server MiB':>11}")
    for label, (ready, cpu, rss) in medians.items():
        print(f"  {label:<24} {ready:8.2f} {cpu:13.2f} {rss:11.0f}")
    ours, base = medians.values()
    print(f"  saved per stack: {base[1] - ours[1]:.2f} s of CPU, {base[2] - ours[2]:.0f} MiB")


if __name__ == "__main__":
    main()

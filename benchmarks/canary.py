"""Claims about the local canary, measured on synthetic registered versions:

1. Wall time of a full canary on the default policy (registry/policy.yaml), with clients
   calling Envoy throughout (4 threads, 5 ms pause between calls).
2. Latency Envoy adds: wrk through the deployment's Envoy against wrk straight to the
   variant it forwards to, same load, same moment.
3. For each broken challenger (diverged: NaN scores, slow, collapsed: constant score), on
   a short policy: the gate that caught it, client requests that failed, and how long clients
   were exposed to it (first to last canary answer) next to the whole controller run.

Run with `make benchmarks` (needs wrk) or `.venv/bin/python -m benchmarks.canary`.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import yaml
from tests.integration import traffic
from tests.integration.registry_fixtures import NAME, TARGET, frame, register

from benchmarks._timing import env, scratch
from benchmarks.serving import wrk
from shipyard.deploy.processes import free_port
from shipyard.deploy.state import DeploymentState
from shipyard.traffic import Clients

ROOT = Path(__file__).resolve().parents[1]


def run_canary(
    tmp: Path, run_env: dict[str, str], version: str, policy: Path
) -> tuple[subprocess.CompletedProcess[str], Clients, float]:
    port = free_port()
    clients = traffic.proxy_clients(port)
    cmd = ["shipyard", "deploy", f"{NAME}@{version}", "--port", str(port)]
    start = time.monotonic()
    result = subprocess.run(
        [*cmd, "--policy", str(policy)], cwd=tmp, env=run_env, capture_output=True, text=True
    )
    elapsed = time.monotonic() - start
    clients.close()
    return result, clients, elapsed


def proxy_overhead(tmp: Path, state: DeploymentState) -> None:
    rows = frame(n=500, seed=3).drop(columns=TARGET).to_dict("records")
    bodies = [json.dumps({"features": r}).encode() for r in rows]
    print("\nproxy overhead (wrk, same load; goal: a few ms at p50)")
    print(f"  {'path':<28} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    direct = f"{state.stable.url}/predict"
    routed = f"http://127.0.0.1:{state.live_proxy().port}/predict"
    for label, url in (("direct to stable", direct), ("through Envoy", routed)):
        fig = wrk(url, bodies, tmp)
        print(f"  {label:<28} {fig['rps']:8.0f} {fig['p50']:8.1f} {fig['p99']:8.1f}")


def main() -> None:
    tmp = scratch("bench-canary-")
    run_env = {
        **env(),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
        "SHIPYARD_RUNTIME_DIR": str(tmp / "runtime"),
        "BENTOML_HOME": str(tmp / "bentoml"),
        "SHIPYARD_ACTOR": "benchmark",
    }
    os.environ.update(run_env)
    from shipyard import promotion
    from shipyard.deploy.deployment import load_state
    from shipyard.policy import load_policy

    default = ROOT / "registry" / "policy.yaml"
    (tmp / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    stable = register(tmp)
    promotion.promote(NAME, stable, "champion", load_policy(default))
    good = register(tmp, seed=1)
    try:
        result, clients, elapsed = run_canary(tmp, run_env, good, default)
        failed = sum(s != 200 for _, s, _ in clients.events)
        print("full local canary, default policy (steps 5/25/50/100 %, 30 s, 500 requests)")
        print(f"  outcome: {result.stdout.strip() or result.stderr.strip().splitlines()[-1]}")
        total = len(clients.events)
        print(f"  wall time {elapsed:.0f} s, {total} client requests, {failed} failed")
        proxy_overhead(tmp, load_state(NAME))

        raw = yaml.safe_load(default.read_text())
        raw["canary"].update(steps=[50, 100], step_seconds=3, min_requests=300)
        raw["canary"].update(failures_tolerated=0)
        raw["canary"]["gates"].update(max_p99_ms=3000, max_p99_ratio=3)
        raw["canary"]["gates"].update(confidence=0.95, min_expected_positives=6)
        short = tmp / "short.yaml"
        short.write_text(yaml.safe_dump(raw))
        print("\nbroken challengers, short policy (steps 50/100 %, 3 s, 300 requests)")
        print(
            f"  {'fault':<10} {'caught by':<32} {'failed/total req':>17} "
            f"{'exposed s':>10} {'controller s':>13}"
        )
        for i, fault in enumerate(("diverged", "slow", "collapsed")):
            version = register(tmp, seed=10 + i, fault=fault)
            result, clients, elapsed = run_canary(tmp, run_env, version, short)
            state = load_state(NAME)
            first = result.stderr.strip().splitlines()[-1].split("canary gate ")[-1].split()[0]
            others = len(traffic.failed_gates(state)) - 1
            caught = f"{first} (+{others} more)" if others > 0 else first
            canary_times = [t for t, _, v in clients.events if v == "canary"]
            exposed = max(canary_times) - min(canary_times) if canary_times else 0.0
            failed = sum(s != 200 for _, s, _ in clients.events)
            stable_failed = sum(s != 200 for _, s, v in clients.events if v == "stable")
            print(
                f"  {fault:<10} {caught:<32} {failed:>7}/{len(clients.events):<9} "
                f"{exposed:10.1f} {elapsed:13.1f}"
                + (f"  STABLE CLIENTS FAILED: {stable_failed}" if stable_failed else "")
            )
    finally:
        subprocess.run(["shipyard", "deploy", "stop", NAME], cwd=tmp, env=run_env, check=False)


if __name__ == "__main__":
    main()

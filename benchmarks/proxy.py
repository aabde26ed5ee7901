"""Claim: Envoy in front of a deployment costs little, where the Python router it replaced
capped every local deployment at a few hundred requests per second (DESIGN.md, issue 15).

Two bare ASGI upstreams (`_asgi_floor`, uvicorn, one worker each) stand for stable and canary,
so only the proxy is measured. The same wrk load (CONNECTIONS connections, DURATION s, one
small JSON body per request) goes straight to one upstream and then through the deployment's
Envoy at a 90/10 split, in the same run; wrk, Envoy and the upstreams share this box's cores.
Targets: p50 ≤ 1.5 ms and p99 ≤ 3 ms added, and at most half the throughput lost.

Run with `make benchmarks` (installs wrk) or `.venv/bin/python -m benchmarks.proxy`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmarks._timing import env, scratch
from benchmarks.serving import free_port, wait, wrk
from shipyard.deploy import processes, proxy

ROOT = Path(__file__).resolve().parents[1]
BODIES = [b'{"features": {"tx_amount": %d.5, "risk": 0.1}}' % i for i in range(100)]


def upstream(port: int, log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "uvicorn", "benchmarks._asgi_floor:app", "--port", str(port)]
    cmd += ["--host", "127.0.0.1", "--no-access-log", "--log-level", "warning"]
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env(), stdout=log.open("wb"), stderr=subprocess.STDOUT
    )


def main() -> None:
    tmp = scratch("bench-proxy-")
    ports = [free_port(), free_port()]
    procs = [upstream(p, tmp / f"upstream-{p}.log") for p in ports]
    front = free_port()
    files = proxy.Files(tmp / "envoy")
    split = proxy.Split(
        proxy.Upstream("stable", "1", ports[0]), proxy.Upstream("canary", "2", ports[1]), 10
    )
    pid = proxy.start(files.folder, front, split)
    try:
        for port, proc in zip(ports, procs, strict=True):
            wait(f"http://127.0.0.1:{port}/", proc)
        proxy.wait_ready(files, pid)
        direct = wrk(f"http://127.0.0.1:{ports[0]}/predict", BODIES, tmp)
        routed = wrk(f"http://127.0.0.1:{front}/predict", BODIES, tmp)
    finally:
        processes.stop(pid)
        for proc in procs:
            proc.terminate()
    print("Envoy in front of a bare ASGI upstream (wrk, same load, same run)")
    print(f"  {'path':<34} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for label, fig in (("direct (the floor)", direct), ("through Envoy, 90/10 split", routed)):
        print(
            f"  {label:<34} {fig['rps']:8.0f} {fig['p50']:8.2f} {fig['p99']:8.2f} "
            f"{fig['errors']:7.0f}"
        )
    added50, added99 = routed["p50"] - direct["p50"], routed["p99"] - direct["p99"]
    loss = 1 - routed["rps"] / direct["rps"] if direct["rps"] else float("nan")
    print(f"  added p50 {added50:.2f} ms (target ≤ 1.5), added p99 {added99:.2f} ms (target ≤ 3)")
    print(f"  throughput lost {loss:.0%} (target ≤ 50 %)")
    print("  before: the Python router did 320–440 req/s at p50 34–45 ms here (DESIGN.md)")


if __name__ == "__main__":
    main()

"""Clients calling Envoy the whole time a deployment runs, and the deploy command itself."""

from __future__ import annotations

import subprocess
from pathlib import Path

from shipyard import traffic
from shipyard.deploy.processes import free_port
from shipyard.deploy.state import DeploymentState
from tests.integration.registry_fixtures import NAME, TARGET, frame


def proxy_clients(port: int, threads: int = 4, pause: float = 0.005) -> traffic.Clients:
    """Callers of the deployment's Envoy on port, round and round until closed.

    Four, as many as before Envoy, so a slow canary's p99 still stands out from a loaded
    stable's (with 8, queueing on the shared cores brought the slow fault within 2.7 of
    stable, under the gate's 3); with a 5 ms pause rather than 20, so a step gathers its
    `min_requests` and, at 100 %, the last step's expected alerts in time even with the other
    worker busy (at 20 ms they reached under 90 req/s, and an honest canary ran out of time).
    """
    rows = frame(n=4000, seed=9).drop(columns=TARGET)
    rows.insert(0, "request_id", [f"c-{i}" for i in range(len(rows))])
    payloads = traffic.bodies(rows, "request_id")
    url = f"http://127.0.0.1:{port}"
    return traffic.Clients(url, payloads, threads=threads, repeat=True, pause=pause)


def deploy(
    cwd: Path, env: dict[str, str], version: str, strategy: str, policy: Path
) -> tuple[subprocess.CompletedProcess[str], list[tuple[int, str]]]:
    """`shipyard deploy NAME@version` with clients on Envoy throughout."""
    port = free_port()
    cmd = ["shipyard", "deploy", f"{NAME}@{version}", "--strategy", strategy]
    cmd += ["--port", str(port), "--policy", str(policy)]
    clients = proxy_clients(port)
    try:
        result = subprocess.run(
            cmd,
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        clients.close()
    return result, clients.seen()


def failed_gates(state: DeploymentState) -> set[str]:
    """Gates that failed in the deployment's last judged step."""
    return set(state.history[-1].failed_gates())


def status(tmp: Path, env: dict[str, str]) -> str:
    """What `shipyard deploy status` prints for the deployment of NAME."""
    return subprocess.run(
        ["shipyard", "deploy", "status", NAME],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout

"""Clients calling Envoy the whole time a deployment runs, and the deploy command itself."""

from __future__ import annotations

import subprocess
from pathlib import Path

from shipyard import traffic
from shipyard.deploy.processes import free_port
from shipyard.deploy.state import DeploymentState
from tests.integration.registry_fixtures import NAME, TARGET, frame


def proxy_clients(port: int, threads: int = 8, pause: float = 0.01) -> traffic.Clients:
    """Callers of the deployment's Envoy on port, round and round until closed.

    Enough of them that a step gathers its `min_requests` and, at 100 %, the alerts the last
    step needs within the step's time even when another worker loads the machine (4 callers
    with a 20 ms pause managed under 90 requests per second then, and an honest canary ran out
    of time).
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

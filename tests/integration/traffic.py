"""Clients calling a router the whole time a deployment runs, and the deploy command itself."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from shipyard.deploy.processes import free_port
from tests.integration.registry_fixtures import NAME, TARGET, frame


class Clients:
    """Callers of the router: what they got back, from which variant, and when."""

    def __init__(self, port: int, threads: int = 4, pause: float = 0.02) -> None:
        self.url = f"http://127.0.0.1:{port}/predict"
        self.pause = pause
        self.events: list[tuple[float, int, str]] = []  # (monotonic time, status, variant)
        self.stop = threading.Event()
        rows = frame(n=4000, seed=9).drop(columns=TARGET).to_dict("records")
        self.bodies = [
            json.dumps({"features": r, "request_id": f"c-{i}"}).encode() for i, r in enumerate(rows)
        ]
        self.threads = [
            threading.Thread(target=self.loop, args=(k, threads), daemon=True)
            for k in range(threads)
        ]
        for t in self.threads:
            t.start()

    def loop(self, k: int, stride: int) -> None:
        i = k
        while not self.stop.is_set():
            req = urllib.request.Request(
                self.url, self.bodies[i % len(self.bodies)], {"content-type": "application/json"}
            )
            i += stride
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    status, variant = resp.status, resp.headers.get("x-shipyard-variant", "")
            except urllib.error.HTTPError as err:
                status, variant = err.code, err.headers.get("x-shipyard-variant", "")
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)  # router not up yet
                continue
            self.events.append((time.monotonic(), status, variant))
            time.sleep(self.pause)

    def close(self) -> list[tuple[int, str]]:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=40)
        return [(status, variant) for _, status, variant in self.events]


def deploy(
    cwd: Path, env: dict[str, str], version: str, strategy: str, policy: Path
) -> tuple[subprocess.CompletedProcess[str], list[tuple[int, str]]]:
    """`shipyard deploy NAME@version` with clients on the router throughout."""
    port = free_port()
    cmd = ["shipyard", "deploy", f"{NAME}@{version}", "--strategy", strategy]
    cmd += ["--port", str(port), "--policy", str(policy)]
    clients = Clients(port)
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
        seen = clients.close()
    return result, seen


def failed_gates(state: dict[str, Any]) -> set[str]:
    """Gates that failed in the deployment's last judged step."""
    return {g["gate"] for g in state["history"][-1]["gates"] if not g["passed"]}

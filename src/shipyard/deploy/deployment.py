"""A local deployment: its `bentoml serve` processes, its router, and its state file.

The state file is the deployment's only memory: every change of weight or outcome is written
to it before it takes effect, so a dead controller can be resumed or rolled back from it.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

import httpx

from shipyard.artifacts import atomic_file
from shipyard.deploy import processes
from shipyard.errors import ShipyardError
from shipyard.runtime import runtime_dir


def new_state(
    model: str,
    version: str,
    stable: dict[str, Any],
    canary: dict[str, Any] | None = None,
    strategy: str | None = None,
) -> dict[str, Any]:
    """A deployment before its first step: `version` is the one being deployed."""
    return {
        "model": model,
        "version": version,
        "strategy": strategy,
        "status": "starting",
        "target": "local",
        "stable": stable,
        "canary": canary,
        "step": 0,
        "weight": 0,
        "failures": 0,
        "history": [],
    }


def state_path(model: str) -> Path:
    return runtime_dir() / "deploy" / f"{model}.json"


def load_state(model: str) -> dict[str, Any]:
    path = state_path(model)
    if not path.exists():
        raise ShipyardError(f"deploy: no deployment state for {model} ({path})")
    state: dict[str, Any] = json.loads(path.read_text())
    return state


def save_state(state: dict[str, Any]) -> None:
    with atomic_file(state_path(state["model"]), mode=0o600) as scratch:  # holds the admin token
        scratch.write_text(json.dumps(state, indent=2, sort_keys=True))


ATTEMPTS = 3  # a loaded machine can miss one 10 s deadline; three in a row is an outage


def _call(method: str, url: str, **kwargs: Any) -> httpx.Response:
    """One loopback call, retried on a timeout or a refused connection, then a ShipyardError."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return httpx.request(method, url, timeout=10, **kwargs)
        except httpx.TransportError as err:
            if attempt == ATTEMPTS:
                raise ShipyardError(
                    f"{method} {url}: {type(err).__name__} {ATTEMPTS} times"
                ) from None
            time.sleep(1.0)
    raise AssertionError("unreachable")


def admin(state: dict[str, Any], **update: Any) -> None:
    answer = _call(
        "POST",
        f"http://127.0.0.1:{state['router']['port']}/router/weights",
        json=update,
        headers={"Authorization": f"Bearer {state['router']['token']}"},
    )
    if answer.status_code != 200:
        raise ShipyardError(f"router refused the update: {answer.status_code} {answer.text[:200]}")


def scrape(variant: dict[str, Any]) -> str:
    url = f"http://127.0.0.1:{variant['port']}/metrics"
    answer = _call("GET", url)
    if answer.status_code != 200:
        raise ShipyardError(f"GET {url}: {answer.status_code}")
    return answer.text


def prediction_log(model: str) -> Path:
    """Where every variant of a deployment logs its predictions (the shadow pairs from it)."""
    return runtime_dir() / "predictions" / model


def start_service(model: str, version: str, tag: str, role: str) -> dict[str, Any]:
    """`bentoml serve TAG` on a free loopback port, in a BentoML home of its own."""
    port = processes.free_port()
    folder = runtime_dir() / "deploy" / model
    # BentoML keeps its Prometheus multiprocess files under BENTOML_HOME; two servers sharing
    # one home would report each other's traffic. Each gets a home that links the one store.
    store = Path(os.environ["BENTOML_HOME"]).resolve()
    home = folder / f"bentoml-{role}-v{version}"
    home.mkdir(parents=True, exist_ok=True)
    for part in ("bentos", "models"):
        if not (home / part).exists():
            (home / part).symlink_to(store / part)
    env = {
        **os.environ,
        "BENTOML_HOME": str(home.resolve()),
        "SHIPYARD_PREDICTION_LOG": str(prediction_log(model).resolve()),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    log = folder / f"{role}-v{version}.log"
    pid = processes.start(
        [processes.bin_path("bentoml"), "serve", tag, "--host", "127.0.0.1", "--port", str(port)],
        log,
        env,
    )
    return {"version": version, "tag": tag, "port": port, "pid": pid, "log": str(log)}


def start_router(
    model: str, stable: dict[str, Any], canary: dict[str, Any] | None, mode: str, port: int
) -> dict[str, Any]:
    token = secrets.token_urlsafe(24)
    log = runtime_dir() / "deploy" / model / "router.log"
    env = {**os.environ, "SHIPYARD_ROUTER_TOKEN": token}
    cmd = [processes.bin_path("shipyard"), "deploy", "router", "--port", str(port)]
    cmd += ["--stable", url(stable), "--weight", "0", "--mode", mode]
    if canary is not None:
        cmd += ["--canary", url(canary)]
    pid = processes.start(cmd, log, env)
    return {"port": port, "pid": pid, "token": token, "log": str(log)}


def url(variant: dict[str, Any]) -> str:
    return f"http://127.0.0.1:{variant['port']}"


def wait_ready(variant: dict[str, Any], path: str = "/readyz") -> None:
    processes.wait_ready(f"{url(variant)}{path}", variant["pid"], Path(variant["log"]))


def serving(name: str, champion: str, router_port: int) -> dict[str, Any] | None:
    """The finished deployment whose stable serves `champion` on `router_port`, if still up.

    A new canary joins it: clients keep calling the same router and stable answers them
    throughout, with no restart between deployments.
    """
    path = state_path(name)
    if not path.exists():
        return None
    state: dict[str, Any] = json.loads(path.read_text())
    stable, router = state.get("stable"), state.get("router")
    if state.get("status") == "running" or not stable or not router:
        return None
    if str(stable["version"]) != champion or router["port"] != router_port:
        return None
    alive = processes.alive(stable["pid"]) and processes.alive(router["pid"])
    return state if alive else None


def refuse_if_running(name: str) -> None:
    path = state_path(name)
    if path.exists() and json.loads(path.read_text()).get("status") == "running":
        raise ShipyardError(f"deploy: a deployment of {name} is running; resume or stop it first")


def stop_all(name: str) -> None:
    path = state_path(name)
    if not path.exists():
        return
    state = json.loads(path.read_text())
    for role in ("router", "canary", "stable"):
        if state.get(role):
            processes.stop(state[role]["pid"])
    if state.get("status") == "running":
        state["status"] = "stopped"
    save_state(state)

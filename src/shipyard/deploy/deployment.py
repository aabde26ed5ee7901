"""A local deployment: its `bentoml serve` processes, its router, and its state file
(`deploy.state`)."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import Any

import httpx

from shipyard.artifacts import atomic_file
from shipyard.deploy import processes
from shipyard.deploy.state import DeploymentState, Router, Variant
from shipyard.errors import ShipyardError
from shipyard.runtime import runtime_dir


def state_path(model: str) -> Path:
    return runtime_dir() / "deploy" / f"{model}.json"


def read_state(model: str) -> DeploymentState | None:
    path = state_path(model)
    return DeploymentState.parse(path.read_text(), str(path)) if path.exists() else None


def load_state(model: str) -> DeploymentState:
    state = read_state(model)
    if state is None:
        raise ShipyardError(f"deploy: no deployment state for {model} ({state_path(model)})")
    return state


def save_state(state: DeploymentState) -> None:
    with atomic_file(state_path(state.model), mode=0o600) as scratch:  # holds the admin token
        scratch.write_text(state.model_dump_json(indent=2))


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


def admin(state: DeploymentState, **update: Any) -> None:
    router = state.live_router()
    answer = _call(
        "POST",
        f"http://127.0.0.1:{router.port}/router/weights",
        json=update,
        headers={"Authorization": f"Bearer {router.token}"},
    )
    if answer.status_code != 200:
        raise ShipyardError(f"router refused the update: {answer.status_code} {answer.text[:200]}")


def scrape(variant: Variant) -> str:
    url = f"{variant.url}/metrics"
    answer = _call("GET", url)
    if answer.status_code != 200:
        raise ShipyardError(f"GET {url}: {answer.status_code}")
    return answer.text


def prediction_log(model: str) -> Path:
    """Where every variant of a deployment logs its predictions (the shadow pairs from it)."""
    return runtime_dir() / "predictions" / model


def start_service(model: str, version: str, tag: str, role: str) -> Variant:
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
    return Variant(version=version, tag=tag, port=port, pid=pid, log=str(log))


def start_router(
    model: str, stable: Variant, canary: Variant | None, mode: str, port: int
) -> Router:
    token = secrets.token_urlsafe(24)
    log = runtime_dir() / "deploy" / model / "router.log"
    env = {**os.environ, "SHIPYARD_ROUTER_TOKEN": token}
    cmd = [processes.bin_path("shipyard"), "deploy", "router", "--port", str(port)]
    cmd += ["--stable", stable.url, "--weight", "0", "--mode", mode]
    if canary is not None:
        cmd += ["--canary", canary.url]
    pid = processes.start(cmd, log, env)
    return Router(port=port, pid=pid, token=token, log=str(log))


def wait_ready(variant: Variant) -> None:
    processes.wait_ready(f"{variant.url}/readyz", variant.pid, Path(variant.log))


def wait_router(router: Router) -> None:
    processes.wait_ready(f"http://127.0.0.1:{router.port}/livez", router.pid, Path(router.log))


def serving(name: str, champion: str, router_port: int) -> DeploymentState | None:
    """The finished deployment whose stable serves `champion` on `router_port`, if still up.

    A new canary joins it: clients keep calling the same router and stable answers them
    throughout, with no restart between deployments.
    """
    state = read_state(name)
    if state is None or state.status == "running" or state.router is None:
        return None
    if state.stable.version != champion or state.router.port != router_port:
        return None
    alive = processes.alive(state.stable.pid) and processes.alive(state.router.pid)
    return state if alive else None


def refuse_if_running(name: str) -> None:
    state = read_state(name)
    if state is not None and state.status == "running":
        raise ShipyardError(f"deploy: a deployment of {name} is running; resume or stop it first")


def stop_all(name: str) -> None:
    state = read_state(name)
    if state is None:
        return
    for part in (state.router, state.canary, state.stable):
        if part is not None:
            processes.stop(part.pid)
    if state.status == "running":
        state.status = "stopped"
    save_state(state)

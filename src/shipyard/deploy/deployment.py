"""A local deployment: its `bentoml serve` processes, the Envoy in front of them (`proxy`),
and its state file (`deploy.state`)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx

from shipyard.artifacts import atomic_file
from shipyard.deploy import processes, proxy
from shipyard.deploy.state import DeploymentState, Proxy, Variant
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
    with atomic_file(state_path(state.model), mode=0o600) as scratch:
        scratch.write_text(state.model_dump_json(indent=2))


ATTEMPTS = 3  # a loaded machine can miss one 10 s deadline; three in a row is an outage


def _call(method: str, url: str, **kwargs: Any) -> httpx.Response:
    """One loopback call, retried on a timeout or a refused connection, then a ShipyardError."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return httpx.request(method, url, timeout=10, verify=processes.client_tls(), **kwargs)
        except httpx.TransportError as err:
            if attempt == ATTEMPTS:
                raise ShipyardError(
                    f"{method} {url}: {type(err).__name__} {ATTEMPTS} times"
                ) from None
            time.sleep(1.0)
    raise AssertionError("unreachable")


def _upstream(variant: Variant, role: str) -> proxy.Upstream:
    return proxy.Upstream(role=role, version=variant.version, port=variant.port)


def route(state: DeploymentState, **update: Any) -> None:
    """Move the proxy to `weight` and `mode`; `stable=` or `canary=` (a Variant, or None for
    no canary) replace the state's. Returns once Envoy has applied it."""
    stable = update.get("stable", state.stable)
    canary = update.get("canary", state.canary)
    split = proxy.Split(
        stable=_upstream(stable, "stable"),
        canary=None if canary is None else _upstream(canary, "canary"),
        weight=int(update.get("weight", state.weight)),
        mode=str(update.get("mode", state.strategy or "canary")),
    )
    proxy.update(proxy.Files(Path(state.live_proxy().folder)), split)


def proxy_stats(state: DeploymentState) -> str:
    """Envoy's per-cluster statistics (Prometheus text), for the canary's proxy window."""
    return proxy.stats(proxy.Files(Path(state.live_proxy().folder)))


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


def start_proxy(model: str, stable: Variant, canary: Variant | None, mode: str, port: int) -> Proxy:
    """Envoy on `port` with no traffic on the canary yet; returns once it is ready."""
    folder = runtime_dir() / "deploy" / model / "envoy"
    split = proxy.Split(
        stable=_upstream(stable, "stable"),
        canary=None if canary is None else _upstream(canary, "canary"),
        mode=mode,
    )
    pid = proxy.start(folder, port, split)
    running = Proxy(port=port, pid=pid, folder=str(folder), log=str(folder / "envoy.log"))
    proxy.wait_ready(proxy.Files(folder), pid)
    return running


def wait_ready(variant: Variant) -> None:
    processes.wait_ready(f"{variant.url}/readyz", variant.pid, Path(variant.log))


def serving(name: str, champion: str, port: int) -> DeploymentState | None:
    """The finished deployment whose stable serves `champion` on `port`, if still up.

    A new canary joins it: clients keep calling the same proxy and stable answers them
    throughout, with no restart between deployments.
    """
    state = read_state(name)
    if state is None or state.status == "running" or state.proxy is None:
        return None
    if state.stable.version != champion or state.proxy.port != port:
        return None
    alive = processes.alive(state.stable.pid) and processes.alive(state.proxy.pid)
    return state if alive else None


def refuse_if_running(name: str) -> None:
    state = read_state(name)
    if state is not None and state.status == "running":
        raise ShipyardError(f"deploy: a deployment of {name} is running; resume or stop it first")


def stop_all(name: str) -> None:
    state = read_state(name)
    if state is None:
        return
    for part in (state.proxy, state.canary, state.stable):
        if part is not None:
            processes.stop(part.pid)
    if state.status == "running":
        state.status = "stopped"
    save_state(state)

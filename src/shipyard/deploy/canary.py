"""The local canary controller: stable and canary `bentoml serve` processes behind the router.

Every change of weight or outcome is written to the state file before it takes effect, so a
controller that dies mid-canary can be resumed, or rolled back to weight 0, never left at an
unknown weight.
"""

from __future__ import annotations

import json
import os
import secrets
import time
import urllib.request
from dataclasses import asdict
from pathlib import Path
from typing import Any

from shipyard.artifacts import progress
from shipyard.config import CanaryPolicy, Policy
from shipyard.deploy import outcome, processes
from shipyard.deploy.analysis import Window, judge, parse_metrics, window
from shipyard.errors import ShipyardError
from shipyard.gates import GateResult
from shipyard.runtime import runtime_dir

EARLY_ERRORS = 5  # server errors that end a step early when the error rate is past its gate
SCORE_GATES = ("max_score_psi", "max_score_ks", "max_positive_rate_diff")
CLEAR_MARGIN = 2.0  # a score gate failed by this factor, on enough requests, ends a step early
DRAIN_SECONDS = 2.0  # requests already on their way to a retiring process finish first


def state_path(model: str) -> Path:
    return runtime_dir() / "deploy" / f"{model}.json"


def load_state(model: str) -> dict[str, Any]:
    path = state_path(model)
    if not path.exists():
        raise ShipyardError(f"deploy: no deployment state for {model} ({path})")
    state: dict[str, Any] = json.loads(path.read_text())
    return state


def save_state(state: dict[str, Any]) -> None:
    path = state_path(state["model"])
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds the admin token
    with os.fdopen(fd, "w") as handle:
        json.dump(state, handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    partial.rename(path)


def _admin(state: dict[str, Any], **update: Any) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{state['router']['port']}/router/weights",
        data=json.dumps(update).encode(),
        headers={
            "Authorization": f"Bearer {state['router']['token']}",
            "Content-Type": "application/json",
        },
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 (loopback)
        if resp.status != 200:
            raise ShipyardError(f"router refused the update: {resp.status}")


def _scrape(variant: dict[str, Any]) -> str:
    url = f"http://127.0.0.1:{variant['port']}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        return str(resp.read().decode())


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
        "SHIPYARD_PREDICTION_LOG": str((runtime_dir() / "predictions" / model).resolve()),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    log = folder / f"{role}-v{version}.log"
    pid = processes.start(
        [processes.bin_path("bentoml"), "serve", tag, "--host", "127.0.0.1", "--port", str(port)],
        log,
        env,
    )
    return {"version": version, "tag": tag, "port": port, "pid": pid, "log": str(log)}


def _start_router(
    model: str, stable: dict[str, Any], canary: dict[str, Any] | None, mode: str, port: int
) -> dict[str, Any]:
    token = secrets.token_urlsafe(24)
    log = runtime_dir() / "deploy" / model / "router.log"
    env = {**os.environ, "SHIPYARD_ROUTER_TOKEN": token}
    cmd = [processes.bin_path("shipyard"), "deploy", "router", "--port", str(port)]
    cmd += ["--stable", _url(stable), "--weight", "0", "--mode", mode]
    if canary is not None:
        cmd += ["--canary", _url(canary)]
    pid = processes.start(cmd, log, env)
    return {"port": port, "pid": pid, "token": token, "log": str(log)}


def _url(variant: dict[str, Any]) -> str:
    return f"http://127.0.0.1:{variant['port']}"


def _wait_ready(variant: dict[str, Any], path: str = "/readyz") -> None:
    processes.wait_ready(f"{_url(variant)}{path}", variant["pid"], Path(variant["log"]))


def _serving(name: str, champion: str, router_port: int) -> dict[str, Any] | None:
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


def start(name: str, policy: Policy, target: str, *, router_port: int = 3000) -> dict[str, Any]:
    """Serve @champion behind the router with no canary: the stable later canaries join."""
    from shipyard import bento, registry

    holder = registry.version_by_alias(name, registry.CHAMPION)
    if holder is None:
        raise ShipyardError(f"deploy: {name} has no @champion to serve")
    champion = str(holder.version)
    if _serving(name, champion, router_port):
        progress("deploy", f"v{champion} is already served on http://127.0.0.1:{router_port}")
        return load_state(name)
    _refuse_if_running(name)
    stop_all(name)
    stable = start_service(name, champion, bento.package(name, champion, policy), "stable")
    state: dict[str, Any] = {
        "model": name,
        "version": champion,
        "strategy": None,
        "status": "starting",
        "target": target,
        "stable": stable,
        "canary": None,
        "step": 0,
        "weight": 0,
        "failures": 0,
        "history": [],
    }
    save_state(state)
    try:
        _wait_ready(stable)
        state["router"] = _start_router(name, stable, None, "canary", router_port)
        save_state(state)
        _wait_ready(state["router"], "/livez")
    except Exception:
        stop_all(name)
        state["status"] = "failed to start"
        save_state(state)
        raise
    state["status"] = "serving"
    save_state(state)
    progress("deploy", f"v{champion} serving on http://127.0.0.1:{router_port}")
    return state


def _refuse_if_running(name: str) -> None:
    path = state_path(name)
    if path.exists() and json.loads(path.read_text()).get("status") == "running":
        raise ShipyardError(f"deploy: a deployment of {name} is running; resume or stop it first")


def strategy_of(name: str, version: str) -> str:
    """The strategy `promote --strategy` recorded on the version, else canary."""
    from shipyard import registry
    from shipyard.promotion import STRATEGY_TAG

    return str(registry.resolve(name, version).tags.get(STRATEGY_TAG, "canary"))


def deploy(
    name: str,
    ref: str,
    policy: Policy,
    target: str,
    *,
    strategy: str | None = None,
    router_port: int = 3000,
) -> dict[str, Any]:
    """Start the canary beside stable and step through the policy; returns the final state.

    The strategy defaults to what promotion recorded on the version. A stable already
    serving the champion on `router_port` is kept, and so is its router.
    """
    from shipyard import bento

    challenger, champion = outcome.versions(name, ref)
    strategy = strategy or strategy_of(name, challenger)
    _refuse_if_running(name)
    serving = _serving(name, champion, router_port)
    if serving is None:
        stop_all(name)  # a finished deployment's stable and router make way for the new one
        stable = start_service(name, champion, bento.package(name, champion, policy), "stable")
    else:
        stable = serving["stable"]
    canary = start_service(name, challenger, bento.package(name, challenger, policy), "canary")
    state: dict[str, Any] = {
        "model": name,
        "version": challenger,
        "strategy": strategy,
        "status": "starting",
        "target": target,
        "stable": stable,
        "canary": canary,
        "step": 0,
        "weight": 0,
        "failures": 0,
        "history": [],
    }
    if serving is not None:
        state["router"] = serving["router"]
    save_state(state)
    try:
        for variant in (stable, canary):
            _wait_ready(variant)
        # Clients reach the canary only once both variants can answer.
        if serving is None:
            state["router"] = _start_router(name, stable, canary, strategy, router_port)
            save_state(state)
            _wait_ready(state["router"], "/livez")
        else:
            _admin(state, weight=0, mode=strategy, canary=_url(canary))
    except Exception:
        if serving is None:
            stop_all(name)
        else:  # stable keeps serving; only the canary goes
            processes.stop(canary["pid"])
            state["canary"] = None
        state["status"] = "failed to start"
        save_state(state)
        raise
    state["status"] = "running"
    save_state(state)
    progress(
        "deploy",
        f"stable v{stable['version']} and canary v{canary['version']} behind "
        f"http://127.0.0.1:{router_port} ({strategy})",
    )
    return _advance(state, policy, target)


def _wait_for_traffic(
    state: dict[str, Any], cfg: CanaryPolicy, before: tuple[str, str]
) -> tuple[Window, Window]:
    """At least `step_seconds`, then until the canary has `min_requests` (up to 5 steps' time).

    A canary answering with server errors is judged at once: every second of waiting is more
    clients failing, and the error gate needs no large sample to see it.
    """
    start = time.monotonic()
    parsed = (parse_metrics(before[0]), parse_metrics(before[1]))
    while True:
        time.sleep(min(1.0, cfg.step_seconds))
        after = (_scrape(state["stable"]), _scrape(state["canary"]))
        stable = window(parsed[0], parse_metrics(after[0]))
        canary = window(parsed[1], parse_metrics(after[1]))
        elapsed = time.monotonic() - start
        if _erroring(canary, cfg):
            progress("deploy", f"canary errors ({canary.server_errors:.0f}): judging now")
            return stable, canary
        off = _clearly_off(stable, canary, cfg)
        if off is not None:
            progress("deploy", f"canary scores far off ({off.describe()}): judging now")
            return stable, canary
        if elapsed >= cfg.step_seconds and (
            canary.requests >= cfg.min_requests or elapsed > 5 * cfg.step_seconds
        ):
            return stable, canary


def _erroring(canary: Window, cfg: CanaryPolicy) -> bool:
    return (
        canary.server_errors >= EARLY_ERRORS
        and canary.server_errors / canary.requests > cfg.gates.max_error_rate
    )


def _clearly_off(stable: Window, canary: Window, cfg: CanaryPolicy) -> GateResult | None:
    """A score gate failed CLEAR_MARGIN times over, with `min_requests` on both sides.

    That many requests is the sample the policy judges scores on; past it, a canary whose
    scores are far off only exposes more clients (or, shadowed, waits longer to go) until the
    window ends. A canary that is close to a bound still gets its whole window.
    """
    if min(stable.requests, canary.requests) < cfg.min_requests:
        return None
    for result in judge(stable, canary, cfg.gates):
        value, bound = result.value, result.threshold
        if value is None or bound is None or result.gate not in SCORE_GATES:
            continue
        if value > CLEAR_MARGIN * bound:  # NaN (nothing to compare yet) never is
            return result
    return None


def _advance(state: dict[str, Any], policy: Policy, target: str) -> dict[str, Any]:
    cfg = policy.canary
    saved = state.get("baseline")
    baseline: Window | None = Window(**saved) if saved else None
    for i in range(state["step"], len(cfg.steps)):
        weight = 0 if state["strategy"] == "shadow" else cfg.steps[i]
        state.update(step=i, weight=weight)
        save_state(state)  # the intended weight is on disk before the router changes
        _admin(state, weight=weight, mode=state["strategy"])
        progress("deploy", f"step {i + 1}/{len(cfg.steps)}: canary weight {weight}%")
        before = (_scrape(state["stable"]), _scrape(state["canary"]))
        stable, canary = _wait_for_traffic(state, cfg, before)
        if stable.requests >= cfg.min_requests or baseline is None:
            baseline = stable  # at 100% the last well-fed stable window stands in
            state["baseline"] = asdict(baseline)  # and survives a controller restart
        results = judge(baseline, canary, cfg.gates)
        if canary.requests < cfg.min_requests:
            results = [*results, _too_little(canary.requests, cfg.min_requests)]
        passed = all(r.passed for r in results)
        state["history"].append(
            {
                "step": i + 1,
                "weight": weight,
                "passed": passed,
                "stable_requests": stable.requests,
                "canary_requests": canary.requests,
                "gates": [r.as_dict() for r in results],
            }
        )
        if not passed:
            state["failures"] += 1
        save_state(state)
        progress(
            "deploy",
            f"step {i + 1}: {'passed' if passed else 'FAILED'} "
            f"({canary.requests:.0f} canary requests)",
        )
        if state["failures"] > cfg.failures_tolerated:
            return _reject(state, results)
    return _promote(state, policy, target)


def _too_little(seen: float, needed: int) -> GateResult:
    return GateResult("min_requests", False, seen, float(needed), ">=")


def _analysis(state: dict[str, Any]) -> dict[str, Any]:
    return {
        "strategy": state["strategy"],
        "stable_version": state["stable"]["version"],
        "steps": state["history"],
    }


def _reject(state: dict[str, Any], results: list[GateResult]) -> dict[str, Any]:
    failed = next(r for r in results if not r.passed)
    state.update(weight=0, status="rolling back")
    save_state(state)
    _admin(state, weight=0, mode="canary", canary=None)
    time.sleep(DRAIN_SECONDS)
    processes.stop(state["canary"]["pid"])
    error = outcome.rejected(
        state["model"], state["canary"]["version"], failed.describe(), _analysis(state)
    )
    state["status"] = "rejected"  # only once the registry says so too
    save_state(state)
    raise error


def _promote(state: dict[str, Any], policy: Policy, target: str) -> dict[str, Any]:
    outcome.passed(state["model"], state["canary"]["version"], _analysis(state), policy, target)
    # The canary process becomes the stable one; the old stable retires.
    _admin(
        state,
        weight=0,
        mode="canary",
        stable=_url(state["canary"]),
        canary=None,
    )
    time.sleep(DRAIN_SECONDS)
    processes.stop(state["stable"]["pid"])
    state.update(stable=state["canary"], canary=None, weight=0, status="promoted")
    save_state(state)
    return state


def resume(name: str, policy: Policy, target: str) -> dict[str, Any]:
    """Continue where a dead controller stopped; if a process is gone, roll back to weight 0."""
    state = load_state(name)
    if state["status"] != "running":
        return state
    needed = [state["stable"]["pid"], state["canary"]["pid"], state["router"]["pid"]]
    if all(processes.alive(pid) for pid in needed):
        progress("deploy", f"resuming at step {state['step'] + 1} (weight {state['weight']}%)")
        return _advance(state, policy, target)
    state.update(weight=0, status="rolled back after restart")
    save_state(state)
    if processes.alive(state["router"]["pid"]):
        _admin(state, weight=0, mode="canary", canary=None)
    time.sleep(DRAIN_SECONDS)
    processes.stop(state["canary"]["pid"])
    outcome.aborted(name, state["canary"]["version"])
    raise ShipyardError(f"deploy: {name}: a process of the canary is gone; rolled back to weight 0")


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

"""The local canary controller: steps the canary's weight and judges it against stable.

Every change of weight or outcome goes to the deployment's state file (`deploy.deployment`)
before it takes effect, so a controller that dies mid-canary can be resumed, or rolled back to
weight 0, never left at an unknown weight.

Over 300 lines on purpose: start, deploy, advance, judge, promote, reject and resume are the
transitions of one state file, and reading them together is how they are kept consistent.
The window arithmetic (`window`) and the gates (`analysis`, `paired`) live elsewhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any, NoReturn

from shipyard.artifacts import progress
from shipyard.deploy import deployment, outcome, paired, processes, proxy
from shipyard.deploy.analysis import AlertRateTest, Alerts, judge
from shipyard.deploy.state import DeploymentState, Step, Variant
from shipyard.deploy.window import Window, parse_metrics, proxy_counts, window
from shipyard.errors import GateFailed, ShipyardError
from shipyard.gates import GateResult
from shipyard.policy import CanaryPolicy, Policy

EARLY_ERRORS = 5  # server errors that end a step early when the error rate is past its gate
CLEAR_MARGIN = 2.0  # a score gate failed by this factor, on enough requests, ends a step early
SCORE_GATES = ("max_score_psi", "max_score_ks")
# The statistical gates (KS excess, alert-rate test) end a step early at twice their policy's
# strictness: they are looked at every second, and each look is another chance for noise to
# pass for a fault. Honest canaries sit well inside both bounds, where that chance is tiny.
EARLY_ALPHA_SHARE = 0.5
DRAIN_SECONDS = 2.0  # requests already on their way to a retiring process finish first
# A shadow gets every request from its first second, while stable is warm: its first-call
# set-up (thread pools, the batching dispatcher, first model calls) would be its p99. No client
# sees a shadow's answers, so its first seconds go unjudged at no one's cost.
SHADOW_WARM_UP = 2.0
PREDICTION_LOG_FLUSH = 1.2  # seconds: a service flushes its prediction log every second
COMPLETE, TIME_UP = "complete", "step time is up"
ON_TIME = (COMPLETE, TIME_UP)  # any other reason to judge a step is a fault seen early


@dataclass(frozen=True)
class Plant:
    """Everything the controller reads or moves besides its state file.

    The real proxy, processes, registry and clock by default. Unit tests pass a simulated
    fleet and clock instead, so the step, reject, abort and resume logic runs in milliseconds
    rather than waiting out real windows; a few real-process tests keep the real parts honest.
    """

    scrape: Callable[[Variant], str] = deployment.scrape
    proxy_stats: Callable[[DeploymentState], str] = deployment.proxy_stats
    route: Callable[..., None] = deployment.route  # (state, weight=, mode=, stable=, canary=)
    stop: Callable[[int], None] = processes.stop
    alive: Callable[[int], bool] = processes.alive
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    passed: Callable[[str, str, dict[str, Any], Policy], None] = outcome.passed
    rejected: Callable[[str, str, str, dict[str, Any]], Exception] = outcome.rejected
    aborted: Callable[[str, str], None] = outcome.aborted


REAL = Plant()


def start(name: str, policy: Policy, *, port: int = 3000) -> DeploymentState:
    """Serve @champion behind Envoy with no canary: the stable later canaries join."""
    from shipyard import bento, registry

    holder = registry.version_by_alias(name, registry.CHAMPION)
    if holder is None:
        raise ShipyardError(f"deploy: {name} has no @champion to serve")
    champion = str(holder.version)
    if deployment.serving(name, champion, port):
        progress("deploy", f"v{champion} is already served on http://127.0.0.1:{port}")
        return deployment.load_state(name)
    deployment.refuse_if_running(name)
    deployment.stop_all(name)
    stable = deployment.start_service(
        name, champion, bento.package(name, champion, policy), "stable"
    )
    state = DeploymentState(model=name, version=champion, stable=stable)
    deployment.save_state(state)
    try:
        deployment.wait_ready(stable)
        state.proxy = deployment.start_proxy(name, stable, None, "canary", port)
    except Exception:
        deployment.stop_all(name)
        state.status = "failed to start"
        deployment.save_state(state)
        raise
    state.status = "serving"
    deployment.save_state(state)
    progress("deploy", f"v{champion} serving on http://127.0.0.1:{port}")
    return state


def strategy_of(name: str, version: str) -> str:
    """The strategy `promote --strategy` recorded on the version, else canary."""
    from shipyard import registry
    from shipyard.tags import VersionTags

    return VersionTags.of(registry.resolve(name, version)).strategy


def deploy(
    name: str,
    ref: str,
    policy: Policy,
    *,
    strategy: str | None = None,
    port: int = 3000,
) -> DeploymentState:
    """Start the canary beside stable and step through the policy; returns the final state.

    The strategy defaults to what promotion recorded on the version. A stable already
    serving the champion on `port` is kept, and so is its proxy.
    """
    from shipyard import bento

    challenger, champion = outcome.versions(name, ref)
    strategy = strategy or strategy_of(name, challenger)
    deployment.refuse_if_running(name)
    serving = deployment.serving(name, champion, port)
    if serving is None:
        # A finished deployment's stable and proxy make way for the new one.
        deployment.stop_all(name)
        stable = deployment.start_service(
            name, champion, bento.package(name, champion, policy), "stable"
        )
    else:
        stable = serving.stable
    # The canary counts its scores in the buckets stable counts in, or PSI compares nothing.
    buckets = bento.served_buckets(stable.tag)
    canary = deployment.start_service(
        name, challenger, bento.package(name, challenger, policy, buckets), "canary"
    )
    state = DeploymentState(
        model=name, version=challenger, stable=stable, canary=canary, strategy=strategy
    )
    if serving is not None:
        state.proxy = serving.proxy
    deployment.save_state(state)
    try:
        for variant in (stable, canary):
            deployment.wait_ready(variant)
        # Clients reach the canary only once both variants can answer.
        if serving is None:
            state.proxy = deployment.start_proxy(name, stable, canary, strategy, port)
        else:
            deployment.route(state, weight=0, mode=strategy)
    except Exception:
        if serving is None:
            deployment.stop_all(name)
        else:  # stable keeps serving; only the canary goes
            processes.stop(canary.pid)
            state.canary = None
        state.status = "failed to start"
        deployment.save_state(state)
        raise
    state.status = "running"
    deployment.save_state(state)
    progress(
        "deploy",
        f"stable v{stable.version} and canary v{canary.version} behind "
        f"http://127.0.0.1:{port} ({strategy})",
    )
    return advance(state, policy)


def _wait_for_traffic(
    state: DeploymentState, policy: Policy, before: tuple[str, str], final: bool, plant: Plant
) -> tuple[Window, Window, tuple[Window, Window], bool]:
    """Scrape once a second until `ready` says the step can be judged.

    Returns both step windows, both variants' windows since the canary started, and whether
    the step ended early on a fault.
    """
    start = plant.clock()
    parsed = (parse_metrics(before[0]), parse_metrics(before[1]))
    first = tuple(parse_metrics(text) for text in state.start_scrapes or before)
    clusters = proxy.canary_clusters(state.live_canary().version)
    at_proxy = parse_metrics(plant.proxy_stats(state))
    while True:
        plant.sleep(min(1.0, policy.canary.step_seconds))
        after = (
            parse_metrics(plant.scrape(state.stable)),
            parse_metrics(plant.scrape(state.live_canary())),
        )
        seen = proxy_counts(at_proxy, parse_metrics(plant.proxy_stats(state)), *clusters)
        stable = window(parsed[0], after[0])
        canary = replace(window(parsed[1], after[1]), proxy_requests=seen[0], proxy_errors=seen[1])
        since = (window(first[0], after[0]), window(first[1], after[1]))
        elapsed = plant.clock() - start
        reason = ready(stable, canary, since, policy, elapsed, final)
        if reason is not None:
            if reason not in ON_TIME:
                progress("deploy", f"{reason}: judging now")
            return stable, canary, since, reason not in ON_TIME


def ready(
    stable: Window,
    canary: Window,
    since: tuple[Window, Window],
    policy: Policy,
    elapsed: float,
    final: bool,
) -> str | None:
    """Why the step can be judged now, or None to keep waiting.

    At least `step_seconds`, then until the canary has `min_requests` (and, on the last
    step, the alerts a pass needs), for up to 5 steps' time. A canary answering with server
    errors, or whose scores or alerts are clearly off, is judged at once: every second of
    waiting is more clients exposed to it.
    """
    cfg = policy.canary
    if _erroring(canary, cfg):
        return f"canary errors ({canary.errors:.0f})"
    off = _clearly_off(stable, canary, since, policy)
    if off is not None:
        return f"canary far off ({off.describe()})"
    if elapsed > 5 * cfg.step_seconds:
        return TIME_UP
    enough = canary.requests >= cfg.min_requests
    if final:
        alerts = (Alerts.of(since[0]), Alerts.of(since[1]))
        test = AlertRateTest.of(*alerts, cfg.gates.max_positive_rate_ratio)
        enough = enough and test.expected >= cfg.gates.min_expected_positives
    return COMPLETE if elapsed >= cfg.step_seconds and enough else None


def _erroring(canary: Window, cfg: CanaryPolicy) -> bool:
    return canary.errors >= EARLY_ERRORS and canary.error_rate > cfg.gates.max_error_rate


def _clearly_off(
    stable: Window, canary: Window, since: tuple[Window, Window], policy: Policy
) -> GateResult | None:
    """With `min_requests` on both sides since the start: PSI failed CLEAR_MARGIN times over,
    or a statistical gate fails at half the policy's error rate.

    That many requests is the sample the policy judges scores on; past it, a canary whose
    scores are far off only exposes more clients (or, shadowed, waits longer to go) until the
    window ends. A canary that is close to a bound still gets its whole window.
    """
    cfg = policy.canary
    if min(since[0].requests, since[1].requests) < cfg.min_requests:
        return None
    strict = 1 - (1 - cfg.gates.confidence) * EARLY_ALPHA_SHARE
    gates = cfg.gates.model_copy(update={"confidence": strict})
    budget = policy.promotion.alert_budget
    for result in judge(stable, canary, gates, since, budget=budget):
        value, bound = result.value, result.threshold
        if value is None or bound is None:
            continue
        if result.gate == "positive_rate_ratio" and not result.passed:
            return result  # NaN cannot fail it here: both sides have min_requests
        margin = CLEAR_MARGIN if result.gate == "max_score_psi" else 1.0
        if result.gate in SCORE_GATES and value > margin * bound:  # NaN never is
            return result
    return None


def advance(state: DeploymentState, policy: Policy, plant: Plant = REAL) -> DeploymentState:
    """Step through the weights, then promote or reject; abort if the controller loses sight
    of the canary (a scrape or a weight change that keeps failing), never crash at a weight."""
    try:
        failed = _steps(state, policy, plant)
    except GateFailed:
        raise
    except ShipyardError as err:
        _abort(state, str(err), plant)
    if failed is not None:
        return _reject(state, failed, plant)
    return _promote(state, policy, plant)


def _abort(state: DeploymentState, reason: str, plant: Plant) -> NoReturn:
    """Weight 0 and the canary stopped, as best it can, then the version tagged aborted."""
    state.weight, state.status = 0, "aborted"
    deployment.save_state(state)
    try:
        plant.route(state, weight=0, mode="canary", canary=None)
    except ShipyardError as err:  # the proxy may be the part that is gone
        progress("deploy", f"could not set weight 0: {err}")
    plant.sleep(DRAIN_SECONDS)
    plant.stop(state.live_canary().pid)
    plant.aborted(state.model, state.live_canary().version)
    raise ShipyardError(f"deploy: {state.model}: canary aborted at weight 0: {reason}")


def _steps(state: DeploymentState, policy: Policy, plant: Plant) -> list[GateResult] | None:
    """Every step's judgement; the failing results when the canary must be rejected."""
    cfg = policy.canary
    baseline: Window | None = Window(**state.baseline) if state.baseline else None
    state.failures_tolerated = cfg.failures_tolerated
    i = state.step
    while i < len(cfg.steps):
        final = i == len(cfg.steps) - 1
        weight = 0 if state.strategy == "shadow" else cfg.steps[i]
        state.step, state.weight = i, weight
        deployment.save_state(state)  # the intended weight is on disk before the proxy changes
        plant.route(state, weight=weight, mode=state.strategy)
        progress("deploy", f"step {i + 1}/{len(cfg.steps)}: canary weight {weight}%")
        if state.start_scrapes is None and state.strategy == "shadow":
            plant.sleep(SHADOW_WARM_UP)
        before = (plant.scrape(state.stable), plant.scrape(state.live_canary()))
        if state.start_scrapes is None:  # score and alert gates count from here on
            state.start_scrapes = list(before)
            state.started_at = datetime.now(UTC).isoformat(timespec="milliseconds")
            deployment.save_state(state)
        stable, canary, since, early = _wait_for_traffic(state, policy, before, final, plant)
        if stable.requests >= cfg.min_requests or baseline is None:
            baseline = stable  # at 100% the last well-fed stable window stands in
            state.baseline = asdict(baseline)  # and survives a controller restart
        budget = policy.promotion.alert_budget
        results = judge(baseline, canary, cfg.gates, since, final=final, budget=budget)
        if canary.requests < cfg.min_requests and not early:  # a fault needs no more
            results = [*results, _too_little(canary.requests, cfg.min_requests)]
        if state.strategy == "shadow":
            results += _paired(state, cfg, final, plant)
        passed = all(r.passed for r in results)
        state.history.append(
            Step(
                step=i + 1,
                weight=weight,
                passed=passed,
                stable_requests=stable.requests,
                canary_requests=canary.requests,
                canary_requests_total=since[1].requests,
                gates=[r.as_dict() for r in results],
            )
        )
        if not passed:
            state.failures += 1
        deployment.save_state(state)
        left = cfg.failures_tolerated - state.failures
        progress(
            "deploy",
            f"step {i + 1}: {'passed' if passed else 'FAILED'} "
            f"({canary.requests:.0f} canary requests; "
            f"{max(left, 0)} more failed step{'' if left == 1 else 's'} tolerated)",
        )
        if rejects(state.failures, cfg, final=final, passed=passed):
            return results
        if passed:  # a tolerated failure repeats its step: no canary steps up on a failure
            i += 1
    return None


def rejects(failures: int, cfg: CanaryPolicy, *, final: bool, passed: bool) -> bool:
    """More failed steps than tolerated, or a failed last step: nothing overrides that one."""
    return failures > cfg.failures_tolerated or (final and not passed)


def _paired(
    state: DeploymentState, cfg: CanaryPolicy, final: bool, plant: Plant
) -> list[GateResult]:
    """Shadow only: stable's and the canary's answers to the same requests, side by side.

    On the last step it waits (up to 5 steps' time) for the alerted records the
    disagreement gate needs, as the alert-rate test waits for its expected alerts.
    """
    need = cfg.gates.min_expected_positives
    start = plant.clock()
    reader = paired.Reader(
        deployment.prediction_log(state.model),
        str(state.stable.version),
        str(state.live_canary().version),
        state.started_at or "",  # a state from before pairing: every record
    )
    while True:
        plant.sleep(PREDICTION_LOG_FLUSH)  # the last second's records reach the log
        found = reader.read()
        waited = plant.clock() - start
        if not final or found.either_alerted >= need or waited > 5 * cfg.step_seconds:
            return paired.gates(found, cfg.paired, cfg.min_requests, need, final=final)


def _too_little(seen: float, needed: int) -> GateResult:
    return GateResult("min_requests", False, seen, float(needed), ">=")


def _analysis(state: DeploymentState) -> dict[str, Any]:
    return {
        "strategy": state.strategy,
        "stable_version": state.stable.version,
        "steps": [step.model_dump() for step in state.history],
    }


def _retire_canary(state: DeploymentState, plant: Plant) -> None:
    """Weight 0 on disk, then at the proxy; the canary stops once its requests drained."""
    state.weight, state.status = 0, "rolling back"
    deployment.save_state(state)
    plant.route(state, weight=0, mode="canary", canary=None)
    plant.sleep(DRAIN_SECONDS)
    plant.stop(state.live_canary().pid)


def _reject(state: DeploymentState, results: list[GateResult], plant: Plant) -> NoReturn:
    failed = next(r for r in results if not r.passed)
    _retire_canary(state, plant)
    error = plant.rejected(
        state.model, state.live_canary().version, failed.describe(), _analysis(state)
    )
    state.status = "rejected"  # only once the registry says so too
    deployment.save_state(state)
    raise error


def _promote(state: DeploymentState, policy: Policy, plant: Plant) -> DeploymentState:
    try:
        plant.passed(state.model, state.live_canary().version, _analysis(state), policy)
    except ShipyardError:
        # The promotion gates refused what the canary's gates passed (a version worse offline
        # than the champion, a lock held elsewhere): it must not keep the last step's traffic.
        _retire_canary(state, plant)
        state.status = "promotion refused"
        deployment.save_state(state)
        raise
    # The canary process becomes the stable one; the old stable retires.
    plant.route(
        state,
        weight=0,
        mode="canary",
        stable=state.live_canary(),
        canary=None,
    )
    plant.sleep(DRAIN_SECONDS)
    plant.stop(state.stable.pid)
    state.stable, state.canary = state.live_canary(), None
    state.weight, state.status = 0, "promoted"
    deployment.save_state(state)
    return state


def resume(name: str, policy: Policy, plant: Plant = REAL) -> DeploymentState:
    """Continue where a dead controller stopped; if a process is gone, roll back to weight 0."""
    state = deployment.load_state(name)
    if state.status != "running":
        return state
    canary, front = state.live_canary(), state.live_proxy()
    if all(plant.alive(pid) for pid in (state.stable.pid, canary.pid, front.pid)):
        progress("deploy", f"resuming at step {state.step + 1} (weight {state.weight}%)")
        return advance(state, policy, plant)
    state.weight, state.status = 0, "rolled back after restart"
    deployment.save_state(state)
    if plant.alive(front.pid):
        plant.route(state, weight=0, mode="canary", canary=None)
    plant.sleep(DRAIN_SECONDS)
    plant.stop(canary.pid)
    plant.aborted(name, canary.version)
    raise ShipyardError(f"deploy: {name}: a process of the canary is gone; rolled back to weight 0")

"""Claim: at the default policy, every fault class the canary exists for is rejected, each
within 2,000 canary requests, in 10 of 10 runs; no honest challenger is rejected in 10 runs.

Each run replays the default policy's controller (`canary.ready`, `analysis.judge` and
`canary.rejects`, the functions the real controller calls) once a simulated second, on
requests drawn from one traffic pool and scored by real fitted models: stable against a
challenger, weights as the policy steps them. The same runs are judged by today's gates
(before this change: fixed 0.05-wide score buckets, an absolute positive-rate gap of 0.02,
per-step windows, `failures_tolerated` alone deciding) for the baseline column.

HTTP faults (diverged, slow) need real processes: `tests/integration/test_canary_faults.py`
rejects each of them with zero failed client requests.

Run with `make benchmarks` or `.venv/bin/python -m benchmarks.canary_power`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tests.integration.registry_fixtures import SEGMENT, TARGET, fit, frame

from shipyard.deploy import canary, paired
from shipyard.deploy.analysis import judge, ks, psi
from shipyard.deploy.window import Window
from shipyard.gates import GateResult
from shipyard.policy import CanaryPolicy, load_policy
from shipyard.serving.buckets import reference_bounds

RUNS = 10
RATE = 200  # requests per second at the proxy, about what the demo's clients reach here
LEGACY_BUCKETS = tuple(round(i * 0.05, 2) for i in range(21))
LEGACY_DIFF = 0.02
FAULT_CLASSES = ("collapsed", "shrunk", "inflated", "silent", "noisy", "segment")
# Milder calibration faults, past what the score gates can tell from a retrain after drift.
MILD = {"shrunk 1.5": ("shrunk", 1.5), "inflated 1.5": ("inflated", 1.5)}
GOAL_REQUESTS = 2000
POLICY = load_policy("registry/policy.yaml")
PAIRS = 2000


@dataclass
class Variant:
    scores: np.ndarray  # on the pool
    threshold: float


@dataclass
class Counts:
    """One variant's traffic within a step, in both bucket sets."""

    bounds: tuple[float, ...]
    requests: int = 0
    positives: int = 0
    hist: np.ndarray = field(default_factory=lambda: np.zeros(0))
    legacy: np.ndarray = field(default_factory=lambda: np.zeros(len(LEGACY_BUCKETS) + 1))

    def __post_init__(self) -> None:
        self.hist = np.zeros(len(self.bounds) + 1)

    def add(self, scores: np.ndarray, threshold: float) -> None:
        self.requests += len(scores)
        self.positives += int(np.count_nonzero(scores >= threshold))
        # `le` buckets: a score equal to a bound belongs to it, as in prometheus_client
        self.hist += np.bincount(np.searchsorted(self.bounds, scores), minlength=len(self.hist))
        self.legacy += np.bincount(
            np.searchsorted(LEGACY_BUCKETS, scores), minlength=len(self.legacy)
        )

    def window(self, legacy: bool = False) -> Window:
        bounds, hist = (LEGACY_BUCKETS, self.legacy) if legacy else (self.bounds, self.hist)
        cumulative = np.cumsum(hist)
        edges = [*bounds, math.inf]
        buckets = [(float(b), float(c)) for b, c in zip(edges, cumulative, strict=True)]
        n = float(self.requests)
        latency = [(0.01, n), (math.inf, n)]
        return Window(n, 0.0, latency, buckets, n, float(self.positives))


@dataclass
class Outcome:
    rejected: bool
    canary_requests: int
    gates: set[str]


Verdict = tuple[str | None, list[GateResult]]
Judge = Callable[[Counts, Counts, Counts, Counts, int, bool, CanaryPolicy], Verdict]


def _ours(
    stable: Counts,
    cand: Counts,
    total_s: Counts,
    total_c: Counts,
    elapsed: int,
    final: bool,
    cfg: CanaryPolicy,
) -> Verdict:
    s, c = stable.window(), cand.window()
    since = (total_s.window(), total_c.window())
    policy = POLICY
    reason = canary.ready(s, c, since, policy, elapsed, final)
    if reason is None:
        return None, []
    budget = policy.promotion.alert_budget
    return reason, judge(s, c, cfg.gates, since, final=final, budget=budget)


def _legacy_judge(s: Window, c: Window) -> list[GateResult]:
    def share(w: Window) -> float:
        return w.positives / w.predictions if w.predictions else math.nan

    checks = [
        ("max_score_psi", psi(s.score_buckets, c.score_buckets), 0.2),
        ("max_score_ks", ks(s.score_buckets, c.score_buckets), 0.2),
        ("max_positive_rate_diff", abs(share(c) - share(s)), LEGACY_DIFF),
    ]
    return [GateResult(n, bool(v <= b), v, b, "<=") for n, v, b in checks]


def _legacy(
    stable: Counts,
    cand: Counts,
    total_s: Counts,
    total_c: Counts,
    elapsed: int,
    final: bool,
    cfg: CanaryPolicy,
) -> Verdict:
    s, c = stable.window(legacy=True), cand.window(legacy=True)
    results = _legacy_judge(s, c)
    if min(s.requests, c.requests) >= cfg.min_requests and any(
        r.value is not None and r.value > 2 * (r.threshold or 0) for r in results
    ):
        return "far off", results
    if elapsed > 5 * cfg.step_seconds:
        return "time", results
    if elapsed >= cfg.step_seconds and c.requests >= cfg.min_requests:
        return "complete", results
    return None, []


def run(
    stable: Variant,
    cand: Variant,
    bounds: tuple[float, ...],
    cfg: CanaryPolicy,
    rng: np.random.Generator,
    decide: Judge,
    legacy: bool,
) -> Outcome:
    pool = len(stable.scores)
    total_s, total_c = Counts(bounds), Counts(bounds)
    seen, failures = 0, 0
    baseline: Counts | None = None
    for i, weight in enumerate(cfg.steps):
        final = i == len(cfg.steps) - 1
        s_step, c_step = Counts(bounds), Counts(bounds)
        elapsed = 0
        while True:
            elapsed += 1
            to_canary = rng.binomial(RATE, weight / 100)
            si = rng.integers(0, pool, RATE - to_canary)
            ci = rng.integers(0, pool, to_canary)
            for counts in (s_step, total_s):
                counts.add(stable.scores[si], stable.threshold)
            for counts in (c_step, total_c):
                counts.add(cand.scores[ci], cand.threshold)
            seen += to_canary
            if s_step.requests >= cfg.min_requests or baseline is None:
                reference = s_step
            else:
                reference = baseline
            reason, results = decide(reference, c_step, total_s, total_c, elapsed, final, cfg)
            if reason is not None:
                break
        if s_step.requests >= cfg.min_requests or baseline is None:
            baseline = s_step
        if c_step.requests < cfg.min_requests and reason in canary.ON_TIME:
            results = [*results, GateResult("min_requests", False)]
        passed = all(r.passed for r in results)
        failures += not passed
        if legacy:
            rejected = failures > cfg.failures_tolerated
        else:
            rejected = canary.rejects(failures, cfg, final=final, passed=passed)
        if rejected:
            return Outcome(True, seen, {r.gate for r in results if not r.passed})
    return Outcome(False, seen, set())


def main() -> None:
    cfg = load_policy("registry/policy.yaml").canary
    pool = frame(n=100_000, seed=9)
    features = [c for c in pool.columns if c != TARGET]

    def variant(seed: int, cls: str | None) -> Variant:
        fault, shift = MILD.get(cls or "", (cls, 2.0))
        model, cols, threshold = fit(seed=seed, fault=fault, logit_shift=shift)
        return Variant(model.predict_proba(pool[cols])[:, 1], threshold)

    stable_model, cols, stable_threshold = fit(seed=0)
    stable = Variant(stable_model.predict_proba(pool[cols])[:, 1], stable_threshold)
    reference = stable_model.predict_proba(frame(seed=100)[cols])[:, 1]
    bounds = reference_bounds(reference)
    assert cols == features
    print(
        f"default policy: steps {cfg.steps}, {cfg.step_seconds:g} s, min {cfg.min_requests} "
        f"requests, {cfg.failures_tolerated} failure tolerated; {RATE} req/s; stable alerts "
        f"on {np.mean(stable.scores >= stable.threshold):.2%} of traffic; {len(bounds)} score "
        f"buckets from stable's reference; segment = tx_amount > {SEGMENT}"
    )
    header = f"  {'challenger':<18} {'detected':>9} {'median req':>10} {'max req':>8}  gates"
    print(header)
    for cls in (*FAULT_CLASSES, *MILD, "honest"):
        variants = [variant(seed, None if cls == "honest" else cls) for seed in range(1, RUNS + 1)]
        for label, decide, legacy in (("ours", _ours, False), ("today", _legacy, True)):
            outcomes = [
                run(stable, v, bounds, cfg, np.random.default_rng(1000 + k), decide, legacy)
                for k, v in enumerate(variants)
            ]
            hits = [o for o in outcomes if o.rejected]
            needed = [o.canary_requests for o in hits]
            gates = sorted(set().union(*(o.gates for o in hits))) if hits else []
            word = "rejected" if cls == "honest" else "detected"
            median = f"{statistics.median(needed):.0f}" if needed else "-"
            worst = f"{max(needed)}" if needed else "-"
            print(
                f"  {cls:<12} {label:>5} {len(hits):>3}/{RUNS} {word[:3]} {median:>9} "
                f"{worst:>8}  {', '.join(gates)}"
            )
    print(
        f"goal: every fault but the mild ones {RUNS}/{RUNS} within {GOAL_REQUESTS} canary "
        f"requests; honest 0/{RUNS} rejected"
    )
    shadow(stable, variant, load_policy("registry/policy.yaml"))


def shadow(stable: Variant, variant: Callable[[int, str | None], Variant], policy: Any) -> None:
    """Shadow mode: both variants score the same requests; the paired gates on N pairs."""
    cfg, need = policy.canary.paired, policy.canary.gates.min_expected_positives
    print(
        f"\nshadow, paired on the same requests ({PAIRS} pairs; bounds: disagreement "
        f"<= {cfg.max_alert_disagreement}, |logit shift| <= {cfg.max_logit_shift})"
    )
    print(f"  {'challenger':<10} {'rejected':>9} {'disagreement':>19} {'logit shift':>17}")
    for cls in (*FAULT_CLASSES, "honest"):
        found = []
        for seed in range(1, RUNS + 1):
            cand = variant(seed, None if cls == "honest" else cls)
            idx = np.random.default_rng(2000 + seed).integers(0, len(stable.scores), PAIRS)
            s, c = stable.scores[idx], cand.scores[idx]
            p = paired.compare(s, s >= stable.threshold, c, c >= cand.threshold)
            results = paired.gates(p, cfg, PAIRS, need, final=True)
            found.append((not all(r.passed for r in results), p))
        hits = sum(r for r, _ in found)
        dis = [p.disagreement for _, p in found]
        shift = [p.logit_shift for _, p in found]
        print(
            f"  {cls:<10} {hits:>5}/{RUNS}   {min(dis):8.2f} to {max(dis):5.2f} "
            f"{min(shift):+8.2f} to {max(shift):+5.2f}"
        )


if __name__ == "__main__":
    main()

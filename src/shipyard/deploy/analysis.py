"""Canary analysis: canary against stable over the same window, from their /metrics.

HTTP gates (error rate, p99 latency absolute and relative to stable) and ML gates (drift
between the two prediction-score distributions, PSI and KS over buckets at the stable's
reference quantiles, and a test of the alert-rate ratio). Every figure comes from differences
of two Prometheus scrapes, so a window is exactly the traffic between them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from shipyard.deploy.window import Window
from shipyard.gates import GateResult
from shipyard.policy import CanaryGates


def quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """histogram_quantile: linear inside the bucket that holds the q-th observation."""
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            inside = count - lower_count
            share = (rank - lower_count) / inside if inside > 0 else 1.0
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return lower_bound


def _counts(buckets: list[tuple[float, float]]) -> list[float]:
    counts, previous = [], 0.0
    for _, cumulative in buckets:
        counts.append(max(cumulative - previous, 0.0))
        previous = cumulative
    return counts


def _shares(buckets: list[tuple[float, float]], smoothing: float = 0.0) -> list[float]:
    counts = _counts(buckets)
    total = sum(counts)
    if total <= 0:
        return []
    return [(c + smoothing) / (total + smoothing * len(counts)) for c in counts]


def _same_bounds(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> bool:
    return [bound for bound, _ in a] == [bound for bound, _ in b]


def psi(expected: list[tuple[float, float]], actual: list[tuple[float, float]]) -> float:
    """Population stability index between two histograms with the same buckets.

    Half a count is added to every bucket, so the sparse buckets of a short window do not
    turn sampling noise into a huge index. Different bounds cannot be compared: NaN.
    """
    e, a = _shares(expected, 0.5), _shares(actual, 0.5)
    if not e or not a or not _same_bounds(expected, actual):
        return math.nan
    return sum((ai - ei) * math.log(ai / ei) for ei, ai in zip(e, a, strict=True))


def psi_excess(
    expected: list[tuple[float, float]], actual: list[tuple[float, float]], confidence: float
) -> float:
    """PSI beyond what sampling explains at `confidence`.

    PSI is a symmetric chi-square divergence: n m / (n + m) * PSI is about chi-square with one
    degree of freedom less than there are buckets, so that quantile times (1/n + 1/m) is what
    two samples of one distribution reach by chance.
    """
    from scipy.stats import chi2

    n, m = (b[-1][1] if b else 0.0 for b in (expected, actual))
    if n <= 0 or m <= 0:
        return math.nan
    critical = float(chi2.ppf(confidence, max(len(expected) - 1, 1)))
    return psi(expected, actual) - critical * (1 / n + 1 / m)


def ks_excess(
    expected: list[tuple[float, float]], actual: list[tuple[float, float]], confidence: float
) -> float:
    """KS beyond what sampling explains at `confidence`: the statistic minus the two-sample
    critical value c(alpha) * sqrt((n + m) / (n m)).

    A bound on this is a tolerance that holds at every sample size: a short window's noise
    does not fail an honest canary, and a long one's power is not thrown away.
    """
    n, m = (b[-1][1] if b else 0.0 for b in (expected, actual))
    if n <= 0 or m <= 0:
        return math.nan
    critical = math.sqrt(-math.log((1 - confidence) / 2) / 2)
    return ks(expected, actual) - critical * math.sqrt((n + m) / (n * m))


def ks(expected: list[tuple[float, float]], actual: list[tuple[float, float]]) -> float:
    """Largest gap between the two cumulative distributions, at the bucket bounds."""
    e, a = _shares(expected), _shares(actual)
    if not e or not a or not _same_bounds(expected, actual):
        return math.nan
    gap, ce, ca = 0.0, 0.0, 0.0
    for ei, ai in zip(e, a, strict=True):
        ce, ca = ce + ei, ca + ai
        gap = max(gap, abs(ce - ca))
    return gap


@dataclass(frozen=True)
class Alerts:
    """Records one variant scored and how many of them it alerted on."""

    predictions: float
    positives: float

    @classmethod
    def of(cls, w: Window) -> Alerts:
        return cls(w.predictions, w.positives)


@dataclass(frozen=True)
class AlertRateTest:
    """Canary's alert rate against stable's, conditional on the alerts both raised.

    Given k alerts in all, the canary's share of them is binomial with
    pi = nc*theta / (nc*theta + ns) when its rate is theta times stable's. `z_more` is the
    score statistic at theta = max_ratio (large: it alerts more than that), `z_fewer` at
    1/max_ratio (very negative: it alerts less). The same formula is the PromQL's.
    """

    ratio: float  # observed canary rate / stable rate
    expected: float  # canary alerts expected at stable's rate
    z_more: float
    z_fewer: float

    @classmethod
    def of(cls, stable: Alerts, canary: Alerts, max_ratio: float) -> AlertRateTest:
        ns, xs, nc, xc = stable.predictions, stable.positives, canary.predictions, canary.positives
        if ns <= 0 or nc <= 0:
            return cls(math.nan, 0.0, math.nan, math.nan)
        rate_s = xs / ns
        ratio = (xc / nc) / rate_s if rate_s > 0 else (math.inf if xc else math.nan)
        k = xc + xs
        return cls(
            ratio, nc * rate_s, _z(xc, k, nc, ns, max_ratio), _z(xc, k, nc, ns, 1 / max_ratio)
        )

    def rejects(self, confidence: float) -> bool:
        critical = NormalDist().inv_cdf(confidence)
        return self.z_more > critical or self.z_fewer < -critical


def _z(xc: float, k: float, nc: float, ns: float, theta: float) -> float:
    if k <= 0:
        return 0.0  # no alert anywhere yet: no evidence either way
    pi = nc * theta / (nc * theta + ns)
    return (xc - k * pi) / math.sqrt(k * pi * (1 - pi))


BUDGET_WEIGHT = 1e9  # records standing for the alert budget: a rate known exactly


def alert_rate_gates(
    stable: Alerts,
    canary: Alerts,
    gates: CanaryGates,
    *,
    final: bool,
    budget: float | None = None,
) -> list[GateResult]:
    """The ratio test, and on the last step the sample it needs before a canary may pass.

    With the alert `budget`, a canary whose rate the test cannot tell from the budget also
    passes: after drift the stable itself can alert far off budget, and a retrain that is
    back on budget must not fail for it. A silent or flooding canary is off both.
    """
    test = AlertRateTest.of(stable, canary, gates.max_positive_rate_ratio)
    r = gates.max_positive_rate_ratio
    detail = (
        f"canary {canary.positives:.0f}/{canary.predictions:.0f} alerts, stable "
        f"{stable.positives:.0f}/{stable.predictions:.0f}: ratio {test.ratio:.3g}, "
        f"{gates.confidence:.0%} test against [{1 / r:.3g}, {r:.3g}] "
        f"(z {test.z_fewer:+.2f} / {test.z_more:+.2f})"
    )
    passed = not math.isnan(test.z_more) and not test.rejects(gates.confidence)
    if not passed and budget is not None and canary.predictions > 0:
        known = Alerts(BUDGET_WEIGHT, BUDGET_WEIGHT * budget)
        on_budget = AlertRateTest.of(known, canary, r)
        if not on_budget.rejects(gates.confidence):
            passed = True
            detail += f"; but {on_budget.ratio:.3g} times the alert budget {budget:g}: on budget"
    out = [GateResult("positive_rate_ratio", passed, test.ratio, r, "test", detail)]
    if final:
        need = gates.min_expected_positives
        out.append(
            GateResult(
                "min_expected_positives", bool(test.expected >= need), test.expected, need, ">="
            )
        )
    return out


def judge(
    stable: Window,
    canary: Window,
    gates: CanaryGates,
    since: tuple[Window, Window] | None = None,
    *,
    final: bool = False,
    budget: float | None = None,
) -> list[GateResult]:
    """Every gate for one step; NaN (no traffic to judge) fails, it never passes silently.

    HTTP gates read the step's windows: load changes with the weight. Score and alert gates
    read `since` (stable, canary), everything both served since the canary started: the
    distributions do not depend on the weight, so their tests gather evidence across steps.
    Without it the step's windows are used.
    """

    p99_canary = quantile(canary.latency_buckets, 0.99) * 1000
    p99_stable = quantile(stable.latency_buckets, 0.99) * 1000
    ratio = p99_canary / p99_stable if p99_stable > 0 else math.nan
    checks = [
        ("max_error_rate", canary.error_rate, gates.max_error_rate),
        ("max_p99_ms", p99_canary, gates.max_p99_ms),
        ("max_p99_ratio", ratio, gates.max_p99_ratio),
    ]
    results = [
        GateResult(name, bool(value <= bound), value, bound, "<=") for name, value, bound in checks
    ]
    s, c = since or (stable, canary)
    return results + model_gates(s, c, gates, final=final, budget=budget)


def model_gates(
    stable: Window,
    canary: Window,
    gates: CanaryGates,
    *,
    final: bool = False,
    budget: float | None = None,
) -> list[GateResult]:
    """The gates on what the model answered (score distributions, alert rate), whatever
    carried the requests: the HTTP canary's and the stream's shadow."""
    checks = [
        (
            "max_score_psi",
            psi_excess(stable.score_buckets, canary.score_buckets, gates.confidence),
            gates.max_score_psi,
        ),
        (
            "max_score_ks",
            ks_excess(stable.score_buckets, canary.score_buckets, gates.confidence),
            gates.max_score_ks,
        ),
    ]
    results = [
        GateResult(name, bool(value <= bound), value, bound, "<=") for name, value, bound in checks
    ]
    alerts = alert_rate_gates(
        Alerts.of(stable), Alerts.of(canary), gates, final=final, budget=budget
    )
    return results + alerts

"""Canary analysis: canary against stable over the same window, from their /metrics.

HTTP gates (error rate, p99 latency absolute and relative to stable) and ML gates (drift
between the two prediction-score distributions, PSI and KS, and the gap in positive-decision
rate). Every figure comes from differences of two Prometheus scrapes, so a window is exactly
the traffic between them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from shipyard.config import CanaryGates
from shipyard.gates import GateResult

_LINE = re.compile(r"^([a-zA-Z_:][\w:]*)(\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_metrics(text: str) -> Series:
    """Prometheus text format into {(name, labels): value}; comments and junk are skipped."""
    out: Series = {}
    for line in text.splitlines():
        match = _LINE.match(line.strip())
        if not match or line.startswith("#"):
            continue
        labels = frozenset(_LABEL.findall(match.group(3) or ""))
        try:
            out[(match.group(1), labels)] = float(match.group(4))
        except ValueError:
            continue
    return out


@dataclass(frozen=True)
class Window:
    """What one variant served between two scrapes."""

    requests: float
    server_errors: float
    latency_buckets: list[tuple[float, float]]  # (upper bound s, cumulative count)
    score_buckets: list[tuple[float, float]]  # (upper bound, cumulative count)
    predictions: float
    positives: float


def _sum(series: Series, name: str, **match: str) -> float:
    return sum(
        v
        for (n, labels), v in series.items()
        if n == name and all((k, val) in labels for k, val in match.items())
    )


def _buckets(series: Series, name: str, **match: str) -> list[tuple[float, float]]:
    found: dict[float, float] = {}
    for (n, labels), v in series.items():
        if n != name or not all((k, val) in labels for k, val in match.items()):
            continue
        le = dict(labels).get("le")
        if le is not None:
            bound = math.inf if le == "+Inf" else float(le)
            found[bound] = found.get(bound, 0.0) + v
    return sorted(found.items())


def window(before: Series, after: Series, path: str = "/predict") -> Window:
    def delta_sum(name: str, **match: str) -> float:
        return _sum(after, name, **match) - _sum(before, name, **match)

    def delta_buckets(name: str, **match: str) -> list[tuple[float, float]]:
        start = dict(_buckets(before, name, **match))
        return [(b, c - start.get(b, 0.0)) for b, c in _buckets(after, name, **match)]

    def server_errors(series: Series) -> float:
        return sum(
            v
            for (n, labels), v in series.items()
            if n == "shipyard_http_requests_total"
            and ("path", path) in labels
            and dict(labels).get("status", "").startswith("5")
        )

    errors = server_errors(after) - server_errors(before)
    return Window(
        requests=delta_sum("shipyard_http_requests_total", path=path),
        server_errors=errors,
        latency_buckets=delta_buckets("shipyard_http_request_duration_seconds_bucket", path=path),
        score_buckets=delta_buckets("shipyard_prediction_score_bucket"),
        predictions=delta_sum("shipyard_predictions_total"),
        positives=delta_sum("shipyard_positive_decisions_total"),
    )


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


def psi(expected: list[tuple[float, float]], actual: list[tuple[float, float]]) -> float:
    """Population stability index between two histograms with the same buckets.

    Half a count is added to every bucket, so the sparse buckets of a short window do not
    turn sampling noise into a huge index.
    """
    e, a = _shares(expected, 0.5), _shares(actual, 0.5)
    if not e or not a or len(e) != len(a):
        return math.nan
    return sum((ai - ei) * math.log(ai / ei) for ei, ai in zip(e, a, strict=True))


def ks(expected: list[tuple[float, float]], actual: list[tuple[float, float]]) -> float:
    """Largest gap between the two cumulative distributions, at the bucket bounds."""
    e, a = _shares(expected), _shares(actual)
    if not e or not a or len(e) != len(a):
        return math.nan
    gap, ce, ca = 0.0, 0.0, 0.0
    for ei, ai in zip(e, a, strict=True):
        ce, ca = ce + ei, ca + ai
        gap = max(gap, abs(ce - ca))
    return gap


def judge(stable: Window, canary: Window, gates: CanaryGates) -> list[GateResult]:
    """Every gate for one step; NaN (no traffic to judge) fails, it never passes silently."""

    def rate(w: Window) -> float:
        return w.server_errors / w.requests if w.requests else math.nan

    def positive(w: Window) -> float:
        return w.positives / w.predictions if w.predictions else math.nan

    p99_canary = quantile(canary.latency_buckets, 0.99) * 1000
    p99_stable = quantile(stable.latency_buckets, 0.99) * 1000
    ratio = p99_canary / p99_stable if p99_stable > 0 else math.nan
    checks = [
        ("max_error_rate", rate(canary), gates.max_error_rate),
        ("max_p99_ms", p99_canary, gates.max_p99_ms),
        ("max_p99_ratio", ratio, gates.max_p99_ratio),
        ("max_score_psi", psi(stable.score_buckets, canary.score_buckets), gates.max_score_psi),
        ("max_score_ks", ks(stable.score_buckets, canary.score_buckets), gates.max_score_ks),
        (
            "max_positive_rate_diff",
            abs(positive(canary) - positive(stable)),
            gates.max_positive_rate_diff,
        ),
    ]
    return [
        GateResult(name, bool(value <= bound), value, bound, "<=") for name, value, bound in checks
    ]

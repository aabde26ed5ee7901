"""The canary gates of `analysis.py`, written as PromQL for an Argo Rollouts AnalysisTemplate.

Each query reads the series the local controller scrapes, selected by model version, over one
step's window, so a cluster judges a canary by the same figures a laptop does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

from prometheus_client.utils import floatToGoString

from shipyard.policy import CanaryGates

CANARY = "{{args.canary-version}}"
STABLE = "{{args.stable-version}}"


class Queries:
    """PromQL for one model over a window such as `30s`, with the stable's score buckets."""

    def __init__(self, model: str, window: str, score_buckets: Sequence[float]) -> None:
        self.model, self.window = model, window
        # `le` exactly as prometheus_client writes it
        self._le = [floatToGoString(b) for b in score_buckets] + ["+Inf"]

    def _sum(self, metric: str, version: str, *matchers: str, by: str = "") -> str:
        labels = ",".join([f'model_name="{self.model}"', f'model_version="{version}"', *matchers])
        return f"sum{by}(increase({metric}{{{labels}}}[{self.window}]))"

    def requests(self, version: str) -> str:
        return self._sum("shipyard_http_requests_total", version, 'path="/predict"')

    def error_rate(self, version: str) -> str:
        metric = "shipyard_http_requests_total"
        errors = self._sum(metric, version, 'path="/predict"', 'status=~"5.."')
        return f"(({errors}) or vector(0)) / {self.requests(version)}"

    def p99_ms(self, version: str) -> str:
        metric = "shipyard_http_request_duration_seconds_bucket"
        buckets = self._sum(metric, version, 'path="/predict"', by=" by (le) ")
        return f"histogram_quantile(0.99, {buckets}) * 1000"

    def _total(self, version: str) -> str:
        return self._sum("shipyard_prediction_score_count", version)

    def ks(self, confidence: float) -> str:
        """Largest gap between the two score CDFs at the bucket bounds, minus the two-sample
        allowance at `confidence` (`analysis.ks_excess`)."""

        def cdf(version: str) -> str:
            counts = self._sum("shipyard_prediction_score_bucket", version, by=" by (le) ")
            return f"({counts} / on() group_left() {self._total(version)})"

        c = math.sqrt(-math.log((1 - confidence) / 2) / 2)
        n, m = self._total(CANARY), self._total(STABLE)
        allowance = f"{c!r} * sqrt(({n} + {m}) / ({n} * {m}))"
        return f"max(abs({cdf(CANARY)} - on(le) {cdf(STABLE)})) - {allowance}"

    def _share(self, version: str, i: int) -> str:
        """Bucket i's half-count-smoothed share, as `analysis.psi` computes it."""
        metric = "shipyard_prediction_score_bucket"
        count = self._sum(metric, version, f'le="{self._le[i]}"')
        if i:
            below = self._sum(metric, version, f'le="{self._le[i - 1]}"')
            count = f"({count} - {below})"
        return f"(({count} + 0.5) / ({self._total(version)} + {0.5 * len(self._le)}))"

    def psi(self, confidence: float) -> str:
        """One term per bucket (PromQL cannot difference neighbouring `le` series otherwise),
        minus the sampling allowance of `analysis.psi_excess`."""
        from scipy.stats import chi2

        terms = []
        for i in range(len(self._le)):
            c, s = self._share(CANARY, i), self._share(STABLE, i)
            terms.append(f"({c} - {s}) * ln({c} / {s})")
        critical = float(chi2.ppf(confidence, len(self._le) - 1))
        n, m = self._total(CANARY), self._total(STABLE)
        return f"({' + '.join(terms)}) - {critical!r} * (1 / {n} + 1 / {m})"

    def _positives(self, version: str) -> str:
        return f"(({self._sum('shipyard_positive_decisions_total', version)}) or vector(0))"

    def _scored(self, version: str) -> str:
        return self._sum("shipyard_predictions_total", version)

    def alert_z(self, theta: float) -> str:
        """`analysis.AlertRateTest`'s score statistic at rate ratio theta."""
        xc, nc, ns = self._positives(CANARY), self._scored(CANARY), self._scored(STABLE)
        k = f"clamp_min({xc} + {self._positives(STABLE)}, 1e-9)"  # no alert yet: z is 0
        pi = f"({nc} * {theta!r} / ({nc} * {theta!r} + {ns}))"
        return f"({xc} - {k} * {pi}) / sqrt({k} * {pi} * (1 - {pi}))"

    def expected_positives(self) -> str:
        """Canary alerts expected at stable's rate."""
        return f"{self._scored(CANARY)} * {self._positives(STABLE)} / {self._scored(STABLE)}"


def gate_queries(
    model: str,
    window: str,
    gates: CanaryGates,
    min_requests: int,
    score_buckets: Sequence[float],
) -> list[dict[str, str]]:
    """One entry per gate: its name, its PromQL, and Argo's success condition on it."""
    q = Queries(model, window, score_buckets)
    ratio = f"({q.p99_ms(CANARY)}) / ({q.p99_ms(STABLE)})"
    critical = f"{NormalDist().inv_cdf(gates.confidence):.4f}"
    r = gates.max_positive_rate_ratio
    checks = [
        ("min-requests", q.requests(CANARY), f">= {min_requests}"),
        ("max-error-rate", q.error_rate(CANARY), f"<= {gates.max_error_rate}"),
        ("max-p99-ms", q.p99_ms(CANARY), f"<= {gates.max_p99_ms}"),
        ("max-p99-ratio", ratio, f"<= {gates.max_p99_ratio}"),
        ("max-score-psi", q.psi(gates.confidence), f"<= {gates.max_score_psi}"),
        ("max-score-ks", q.ks(gates.confidence), f"<= {gates.max_score_ks}"),
        ("positive-rate-not-higher", q.alert_z(r), f"<= {critical}"),
        ("positive-rate-not-lower", q.alert_z(1 / r), f">= -{critical}"),
        ("min-expected-positives", q.expected_positives(), f">= {gates.min_expected_positives}"),
    ]
    # NaN (0/0, no traffic) and an empty answer fail: no gate passes for want of data.
    return [
        {
            "name": name,
            "query": query,
            "condition": f"len(result) > 0 && !isNaN(result[0]) && result[0] {bound}",
        }
        for name, query, bound in checks
    ]

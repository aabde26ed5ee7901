"""What one variant served between two scrapes of its /metrics: a `Window`.

Every canary figure comes from differences of two Prometheus scrapes, so a window is exactly
the traffic between them, whatever the process served before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_metrics(text: str) -> Series:
    """Prometheus text format into {(sample name, labels): value}, by prometheus_client.

    A page it cannot parse is a ShipyardError naming the problem: a scrape the gates cannot
    read must stop the canary, not pass as an empty window.
    """
    from prometheus_client.parser import text_string_to_metric_families

    from shipyard.errors import ShipyardError

    out: Series = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out[(sample.name, frozenset(sample.labels.items()))] = float(sample.value)
    except ValueError as err:
        raise ShipyardError(f"metrics page is not Prometheus text: {err}") from None
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
    # The canary as Envoy saw it: attempts, and those that failed (a 5xx, a reset, a refused
    # connection). A process that crashes or refuses connections counts nothing itself.
    proxy_requests: float = 0.0
    proxy_errors: float = 0.0

    @property
    def error_rate(self) -> float:
        """The worse of the service's own count and the proxy's; NaN with neither."""
        rates = [
            errors / requests
            for errors, requests in (
                (self.server_errors, self.requests),
                (self.proxy_errors, self.proxy_requests),
            )
            if requests > 0
        ]
        return max(rates) if rates else math.nan

    @property
    def errors(self) -> float:
        return max(self.server_errors, self.proxy_errors)


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


def proxy_counts(before: Series, after: Series, cluster: str, fallback: str) -> tuple[float, float]:
    """(attempts, failures) Envoy sent to one upstream cluster between two scrapes.

    `fallback` is the aggregate that retries the cluster's failures on stable: each retry is
    one failed attempt. Mirrored requests (shadow) fail as the cluster's own 5xx. Names are as
    prometheus_client reads Envoy's page (counters gain `_total`), and labels must match
    exactly: `upstream_rq_total` and the per-code `upstream_rq` read as one name.
    """

    def delta(name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return max(after.get(key, 0.0) - before.get(key, 0.0), 0.0)

    attempts = delta("envoy_cluster_upstream_rq_total", envoy_cluster_name=cluster)
    refused = delta("envoy_cluster_upstream_cx_connect_fail_total", envoy_cluster_name=cluster)
    failed = delta("envoy_cluster_upstream_rq_retry_total", envoy_cluster_name=fallback)
    failed += delta(
        "envoy_cluster_upstream_rq_xx_total",
        envoy_cluster_name=cluster,
        envoy_response_code_class="5",
    )
    return attempts + refused, failed

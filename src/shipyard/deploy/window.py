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

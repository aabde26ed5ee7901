"""The Grafana dashboard, from one definition: `PANELS` is every chart's title, unit and
PromQL; `render` builds the dashboard JSON with grafana-foundation-sdk, and
`monitoring/grafana/shipyard.json` is its output (`shipyard monitor dashboard`; a test keeps
the two equal and runs every query on a real Prometheus scraping real services).

Queries read the metrics the alert rules read: each service's /metrics, and the textfiles the
drift check and the canary write. `$model` is the dashboard's model variable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

MODEL = 'model_name="$model"'
SERVED = f'{MODEL},path=~"/predict|/predict_batch"'


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class Chart:
    title: str
    unit: str  # Grafana's unit id
    queries: tuple[Query, ...]
    description: str
    source: str  # "service", "drift.prom" or "canary.prom": which exporter gives its series


def _by_version(expr: str) -> Query:
    return Query(expr, "v{{model_version}}")


def _quantile(q: float, metric: str, selector: str) -> str:
    inner = f"sum by (model_version, le) (rate({metric}_bucket{{{selector}}}[5m]))"
    return f"histogram_quantile({q}, {inner})"


ROWS: dict[str, tuple[Chart, ...]] = {
    "Serving, by version": (
        Chart(
            "Traffic",
            "reqps",
            (
                _by_version(
                    f"sum by (model_version) (rate(shipyard_http_requests_total{{{SERVED}}}[5m]))"
                ),
            ),
            "Prediction requests per second to each live version: the canary's share shows here.",
            "service",
        ),
        Chart(
            "5xx share",
            "percentunit",
            (
                _by_version(
                    f"sum by (model_version) (rate(shipyard_http_requests_total"
                    f'{{{SERVED},status=~"5.."}}[5m])) / sum by (model_version) '
                    f"(rate(shipyard_http_requests_total{{{SERVED}}}[5m]))"
                ),
            ),
            "ShipyardHighErrorRate pages above 2%.",
            "service",
        ),
        Chart(
            "Latency of /predict",
            "s",
            (
                Query(
                    _quantile(
                        0.99, "shipyard_http_request_duration_seconds", f'{MODEL},path="/predict"'
                    ),
                    "p99 v{{model_version}}",
                ),
                Query(
                    _quantile(
                        0.5, "shipyard_http_request_duration_seconds", f'{MODEL},path="/predict"'
                    ),
                    "p50 v{{model_version}}",
                ),
            ),
            "ShipyardHighLatencyP99 warns above 250 ms.",
            "service",
        ),
        Chart(
            "Score distribution",
            "none",
            tuple(
                Query(
                    _quantile(q, "shipyard_prediction_score", MODEL),
                    f"p{round(q * 100)} v{{{{model_version}}}}",
                )
                for q in (0.5, 0.9, 0.99)
            ),
            "Quantiles of the scores each version gives, in the buckets @champion is served "
            "with: a canary that scores differently moves apart here.",
            "service",
        ),
        Chart(
            "Alert rate",
            "percentunit",
            (
                _by_version(
                    f"sum by (model_version) (rate(shipyard_positive_decisions_total{{{MODEL}}}"
                    f"[5m])) / sum by (model_version) "
                    f"(rate(shipyard_predictions_total{{{MODEL}}}[5m]))"
                ),
            ),
            "Share of scored records with a positive decision: the analysts' queue. "
            "ShipyardAlertRateShift warns when two versions differ more than 2x.",
            "service",
        ),
        Chart(
            "Records per model call",
            "none",
            (
                _by_version(
                    f"sum by (model_version) (rate(shipyard_model_batch_size_sum{{{MODEL}}}[5m]))"
                    f" / sum by (model_version) "
                    f"(rate(shipyard_model_batch_size_count{{{MODEL}}}[5m]))"
                ),
            ),
            "Adaptive batching at work: above 1 under load (ShipyardBatchingStuck).",
            "service",
        ),
    ),
    "Drift and quality, by the drift check": (
        Chart(
            "Drift",
            "none",
            (
                _by_version(f"shipyard_drift_feature_share{{{MODEL}}}"),
                Query(f"shipyard_drift_score{{{MODEL}}}", "score drift v{{model_version}}"),
            ),
            "Share of features that drifted in the last checked window, and the score's drift.",
            "drift.prom",
        ),
        Chart(
            "Estimated quality (no labels)",
            "none",
            tuple(
                Query(
                    f"shipyard_drift_estimated_{metric}{{{MODEL}}}",
                    f"{metric.replace('_', ' ')} v{{{{model_version}}}}",
                )
                for metric in ("average_precision", "roc_auc", "precision_at_budget")
            ),
            "Estimated from the scores alone, calibrated on the version's reference; absent "
            "where the window was too small to judge.",
            "drift.prom",
        ),
        Chart(
            "Drift check outcome",
            "none",
            (
                Query(f"shipyard_drift_exit_code{{{MODEL}}}", "exit code v{{model_version}}"),
                Query(
                    f"shipyard_drift_retrain_triggered{{{MODEL}}}",
                    "retraining triggered v{{model_version}}",
                ),
            ),
            "0 no drift, 3 drift, 4 retraining triggered, 5 could not judge.",
            "drift.prom",
        ),
    ),
    "Deploys": (
        Chart(
            "Hours since the last canary ended",
            "h",
            (
                Query(
                    f"(time() - shipyard_canary_decision_timestamp_seconds{{{MODEL}}}) / 3600",
                    "v{{model_version}} {{result}}",
                ),
            ),
            "The model's last canary and its result; ShipyardCanaryRejected warns for six "
            "hours after a rejection.",
            "canary.prom",
        ),
    ),
}


def charts() -> list[Chart]:
    return [chart for row in ROWS.values() for chart in row]


def render() -> str:
    """The dashboard as Grafana's JSON model, stable byte for byte for one definition."""
    from grafana_foundation_sdk.builders import dashboard, prometheus, timeseries
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import DataSourceRef

    source = DataSourceRef(type_val="prometheus", uid="${datasource}")
    board = (
        dashboard.Dashboard("Shipyard: $model")
        .uid("shipyard")
        .tags(["shipyard", "mlops"])
        .refresh("1m")
        .time("now-6h", "now")
        .with_variable(dashboard.DatasourceVariable("datasource").type("prometheus"))
        .with_variable(
            dashboard.QueryVariable("model")
            .label("model")
            .query("label_values(shipyard_predictions_total, model_name)")
            .datasource(source)
        )
    )
    for title, row in ROWS.items():
        board = board.with_row(dashboard.Row(title))
        for chart in row:
            panel = (
                timeseries.Panel()
                .title(chart.title)
                .description(chart.description)
                .unit(chart.unit)
                .datasource(source)
                .height(8)
                .span(12)
            )
            for ref, query in zip("ABCDEFGH", chart.queries, strict=False):
                panel = panel.with_target(
                    prometheus.Dataquery().expr(query.expr).legend_format(query.legend).ref_id(ref)
                )
            board = board.with_panel(panel)
    return json.dumps(board.build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"

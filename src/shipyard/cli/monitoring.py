"""`shipyard drift check`, `shipyard monitor labels|ui` and `shipyard retrain`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from shipyard.cli.options import monitoring_policy_option, params_option, policy_option


@click.group()
def drift() -> None:
    """Compare live traffic with the serving version's training reference."""


@drift.command()
@click.argument("model")
@click.option(
    "--window",
    required=True,
    help="A duration back from now (6h, 30m, 7d) or START/END in ISO 8601 (UTC if naive).",
)
@click.option(
    "--version",
    "ref",
    default="@champion",
    show_default=True,
    help="Version (number or @alias) whose traffic and reference to compare.",
)
@click.option(
    "--log-folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="Prediction log folder [default: .shipyard/predictions/MODEL].",
)
@click.option(
    "--dispatch-retrain",
    is_flag=True,
    help="On a trigger, send GitHub a `drift-detected` repository_dispatch (retrain.yml).",
)
@click.option(
    "--exit-zero-on-drift",
    is_flag=True,
    help="Exit 0 for drift and triggers too (a scheduled job that only fails on errors).",
)
@params_option
@policy_option
@monitoring_policy_option
def check(
    model: str,
    window: str,
    ref: str,
    log_folder: Path | None,
    dispatch_retrain: bool,
    exit_zero_on_drift: bool,
    params_path: Path,
    policy_path: Path,
    monitoring_path: Path,
) -> None:
    """Judge one window and write its report; the exit code says what was found.

    0 no drift, 3 drift without a trigger, 4 retraining triggered, 5 could not judge
    (too few rows, no reference, a log schema that differs from the reference), 1 an error.
    """
    from shipyard import tracking
    from shipyard.config import load_params
    from shipyard.monitoring import job
    from shipyard.monitoring.policy import load_monitoring_policy
    from shipyard.monitoring.report import OUTCOME, estimated_text
    from shipyard.monitoring.trigger import DRIFT, TRIGGER
    from shipyard.policy import load_policy

    params = load_params(params_path)
    mpolicy = load_monitoring_policy(monitoring_path)
    budget = load_policy(policy_path).promotion.alert_budget
    tracking.configure(params.base)
    summary = job.check(
        model,
        ref,
        window,
        mpolicy,
        budget=budget,
        target=params.data.target,
        log_folder=log_folder,
    )
    decision = summary["decision"]
    for reason in decision["reasons"]:
        click.echo(f"  {reason}")
    click.echo(f"estimated quality: {estimated_text(summary)}")
    click.echo(f"report: {summary['paths']['html']}")
    click.echo(f"{model} v{summary['version']}: {OUTCOME[decision['code']]}")
    if decision["code"] == TRIGGER and dispatch_retrain:
        from shipyard.webhook import dispatch

        payload = {"model": model, "version": summary["version"], "window": window}
        status = dispatch("drift-detected", payload)
        click.echo(f"dispatched drift-detected ({status})")
    elif decision["code"] == TRIGGER and mpolicy.trigger.retrain:
        from shipyard.monitoring import retrain as retraining

        result = retraining.retrain(model, params, mpolicy)
        click.echo(f"retrained: {model} version {result['version']} is @candidate")
    if exit_zero_on_drift and decision["code"] in (DRIFT, TRIGGER):
        sys.exit(0)
    sys.exit(decision["code"])


@click.group()
def monitor() -> None:
    """Delayed labels and the Evidently UI."""


@monitor.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--model", default=None, help="Registered model (default: params base.model_name).")
@params_option
def labels(file: Path, model: str | None, params_path: Path) -> None:
    """Store ground-truth outcomes from FILE (data contract columns; id = request id)."""
    from shipyard.config import load_params
    from shipyard.monitoring import job
    from shipyard.monitoring import labels as labelling
    from shipyard.monitoring.logreader import logged_request_ids

    params = load_params(params_path)
    name = model or params.base.model_name
    result = labelling.ingest(file, name, params.data, logged_request_ids(job.prediction_log(name)))
    click.echo(
        f"{result['rows']} labels stored, {result['matched']} matched to logged predictions, "
        f"{result['unknown_request_ids']} for unknown request ids (kept)"
    )


@monitor.command()
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("monitoring/grafana/shipyard.json"),
    show_default=True,
    help="Where to write the dashboard JSON (import it in Grafana, or provision it).",
)
def dashboard(output: Path) -> None:
    """Write the Grafana dashboard (traffic, 5xx, latency, scores, alert rate, drift,
    estimated quality, canaries) generated from its one definition."""
    from shipyard.monitoring.dashboard import charts, render
    from shipyard.monitoring.report import write_atomic

    write_atomic(output, render())
    click.echo(f"dashboard: {len(charts())} panels written to {output}")


@monitor.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Loopback unless you mean it.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@monitoring_policy_option
def ui(host: str, port: int, monitoring_path: Path) -> None:
    """Serve every drift report over time with `evidently ui` on the workspace."""
    import os

    from shipyard.monitoring.policy import load_monitoring_policy

    workspace = load_monitoring_policy(monitoring_path).workspace
    Path(workspace).mkdir(parents=True, exist_ok=True)
    evidently = str(Path(sys.executable).with_name("evidently"))
    cmd = [evidently, "ui", "--workspace", workspace, "--host", host, "--port", str(port)]
    click.echo(f"Evidently UI on http://{host}:{port} (workspace {workspace})", err=True)
    os.execv(evidently, cmd)  # noqa: S606 (fixed argv, no shell)


@click.command()
@click.argument("model")
@params_option
@monitoring_policy_option
def retrain(model: str, params_path: Path, monitoring_path: Path) -> None:
    """Add the labelled live data as a new data file, update data.dvc, `dvc repro`.

    Ends with a new @candidate; promotion takes it from there.
    """
    from shipyard.config import load_params
    from shipyard.monitoring import retrain as retraining
    from shipyard.monitoring.policy import load_monitoring_policy

    params = load_params(params_path)
    result = retraining.retrain(model, params, load_monitoring_policy(monitoring_path))
    click.echo(
        f"{result['rows']} labelled rows added as {result['file']}; "
        f"{model} version {result['version']} is @candidate"
    )

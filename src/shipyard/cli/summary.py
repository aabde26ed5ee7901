"""`shipyard summary`: where the last pipeline run left its results."""

from __future__ import annotations

import json
from pathlib import Path

import click

from shipyard.cli.options import params_option


@click.command()
@params_option
def summary(params_path: Path) -> None:
    """Print the registered version, its test metrics and how to open the MLflow UI."""
    from shipyard.artifacts import Layout
    from shipyard.config import load_params
    from shipyard.errors import ShipyardError
    from shipyard.pipeline.register import REFERENCE_FILE, REGISTRATION_FILE

    params = load_params(params_path)
    registered = Layout().registered
    record_path = registered / REGISTRATION_FILE
    if not record_path.exists():
        raise ShipyardError(f"{record_path}: not found; run `dvc repro` first")
    record = json.loads(record_path.read_text())
    uri = record["tracking_uri"]
    click.echo(
        f"model      {record['model_name']} version {record['version']} "
        f"@{record['alias']} ({record['candidate']})"
    )
    for key, value in record["test"].items():
        click.echo(f"  test {key:<20} {value:.4f}")
    click.echo(f"reference  {registered / REFERENCE_FILE} (id {record['reference_id']})")
    click.echo("metrics    dvc metrics show   |   plots: dvc plots show")
    if uri.startswith("sqlite:"):
        click.echo(
            f"MLflow UI  mlflow ui --backend-store-uri {uri} "
            f"--default-artifact-root {params.base.tracking.artifact_root}"
        )
    else:
        click.echo(f"MLflow UI  {uri}")

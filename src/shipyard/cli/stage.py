"""`shipyard stage NAME`: the command behind each DVC stage."""

from __future__ import annotations

from pathlib import Path

import click

from shipyard.cli.options import artifacts_option, params_option
from shipyard.pipeline import STAGES


@click.command()
@click.argument("name", type=click.Choice(STAGES))
@params_option
@artifacts_option
def stage(name: str, params_path: Path, artifacts_root: Path) -> None:
    """Run one pipeline stage (what `dvc repro` calls).

    \b
    validate   schema and quality gate       -> artifacts/validated
    featurize  history features, time split  -> artifacts/features
    train      candidates, one MLflow run each -> artifacts/models
    evaluate   metrics, plots, best candidate -> artifacts/eval
    register   threshold gates, @candidate   -> artifacts/registered
    """
    from importlib import import_module

    from shipyard.artifacts import Layout
    from shipyard.config import load_params

    params = load_params(params_path)
    module = import_module(f"shipyard.pipeline.{name}")
    module.run(params, Layout(artifacts_root))

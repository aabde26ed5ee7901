"""`shipyard package` and `shipyard serve`: a registry version as a Bento, and running it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from shipyard.cli.options import params_option, policy_option


def split_model(value: str) -> tuple[str, str]:
    """`fraud-detector@champion` -> ('fraud-detector', '@champion'); `name@3` -> ('name', '3')."""
    name, sep, ref = value.partition("@")
    if not sep or not name or not ref:
        raise click.BadParameter(f"{value!r}: expected MODEL@ALIAS or MODEL@VERSION")
    return name, ref if ref.isdigit() else f"@{ref}"


@click.command()
@click.argument("model_ref", metavar="MODEL@ALIAS|MODEL@VERSION")
@params_option
@policy_option
def package(model_ref: str, params_path: Path, policy_path: Path) -> None:
    """Import a registry version into BentoML and build its Bento; prints the Bento tag.

    Packaging the same version twice returns the same Bento.
    """
    from shipyard import bento, tracking
    from shipyard.config import load_params
    from shipyard.policy import load_policy

    name, ref = split_model(model_ref)
    tracking.configure(load_params(params_path).base)
    click.echo(bento.package(name, ref, load_policy(policy_path)))


@click.command()
@click.argument("model_ref", metavar="MODEL@ALIAS|MODEL@VERSION")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=3000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--prediction-log",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the prediction log [default: .shipyard/predictions/MODEL].",
)
@params_option
@policy_option
def serve(
    model_ref: str,
    host: str,
    port: int,
    prediction_log: Path | None,
    params_path: Path,
    policy_path: Path,
) -> None:
    """Package (if needed) and run a version locally with `bentoml serve`.

    Set SHIPYARD_API_KEY to require the key (X-API-Key or Bearer) on prediction endpoints.
    """
    from shipyard import bento, tracking
    from shipyard.config import load_params
    from shipyard.policy import load_policy
    from shipyard.runtime import runtime_dir

    name, ref = split_model(model_ref)
    tracking.configure(load_params(params_path).base)
    tag = bento.package(name, ref, load_policy(policy_path))
    folder = prediction_log or runtime_dir() / "predictions" / name
    env = {
        **os.environ,
        "SHIPYARD_PREDICTION_LOG": str(folder.resolve()),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    bentoml = Path(sys.executable).with_name("bentoml")
    click.echo(f"serving {tag} on http://{host}:{port}", err=True)
    argv = [str(bentoml), "serve", tag, "--host", host, "--port", str(port)]
    os.execve(bentoml, argv, env)  # noqa: S606  (replace this process: signals reach bentoml)

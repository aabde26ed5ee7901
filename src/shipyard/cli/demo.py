"""`shipyard demo`: the whole loop on embedded defaults (what `make demo` runs)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:  # the runner imports pandas: not for `shipyard --help`
    from shipyard.demo.runner import Backend


@click.command()
@click.option(
    "--in-place",
    is_flag=True,
    help="Run in this working tree instead of a scratch copy (needs a store with no @champion).",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".shipyard/demo"),
    show_default=True,
    help="Where the scratch copy, the logs and summary.json go.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A smaller world or other policies (YAML, shipyard.demo.config); default: none.",
)
@click.option(
    "--backend",
    type=click.Choice(["sqlite", "postgres"]),
    default="sqlite",
    show_default=True,
    help="sqlite: mlflow server on a file in the copy. postgres: the team stack "
    "(PostgreSQL, S3 stand-in, artifact proxy, advisory lock) on loopback, stopped at the end.",
)
def demo(in_place: bool, workdir: Path, config_path: Path | None, backend: Backend) -> None:
    """Data, pipeline, first champion, live traffic, drift, retraining, a canary to a new
    champion, and a bad version the canary rejects; then a summary. Stops what it started.
    """
    import json
    import signal
    import sys

    from shipyard.demo.config import DemoConfig, load_demo_config
    from shipyard.demo.loop import Demo
    from shipyard.demo.summary import render
    from shipyard.errors import ShipyardError

    config = load_demo_config(config_path)
    if in_place and (config.world or config.overrides != DemoConfig().overrides):
        # In place, even the default demo's shorter canary is not written: your policy runs.
        raise ShipyardError("demo: --in-place runs your own files; a --config may not change them")
    run = Demo(Path.cwd(), workdir, config, in_place=in_place, backend=backend)
    # A SIGTERM (`kill`, a cancelled job) ends the demo as Ctrl-C does, through the clean-up
    # that stops what it started: Python's default exits at once and left the MLflow server,
    # the webhook receiver, BentoML and Envoy running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        run.run()
    finally:
        summary = run.workdir / "summary.json"
        if summary.exists():
            click.echo(render(json.loads(summary.read_text()), run.name))

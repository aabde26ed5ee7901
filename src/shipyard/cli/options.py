"""Options shared by several commands, defined once."""

from __future__ import annotations

from pathlib import Path

import click

params_option = click.option(
    "--params",
    "params_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("params.yaml"),
    show_default=True,
    help="Pipeline parameters file.",
)

broker_option = click.option(
    "--broker",
    envvar="SHIPYARD_BROKER",
    default="redis://127.0.0.1:6379/0",
    show_default=True,
    help="Redis Streams URL [env SHIPYARD_BROKER].",
)

artifacts_option = click.option(
    "--artifacts",
    "artifacts_root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("artifacts"),
    show_default=True,
    help="Folder the stages read and write under (a second pipeline runs beside the first).",
)

policy_option = click.option(
    "--policy",
    "policy_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("registry/policy.yaml"),
    show_default=True,
    help="Promotion and deployment policy file.",
)

monitoring_policy_option = click.option(
    "--monitoring-policy",
    "monitoring_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("monitoring/policy.yaml"),
    show_default=True,
    help="Drift policy file.",
)

port_option = click.option(
    "--port",
    default=3000,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="Local target: the port Envoy listens on for clients.",
)

"""`shipyard stack up|env|check|down|move`: the team stack (PostgreSQL, S3, mlflow server)
on loopback, and the check of a team's own stores."""

from __future__ import annotations

from pathlib import Path

import click

FOLDER_HELP = "Where the stack keeps its state and logs [default: <runtime>/stack]."


def _folder(folder: Path | None) -> Path:
    from shipyard.runtime import runtime_dir

    return folder or runtime_dir() / "stack"


def _exports(values: dict[str, str]) -> str:
    return "\n".join(f"export {k}={v}" for k, v in values.items())


@click.group()
def stack() -> None:
    """The registry a team runs (MLflow server on PostgreSQL, artifacts on S3), on loopback."""


@stack.command()
@click.option("--folder", type=click.Path(path_type=Path), help=FOLDER_HELP)
@click.option(
    "--server-workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="`mlflow server` worker processes; one serves concurrent requests on threads, and "
    "each more imports MLflow again.",
)
def up(folder: Path | None, server_workers: int) -> None:
    """Start PostgreSQL, the S3 stand-in and `mlflow server`; print what to export.

    Use it with: eval "$(shipyard stack up | grep ^export)".
    """
    from shipyard import stack as team

    running = team.up(
        _folder(folder), say=lambda line: click.echo(line, err=True), server_workers=server_workers
    )
    click.echo(_exports(running.client_env()))


@stack.command()
@click.option("--folder", type=click.Path(path_type=Path), help=FOLDER_HELP)
def env(folder: Path | None) -> None:
    """Print the exports for the running stack."""
    from shipyard import stack as team
    from shipyard.errors import ShipyardError

    running = team.load(_folder(folder))
    if running is None:
        raise ShipyardError(f"stack: none recorded in {_folder(folder)}; run `shipyard stack up`")
    click.echo(_exports(running.client_env()))


@stack.command()
@click.option(
    "--backend-store-uri",
    envvar="MLFLOW_BACKEND_STORE_URI",
    help="The server's database, e.g. postgresql://user:pass@db:5432/mlflow "
    "[default: $MLFLOW_BACKEND_STORE_URI, else the running loopback stack's].",
)
@click.option(
    "--artifacts-destination",
    envvar="MLFLOW_ARTIFACTS_DESTINATION",
    help="The server's artifact root, e.g. s3://bucket/mlflow [default: "
    "$MLFLOW_ARTIFACTS_DESTINATION]. Credentials: the AWS variables, as the server's.",
)
@click.option(
    "--s3-endpoint",
    envvar="MLFLOW_S3_ENDPOINT_URL",
    help="A MinIO or other S3 endpoint [default: $MLFLOW_S3_ENDPOINT_URL, else AWS].",
)
@click.option("--folder", type=click.Path(path_type=Path), help=FOLDER_HELP)
def check(
    backend_store_uri: str | None,
    artifacts_destination: str | None,
    s3_endpoint: str | None,
    folder: Path | None,
) -> None:
    """Check a tracking server's database and bucket before it starts, where it runs.

    One line per store; exit 1 with one line naming the endpoint and what is wrong: an
    unreachable database or S3 endpoint, refused credentials, a missing bucket, a schema
    older or newer than this MLflow.
    """
    from shipyard import stack as team
    from shipyard import stores
    from shipyard.errors import ShipyardError

    if backend_store_uri:
        lines = stores.check(backend_store_uri, artifacts_destination, s3_endpoint)
    else:
        running = team.load(_folder(folder))
        if running is None:
            raise ShipyardError(
                "stack check: give --backend-store-uri (or MLFLOW_BACKEND_STORE_URI), "
                f"or start a stack in {_folder(folder)}"
            )
        lines = team.check(running)
    for line in lines:
        click.echo(line)


@stack.command()
@click.option("--folder", type=click.Path(path_type=Path), help=FOLDER_HELP)
def down(folder: Path | None) -> None:
    """Stop every process of the stack and remove its database cluster."""
    from shipyard import stack as team

    stopped = team.down(_folder(folder))
    click.echo("stack: stopped" if stopped else f"stack: none recorded in {_folder(folder)}")


@stack.command()
@click.argument("model")
@click.option(
    "--from",
    "source",
    required=True,
    help="The store the model is in now, e.g. sqlite:///.shipyard/mlflow.db.",
)
@click.option(
    "--to",
    "target",
    envvar="MLFLOW_TRACKING_URI",
    required=True,
    help="The team server [default: $MLFLOW_TRACKING_URI].",
)
def move(model: str, source: str, target: str) -> None:
    """Carry MODEL, its versions, runs, artifacts, tags, aliases and signed decisions from
    one store to another, whole or not at all. Grants that verify are signed again for the
    new run ids (SHIPYARD_DECISION_KEY); ones that do not verify keep failing."""
    from shipyard import transfer

    moved = transfer.move(model, source, target, say=lambda line: click.echo(line, err=True))
    click.echo(
        f"moved {model}: {len(moved.versions)} versions, {len(moved.runs)} runs, "
        f"aliases {moved.aliases or 'none'}, {moved.resigned} grants signed again, "
        f"{moved.unverified} copied unverified"
    )

"""`shipyard` command line. Heavy libraries are imported inside commands, never here,
so `--help` answers fast."""

from __future__ import annotations

import sys
from typing import Any

import click

from shipyard.cli.data import data
from shipyard.cli.demo import demo
from shipyard.cli.deploy import deploy
from shipyard.cli.monitoring import drift, monitor, retrain
from shipyard.cli.registry import promote, rollback
from shipyard.cli.scoring import score
from shipyard.cli.serving import package, serve
from shipyard.cli.stack import stack
from shipyard.cli.stage import stage
from shipyard.cli.stream import stream, stream_judge
from shipyard.cli.summary import summary
from shipyard.cli.webhook import webhook
from shipyard.collector import collect_less

collect_less()  # a command imports MLflow, scikit-learn, pandas and the rest


class _Group(click.Group):
    """Turns a ShipyardError, or an MLflow client error (a server away, a refused request),
    into one line on stderr and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        from shipyard.errors import ShipyardError, tracking_message

        try:
            return super().invoke(ctx)
        except ShipyardError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(1)
        except Exception as err:
            mlflow = sys.modules.get("mlflow.exceptions")
            if mlflow is None or not isinstance(err, mlflow.MlflowException):
                raise
            import mlflow as client  # loaded already: the error came from it

            line = tracking_message(err.message, client.get_tracking_uri(), client.__version__)
            click.echo(f"error: {line}", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="shipyard")
def main() -> None:
    """Shipyard: validate, train, register, promote, serve and monitor models.

    The data scientist runs `dvc repro`; each DVC stage calls `shipyard stage NAME`.
    """


main.add_command(stage)
main.add_command(data)
main.add_command(summary)
main.add_command(promote)
main.add_command(rollback)
main.add_command(package)
main.add_command(serve)
main.add_command(score)
main.add_command(stream)
main.add_command(stream_judge)
main.add_command(webhook)
main.add_command(deploy)
main.add_command(drift)
main.add_command(monitor)
main.add_command(retrain)
main.add_command(demo)
main.add_command(stack)

"""`shipyard data`: the raw data behind data.dvc, simulated periods, and their replay to the
API or publication to a stream."""

from __future__ import annotations

from pathlib import Path

import click

from shipyard.cli.options import broker_option, params_option


@click.group()
def data() -> None:
    """Make data.dvc's data available, simulate transaction periods, and send them to the API
    or a stream."""


@data.command()
def bootstrap() -> None:
    """Get data/ as data.dvc records it: present, `dvc pull`, or regenerated and verified."""
    from shipyard.data.bootstrap import bootstrap as run

    outcome = run(Path())
    click.echo(f"data: {outcome}")


@data.command()
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="CSV file to write (must not exist).",
)
@click.option(
    "--first-day",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="First simulated day (0 = start of the default dataset).",
)
@click.option(
    "--days",
    type=click.IntRange(min=1),
    default=7,
    show_default=True,
    help="Number of days to simulate.",
)
@click.option(
    "--amount-inflation",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Drift: multiply every amount.",
)
@click.option(
    "--new-terminal-share",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Drift: share of payments at never-seen terminals.",
)
@click.option(
    "--night-fraud-share",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Drift: share of payments hit by small night-time fraud.",
)
def generate(
    out: Path,
    first_day: int,
    days: int,
    amount_inflation: float,
    new_terminal_share: float,
    night_fraud_share: float,
) -> None:
    """Simulate days [FIRST_DAY, FIRST_DAY + DAYS) of the default world, optionally drifted."""
    from shipyard.artifacts import atomic_file
    from shipyard.data.simulator import Drift, Simulator, write_csv
    from shipyard.errors import ShipyardError

    if out.exists():
        raise ShipyardError(f"{out}: already exists; data files are never overwritten")
    drift = Drift(amount_inflation, new_terminal_share, night_fraud_share)
    frame = Simulator().period(first_day, first_day + days, drift)
    with atomic_file(out) as scratch:
        write_csv(frame, str(scratch))
    click.echo(f"{out}: {len(frame)} transactions, fraud rate {frame['tx_fraud'].mean():.3%}")


@data.command("replay")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--url", required=True, help="Base URL of the service or its proxy.")
@click.option("--concurrency", default=8, show_default=True, type=click.IntRange(1, 256))
@click.option(
    "--history",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    multiple=True,
    default=[Path("artifacts/validated/data.parquet")],
    show_default=True,
    help="Labelled data the history features look back on: the validated training data, "
    "plus earlier replayed periods whose labels have arrived (repeat the option).",
)
@params_option
def replay(
    file: Path, url: str, concurrency: int, history: tuple[Path, ...], params_path: Path
) -> None:
    """Send FILE's transactions to URL as live traffic (request id = transaction id).

    Labels in FILE are not sent; store them later with `shipyard monitor labels FILE`.
    Uses SHIPYARD_API_KEY when set. Exit 1 if any request failed.
    """
    import os

    import pandas as pd

    from shipyard.config import load_params
    from shipyard.data.replay import live_features, load_period
    from shipyard.data.replay import replay as send
    from shipyard.errors import ShipyardError

    params = load_params(params_path)
    live = load_period(file, params)
    past = pd.concat(
        [pd.read_parquet(h) if h.suffix == ".parquet" else load_period(h, params) for h in history],
        ignore_index=True,
    )
    features = live_features(past, live, params)
    result = send(
        url,
        features,
        params.data.id,
        concurrency=concurrency,
        api_key=os.environ.get("SHIPYARD_API_KEY"),
    )
    click.echo(f"{result.sent} requests, {result.failed} failed, {result.seconds:.1f} s")
    if result.failed:
        raise ShipyardError(f"replay: {result.failed} requests failed, first: {result.first_error}")


@data.command("publish")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@broker_option
@click.option("--stream", default="transactions", show_default=True, help="Stream to add to.")
@click.option(
    "--labels",
    is_flag=True,
    help="Publish the label too: history whose labels are known, which the consumer's risk "
    "windows count (a live payment has none).",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    help="Events per second [default: as fast as the broker takes them].",
)
@params_option
def publish(
    file: Path, broker: str, stream: str, labels: bool, rate: float | None, params_path: Path
) -> None:
    """Publish FILE's transactions to a stream as events, in time order, as a payment flow
    would: what `shipyard stream` consumes (event id = transaction id).

    FILE is checked against the data contract first: a file that breaks it publishes
    nothing. It may leave the label column out unless --labels is given. Publishing a file
    again is safe: the consumer decides each event id once and dead-letters the repeats.
    """
    from redis.exceptions import RedisError

    from shipyard.artifacts import progress
    from shipyard.config import load_params
    from shipyard.data.replay import load_period
    from shipyard.errors import ShipyardError
    from shipyard.scoring import producer
    from shipyard.scoring.stream import check_url, sync_client

    params = load_params(params_path)
    check_url(broker)
    events = producer.bodies(load_period(file, params, labels), params.data, labels)
    client = sync_client(broker)
    try:
        client.ping()
    except (RedisError, OSError) as err:  # refused, reset, timed out, or not Redis
        raise ShipyardError(f"--broker {broker}: unreachable ({err})") from err
    done = producer.publish(client, stream, events, rate, lambda line: progress("publish", line))
    click.echo(f"{done.sent} events to {stream} at {broker}, {done.seconds:.1f} s")

"""`shipyard stream`: a registered version on a broker stream of transaction events."""

from __future__ import annotations

from pathlib import Path

import click

from shipyard.cli.options import broker_option, params_option, policy_option


@click.command()
@click.argument("model_ref", metavar="MODEL@REF")
@broker_option
@click.option("--source", default="transactions", show_default=True, help="Input stream.")
@click.option("--decisions", default="decisions", show_default=True, help="Output stream.")
@click.option(
    "--dead-letters",
    default="transactions.dead",
    show_default=True,
    help="Stream for events that cannot be scored, each with its reason.",
)
@click.option("--group", help="Consumer group [default: shipyard.MODEL, shadow: .shadow-vN].")
@click.option(
    "--consumer",
    help="This consumer's name in the group; a restart under the same name takes back what "
    "it left unacknowledged [default: the host name].",
)
@click.option(
    "--from-start",
    is_flag=True,
    help="A new group scores every event the stream retains, not only those after it joins.",
)
@click.option(
    "--batch",
    default=100,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="Most events read and decided at once (a backlog drains faster in larger batches).",
)
@click.option(
    "--shadow",
    is_flag=True,
    help="Score and log in its own group, never publish a decision (a challenger).",
)
@click.option("--metrics-port", type=click.IntRange(1, 65535), help="Serve /metrics here.")
@click.option(
    "--prediction-log",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the prediction log [default: .shipyard/predictions/MODEL-stream].",
)
@params_option
@policy_option
def stream(
    model_ref: str,
    broker: str,
    source: str,
    decisions: str,
    dead_letters: str,
    group: str | None,
    consumer: str | None,
    from_start: bool,
    batch: int,
    shadow: bool,
    metrics_port: int | None,
    prediction_log: Path | None,
    params_path: Path,
    policy_path: Path,
) -> None:
    """Consume transaction events and publish a decision for each (MODEL@REF:
    fraud-detector@champion, fraud-detector@3).

    Events are checked against the data contract, get the history features featurize
    computes, and are scored at the version's threshold. At least once, one decision per
    event id; what cannot be scored goes to the dead-letter stream with its reason. Stops
    on SIGTERM or Ctrl-C after the batch in hand.
    """
    import asyncio
    import socket

    from shipyard import tracking
    from shipyard.config import load_params
    from shipyard.policy import load_policy
    from shipyard.scoring import model as scoring_model
    from shipyard.scoring import shadow as shadows
    from shipyard.scoring import stream as consumer_loop
    from shipyard.scoring.events import Scorer

    params = load_params(params_path)
    tracking.configure(params.base)
    version = scoring_model.resolve(model_ref, params, load_policy(policy_path))
    role = f"shadow-v{version.version}" if shadow else ""
    folder = shadows.log_folder(version.name, version.version if shadow else None)
    settings = consumer_loop.Settings(
        broker=broker,
        source=source,
        decisions=decisions,
        dead_letters=dead_letters,
        group=group or ".".join(filter(None, ["shipyard", version.name, role])),
        consumer=consumer or socket.gethostname(),
        log_folder=prediction_log or folder,
        batch=batch,
        shadow=shadow,
        from_start=from_start,
        metrics_port=metrics_port,
    )
    scorer = Scorer(scoring_model.load(version), version, params.data, params.featurize)
    click.echo(
        f"stream: {version.name} v{version.version} on {broker} {source} -> "
        f"{'(shadow: no decisions)' if shadow else decisions}, group {settings.group}",
        err=True,
    )
    asyncio.run(consumer_loop.serve(settings, scorer))


@click.command("stream-judge")
@click.argument("model_ref", metavar="MODEL@REF")
@click.option(
    "--since",
    default="",
    help="Judge decisions logged at or after this time (ISO 8601) [default: all].",
)
@params_option
@policy_option
def stream_judge(model_ref: str, since: str, params_path: Path, policy_path: Path) -> None:
    """Judge MODEL@REF, run with `shipyard stream --shadow`, against @champion's live
    decisions on the same events, with the canary's model gates; promote it (exit 0) or
    reject it naming the failed gate (exit 1)."""
    from shipyard import tracking
    from shipyard.cli.serving import split_model
    from shipyard.config import load_params
    from shipyard.policy import load_policy
    from shipyard.scoring import shadow

    name, ref = split_model(model_ref)
    tracking.configure(load_params(params_path).base)
    policy = load_policy(policy_path)
    challenger, champion, found = shadow.verdict(name, ref, policy, since)
    click.echo(f"stream shadow: v{challenger} against v{champion} on {found.pairs} events")
    for result in found.results:
        click.echo(f"  {result.describe()}")
    shadow.settle(name, challenger, champion, found, policy)
    click.echo(f"{name} version {challenger} promoted to @champion")

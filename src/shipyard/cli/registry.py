"""`shipyard promote` and `shipyard rollback`: moving registry aliases through gates."""

from __future__ import annotations

from pathlib import Path

import click

from shipyard.cli.options import params_option, policy_option


@click.command()
@click.argument("model")
@click.argument("ref")
@click.option(
    "--to",
    "to",
    type=click.Choice(["challenger", "champion"]),
    required=True,
    help="Alias to move to this version.",
)
@click.option("--force", is_flag=True, help="Promote to champion without a passed canary.")
@click.option("--reason", help="Why --force was needed; recorded in the decision.")
@click.option(
    "--allow-schema-change",
    is_flag=True,
    help="Accept a signature that differs from the champion's.",
)
@click.option(
    "--strategy",
    type=click.Choice(["canary", "shadow"]),
    help="--to challenger: how the local deployment exposes it (default canary). "
    "shadow: clients only get stable's answers while it is judged.",
)
@params_option
@policy_option
def promote(
    model: str,
    ref: str,
    to: str,
    force: bool,
    reason: str | None,
    allow_schema_change: bool,
    strategy: str | None,
    params_path: Path,
    policy_path: Path,
) -> None:
    """Gate version REF (a number or @alias) of MODEL and move the alias if every gate passes.

    Exit 0 means promoted; non-zero names the failed gate in one line. Every decision is
    recorded on the version and appended to the audit log.
    """
    from shipyard import promotion, tracking
    from shipyard.config import load_params
    from shipyard.policy import load_policy

    params, policy = load_params(params_path), load_policy(policy_path)
    tracking.configure(params.base)
    record = promotion.promote(
        model,
        ref,
        to,
        policy,
        force=force,
        reason=reason,
        allow_schema_change=allow_schema_change,
        strategy=strategy,
    )
    from shipyard.gates import GateResult

    for gate in record["gates"]:
        click.echo(f"  {GateResult(**gate).describe()}")
    for note in record["notes"]:
        click.echo(f"  note: {note}")
    click.echo(f"{model} version {record['version']} is now @{to}")


@click.command()
@click.argument("model")
@click.option("--reason", required=True, help="Why; recorded with the rollback.")
@params_option
def rollback(model: str, reason: str, params_path: Path) -> None:
    """Make MODEL's @previous version the @champion again, at once."""
    from shipyard import promotion, tracking
    from shipyard.config import load_params

    tracking.configure(load_params(params_path).base)
    record = promotion.rollback(model, reason)
    assert record is not None  # no `replacing`: the rollback always happens
    click.echo(
        f"{model} version {record['version']} is @champion again "
        f"(replaced version {record['replaced']})"
    )

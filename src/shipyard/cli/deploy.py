"""`shipyard deploy`: canary or shadow a registry version against the champion."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from shipyard.cli.options import params_option, policy_option, router_port_option


class _DeployGroup(click.Group):
    """`shipyard deploy MODEL@REF …` is short for `shipyard deploy run MODEL@REF …`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and "@" in args[0] and args[0] not in self.commands:
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_DeployGroup)
def deploy() -> None:
    """Canary deployments: `shipyard deploy MODEL@REF`, then status, resume, stop."""


@deploy.command("run")
@click.argument("model_ref", metavar="MODEL@ALIAS|MODEL@VERSION")
@click.option(
    "--strategy",
    type=click.Choice(["canary", "shadow"]),
    help="Default: what `promote --strategy` recorded on the version, else canary.",
)
@click.option(
    "--target",
    type=click.Choice(["local", "kubernetes"]),
    default="local",
    show_default=True,
    help="local: processes on this machine. kubernetes: Argo Rollouts manifests.",
)
@router_port_option
@click.option("--image", help="kubernetes: the image `bentoml containerize` built for the Bento.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("build/kubernetes"),
    show_default=True,
    help="kubernetes: folder for the rendered manifests.",
)
@click.option(
    "--apply",
    is_flag=True,
    help="kubernetes: kubectl apply, wait for Argo's verdict, then promote or reject.",
)
@click.option(
    "--timeout",
    default=3600.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="kubernetes: seconds to wait for Argo's verdict.",
)
@params_option
@policy_option
def run(
    model_ref: str,
    strategy: str | None,
    target: str,
    port: int,
    image: str | None,
    out: Path,
    apply: bool,
    timeout: float,
    params_path: Path,
    policy_path: Path,
) -> None:
    """Step the canary's weight through the policy, judging it against stable at every step.

    Ends with `promote --to champion` (exit 0) or a rollback naming the failed gate (exit 1).
    With --target kubernetes it renders and validates the manifests, and with --apply hands
    them to Argo Rollouts and records its verdict the same way.
    """
    from shipyard import tracking
    from shipyard.cli.serving import split_model
    from shipyard.config import load_params
    from shipyard.errors import ShipyardError
    from shipyard.policy import load_policy

    params = load_params(params_path)
    policy = load_policy(policy_path)
    tracking.configure(params.base)
    name, ref = split_model(model_ref)
    if target == "kubernetes":
        from shipyard.deploy import rollout

        if strategy == "shadow":
            raise ShipyardError("deploy: --strategy shadow needs a mesh; kubernetes runs canary")
        if not image:
            raise ShipyardError("deploy: --target kubernetes needs --image")
        result = rollout.run(name, ref, image, policy, out, apply=apply, timeout=timeout)
        click.echo(f"{name} version {result['version']}: {result['status']}")
        return
    from shipyard.deploy import canary

    state = canary.deploy(name, ref, policy, strategy=strategy, router_port=port)
    click.echo(f"{name} version {state.version}: {state.status}")


@deploy.command()
@click.argument("model")
@router_port_option
@params_option
@policy_option
def start(model: str, port: int, params_path: Path, policy_path: Path) -> None:
    """Serve MODEL's @champion behind the router, with no canary.

    Later canaries (`shipyard deploy MODEL@challenger --port PORT`) join this stable and
    router, so clients keep calling one address throughout.
    """
    from shipyard import tracking
    from shipyard.config import load_params
    from shipyard.deploy import canary
    from shipyard.policy import load_policy

    params = load_params(params_path)
    tracking.configure(params.base)
    state = canary.start(model, load_policy(policy_path), router_port=port)
    click.echo(f"{model} version {state.version}: {state.status} on port {port}")


@deploy.command()
@click.argument("model")
@params_option
@policy_option
def resume(model: str, params_path: Path, policy_path: Path) -> None:
    """Continue a canary after a controller restart, or roll it back if it cannot continue."""
    from shipyard import tracking
    from shipyard.config import load_params
    from shipyard.deploy import canary
    from shipyard.policy import load_policy

    params = load_params(params_path)
    tracking.configure(params.base)
    state = canary.resume(model, load_policy(policy_path))
    click.echo(f"{model}: {state.status}")


@deploy.command()
@click.argument("model")
def status(model: str) -> None:
    """Variants, weights and the gate values of every step so far."""
    from shipyard.deploy import deployment
    from shipyard.gates import GateResult

    state = deployment.load_state(model)
    click.echo(
        f"{model}: {state.status} ({state.strategy or 'no canary'}), canary weight {state.weight}%"
    )
    for role, v in (("stable", state.stable), ("canary", state.canary)):
        if v is not None:
            click.echo(f"  {role:<7} version {v.version}  {v.tag}  port {v.port}")
    if state.failures_tolerated is not None:
        left = max(state.failures_tolerated - state.failures, 0)
        click.echo(
            f"  failed steps: {state.failures}; {left} more tolerated before rollback "
            "(a failed last step always rolls back)"
        )
    for step in state.history:
        word = "passed" if step.passed else "FAILED"
        click.echo(
            f"  step {step.step} weight {step.weight}%: {word} "
            f"(stable {step.stable_requests:.0f} req, canary {step.canary_requests:.0f} req)"
        )
        for gate in step.gates:
            click.echo(f"    {GateResult(**gate).describe()}")


@deploy.command()
@click.argument("model")
def stop(model: str) -> None:
    """Stop every process of MODEL's local deployment."""
    from shipyard.deploy import deployment

    deployment.stop_all(model)
    click.echo(f"{model}: stopped")


@deploy.command()
@click.option("--port", required=True, type=click.IntRange(1, 65535))
@click.option("--stable", required=True, help="Base URL of the stable service.")
@click.option("--canary", help="Base URL of the canary service.")
@click.option("--weight", default=0, show_default=True, type=click.IntRange(0, 100))
@click.option(
    "--mode", type=click.Choice(["canary", "shadow"]), default="canary", show_default=True
)
@click.option(
    "--max-body-bytes",
    default=2_000_000,
    show_default=True,
    type=click.IntRange(1024),
    help="Bodies past this get 413 here (as the services' serving.max_body_bytes).",
)
def router(
    port: int, stable: str, canary: str | None, weight: int, mode: str, max_body_bytes: int
) -> None:
    """Run the local traffic router (admin token: SHIPYARD_ROUTER_TOKEN)."""
    import uvicorn

    from shipyard.deploy.router import Split, create_app
    from shipyard.errors import ShipyardError

    token = os.environ.get("SHIPYARD_ROUTER_TOKEN")
    if not token:
        raise ShipyardError("router: SHIPYARD_ROUTER_TOKEN is not set")
    split = Split(stable=stable, canary=canary, weight=weight, mode=mode)
    app = create_app(split, token, max_body_bytes)
    click.echo(json.dumps({"router": port, "stable": stable, "canary": canary}), err=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")

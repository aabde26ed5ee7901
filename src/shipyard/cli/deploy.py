"""`shipyard deploy`: canary or shadow a registry version against the champion."""

from __future__ import annotations

from pathlib import Path

import click

from shipyard.cli.options import params_option, policy_option, port_option


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
    help="local: processes behind Envoy here. kubernetes: Argo Rollouts and Istio manifests.",
)
@port_option
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

        if not image:
            raise ShipyardError("deploy: --target kubernetes needs --image")
        result = rollout.run(
            name, ref, image, policy, out, apply=apply, timeout=timeout, strategy=strategy
        )
        click.echo(f"{name} version {result['version']}: {result['status']}")
        return
    from shipyard.deploy import canary

    state = canary.deploy(name, ref, policy, strategy=strategy, port=port)
    click.echo(f"{name} version {state.version}: {state.status}")


@deploy.command()
@click.argument("model")
@port_option
@params_option
@policy_option
def start(model: str, port: int, params_path: Path, policy_path: Path) -> None:
    """Serve MODEL's @champion behind Envoy, with no canary.

    Later canaries (`shipyard deploy MODEL@challenger --port PORT`) join this stable and
    proxy, so clients keep calling one address throughout.
    """
    from shipyard import tracking
    from shipyard.config import load_params
    from shipyard.deploy import canary
    from shipyard.policy import load_policy

    params = load_params(params_path)
    tracking.configure(params.base)
    state = canary.start(model, load_policy(policy_path), port=port)
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
    if state.proxy is not None:
        click.echo(
            f"  envoy   port {state.proxy.port}  config and admin socket in {state.proxy.folder}"
        )
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

"""`shipyard webhook serve`: receive MLflow registry webhooks and turn them into delivery."""

from __future__ import annotations

import os
from pathlib import Path

import click

from shipyard.cli.options import params_option, policy_option


@click.group()
def webhook() -> None:
    """MLflow registry webhooks (model_version_alias.created)."""


@webhook.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8787, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--mode",
    type=click.Choice(["github", "local"]),
    default="github",
    show_default=True,
    help="github: repository_dispatch per new @challenger (and drift-detected per retraining "
    "alert); local: canary it (and retrain) here.",
)
@click.option(
    "--deploy-port",
    default=3000,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="Router port of local canaries.",
)
@params_option
@policy_option
def serve(
    host: str, port: int, mode: str, deploy_port: int, params_path: Path, policy_path: Path
) -> None:
    """Verify each delivery's HMAC (SHIPYARD_WEBHOOK_SECRET), act once per delivery id.

    A new @challenger is dispatched to GitHub (GITHUB_REPOSITORY, GITHUB_TOKEN) or packaged
    locally; a @champion that the newest signed decision (SHIPYARD_DECISION_KEY) did not put
    there is reverted. POST /alerts takes Alertmanager's notifications (bearer token
    SHIPYARD_ALERT_TOKEN) and acts as the policy's `alerts:` section says.
    """
    from shipyard import grant, tracking
    from shipyard import webhook as hooks
    from shipyard.config import load_params
    from shipyard.errors import ShipyardError
    from shipyard.policy import load_policy

    secret = os.environ.get("SHIPYARD_WEBHOOK_SECRET")
    if not secret:
        raise ShipyardError(
            "webhook: SHIPYARD_WEBHOOK_SECRET is not set; refusing unsigned deliveries"
        )
    key: str = secret
    grant.required_key("webhook")  # the guard cannot tell a forged approval without it
    params = load_params(params_path)
    policy = load_policy(policy_path)  # a bad policy fails now, not at the first delivery
    tracking.configure(params.base)

    def act(event: hooks.AliasEvent) -> str:
        if event.alias == "challenger":
            if mode == "github":
                status = hooks.repository_dispatch(event)
                return f"dispatched {hooks.DISPATCH_EVENT} for version {event.version} ({status})"
            import threading

            from shipyard.deploy import canary

            def deploy() -> None:  # minutes long: MLflow's delivery must not wait for it
                try:
                    state = canary.deploy(event.model, event.version, policy, port=deploy_port)
                    click.echo(f"webhook: version {event.version}: {state.status}", err=True)
                except ShipyardError as err:
                    click.echo(f"webhook: version {event.version}: {err}", err=True)

            threading.Thread(target=deploy, name=f"canary-{event.version}").start()
            return f"packaging and canarying version {event.version} on port {deploy_port}"
        if event.alias == "champion":
            return hooks.guard_champion(event)
        return f"alias {event.alias}: nothing to do"

    import uvicorn

    from shipyard.webhook import alerts
    from shipyard.webhook.receiver import create_app

    token = os.environ.get("SHIPYARD_ALERT_TOKEN")
    retrain = alerts.dispatch_retrain if mode == "github" else alerts.local_retrain

    def on_alerts(body: bytes, authorization: str | None) -> list[str]:
        return alerts.handle(body, authorization, token, policy.alerts, retrain)

    taken = "taken (SHIPYARD_ALERT_TOKEN)" if token else "refused: SHIPYARD_ALERT_TOKEN unset"
    click.echo(
        f"webhook: listening on http://{host}:{port} ({mode} mode); alerts {taken}", err=True
    )
    uvicorn.run(
        create_app(key, act, on_alerts=on_alerts), host=host, port=port, log_level="warning"
    )

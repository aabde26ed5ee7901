"""Alertmanager's webhook notifications into the actions `registry/policy.yaml` names
(`alerts:`): roll back, or ask for retraining, when an alert fires on the @champion's version.

Alertmanager authenticates with a bearer token (`http_config.authorization` in
`monitoring/alertmanager.yml`); without SHIPYARD_ALERT_TOKEN set, the receiver acts on no
alert. Alertmanager repeats a firing alert every `repeat_interval` and retries a failed
notification, so each action runs once per alert (its fingerprint and start), recorded once
it succeeded, as MLflow deliveries are. An alert about any version but the current
@champion changes nothing: a canary's gates answer for the canary, and a champion that a
promotion has since replaced is not rolled back by news about the old one.
"""

from __future__ import annotations

import hmac
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shipyard.errors import ShipyardError
from shipyard.policy import AlertsPolicy
from shipyard.runtime import append_jsonl, runtime_dir
from shipyard.webhook.delivery import Rejected, deliver_once

AUDIT = "audit/alerts.jsonl"
Text = Annotated[str, Field(max_length=2048)]


class Alert(BaseModel):
    """One alert of a notification; Alertmanager's other fields are not read."""

    model_config = ConfigDict(extra="ignore")
    status: Literal["firing", "resolved"]
    labels: dict[str, Text] = Field(max_length=64)
    annotations: dict[str, Text] = Field(default_factory=dict, max_length=64)
    startsAt: str = Field(min_length=1, max_length=64)  # Alertmanager's field name
    fingerprint: str = Field(min_length=1, max_length=64, pattern=r"^[0-9a-f]+$")


class Notification(BaseModel):
    """Alertmanager's webhook body, version 4."""

    model_config = ConfigDict(extra="ignore")
    version: Literal["4"]
    alerts: list[Alert] = Field(max_length=1000)


def authorize(token: str | None, header: str | None) -> None:
    """Raise Rejected unless `header` is `Bearer <token>`; no token configured: 403."""
    if not token:
        raise Rejected(403, "alert actions are off: SHIPYARD_ALERT_TOKEN is not set")
    given = (header or "").removeprefix("Bearer ")
    if (
        not header
        or not header.startswith("Bearer ")
        or not hmac.compare_digest(given.encode(), token.encode())
    ):
        raise Rejected(401, "alerts: missing or wrong bearer token")


def parse(body: bytes) -> Notification:
    """The notification, or Rejected(400) naming the first bad field's path."""
    try:
        return Notification.model_validate_json(body)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise Rejected(400, f"alerts: {where}: {first['msg']}") from None


@dataclass(frozen=True)
class Planned:
    kind: Literal["rollback", "retrain"]
    alert: Alert

    @property
    def name(self) -> str:
        return self.alert.labels["alertname"]

    @property
    def key(self) -> str:
        """Once per alert episode: Alertmanager's repeats carry the same fingerprint and start."""
        return f"alert:{self.kind}:{self.alert.fingerprint}:{self.alert.startsAt}"


def plan(notification: Notification, policy: AlertsPolicy) -> tuple[list[Planned], list[str]]:
    """Firing alerts the policy acts on, and a line for each alert it does not."""
    planned, skipped = [], []
    for alert in notification.alerts:
        name = alert.labels.get("alertname", "")
        kind: Literal["rollback", "retrain"] | None = (
            "rollback" if name in policy.rollback else "retrain" if name in policy.retrain else None
        )
        if kind is None:
            skipped.append(f"{name or 'an alert without alertname'}: no action in the policy")
        elif alert.status != "firing":
            skipped.append(f"{name}: resolved")
        elif not alert.labels.get("model_name") or not alert.labels.get("model_version"):
            skipped.append(f"{name}: no model_name and model_version labels to act on")
        else:
            planned.append(Planned(kind, alert))
    return planned, skipped


Retrain = Callable[[str, str, str], str]  # (model, version, reason) -> what was done


def act(action: Planned, retrain: Retrain) -> str:
    """Do `action` once for its alert; the outcome is recorded in the audit either way."""
    return deliver_once(action.key, lambda: _act(action, retrain))


def _act(action: Planned, retrain: Retrain) -> str:
    from shipyard import promotion, registry

    labels = action.alert.labels
    model, version = labels["model_name"], labels["model_version"]
    summary = action.alert.annotations.get("summary", "")
    reason = f"alert {action.name} firing since {action.alert.startsAt}: {summary}".strip()
    if not _registered(model):
        outcome = f"{model}: no such registered model; nothing to do"
    elif action.kind == "rollback":
        if registry.version_by_alias(model, registry.PREVIOUS) is None:
            outcome = f"{model}: no @previous version to roll back to; v{version} stays"
        else:
            record = promotion.rollback(model, reason, replacing=version)
            outcome = (
                f"{model}: v{record['version']} is @champion again (v{version} rolled back)"
                if record is not None
                else f"{model}: v{version} is not @champion; nothing to roll back"
            )
    else:
        champion = registry.version_by_alias(model, registry.CHAMPION)
        if champion is None or str(champion.version) != version:
            outcome = f"{model}: v{version} is not @champion; no retraining for it"
        else:
            outcome = retrain(model, version, reason)
    append_jsonl(
        AUDIT,
        {
            "alert": action.name,
            "fingerprint": action.alert.fingerprint,
            "starts_at": action.alert.startsAt,
            "action": action.kind,
            "model": model,
            "version": version,
            "outcome": outcome,
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    )
    return outcome


def _registered(model: str) -> bool:
    """Whether the registry knows `model`; a registry that does not answer raises, so the
    notification fails (502) and comes again, instead of being recorded as nothing to do."""
    from mlflow.exceptions import MlflowException

    from shipyard import registry

    try:
        registry.client().get_registered_model(model)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise ShipyardError(f"registry: {err.message}") from None
    return True


def dispatch_retrain(model: str, version: str, reason: str) -> str:
    """GitHub mode: the `drift-detected` dispatch `drift check --dispatch` sends (retrain.yml)."""
    from shipyard.webhook.github import dispatch

    status = dispatch("drift-detected", {"model": model, "version": version, "reason": reason})
    return f"{model}: dispatched drift-detected for v{version} ({status})"


def local_retrain(model: str, version: str, reason: str) -> str:
    """Local mode: `shipyard retrain MODEL` in the background (minutes long; Alertmanager's
    notification must not wait), its output in `<runtime>/alerts/`."""
    folder = runtime_dir() / "alerts"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    log = folder / f"retrain-{model}-{stamp}.log"
    shipyard = [str(Path(sys.executable).with_name("shipyard")), "retrain", model]
    with log.open("w") as out:
        proc = subprocess.Popen(
            shipyard, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    threading.Thread(target=proc.wait, name=f"retrain-{model}", daemon=True).start()  # reaped
    return f"{model}: retraining started for v{version} ({reason[:80]}); log {log}"


def handle(
    body: bytes,
    authorization: str | None,
    token: str | None,
    policy: AlertsPolicy,
    retrain: Retrain,
) -> list[str]:
    """One notification: authorized, parsed, each alert acted on or skipped, one line each."""
    authorize(token, authorization)
    planned, skipped = plan(parse(body), policy)
    # A failed action raises ShipyardError, the receiver answers 502 and Alertmanager sends
    # the notification again; actions already done are not redone (`act`).
    return [act(p, retrain) for p in planned] + skipped

"""Registry events into delivery: MLflow webhook deliveries, checked, de-duplicated, forwarded.

MLflow OSS signs each delivery with HMAC-SHA256 over `<delivery id>.<timestamp>.<body>`
(header `X-MLflow-Signature: v1,<base64>`). We reject a bad or missing signature and a stale
timestamp, remember delivery ids so a retried delivery acts once, and for a new `@challenger`
send a GitHub `repository_dispatch` (event `model-promoted`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shipyard.errors import ShipyardError
from shipyard.runtime import append_jsonl, lock, runtime_dir

SIGNATURE_HEADER = "X-MLflow-Signature"
DELIVERY_HEADER = "X-MLflow-Delivery-Id"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERIES = "webhook/deliveries.jsonl"
DISPATCH_EVENT = "model-promoted"


class Rejected(ShipyardError):
    """A delivery we will not act on; `status` is the HTTP answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def signature(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(
    secret: str, headers: dict[str, str], body: bytes, now: float, max_age: float = 300
) -> str:
    """The delivery id of an authentic, fresh delivery; raises Rejected(401) otherwise."""
    given = {k.lower(): v for k, v in headers.items()}
    delivery = given.get(DELIVERY_HEADER.lower(), "")
    stamp = given.get(TIMESTAMP_HEADER.lower(), "")
    sent = given.get(SIGNATURE_HEADER.lower(), "")
    if not (delivery and stamp and sent):
        raise Rejected(401, "missing signature, delivery id or timestamp header")
    expected = signature(secret, delivery, stamp, body)
    if not hmac.compare_digest(sent.encode(), expected.encode()):
        raise Rejected(401, f"bad signature on delivery {delivery}")
    try:
        age = now - float(stamp)
    except ValueError:
        raise Rejected(401, f"delivery {delivery}: timestamp {stamp!r} is not a number") from None
    if abs(age) > max_age:
        raise Rejected(401, f"delivery {delivery}: timestamp {age:.0f} s away from now (replay?)")
    return delivery


@dataclass(frozen=True)
class AliasEvent:
    model: str
    alias: str
    version: str

    @classmethod
    def parse(cls, body: bytes) -> AliasEvent | None:
        """The alias event in a delivery; None for events we do not act on."""
        try:
            payload = json.loads(body)
        except json.JSONDecodeError:
            raise Rejected(400, "body is not JSON") from None
        if (payload.get("entity"), payload.get("action")) != ("model_version_alias", "created"):
            return None
        data = payload.get("data") or {}
        try:
            return cls(str(data["name"]), str(data["alias"]), str(data["version"]))
        except KeyError as missing:
            raise Rejected(400, f"alias event without {missing}") from None


def first_delivery(delivery_id: str, folder: Path | None = None) -> bool:
    """Record the id; False if it was seen before (MLflow retries reuse the id)."""
    path = (folder or runtime_dir()) / DELIVERIES
    with lock("webhook-deliveries"):
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    if json.loads(line)["delivery_id"] == delivery_id:
                        return False
                except (json.JSONDecodeError, KeyError):
                    continue
        append_jsonl(DELIVERIES, {"delivery_id": delivery_id, "time": time.time()})
    return True


def repository_dispatch(event: AliasEvent, extra: dict[str, Any] | None = None) -> int:
    """Ask GitHub Actions to deliver this version; repository and token come from the env."""
    payload = {"model": event.model, "alias": event.alias, "version": event.version}
    return dispatch(DISPATCH_EVENT, {**payload, **(extra or {})})


def dispatch(event_type: str, payload: dict[str, Any]) -> int:
    """A `repository_dispatch` to GITHUB_REPOSITORY with GITHUB_TOKEN (GITHUB_API_URL)."""
    repo = os.environ.get("GITHUB_REPOSITORY")
    token = os.environ.get("GITHUB_TOKEN")
    if not repo or not token:
        raise ShipyardError("dispatch: GITHUB_REPOSITORY and GITHUB_TOKEN must be set")
    api = os.environ.get("GITHUB_API_URL", "https://api.github.com").rstrip("/")
    if not api.startswith(("https://", "http://127.0.0.1", "http://localhost")):
        raise ShipyardError(
            f"dispatch: GITHUB_API_URL {api!r} must be https (or a loopback stand-in)"
        )
    body = json.dumps({"event_type": event_type, "client_payload": payload}).encode()
    request = urllib.request.Request(  # noqa: S310 (scheme checked above)
        f"{api}/repos/{repo}/dispatches",
        data=body,
        method="POST",
        headers={
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {token}",
            "X-GitHub-Api-Version": "2022-11-28",
            "Content-Type": "application/json",
        },
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return int(response.status)


def last_approved_champion(name: str, exclude: str) -> str | None:
    """The newest version that became champion through a passed promotion decision."""
    from mlflow import MlflowClient

    approved = [
        mv
        for mv in MlflowClient().search_model_versions(f"name='{name}'")
        if mv.tags.get("shipyard.promotion.champion") == "passed" and str(mv.version) != exclude
    ]
    approved.sort(key=lambda mv: mv.tags.get("shipyard.promotion.champion.time", ""))
    return str(approved[-1].version) if approved else None


def guard_champion(event: AliasEvent) -> str:
    """Revert a @champion that no passed decision put there; returns what was done."""
    from shipyard import registry

    mv = registry.resolve(event.model, event.version)
    if mv.tags.get("shipyard.promotion.champion") == "passed":
        return f"champion {event.version} approved by a promotion decision"
    back = last_approved_champion(event.model, exclude=event.version)
    if back is None:
        action = "alias removed (no approved champion to return to)"
    else:
        action = f"reverted to version {back}"
    # Report first, then act: whoever sees the alias move can already read why.
    reason = f"unapproved champion alias {action}"
    registry.set_version_tags(event.model, event.version, {"shipyard.guard.champion": reason})
    record = {"model": event.model, "version": event.version, "action": action}
    append_jsonl("audit/guard.jsonl", {**record, "time": time.time()})
    if back is None:
        registry.delete_alias(event.model, registry.CHAMPION)
    else:
        registry.set_alias(event.model, registry.CHAMPION, back)
    return f"unapproved champion {event.version}: {action}"

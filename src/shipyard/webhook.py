"""Registry events into delivery: MLflow webhook deliveries, checked, de-duplicated, forwarded.

MLflow OSS signs each delivery with HMAC-SHA256 over `<delivery id>.<timestamp>.<body>`
(header `X-MLflow-Signature: v1,<base64>`). We reject a bad or missing signature and a stale
timestamp, remember a delivery id once its action succeeded (a retry of a failed one acts
again), and for a new `@challenger` send a GitHub `repository_dispatch` (event `model-promoted`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shipyard.errors import ShipyardError
from shipyard.grant import Grant, required_key, verified
from shipyard.runtime import append_jsonl, lock, runtime_dir

SIGNATURE_HEADER = "X-MLflow-Signature"
DELIVERY_HEADER = "X-MLflow-Delivery-Id"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERIES = "webhook/deliveries.jsonl"
DISPATCH_EVENT = "model-promoted"
_STAMP = re.compile(r"[0-9]{1,12}")


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
    # MLflow sends whole seconds; `nan`, `inf` or `1e9` would slip through a float comparison.
    if not _STAMP.fullmatch(stamp):
        raise Rejected(401, f"delivery {delivery}: timestamp {stamp[:20]!r} is not whole seconds")
    age = now - int(stamp)
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
        except (ValueError, RecursionError):  # also not UTF-8, or nested past the parser
            raise Rejected(400, "body is not JSON") from None
        if not isinstance(payload, dict):
            raise Rejected(400, f"body is a JSON {type(payload).__name__}, not an object")
        if (payload.get("entity"), payload.get("action")) != ("model_version_alias", "created"):
            return None
        data = payload.get("data")
        if not isinstance(data, dict):
            raise Rejected(400, "alias event: data is not an object")
        fields = []
        for key in ("name", "alias", "version"):
            value = data.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and key == "version":
                value = str(value)
            if not isinstance(value, str) or not value or len(value) > 256:
                raise Rejected(400, f"alias event: data.{key} is missing or not a short string")
            fields.append(value)
        return cls(*fields)


def delivered(delivery_id: str, folder: Path | None = None) -> bool:
    """True once an action for this id has succeeded (MLflow retries reuse the id)."""
    path = (folder or runtime_dir()) / DELIVERIES
    if not path.exists():
        return False
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["delivery_id"] == delivery_id:
                return True
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return False


def deliver_once(delivery_id: str, act: Callable[[], str]) -> str:
    """Run `act` unless this delivery already succeeded: at least once, never twice on success.

    The id is recorded only after `act` returns, so a failed action (GitHub's 500) raises, the
    receiver answers 5xx, and MLflow's retry of the same delivery acts again. The lock spans
    the check, the action and the record, so a retry racing the first attempt waits for it.
    """
    key = hashlib.sha256(delivery_id.encode()).hexdigest()[:16]
    with lock(f"webhook-delivery-{key}"):
        if delivered(delivery_id):
            return f"duplicate delivery {delivery_id} ignored"
        outcome = act()
        append_jsonl(DELIVERIES, {"delivery_id": delivery_id, "time": time.time()})
    return outcome


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
    import httpx

    try:
        response = httpx.post(
            f"{api}/repos/{repo}/dispatches",
            json={"event_type": event_type, "client_payload": payload},
            headers={
                "Accept": "application/vnd.github+json",
                "Authorization": f"Bearer {token}",
                "X-GitHub-Api-Version": "2022-11-28",
            },
            timeout=30,
        )
        response.raise_for_status()  # GitHub's 5xx must fail the delivery, so MLflow retries
    except httpx.HTTPError as err:
        raise ShipyardError(f"dispatch: {event_type} to {repo} failed: {err}") from None
    return response.status_code


def newest_grant(name: str, key: str) -> Grant | None:
    """The verified grant that last made a version champion: a promotion or a rollback.

    The newest one names the version that should hold @champion now. Older grants do not:
    a version that was champion and then rolled back keeps its grant, and must not be
    approved again by setting the alias by hand.
    """
    from shipyard import registry
    from shipyard.promotion import decision_tag

    found = []
    for mv in registry.versions(name):
        for rank, action in enumerate(("champion", "rollback")):  # a tie goes to the rollback
            grant = verified(mv, decision_tag(action), key)
            if grant is not None and grant.value == "passed":
                found.append((grant.time, rank, int(grant.version), grant))
    return max(found, key=lambda item: item[:3])[3] if found else None


def guard_champion(event: AliasEvent) -> str:
    """Put @champion back where the newest signed decision put it; returns what was done.

    Idempotent: an event about a version that no longer holds the alias (a retry, or a
    promotion since) changes nothing.
    """
    from shipyard import registry

    key = required_key("guard")
    holder = registry.version_by_alias(event.model, registry.CHAMPION)
    if holder is None or str(holder.version) != event.version:
        now = holder.version if holder else "nobody"
        return f"champion {event.version}: alias has moved since (now {now}); nothing to do"
    grant = newest_grant(event.model, key)
    if grant is not None and grant.version == event.version:
        return f"champion {event.version} approved by a signed {grant.tag} decision"
    if grant is None:
        action = "alias removed (no signed decision to return to)"
    else:
        action = f"reverted to version {grant.version}"
    # Report first, then act: whoever sees the alias move can already read why.
    reason = f"unapproved champion alias {action}"
    registry.set_version_tags(event.model, event.version, {"shipyard.guard.champion": reason})
    record = {"model": event.model, "version": event.version, "action": action}
    append_jsonl("audit/guard.jsonl", {**record, "time": time.time()})
    if grant is None:
        registry.delete_alias(event.model, registry.CHAMPION)
    else:
        registry.set_alias(event.model, registry.CHAMPION, grant.version)
    return f"unapproved champion {event.version}: {action}"

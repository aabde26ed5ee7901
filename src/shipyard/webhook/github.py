"""GitHub `repository_dispatch`: how a registry event starts a workflow."""

from __future__ import annotations

import os
from typing import Any

from shipyard.errors import ShipyardError
from shipyard.webhook.delivery import AliasEvent

DISPATCH_EVENT = "model-promoted"


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

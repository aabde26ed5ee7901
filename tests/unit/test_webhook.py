"""Webhook deliveries: MLflow's own signatures verify, forgeries and replays do not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shipyard import webhook

SECRET = "hush"
BODY = json.dumps(
    {
        "entity": "model_version_alias",
        "action": "created",
        "data": {"name": "fraud-detector", "alias": "challenger", "version": "4"},
    }
)


def headers(delivery: str = "d-1", stamp: str = "1000", body: str = BODY) -> dict[str, str]:
    from mlflow.webhooks.delivery import _generate_hmac_signature

    return {
        "X-MLflow-Delivery-Id": delivery,
        "X-MLflow-Timestamp": stamp,
        "X-MLflow-Signature": _generate_hmac_signature(SECRET, delivery, stamp, body),
    }


def test_mlflow_signed_delivery_verifies() -> None:
    assert webhook.verify(SECRET, headers(), BODY.encode(), now=1010) == "d-1"


@pytest.mark.parametrize("change", ["secret", "body", "delivery", "missing", "stale", "stamp"])
def test_forged_or_stale_deliveries_are_rejected(change: str) -> None:
    given, body, secret, now = headers(), BODY.encode(), SECRET, 1010.0
    if change == "secret":
        secret = "guess"
    elif change == "body":
        body = body.replace(b'"4"', b'"5"')
    elif change == "delivery":
        given["X-MLflow-Delivery-Id"] = "d-2"
    elif change == "missing":
        del given["X-MLflow-Signature"]
    elif change == "stale":
        now = 1000 + 3600
    else:
        given["X-MLflow-Timestamp"] = "soon"
    with pytest.raises(webhook.Rejected) as info:
        webhook.verify(secret, given, body, now=now)
    assert info.value.status == 401


def test_parse_alias_event() -> None:
    event = webhook.AliasEvent.parse(BODY.encode())
    assert event == webhook.AliasEvent("fraud-detector", "challenger", "4")
    other = json.dumps({"entity": "model_version", "action": "created", "data": {}}).encode()
    assert webhook.AliasEvent.parse(other) is None
    with pytest.raises(webhook.Rejected):
        webhook.AliasEvent.parse(b"not json")


def test_duplicate_delivery_acts_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPYARD_RUNTIME_DIR", str(tmp_path))
    assert webhook.first_delivery("d-1") is True
    assert webhook.first_delivery("d-1") is False
    assert webhook.first_delivery("d-2") is True


def test_dispatch_needs_repository_and_token(monkeypatch: pytest.MonkeyPatch) -> None:
    from shipyard.errors import ShipyardError

    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    monkeypatch.setenv("GITHUB_REPOSITORY", "acme/shipyard")
    with pytest.raises(ShipyardError, match="GITHUB_TOKEN"):
        webhook.repository_dispatch(webhook.AliasEvent("m", "challenger", "1"))
    monkeypatch.setenv("GITHUB_TOKEN", "t")
    monkeypatch.setenv("GITHUB_API_URL", "http://10.0.0.1")
    with pytest.raises(ShipyardError, match="must be https"):
        webhook.repository_dispatch(webhook.AliasEvent("m", "challenger", "1"))

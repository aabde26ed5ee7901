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


@pytest.mark.parametrize("stamp", ["nan", "inf", "-inf", "1e3", "1000.0", " 1000", "-1000", ""])
def test_timestamp_must_be_whole_seconds(stamp: str) -> None:
    """A signed `nan` used to pass: every comparison with NaN is false."""
    body = BODY.encode()
    given = headers(stamp=stamp)
    if not stamp:
        given["X-MLflow-Timestamp"] = ""
    with pytest.raises(webhook.Rejected) as info:
        webhook.verify(SECRET, given, body, now=1010)
    assert info.value.status == 401


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b'"x"',
        b"\xff\xfe",
        b"[" * 100_000,
        b'{"entity": "model_version_alias", "action": "created", "data": []}',
        b'{"entity": "model_version_alias", "action": "created", "data": {"name": "m"}}',
        b'{"entity": "model_version_alias", "action": "created",'
        b' "data": {"name": "m", "alias": ["champion"], "version": "1"}}',
        b'{"entity": "model_version_alias", "action": "created",'
        b' "data": {"name": "m", "alias": "champion", "version": true}}',
    ],
)
def test_wrong_shapes_are_400_not_a_crash(body: bytes) -> None:
    with pytest.raises(webhook.Rejected) as info:
        webhook.AliasEvent.parse(body)
    assert info.value.status == 400


def test_delivery_counts_only_after_its_action_succeeded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shipyard.errors import ShipyardError

    monkeypatch.setenv("SHIPYARD_RUNTIME_DIR", str(tmp_path))
    sent: list[str] = []

    def failing() -> str:
        raise ShipyardError("dispatch: GitHub answered 500")

    def dispatch() -> str:
        sent.append("d-1")
        return "dispatched"

    with pytest.raises(ShipyardError):
        webhook.deliver_once("d-1", failing)
    assert not webhook.delivered("d-1")  # MLflow's retry must act again
    assert webhook.deliver_once("d-1", dispatch) == "dispatched"
    assert "ignored" in webhook.deliver_once("d-1", dispatch)  # a replay after success
    assert sent == ["d-1"]
    assert webhook.deliver_once("d-2", dispatch) == "dispatched"


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


def test_answers_are_counted_by_status_on_metrics() -> None:
    """What `ShipyardWebhookFailing` watches: a failed action is a 502, a forgery a 401,
    both counted on the receiver's own /metrics."""
    import asyncio

    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    from shipyard.errors import ShipyardError
    from shipyard.webhook.receiver import create_app

    def act(event: webhook.AliasEvent) -> str:
        raise ShipyardError(f"dispatch for {event.alias} failed")

    async def exchange() -> tuple[list[int], str]:
        app = create_app(SECRET, act, max_age=10**12)
        forged = {**headers("d-10"), "X-MLflow-Signature": "v1,AAAA"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hook") as client:
            codes = [
                (await client.post("/webhook", content=BODY, headers=given)).status_code
                for given in (headers("d-9"), forged, forged)
            ]
            page = await client.get("/metrics")
        return codes, page.text

    codes, text = asyncio.run(exchange())
    assert codes == [502, 401, 401]
    counts = {
        sample.labels["code"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "shipyard_webhook_deliveries_total"
    }
    assert counts == {"502": 1.0, "401": 2.0}

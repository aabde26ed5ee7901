"""MLflow webhook deliveries: authentic, fresh, well-formed, and acted on at least once.

MLflow OSS signs each delivery with HMAC-SHA256 over `<delivery id>.<timestamp>.<body>`
(header `X-MLflow-Signature: v1,<base64>`). We reject a bad or missing signature and a stale
timestamp, and remember a delivery id once its action succeeded (a retry of a failed one
acts again).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shipyard.errors import ShipyardError
from shipyard.runtime import append_jsonl, lock, runtime_dir

SIGNATURE_HEADER = "X-MLflow-Signature"
DELIVERY_HEADER = "X-MLflow-Delivery-Id"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERIES = "webhook/deliveries.jsonl"
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

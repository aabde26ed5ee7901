"""Grants: decisions signed by the promoter, so that a registry tag alone approves nothing.

Anyone with write access to the registry can set any tag, so `shipyard.promotion.champion=
passed` proves nothing by itself. The promoter (CI, `shipyard promote`/`rollback`, the canary
controller) also writes an HMAC-SHA256 under SHIPYARD_DECISION_KEY over what the decision is
about: model, version, the version's run id as MLflow holds it (not a tag), the tag, its value
and the time. The champion gate and the champion guard trust only a grant that verifies, so a
copied signature fails on any other version, value or time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shipyard.errors import ShipyardError

KEY_ENV = "SHIPYARD_DECISION_KEY"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Grant:
    model: str
    version: str
    run_id: str
    tag: str  # e.g. shipyard.promotion.champion; its value is the decision
    value: str
    time: str  # ISO-8601 UTC to the second; orders grants

    @classmethod
    def of(cls, mv: Any, tag: str, value: str, time: str) -> Grant:
        return cls(str(mv.name), str(mv.version), str(mv.run_id), tag, value, time)

    def signature(self, key: str) -> str:
        fields = [self.model, self.version, self.run_id, self.tag, self.value, self.time]
        message = json.dumps(fields, separators=(",", ":")).encode()
        return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()

    def tags(self, key: str | None) -> dict[str, str]:
        out = {self.tag: self.value, f"{self.tag}.time": self.time}
        if key is not None:
            out[f"{self.tag}.signature"] = self.signature(key)
        return out


def key() -> str | None:
    return os.environ.get(KEY_ENV) or None


def required_key(who: str) -> str:
    """The key, for those that must judge grants (the guard): unsigned means unapproved."""
    found = key()
    if found is None:
        raise ShipyardError(f"{who}: {KEY_ENV} is not set; cannot verify signed decisions")
    return found


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def stamp(mv: Any, tag: str, value: str, time: str | None = None) -> dict[str, str]:
    """The tags recording `tag=value` on version `mv`: signed when the key is set."""
    found = key()
    if found is None:
        log.warning("%s is not set: %s=%s is recorded unsigned", KEY_ENV, tag, value)
    return Grant.of(mv, tag, value, time or now()).tags(found)


def verified(mv: Any, tag: str, key: str) -> Grant | None:
    """The version's grant for `tag` if its signature holds for this very version, else None."""
    tags = dict(mv.tags)
    value, time, sent = (tags.get(f"{tag}{suffix}") for suffix in ("", ".time", ".signature"))
    if not (value and time and sent):
        return None
    grant = Grant.of(mv, tag, value, time)
    return grant if hmac.compare_digest(sent.encode(), grant.signature(key).encode()) else None


def trusted_value(mv: Any, tag: str) -> str:
    """What the gate may believe about `tag`: its value if it verifies, `forged` if it does
    not, `missing` if absent. With the key unset, the bare tag is believed, with a warning."""
    value = dict(mv.tags).get(tag)
    if value is None:
        return "missing"
    found = key()
    if found is None:
        log.warning("%s is not set: trusting %s=%s unverified", KEY_ENV, tag, value)
        return value
    return value if verified(mv, tag, found) is not None else "forged (signature does not verify)"

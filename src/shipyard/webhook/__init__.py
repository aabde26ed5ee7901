"""Registry events into delivery: MLflow webhook deliveries checked (`delivery`), turned into a
GitHub `repository_dispatch` (`github`) or a local canary, and @champion guarded (`guard`);
`receiver` is the HTTP app in front of them."""

from shipyard.webhook.delivery import (
    DELIVERIES,
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    AliasEvent,
    Rejected,
    deliver_once,
    delivered,
    signature,
    verify,
)
from shipyard.webhook.github import DISPATCH_EVENT, dispatch, repository_dispatch
from shipyard.webhook.guard import guard_champion, newest_grant

__all__ = [
    "DELIVERIES",
    "DELIVERY_HEADER",
    "DISPATCH_EVENT",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "AliasEvent",
    "Rejected",
    "deliver_once",
    "delivered",
    "dispatch",
    "guard_champion",
    "newest_grant",
    "repository_dispatch",
    "signature",
    "verify",
]

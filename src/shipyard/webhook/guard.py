"""The champion guard: @champion goes back to where the newest signed decision put it.

MLflow OSS cannot restrict who sets an alias; the guard reverts what no signed promotion or
rollback decision (see `grant`) named.
"""

from __future__ import annotations

import time

from shipyard.grant import Grant, required_key, verified
from shipyard.runtime import append_jsonl
from shipyard.webhook.delivery import AliasEvent


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

"""The alias transaction: judge a version, then move @challenger/@champion/@previous under
the registry lock, or roll back; the signed record always goes before the alias moves."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np

from shipyard.artifacts import progress
from shipyard.policy import Policy
from shipyard.promotion.gates import (
    alert_volume_gate,
    calibration_gate,
    canary_gate,
    pipeline_gate,
    regression_gate,
    signature_gate,
    threshold_gates,
)
from shipyard.promotion.record import (
    CANARY_TAG,
    STRATEGIES,
    STRATEGY_TAG,
    TARGETS,
    Decision,
    actor,
    store,
)
from shipyard.tags import TAG, VersionTags


def _frozen_test_scores(
    name: str, version: str, champion: str, tags: VersionTags
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both models on the version's frozen test set: the same rows, the same labels."""
    import tempfile
    from pathlib import Path

    import pandas as pd

    from shipyard import registry
    from shipyard.errors import ShipyardError

    if tags.test_uri is None or tags.label_column is None:
        raise ShipyardError(
            f"{name} version {version}: no frozen test set "
            f"(tags {TAG['test_uri']}, {TAG['label_column']}); register it again"
        )
    with tempfile.TemporaryDirectory(prefix="shipyard-test-") as tmp:
        test = pd.read_parquet(registry.download(tags.test_uri, Path(tmp)))
    fields = {v: list(registry.signature(name, v)) for v in (version, champion)}
    missing = sorted(set(fields[champion]) - set(test.columns))
    if missing:
        raise ShipyardError(
            f"champion version {champion} needs fields {missing} absent from the test set"
        )
    new = registry.load_model(name, version).predict_proba(test[fields[version]])[:, 1]
    old = registry.load_model(name, champion).predict_proba(test[fields[champion]])[:, 1]
    return test[tags.label_column].to_numpy(), new, old


def promote(
    name: str,
    ref: str,
    to: str,
    policy: Policy,
    *,
    force: bool = False,
    reason: str | None = None,
    allow_schema_change: bool = False,
    evidence: dict[str, Any] | None = None,
    strategy: str | None = None,
) -> dict[str, Any]:
    """Run the gates; on pass move the aliases. Raises GateFailed naming the first failed gate.

    `evidence` (e.g. the canary analysis) is attached to the decision record as it is.
    `strategy` (to challenger only) is how the deployment that follows should expose it.
    """
    from shipyard import bento, grant, registry, runtime
    from shipyard.errors import GateFailed, ShipyardError

    if to not in TARGETS:
        raise ShipyardError(f"promote: --to must be one of {TARGETS}, not {to!r}")
    if force and not reason:
        raise ShipyardError("promote: --force needs --reason, which is recorded")
    if strategy is not None and strategy not in STRATEGIES:
        raise ShipyardError(f"promote: --strategy must be one of {STRATEGIES}, not {strategy!r}")
    if strategy is not None and to != "challenger":
        raise ShipyardError(f"promote: --strategy {strategy} needs --to challenger")
    mv = registry.resolve(name, ref)
    version, tags = str(mv.version), VersionTags.of(mv)
    holder = registry.version_by_alias(name, registry.CHAMPION)
    champion = str(holder.version) if holder else None
    if to == "champion" and champion == version:
        raise ShipyardError(f"promote: {name} version {version} is already @champion")

    decision = Decision(name, version, to, champion)
    decision.gates.append(pipeline_gate(tags))
    decision.gates += threshold_gates(tags, policy)
    if champion is None:
        decision.notes.append(
            "first model: no champion to compare with; may become champion without a canary"
        )
    elif champion != version:
        sig = signature_gate(
            registry.signature(name, version),
            registry.signature(name, champion),
            allow_schema_change,
        )
        decision.gates.append(sig)
        if sig.passed:
            cfg = policy.promotion.no_regression
            y, new, old = _frozen_test_scores(name, version, champion, tags)
            gate, delta = regression_gate(y, new, old, cfg, policy.promotion.alert_budget)
            decision.gates.append(gate)
            decision.deltas[cfg.metric] = delta
            loss, loss_delta = calibration_gate(y, new, old, policy)
            decision.gates.append(loss)
            decision.deltas[f"{policy.promotion.calibration.metric}_relative"] = loss_delta
            thresholds = (
                bento.decision_threshold(policy, tags),
                bento.decision_threshold(
                    policy, VersionTags.of(holder) if holder else VersionTags()
                ),
            )
            volume, counts = alert_volume_gate(
                new,
                old,
                thresholds,
                policy.promotion.alert_volume,
                policy.promotion.alert_budget,
                policy.promotion.no_regression.confidence,
            )
            decision.gates.append(volume)
            decision.deltas["alert_volume"] = counts
    if to == "champion":
        canary = grant.trusted_value(mv, CANARY_TAG)
        decision.gates.append(canary_gate(canary, champion is None, force, reason))
    extra = {"forced": force, "reason": reason, **({"evidence": evidence} if evidence else {})}
    if strategy is not None:
        extra["strategy"] = strategy
    record = decision.record(tags, actor(), extra)

    failed = decision.failed_gate()
    if failed is not None:
        store(mv, record)
        raise GateFailed(f"promote: {name} version {version} to @{to}: gate {failed.describe()}")
    # Optimistic concurrency: gates were judged against `champion`; commit only if it still holds.
    progress("promote", "gates passed; waiting for the registry lock")
    with runtime.lock(f"registry-{name}"):
        now = registry.version_by_alias(name, registry.CHAMPION)
        current = str(now.version) if now else None
        if current != champion:
            record["decision"] = "failed"
            record["notes"].append(
                f"champion changed from {champion} to {current} during promotion"
            )
            store(mv, record)
            raise GateFailed(
                f"promote: {name} version {version}: champion changed during promotion "
                f"(was {champion}, now {current}); run it again"
            )
        # The record goes first: the champion guard checks it when the alias event arrives.
        store(mv, record)
        if to == "challenger":
            # Before the alias: its webhook starts the deployment, which reads this tag.
            registry.set_version_tags(name, version, {STRATEGY_TAG: strategy or "canary"})
            held = registry.version_by_alias(name, registry.CHALLENGER)
            # Setting it again would fire another alias webhook, and deploy.yml, which
            # re-judges the gates, would dispatch itself forever.
            if held is None or str(held.version) != version:
                registry.set_alias(name, registry.CHALLENGER, version)
        else:
            if champion is not None:
                registry.set_alias(name, registry.PREVIOUS, champion)
            registry.set_alias(name, registry.CHAMPION, version)
            challenger = registry.version_by_alias(name, registry.CHALLENGER)
            if challenger is not None and str(challenger.version) == version:
                registry.delete_alias(name, registry.CHALLENGER)
    return record


def rollback(name: str, reason: str, replacing: str | None = None) -> dict[str, Any] | None:
    """Make @previous the champion again, at once; no gate stands in the way of going back.

    `replacing`: only if that version is still @champion, checked under the registry lock
    (an alert about a champion that a promotion has since replaced must not undo it);
    None when it is not."""
    from shipyard import registry, runtime
    from shipyard.errors import ShipyardError

    with runtime.lock(f"registry-{name}"):
        champ = registry.version_by_alias(name, registry.CHAMPION)
        if replacing is not None and (champ is None or str(champ.version) != replacing):
            return None
        prev = registry.version_by_alias(name, registry.PREVIOUS)
        if prev is None:
            raise ShipyardError(f"rollback: {name} has no @previous version to roll back to")
        record = {
            "model": name,
            "action": "rollback",
            "decision": "passed",
            "version": str(prev.version),
            "replaced": str(champ.version) if champ else None,
            "reason": reason,
            "actor": actor(),
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        if champ is not None:
            registry.set_version_tags(name, str(champ.version), {TAG["rolled_back"]: reason})
        # The signed record goes first: the champion guard checks it when the alias event arrives.
        store(prev, record)
        registry.set_alias(name, registry.CHAMPION, str(prev.version))
        registry.delete_alias(name, registry.PREVIOUS)
    return record

"""Promotion gates, decision records, rollback and concurrency against a real sqlite registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from shipyard import promotion, registry
from shipyard.errors import GateFailed, ShipyardError
from shipyard.policy import Policy, load_policy
from tests.conftest import REPO
from tests.integration.registry_fixtures import NAME, register
from tests.integration.team_stack import backend, team_stack

__all__ = ["backend", "team_stack"]  # fixtures


@pytest.fixture(autouse=True)
def runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SHIPYARD_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("SHIPYARD_ACTOR", "ci-bot")
    return tmp_path / "runtime"


@pytest.fixture
def policy() -> Policy:
    raw = yaml.safe_load((REPO / "registry" / "policy.yaml").read_text())
    raw["promotion"]["no_regression"]["resamples"] = 200
    return Policy.model_validate(raw)


def alias(name: str) -> str | None:
    mv = registry.version_by_alias(NAME, name)
    return None if mv is None else str(mv.version)


def audit(runtime_dir: Path) -> list[dict[str, Any]]:
    lines = (runtime_dir / promotion.AUDIT_LOG).read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_repository_policy_loads() -> None:
    assert load_policy(REPO / "registry" / "policy.yaml").promotion.no_regression.tolerance > 0


def test_first_model_becomes_champion_without_canary(
    tmp_path: Path, policy: Policy, runtime_dir: Path, backend: str
) -> None:
    v1 = register(tmp_path)
    record = promotion.promote(NAME, v1, "champion", policy)
    assert record["decision"] == "passed" and record["first_model"] is True
    assert any("first model" in n for n in record["notes"])
    assert alias("champion") == v1 and alias("previous") is None
    tags = registry.resolve(NAME, v1).tags
    assert tags["shipyard.promotion.champion"] == "passed"
    assert tags["shipyard.promotion.champion.actor"] == "ci-bot"
    [logged] = audit(runtime_dir)
    assert logged["version"] == v1 and logged["data_hash"] == "md5:test"
    assert logged["git_sha"] == "abc123" and logged["actor"] == "ci-bot"
    from mlflow import MlflowClient

    files = MlflowClient().list_artifacts(registry.resolve(NAME, v1).run_id, "promotions")
    assert len(files) == 1 and files[0].path.endswith("-champion.json")


def test_equal_model_passes_the_no_regression_gate(tmp_path: Path, policy: Policy) -> None:
    v1 = register(tmp_path)
    promotion.promote(NAME, v1, "champion", policy)
    v2 = register(tmp_path)  # same data, same seed: the same model again
    record = promotion.promote(NAME, v2, "challenger", policy)
    delta = record["deltas"]["average_precision"]
    assert delta["delta"] == pytest.approx(0) and delta["ci_low"] == pytest.approx(0)
    assert alias("challenger") == v2 and alias("champion") == v1


def test_worse_model_is_rejected_by_the_interval(
    tmp_path: Path, policy: Policy, runtime_dir: Path
) -> None:
    v1 = register(tmp_path)
    promotion.promote(NAME, v1, "champion", policy)
    bad = register(tmp_path, noise=True, seed=3)
    with pytest.raises(GateFailed, match=r"gate no_regression_average_precision .*: failed"):
        promotion.promote(NAME, bad, "challenger", policy)
    assert alias("challenger") is None
    record = audit(runtime_dir)[-1]
    assert record["decision"] == "failed" and record["version"] == bad
    delta = record["deltas"]["average_precision"]
    assert delta["ci_high"] < 0 and delta["confidence"] == 0.95
    assert registry.resolve(NAME, bad).tags["shipyard.promotion.challenger"] == "failed"


def test_absolute_threshold_and_pipeline_gates(tmp_path: Path, policy: Policy) -> None:
    low = register(tmp_path, tags={"shipyard.metrics.test.roc_auc": "0.6"})
    with pytest.raises(GateFailed, match=r"gate min_roc_auc 0\.6000 >= 0\.8000: failed"):
        promotion.promote(NAME, low, "challenger", policy)
    unchecked = register(tmp_path, tags={"shipyard.gates.pipeline": "failed"})
    with pytest.raises(GateFailed, match="gate pipeline_gates"):
        promotion.promote(NAME, unchecked, "challenger", policy)


def test_schema_change_needs_the_flag(tmp_path: Path, policy: Policy) -> None:
    v1 = register(tmp_path)
    promotion.promote(NAME, v1, "champion", policy)
    wider = register(tmp_path, extra=True, seed=1)
    with pytest.raises(GateFailed, match=r"gate signature .*added \['channel_score'\]"):
        promotion.promote(NAME, wider, "challenger", policy)
    record = promotion.promote(NAME, wider, "challenger", policy, allow_schema_change=True)
    assert record["decision"] == "passed"


def test_a_versions_signature_is_read_without_leaving_a_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    """Every deploy, shadow and promotion reads it. From a server's artifact store, MLflow's
    `get_model_info` downloaded it into a temporary folder it never removed."""
    v1, wider = register(tmp_path), register(tmp_path, extra=True, seed=1)
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    assert registry.signature(NAME, v1) == {"tx_amount": "double", "risk": "double"}
    assert list(registry.signature(NAME, wider)) == ["tx_amount", "risk", "channel_score"]
    assert list(temp.iterdir()) == []


def test_champion_needs_a_passed_canary_or_a_recorded_override(
    tmp_path: Path, policy: Policy, runtime_dir: Path
) -> None:
    v1 = register(tmp_path)
    promotion.promote(NAME, v1, "champion", policy)
    v2 = register(tmp_path, seed=1)
    promotion.promote(NAME, v2, "challenger", policy)
    with pytest.raises(GateFailed, match="gate canary canary missing"):
        promotion.promote(NAME, v2, "champion", policy)
    with pytest.raises(ShipyardError, match="--force needs --reason"):
        promotion.promote(NAME, v2, "champion", policy, force=True)
    assert alias("champion") == v1
    record = promotion.promote(
        NAME, "@challenger", "champion", policy, force=True, reason="canary infra down"
    )
    assert record["forced"] is True and record["reason"] == "canary infra down"
    assert alias("champion") == v2 and alias("previous") == v1 and alias("challenger") is None


def test_a_canary_result_is_believed_only_when_its_signature_verifies(
    tmp_path: Path, policy: Policy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hand-set `passed`, a signature copied from another version, or one made under another
    key is `forged`; with the key unset the bare tag is believed (and a warning logged)."""
    from shipyard import grant

    v1 = register(tmp_path)
    promotion.promote(NAME, v1, "champion", policy)
    tag = promotion.CANARY_TAG
    donor = register(tmp_path, seed=2, canary="passed")
    copied = dict(registry.resolve(NAME, donor).tags)
    monkeypatch.setenv(grant.KEY_ENV, "another-key")
    other_key = grant.stamp(registry.resolve(NAME, donor), tag, "passed")
    monkeypatch.setenv(grant.KEY_ENV, "test-decision-key")
    forgeries: dict[str, Any] = {
        "bare tag": lambda v: {tag: "passed"},
        "copied from another version": lambda v: {
            k: val for k, val in copied.items() if k.startswith(tag)
        },
        "signed under another key": lambda v: other_key,
        "value changed after signing": lambda v: {
            **grant.stamp(registry.resolve(NAME, v), tag, "rejected"),
            tag: "passed",
        },
    }
    for case, forge in forgeries.items():
        version = register(tmp_path, seed=1)
        registry.set_version_tags(NAME, version, forge(version))
        with pytest.raises(GateFailed, match="gate canary canary forged"):
            promotion.promote(NAME, version, "champion", policy)
        assert alias("champion") == v1, case
    monkeypatch.delenv(grant.KEY_ENV)
    record = promotion.promote(NAME, version, "champion", policy)
    assert record["decision"] == "passed"
    unsigned = registry.resolve(NAME, version)
    assert grant.verified(unsigned, promotion.decision_tag("champion"), "test-decision-key") is None


def test_passed_canary_allows_champion(tmp_path: Path, policy: Policy) -> None:
    v1 = register(tmp_path)
    promotion.promote(NAME, v1, "champion", policy)
    v2 = register(tmp_path, seed=1, canary="passed")
    record = promotion.promote(NAME, v2, "champion", policy)
    assert record["decision"] == "passed" and alias("previous") == v1


def test_rollback(tmp_path: Path, policy: Policy, runtime_dir: Path, backend: str) -> None:
    v1 = register(tmp_path)
    promotion.promote(NAME, v1, "champion", policy)
    with pytest.raises(ShipyardError, match="no @previous version"):
        promotion.rollback(NAME, "oops")
    v2 = register(tmp_path, seed=1, canary="passed")
    promotion.promote(NAME, v2, "champion", policy)
    # News about a champion that has since been replaced rolls nothing back (an alert's).
    assert promotion.rollback(NAME, "stale alert", replacing=v1) is None
    assert alias("champion") == v2 and alias("previous") == v1
    record = promotion.rollback(NAME, "error rate up", replacing=v2)
    assert record is not None and (record["version"], record["replaced"]) == (v1, v2)
    assert alias("champion") == v1 and alias("previous") is None
    assert registry.resolve(NAME, v2).tags["shipyard.rolled_back"] == "error rate up"
    assert audit(runtime_dir)[-1]["action"] == "rollback"


def _race(
    tmp_path: Path, raw_params: dict[str, Any], contenders: list[str], machines: list[Path]
) -> tuple[list[int], list[list[str]]]:
    """Each contender promoted to champion by its own process, from its own working folder;
    the commit step held until both have judged against the same champion."""
    from shipyard import runtime

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    waiting: list[str] = []

    def watch(proc: subprocess.Popen[str], out: list[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            out.append(line)
            if "waiting for the registry lock" in line:
                waiting.append(line)

    with runtime.lock(f"registry-{NAME}"):  # the lock both processes are about to take
        procs, logs, threads = [], [], []
        for version, machine in zip(contenders, machines, strict=True):
            machine.mkdir(parents=True, exist_ok=True)
            (machine / "params.yaml").write_text(yaml.safe_dump(raw_params))
            policy = str(REPO / "registry" / "policy.yaml")
            proc = subprocess.Popen(
                ["shipyard", "promote", NAME, version, "--to", "champion", "--policy", policy],
                cwd=machine,
                env={**env, "SHIPYARD_RUNTIME_DIR": str(machine / "runtime")},
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            log: list[str] = []
            thread = threading.Thread(target=watch, args=(proc, log), daemon=True)
            thread.start()
            procs.append(proc)
            logs.append(log)
            threads.append(thread)
        deadline = time.monotonic() + 120
        while len(waiting) < 2 and time.monotonic() < deadline:
            assert all(p.poll() is None for p in procs), logs
            time.sleep(0.2)
        assert len(waiting) == 2, logs
    codes = [p.wait(timeout=60) for p in procs]
    for t in threads:
        t.join(timeout=5)
    return codes, logs


def test_concurrent_promotions_do_not_both_win(
    tmp_path: Path, runtime_dir: Path, raw_params: dict[str, Any], backend: str
) -> None:
    """Two real processes judge against the same champion; only the first to commit wins.

    On sqlite both share one working folder, hence one file lock. Against the team stack each
    has its own folder, as on two machines: only the advisory lock on PostgreSQL is shared.
    Several rounds, each against the champion the last one left.
    """
    v1 = register(tmp_path)
    policy = load_policy(REPO / "registry" / "policy.yaml")
    promotion.promote(NAME, v1, "champion", policy)
    champion, rounds = v1, 3 if backend == "stack" else 1
    for round_ in range(rounds):
        contenders = [register(tmp_path, seed=s, canary="passed") for s in (1, 2)]
        if backend == "stack":
            machines = [tmp_path / f"machine-{round_}-{m}" for m in "ab"]
        else:
            machines = [runtime_dir.parent, runtime_dir.parent]
        codes, logs = _race(tmp_path, raw_params, contenders, machines)
        assert sorted(codes) == [0, 1], logs
        loser = logs[codes.index(1)]
        winner = contenders[codes.index(0)]
        assert "champion changed during promotion" in loser[-1]
        assert f"was {champion}, now {winner}" in loser[-1]  # the one line names the winner
        assert alias("champion") == winner and alias("previous") == champion
        champion = winner


# fault -> the promotion gate that must name it (ranking is the same, or as good)
PROMOTION_FAULTS = {
    "shrunk": "no_regression_log_loss",
    "inflated": "no_regression_log_loss",
    "silent": "alert_volume",
    "noisy": "alert_volume",
}


@pytest.mark.parametrize("fault", list(PROMOTION_FAULTS))
def test_calibration_and_decision_faults_fail_promotion(
    tmp_path: Path, policy: Policy, fault: str
) -> None:
    v1 = register(tmp_path)
    promotion.promote(NAME, v1, "champion", policy)
    bad = register(tmp_path, seed=1, fault=fault)
    with pytest.raises(GateFailed, match=f"gate {PROMOTION_FAULTS[fault]} "):
        promotion.promote(NAME, bad, "challenger", policy)
    record = json.loads((tmp_path / "runtime" / promotion.AUDIT_LOG).read_text().splitlines()[-1])
    gates = {g["gate"]: g["passed"] for g in record["gates"]}
    assert gates["no_regression_average_precision"] is True  # the ranking gate cannot see it
    assert gates[PROMOTION_FAULTS[fault]] is False
    assert {"log_loss_relative", "alert_volume"} <= set(record["deltas"])
    assert alias("challenger") is None


def test_an_honest_retrain_passes_the_calibration_and_alert_gates(
    tmp_path: Path, policy: Policy
) -> None:
    v1 = register(tmp_path)
    promotion.promote(NAME, v1, "champion", policy)
    for seed in (1, 2, 3):
        record = promotion.promote(NAME, register(tmp_path, seed=seed), "challenger", policy)
        gates = {g["gate"]: g for g in record["gates"]}
        assert gates["no_regression_log_loss"]["passed"] and gates["alert_volume"]["passed"]
        assert record["deltas"]["alert_volume"]["challenger"] > 0

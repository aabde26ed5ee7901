"""`shipyard stack move`: a model from the laptop's sqlite store to the team server, for real."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from shipyard import grant, promotion, registry, stack, transfer
from shipyard.errors import ShipyardError
from shipyard.policy import Policy
from tests.conftest import DECISION_KEY, REPO
from tests.integration.registry_fixtures import NAME, frame, register
from tests.integration.team_stack import team_stack

__all__ = ["team_stack"]  # fixtures

pytestmark = pytest.mark.stack

CHAMPION = "shipyard.promotion.champion"


@pytest.fixture
def policy() -> Policy:
    raw = yaml.safe_load((REPO / "registry" / "policy.yaml").read_text())
    raw["promotion"]["no_regression"]["resamples"] = 200
    return Policy.model_validate(raw)


@pytest.fixture
def laptop(tmp_path: Path, policy: Policy, monkeypatch: pytest.MonkeyPatch) -> str:
    """A sqlite store as a laptop leaves it: a promoted champion, a deleted version (a gap in
    the numbers), a candidate with a signed canary, and a canary result forged onto v1."""
    monkeypatch.setenv("SHIPYARD_RUNTIME_DIR", str(tmp_path / "runtime"))
    v1 = register(tmp_path)
    promotion.promote(NAME, v1, "champion", policy)
    v2 = register(tmp_path, seed=1)
    v3 = register(tmp_path, seed=2, canary="passed")
    client = registry.client()
    client.delete_model_version(NAME, v2)
    client.set_registered_model_alias(NAME, "candidate", v3)
    client.set_registered_model_tag(NAME, "team", "fraud")
    donor = registry.resolve(NAME, v3).tags
    tag = promotion.CANARY_TAG
    forged = {k: v for k, v in donor.items() if k.startswith(tag)}
    registry.set_version_tags(NAME, v1, forged)  # a signature made for another version
    return os.environ["MLFLOW_TRACKING_URI"]


@pytest.fixture
def server(team_stack: stack.Stack) -> Iterator[str]:
    client = registry.client(team_stack.tracking_uri)
    for model in client.search_registered_models():  # the server outlives each test
        client.delete_registered_model(model.name)
    yield team_stack.tracking_uri


def _versions(uri: str) -> dict[str, Any]:
    return {str(mv.version): mv for mv in registry.versions(NAME, uri)}


def _use(running: stack.Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every later call goes to the server, as after `eval "$(shipyard stack env)"`."""
    import mlflow

    # MLflow exports the registry URI it is given: the patch undoes that after the test
    for key, value in {**running.client_env(), "MLFLOW_REGISTRY_URI": running.tracking_uri}.items():
        monkeypatch.setenv(key, value)
    mlflow.set_tracking_uri(running.tracking_uri)
    mlflow.set_registry_uri(running.tracking_uri)


def test_a_model_moves_whole_with_its_numbers_aliases_and_verifiable_decisions(
    laptop: str,
    server: str,
    team_stack: stack.Stack,
    policy: Policy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from click.testing import CliRunner

    from shipyard.cli import main

    before = _versions(laptop)
    held = registry.client(laptop).get_registered_model(NAME).aliases
    aliases = {k: str(v) for k, v in held.items()}  # sqlite keeps ints, the server strings
    rows = frame(n=50, seed=9)[["tx_amount", "risk"]]
    scores = {v: registry.load_model(NAME, v).predict_proba(rows)[:, 1] for v in before}

    result = CliRunner().invoke(main, ["stack", "move", NAME, "--from", laptop, "--to", server])
    assert result.exit_code == 0, result.output
    assert "2 versions" in result.output and "2 grants signed again" in result.output
    assert "1 copied unverified" in result.output

    _use(team_stack, monkeypatch)
    after = _versions(server)
    assert sorted(after) == sorted(before) == ["1", "3"]  # v2's gap kept: numbers are names
    moved = registry.client(server).get_registered_model(NAME)
    assert dict(moved.aliases) == aliases == {"champion": "1", "candidate": "3"}
    assert dict(moved.tags)["team"] == "fraud"
    old_runs = {before[v].run_id for v in before}
    for v, mv in after.items():
        assert mv.run_id not in old_runs
        run = registry.client(server).get_run(mv.run_id)
        assert run.info.artifact_uri.startswith("mlflow-artifacts:/")  # on S3, via the proxy
        assert set(mv.tags) == set(before[v].tags)
        for key, value in mv.tags.items():  # no tag still names a run of the laptop's store
            assert not any(old in value for old in old_runs), key
        test_uri = mv.tags["shipyard.test_uri"]
        assert mv.run_id in test_uri
        assert registry.download(test_uri, tmp_path / f"test-{v}").exists()
        np.testing.assert_allclose(
            registry.load_model(NAME, v).predict_proba(rows)[:, 1], scores[v]
        )
    # decisions made on the laptop still grant trust, and the forged one still does not
    assert grant.verified(after["1"], CHAMPION, DECISION_KEY) is not None
    assert grant.verified(after["3"], promotion.CANARY_TAG, DECISION_KEY) is not None
    assert grant.verified(after["1"], promotion.CANARY_TAG, DECISION_KEY) is None
    assert grant.verified(after["1"], CHAMPION, "another key") is None
    champion_run = registry.client(server).list_artifacts(after["1"].run_id, "promotions")
    assert champion_run, "the decision record moved with its run"
    # and the team server promotes the moved candidate with the laptop's canary result
    monkeypatch.setenv("SHIPYARD_RUNTIME_DIR", str(tmp_path / "team-runtime"))
    record = promotion.promote(NAME, "3", "champion", policy)
    assert record["decision"] == "passed"
    previous = registry.version_by_alias(NAME, "previous")
    assert previous is not None and previous.version == "1"


def test_a_model_already_on_the_server_is_refused_and_left_alone(
    laptop: str, server: str, tmp_path: Path
) -> None:
    transfer.move(NAME, laptop, server, say=lambda _: None)
    held = {v: dict(mv.tags) for v, mv in _versions(server).items()}
    with pytest.raises(ShipyardError, match=f"{NAME} already exists on {server}"):
        transfer.move(NAME, laptop, server, say=lambda _: None)
    assert {v: dict(mv.tags) for v, mv in _versions(server).items()} == held


def test_a_move_that_fails_midway_leaves_nothing_on_the_server(
    laptop: str, server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = transfer.Transfer._logged_model
    calls: list[str] = []

    def breaks_on_the_second(self: transfer.Transfer, model_id: str) -> str:
        calls.append(model_id)
        if len(calls) == 2:
            raise OSError("connection reset by the artifact proxy")
        return real(self, model_id)

    monkeypatch.setattr(transfer.Transfer, "_logged_model", breaks_on_the_second)
    said: list[str] = []
    move = transfer.Transfer(NAME, laptop, server, say=said.append)
    with pytest.raises(OSError, match="connection reset"):
        move.run()
    assert said[-1] == f"move: {NAME}: nothing kept on {server}"
    client = registry.client(server)
    assert client.search_registered_models() == []
    assert move.moved.versions == ["1"] and len(move.moved.runs) >= 2  # v1 was there, and went
    for run_id in move.moved.runs.values():
        assert client.get_run(run_id).info.lifecycle_stage == "deleted"
    experiments = [e.experiment_id for e in client.search_experiments()]
    live = {m.model_id for m in client.search_logged_models(experiments)}
    assert move.moved.models and not live & set(move.moved.models.values())
    monkeypatch.setattr(transfer.Transfer, "_logged_model", real)
    assert transfer.move(NAME, laptop, server, say=lambda _: None).versions[-1] == "3"


def test_signed_decisions_without_the_key_are_not_moved(
    laptop: str, server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(grant.KEY_ENV)
    with pytest.raises(ShipyardError, match=f"{grant.KEY_ENV} is not set"):
        transfer.move(NAME, laptop, server, say=lambda _: None)
    assert registry.client(server).search_registered_models() == []


def test_bad_sources_are_named(server: str, tmp_path: Path) -> None:
    with pytest.raises(ShipyardError, match=f"no registered model {NAME} in sqlite"):
        transfer.move(NAME, f"sqlite:///{tmp_path / 'empty.db'}", server)
    with pytest.raises(ShipyardError, match="source and target are the same store"):
        transfer.move(NAME, server, server)

"""Signed decisions: what verifies, and every way a copy or an edit stops verifying."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from shipyard import grant
from shipyard.errors import ShipyardError


@dataclass
class Version:  # the fields of an MLflow ModelVersion that a grant reads
    name: str = "fraud-detector"
    version: str = "3"
    run_id: str = "abc"
    tags: dict[str, str] = field(default_factory=dict)


TAG = "shipyard.promotion.champion"


def test_a_grant_verifies_only_on_the_version_value_and_time_it_was_made_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(grant.KEY_ENV, "k1")
    mv = Version()
    mv.tags = grant.stamp(mv, TAG, "passed", "2026-12-03T10:00:00+00:00")
    assert grant.verified(mv, TAG, "k1") is not None
    assert grant.trusted_value(mv, TAG) == "passed"
    edits = {
        "another version": Version(version="4", tags=mv.tags),
        "another model": Version(name="other", tags=mv.tags),
        "another run behind the version": Version(run_id="xyz", tags=mv.tags),
        "value edited": Version(tags={**mv.tags, TAG: "failed"}),
        "time edited": Version(tags={**mv.tags, f"{TAG}.time": "2999-01-01T00:00:00+00:00"}),
        "signature dropped": Version(tags={TAG: "passed", f"{TAG}.time": mv.tags[f"{TAG}.time"]}),
        "signature garbage": Version(tags={**mv.tags, f"{TAG}.signature": "zz"}),
    }
    for case, forged in edits.items():
        assert grant.verified(forged, TAG, "k1") is None, case
        assert grant.trusted_value(forged, TAG).startswith("forged"), case
    assert grant.verified(mv, TAG, "k2") is None  # another key
    assert grant.trusted_value(Version(), TAG) == "missing"


def test_without_the_key_decisions_are_unsigned_and_the_guard_refuses_to_judge(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(grant.KEY_ENV, raising=False)
    tags = grant.stamp(Version(), TAG, "passed")
    assert set(tags) == {TAG, f"{TAG}.time"}
    assert "recorded unsigned" in caplog.text
    assert grant.trusted_value(Version(tags=tags), TAG) == "passed"
    with pytest.raises(ShipyardError, match="SHIPYARD_DECISION_KEY is not set"):
        grant.required_key("guard")

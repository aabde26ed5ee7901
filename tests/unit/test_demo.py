"""The demo's pure parts: its typed config, the client tally, the summary table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shipyard.demo.config import load_demo_config, merge
from shipyard.demo.summary import render, version_rows
from shipyard.errors import ShipyardError
from shipyard.traffic import Tally

TINY = Path(__file__).parents[1] / "e2e" / "tiny.yaml"


def test_the_tiny_config_loads_and_defaults_are_the_embedded_ones() -> None:
    tiny = load_demo_config(TINY)
    assert tiny.world is not None and tiny.world.customers == 250
    assert tiny.policy["canary"]["steps"] == [50, 100]
    default = load_demo_config(None)
    assert default.world is None and not default.params and not default.monitoring
    # Only the canary is shortened; every gate is the repository's own.
    assert default.policy == {"canary": {"steps": [10, 50, 100], "step_seconds": 15}}
    assert default.skew.factor == 0.01


def test_a_bad_key_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "demo.yaml"
    bad.write_text("skew: {factr: 3}\n")
    with pytest.raises(ShipyardError, match=r"demo.yaml: skew.factr: Extra inputs"):
        load_demo_config(bad)
    bad.write_text("window_days: 0\n")
    with pytest.raises(ShipyardError, match=r"window_days: Input should be greater than 0"):
        load_demo_config(bad)


def test_merge_is_deep_and_replaces_lists() -> None:
    base: dict[str, Any] = {"canary": {"steps": [5, 25], "gates": {"a": 1, "b": 2}}, "keep": 1}
    out = merge(base, {"canary": {"steps": [50], "gates": {"b": 3}}})
    assert out == {"canary": {"steps": [50], "gates": {"a": 1, "b": 3}}, "keep": 1}
    assert base["canary"]["gates"] == {"a": 1, "b": 2}  # the input is left alone


def test_tally_counts_errors_and_unreachable_as_failed() -> None:
    t = Tally()
    t.answers[(200, "stable")] += 7
    t.answers[(200, "canary")] += 2
    t.answers[(503, "canary")] += 1
    t.unreachable = 2
    assert (t.sent, t.failed) == (12, 3)
    assert t.by_variant() == {"stable": 7, "canary": 3}


FIGURES = {
    "v1": "1",
    "v2": "2",
    "v3": "3",
    "steps": {"pipeline": 80.0, "retrain": 60.0, "canary": 200.0, "bad version": 90.0},
    "seconds": 500.0,
    "versions": {
        "1": {"tags": {"shipyard.data_hash": "md5:aaaaaaaaaaaa.dir"}, "aliases": ["previous"]},
        "2": {
            "tags": {
                "shipyard.data_hash": "md5:bbbbbbbbbbbb.dir",
                "shipyard.promotion.challenger": "passed",
                "shipyard.canary.result": "passed",
            },
            "aliases": ["champion"],
        },
        "3": {
            "tags": {
                "shipyard.demo.skew": "tx_amount x0.01",
                "shipyard.canary.result": "rejected",
                "shipyard.canary.failed_gate": "max_score_psi 3.1 <= 0.2: failed",
            },
            "aliases": ["candidate"],
        },
    },
    "traffic": {
        "canary": {"sent": 10, "failed": 0, "by_variant": {"stable": 10}, "first_error": ""},
        "bad version": {
            "sent": 9,
            "failed": 1,
            "by_variant": {"stable": 8},
            "first_error": "unreachable: [Errno 104] Connection reset by peer",
        },
    },
    "drift": [{"window": "calm-1", "exit": 0}],
}


def test_the_summary_names_each_versions_outcome() -> None:
    rows = {r[0]: r for r in version_rows(FIGURES)}
    assert rows["1"][2] == "aaaaaaaaaa" and rows["1"][8] == "@previous"
    assert rows["2"][5] == "passed" and rows["2"][7] == "passed" and rows["2"][9] == "260"
    assert rows["3"][1] == "stages, skewed features"
    assert rows["3"][7] == "rejected: max_score_psi"
    text = render(FIGURES, "fraud-detector")
    assert "calm-1 -> 0" in text and "total" in text and "shipyard deploy status" in text
    lines = text.splitlines()
    failure = lines.index("  bad version        9 sent     1 failed   {'stable': 8}") + 1
    assert (
        lines[failure].strip() == "first failure: unreachable: [Errno 104] Connection reset by peer"
    )
    assert sum("first failure" in line for line in lines) == 1  # none for the canary's 0


def test_in_place_refuses_a_config_that_would_rewrite_your_files() -> None:
    from click.testing import CliRunner

    from shipyard.cli import main

    result = CliRunner().invoke(main, ["demo", "--in-place", "--config", str(TINY)])
    assert result.exit_code == 1
    assert "--in-place runs your own files; a --config may not change them" in result.output

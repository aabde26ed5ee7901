"""The params hash covers exactly the sections the recorded thing depended on."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from shipyard.config import Params
from shipyard.lineage import TRAIN_SECTIONS, VERSION_SECTIONS, params_hash


def test_a_change_downstream_of_train_moves_only_the_version_hash(
    raw_params: dict[str, Any],
) -> None:
    before = Params.model_validate(raw_params)
    changed = copy.deepcopy(raw_params)
    changed["register"]["max"]["brier"] = 0.5
    after = Params.model_validate(changed)
    assert params_hash(before, TRAIN_SECTIONS) == params_hash(after, TRAIN_SECTIONS)
    assert params_hash(before, VERSION_SECTIONS) != params_hash(after, VERSION_SECTIONS)
    upstream = copy.deepcopy(raw_params)
    upstream["base"]["seed"] += 1
    moved = Params.model_validate(upstream)
    assert params_hash(before, TRAIN_SECTIONS) != params_hash(moved, TRAIN_SECTIONS)
    with pytest.raises(ValueError, match="no params section 'serving'"):
        params_hash(before, ("serving",))

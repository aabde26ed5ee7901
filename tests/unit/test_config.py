from __future__ import annotations

from typing import Any

import pytest

from shipyard.config import load_params, parse_params
from shipyard.errors import ConfigError
from tests.conftest import REPO


def test_repository_params_load() -> None:
    params = load_params(REPO / "params.yaml")
    assert params.base.model_name == "fraud-detector"
    assert params.validate_.min_rows > 0
    assert set(params.train.candidates) == {"hgb", "logreg", "mlp"}


def test_unknown_key_is_rejected_with_its_path(raw_params: dict[str, Any]) -> None:
    raw_params["train"]["candidates"]["mlp"]["learning_rte"] = 0.1
    with pytest.raises(ConfigError, match=r"train\.candidates\.mlp\.torch_mlp\.learning_rte"):
        parse_params(raw_params)


def test_missing_key_is_rejected_with_its_path(raw_params: dict[str, Any]) -> None:
    del raw_params["base"]["seed"]
    with pytest.raises(ConfigError, match=r"base\.seed: Field required"):
        parse_params(raw_params)


def test_missing_section_is_rejected(raw_params: dict[str, Any]) -> None:
    del raw_params["evaluate"]
    with pytest.raises(ConfigError, match=r"^params\.yaml: evaluate: Field required"):
        parse_params(raw_params)


def test_wrong_type_is_rejected(raw_params: dict[str, Any]) -> None:
    raw_params["featurize"]["split"]["test"] = "a lot"
    with pytest.raises(ConfigError, match=r"featurize\.split\.test"):
        parse_params(raw_params)


def test_feature_must_be_a_declared_column(raw_params: dict[str, Any]) -> None:
    raw_params["data"]["features"]["numeric"].append("merchant_score")
    with pytest.raises(ConfigError, match="merchant_score"):
        parse_params(raw_params)


def test_history_entity_must_be_declared(raw_params: dict[str, Any]) -> None:
    raw_params["featurize"]["risk"]["entity"] = "merchant_id"
    with pytest.raises(ConfigError, match=r"featurize\.risk uses column 'merchant_id'"):
        parse_params(raw_params)


def test_zero_label_delay_is_rejected(raw_params: dict[str, Any]) -> None:
    # A zero delay would feed each row its own label through the risk windows.
    raw_params["featurize"]["risk"]["delay_days"] = 0
    with pytest.raises(ConfigError, match=r"featurize\.risk\.delay_days"):
        parse_params(raw_params)


def test_unknown_candidate_type_is_rejected(raw_params: dict[str, Any]) -> None:
    raw_params["train"]["candidates"]["hgb"]["type"] = "xgboost"
    with pytest.raises(ConfigError, match=r"train\.candidates\.hgb"):
        parse_params(raw_params)


def test_missing_file_names_the_file(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: file not found"):
        load_params(tmp_path / "nope.yaml")

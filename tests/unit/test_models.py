"""Candidates take named fields, and their files load without running foreign code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shipyard import models
from shipyard.config import parse_params
from shipyard.models import storage


@pytest.fixture
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 600
    x = rng.normal(size=n)
    return pd.DataFrame(
        {
            "amount": x,
            "channel": rng.choice(["web", "pos", "atm"], size=n).astype(object),
            "label": (x + rng.normal(scale=0.5, size=n) > 1).astype(int),
        }
    )


@pytest.mark.parametrize("name", ["hgb", "logreg", "mlp"])
def test_candidate_roundtrip(
    name: str, frame: pd.DataFrame, raw_params: dict[str, Any], tmp_path: Path
) -> None:
    raw_params["train"]["candidates"]["mlp"]["max_epochs"] = 5
    spec = parse_params(raw_params).train.candidates[name]
    model = models.build(spec, ["amount"], ["channel"], seed=1)
    model.fit(frame[["amount", "channel"]], frame["label"])
    p = model.predict_proba(frame[["amount", "channel"]])[:, 1]
    assert ((p >= 0) & (p <= 1)).all()
    assert np.corrcoef(p, frame["amount"])[0, 1] > 0.5  # it learned the signal
    trusted = storage.save(model, tmp_path / "m.skops")
    again = storage.load(tmp_path / "m.skops", trusted)
    np.testing.assert_allclose(again.predict_proba(frame[["amount", "channel"]])[:, 1], p)


def test_mlp_is_seeded(frame: pd.DataFrame, raw_params: dict[str, Any]) -> None:
    raw_params["train"]["candidates"]["mlp"]["max_epochs"] = 3
    spec = parse_params(raw_params).train.candidates["mlp"]
    runs = [
        models.build(spec, ["amount"], ["channel"], seed=5).fit(frame, frame["label"])
        for _ in range(2)
    ]
    X = frame[["amount", "channel"]]
    np.testing.assert_array_equal(runs[0].predict_proba(X), runs[1].predict_proba(X))


def test_foreign_types_are_refused(tmp_path: Path) -> None:
    import skops.io as sio

    sio.dump({"f": Path("x")}, tmp_path / "evil.skops")
    with pytest.raises(TypeError, match="allow-list"):
        storage.load(tmp_path / "evil.skops", ["pathlib.PosixPath"])
    with pytest.raises(TypeError, match="allow-list"):
        storage.trusted_types({"f": Path("x")})


_OUR_IMPORT = """
import json, sys
import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from shipyard.models import storage
model = HistGradientBoostingClassifier(max_iter=3).fit(np.arange(40.0)[:, None], np.arange(40) % 2)
path = sys.argv[1]
again = storage.load(path, storage.save(model, path))
again.predict_proba(np.arange(4.0)[:, None])
from skops.io import _trusted_types as t
finders = [type(f).__name__ for f in sys.meta_path]
torch = "torch" in sys.modules
import sklearn.externals.array_api_compat.torch  # the shim still imports once skops is in
print(json.dumps([t.SKLEARN_ESTIMATOR_TYPE_NAMES, torch, finders]))
"""

_PLAIN_IMPORT = """
import json
from skops.io import _trusted_types as t
print(json.dumps(t.SKLEARN_ESTIMATOR_TYPE_NAMES))
"""


def test_skops_loads_a_model_without_torch_and_trusts_the_same_types(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    def run(code: str, *args: str) -> Any:
        done = subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True
        )
        return json.loads(done.stdout.strip().splitlines()[-1])

    names, torch, finders = run(_OUR_IMPORT, str(tmp_path / "m.skops"))
    assert torch is False
    assert "_SkipTorchBackend" not in finders
    assert names == run(_PLAIN_IMPORT)
    assert (
        "sklearn.ensemble._hist_gradient_boosting.gradient_boosting."
        "HistGradientBoostingClassifier" in names
    )


_UFUNC_NAMES = """
import json, sys
__import__(sys.argv[1])
from shipyard.models import storage
storage.skops_io()
from skops.io import _trusted_types as t
print(json.dumps([t.NUMPY_UFUNC_TYPE_NAMES, t.SCIPY_UFUNC_TYPE_NAMES]))
"""


def _imports(path: Path) -> list[str]:
    import ast

    body = ast.parse(path.read_text()).body
    return [alias.name for node in body if isinstance(node, ast.Import) for alias in node.names]


def test_our_mlflow_modules_put_scipy_first_and_skops_trusts_the_same_ufuncs() -> None:
    """skops names each ufunc after the first module in `sys.modules` that holds it: with
    SciPy's modules before MLflow's, the walk is shorter (`benchmarks.model_load`) and the
    names are the same."""
    import json
    import subprocess
    import sys

    from tests.conftest import REPO

    for module in ("tracking", "registry"):
        names = _imports(REPO / "src" / "shipyard" / f"{module}.py")
        assert names.index("scipy.special") < names.index("mlflow"), module

    def run(first: str) -> Any:
        code = [sys.executable, "-c", _UFUNC_NAMES, first]
        done = subprocess.run(code, capture_output=True, text=True, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])

    ours = run("shipyard.registry")
    assert ours == run("mlflow")
    assert len(ours[1]) > 200 and all(name.startswith("scipy.special") for name in ours[1])

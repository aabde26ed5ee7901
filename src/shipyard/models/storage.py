"""skops files with an explicit allow-list: loading a model never runs arbitrary code."""

from __future__ import annotations

import importlib.abc
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

# Modules whose types we accept inside a model file. Anything else fails at save time,
# long before a server tries to load it.
TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.", "shipyard.models.")


# skops lists its default trusted types at import with scikit-learn's `all_estimators`, whose
# package walk imports every package it passes, `sklearn.externals.array_api_compat.torch`
# included (and through it all of torch), though it then ignores everything under
# `externals`. That cost 1.5 s of CPU and about 170 MB in every process that loads a model.
_SKIPPED_WHILE_SKOPS_LOADS = "sklearn.externals.array_api_compat.torch"


class _SkipTorchBackend(importlib.abc.MetaPathFinder):
    """Refuses sklearn's torch array-API shim for the length of skops' import only."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname == _SKIPPED_WHILE_SKOPS_LOADS:
            raise ModuleNotFoundError(f"{fullname} is skipped while skops lists its types")
        return None


def skops_io() -> ModuleType:
    """`skops.io`, imported without torch unless torch was already there.

    Its trusted-type list is the same either way: `all_estimators` drops `externals`, and the
    package walk skips a package whose import fails. A test compares the two lists.

    skops also names each SciPy ufunc by walking `sys.modules` in import order to the first
    module holding it. After MLflow's 1,900 modules that walk cost 0.1-0.6 s more, so the
    modules that import MLflow (`tracking`, `registry`) import `scipy.special` just before it.
    The names found are the same (a test compares them; `benchmarks.model_load`).
    """
    if "skops.io" not in sys.modules and _SKIPPED_WHILE_SKOPS_LOADS not in sys.modules:
        finder = _SkipTorchBackend()
        sys.meta_path.insert(0, finder)
        try:
            import skops.io as sio
        finally:
            sys.meta_path.remove(finder)
        return sio
    import skops.io as sio

    return sio


def trusted_types(model: Any) -> list[str]:
    """The non-default types `model` needs, checked against TRUSTED_PREFIXES."""
    sio = skops_io()

    needed = sio.get_untrusted_types(data=sio.dumps(model))
    foreign = [t for t in needed if not t.startswith(TRUSTED_PREFIXES)]
    if foreign:
        raise TypeError(f"model contains types outside the allow-list: {foreign}")
    return sorted(needed)


def save(model: Any, path: Path) -> list[str]:
    sio = skops_io()

    trusted = trusted_types(model)
    sio.dump(model, path)
    return trusted


def load(path: Path, trusted: list[str]) -> Any:
    sio = skops_io()

    foreign = [t for t in trusted if not t.startswith(TRUSTED_PREFIXES)]
    if foreign:
        raise TypeError(f"refusing to trust types outside the allow-list: {foreign}")
    return sio.load(path, trusted=trusted)


def load_mlflow_model(root: Path) -> Any:
    """A logged MLflow sklearn model folder, read with skops and the allow-list.

    The trusted types recorded in MLmodel come from whoever logged the model, so they are
    checked against the allow-list instead of being believed. Pickle is never used.
    """
    import yaml

    conf = yaml.safe_load((root / "MLmodel").read_text())["flavors"].get("sklearn", {})
    if conf.get("serialization_format") != "skops":
        raise TypeError(f"{root}: model not saved with skops; refusing to load it")
    return load(root / conf["pickled_model"], list(conf.get("skops_trusted_types") or []))

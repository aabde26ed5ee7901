"""skops files with an explicit allow-list: loading a model never runs arbitrary code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Modules whose types we accept inside a model file. Anything else fails at save time,
# long before a server tries to load it.
TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.", "shipyard.models.")


def trusted_types(model: Any) -> list[str]:
    """The non-default types `model` needs, checked against TRUSTED_PREFIXES."""
    import skops.io as sio

    needed = sio.get_untrusted_types(data=sio.dumps(model))
    foreign = [t for t in needed if not t.startswith(TRUSTED_PREFIXES)]
    if foreign:
        raise TypeError(f"model contains types outside the allow-list: {foreign}")
    return sorted(needed)


def save(model: Any, path: Path) -> list[str]:
    import skops.io as sio

    trusted = trusted_types(model)
    sio.dump(model, path)
    return trusted


def load(path: Path, trusted: list[str]) -> Any:
    import skops.io as sio

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

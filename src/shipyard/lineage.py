"""Where a model came from: code (git sha), data (DVC hash) and configuration (params hash)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import yaml

from shipyard.config import Params
from shipyard.tags import TAG

_OWN_FILES = (":(exclude)dvc.lock", ":(exclude,glob)**/.gitignore")


def git_sha(root: Path = Path()) -> str:
    """HEAD's sha, suffixed `-dirty` when tracked files differ; `unknown` outside git.

    Files the pipeline itself rewrites (dvc.lock, .gitignore) do not count as dirty.
    """
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *_OWN_FILES],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def data_hash(data_path: str, root: Path = Path()) -> str:
    """The md5 DVC records for the tracked data, or a content hash when DVC does not track it."""
    top = Path(data_path).parts[0]
    dvc_file = root / f"{top}.dvc"
    if dvc_file.exists():
        meta = yaml.safe_load(dvc_file.read_text())
        for out in meta.get("outs", []):
            if out.get("path") == top and "md5" in out:
                return f"md5:{out['md5']}"
    digest = hashlib.sha256()
    path = root / data_path
    for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
        if file.is_file():
            digest.update(file.relative_to(root).as_posix().encode())
            digest.update(file.read_bytes())
    return f"sha256:{digest.hexdigest()[:16]}"


# The params sections whose change alters a step's output: its own and every upstream one.
TRAIN_SECTIONS = ("base", "data", "validate", "featurize", "train")
VERSION_SECTIONS = (*TRAIN_SECTIONS, "evaluate", "register")


def params_hash(params: Params, sections: tuple[str, ...]) -> str:
    dumped = params.model_dump(mode="json", by_alias=True)
    unknown = sorted(set(sections) - set(dumped))
    if unknown:
        raise ValueError(f"params_hash: no params section {unknown[0]!r}")
    canonical = json.dumps({k: dumped[k] for k in sections}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def lineage_tags(params: Params, sections: tuple[str, ...], root: Path = Path()) -> dict[str, str]:
    """Lineage of what is recorded now, over the params `sections` it depended on: computed
    where it is recorded, so a later change to `register:` is not hidden by train's hash."""
    return {
        TAG["git_sha"]: git_sha(root),
        TAG["data_hash"]: data_hash(params.data.path, root),
        TAG["params_hash"]: params_hash(params, sections),
    }

"""A throwaway copy of the repository, so the demo (and the tests) never dirty the user's tree."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "shipyard-demo",
    "GIT_AUTHOR_EMAIL": "demo@shipyard.invalid",
    "GIT_COMMITTER_NAME": "shipyard-demo",
    "GIT_COMMITTER_EMAIL": "demo@shipyard.invalid",
}


def _git(cwd: Path, *args: str) -> str:
    env = {**os.environ, **GIT_IDENTITY}
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout


def copy_repo(source: Path, dest: Path) -> Path:
    """Tracked and new-but-not-ignored files only, as a fresh clone with local edits has them,
    committed as the copy's first commit so lineage tags name a real sha."""
    dest.mkdir(parents=True, exist_ok=True)
    listed = _git(source, "ls-files", "--cached", "--others", "--exclude-standard", "-z")
    for rel in filter(None, listed.split("\0")):
        src = source / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    _git(dest, "init", "-q", "-b", "main")
    commit(dest, "copy of shipyard")
    return dest


def commit(repo: Path, message: str) -> None:
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "--allow-empty", "-m", message)

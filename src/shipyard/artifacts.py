"""Stage outputs appear whole or not at all, so a failed stage leaves nothing for the next one."""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ARTIFACTS = Path("artifacts")
VALIDATED = ARTIFACTS / "validated"
FEATURES = ARTIFACTS / "features"
MODELS = ARTIFACTS / "models"
EVAL = ARTIFACTS / "eval"
REGISTERED = ARTIFACTS / "registered"

_START = time.monotonic()


def progress(step: str, message: str) -> None:
    """One progress line on stderr, so stdout stays clean for results."""
    print(f"[{time.monotonic() - _START:6.1f}s] {step}: {message}", file=sys.stderr, flush=True)


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a scratch folder that replaces `target` only if the block succeeds."""
    scratch = target.with_name(f".{target.name}.partial")
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.rmtree(target, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        yield scratch
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    scratch.rename(target)


def write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())

"""Print the package sources pip is configured with, as `uv pip install` flags.

uv does not read pip's configuration (pip.conf, PIP_* variables), so `make venv` passes it
on: the same index, extra indexes and find-links, searched as pip searches them (the best
version across all of them). With no configuration this prints only the strategy, and uv
uses PyPI, as pip would.
"""

from __future__ import annotations

import subprocess
import sys

FLAGS = {"index-url": "--index-url", "extra-index-url": "--extra-index-url"}


def main() -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True
    ).stdout
    args: list[str] = ["--index-strategy", "unsafe-best-match"]
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        name = key.rsplit(".", 1)[-1]
        flag = FLAGS.get(name) or ("--find-links" if name == "find-links" else None)
        if flag is None:
            continue
        for item in value.strip("'\"").split():
            if item not in args:
                args += [flag, item]
    print(" ".join(args))


if __name__ == "__main__":
    main()

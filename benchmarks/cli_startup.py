"""Claim: `shipyard --help` answers in under 0.5 s, because no heavy library loads for it.

Baseline, same run: a bare interpreter (`python -c pass`) and `python -c "import mlflow"`,
which is what `--help` would cost if the CLI imported it eagerly.
"""

from __future__ import annotations

import sys

from benchmarks._timing import VENV_BIN, table, time_command

RUNS = 10


def main() -> None:
    py = sys.executable
    shipyard = str(VENV_BIN / "shipyard")
    rows = [
        ("python -c pass  (baseline)", time_command([py, "-c", "pass"], RUNS)),
        ("shipyard --help", time_command([shipyard, "--help"], RUNS)),
        ("shipyard stage --help", time_command([shipyard, "stage", "--help"], RUNS)),
        (
            "shipyard data generate --help",
            time_command([shipyard, "data", "generate", "--help"], RUNS),
        ),
        ('python -c "import mlflow"  (eager import)', time_command([py, "-c", "import mlflow"], 3)),
    ]
    table("CLI start-up", rows, "shipyard --help < 0.5 s")


if __name__ == "__main__":
    main()

"""Claim: a process that reads a model file through `models.storage` imports skops without
torch, about 1.5 s and 170 MB less than `import skops.io`, whose trusted-type scan walks into
scikit-learn's torch array-API shim.

Same run, fresh interpreters, each import timed `RUNS` times after a warm-up:
- baseline: `python -c "import skops.io"` (what every model-loading process paid before);
- ours: `storage.skops_io()`, as `storage.load` calls it;
- the floor: `import sklearn`, which skops needs whatever we do.
Peak RSS is the child's own `ru_maxrss`.

Claim 2: a process that talks to MLflow and then loads a model (promote, register, evaluate,
deploy) spends 0.1-0.3 s less, since `tracking` and `registry` import `scipy.special` before
MLflow: skops names each SciPy ufunc by walking `sys.modules` in order, past MLflow's 1,900
modules otherwise. Same way, whole processes:
- baseline: `import mlflow, shipyard.registry`, then `storage.skops_io()` (MLflow first);
- ours: `import shipyard.registry`, then `storage.skops_io()`;
- the floor: `import shipyard.registry` alone, no model loaded.
"""

from __future__ import annotations

import statistics
import subprocess
import sys

from benchmarks._timing import env, table, time_command

RUNS = 5
PLAIN = "import skops.io"
OURS = "from shipyard.models import storage; storage.skops_io()"
FLOOR = "import sklearn"
AFTER_MLFLOW = {
    "import shipyard.registry  (floor)": "import shipyard.registry",
    "MLflow first, then skops  (baseline)": f"import mlflow, shipyard.registry; {OURS}",
    "shipyard.registry, then skops  (ours)": f"import shipyard.registry; {OURS}",
}


def peak_mib(code: str) -> float:
    probe = f"{code}\nimport resource; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env(), capture_output=True, text=True, check=True
    )
    return int(done.stdout.split()[-1]) / 1024  # KiB on Linux


def main() -> None:
    py = sys.executable
    rows = [
        ("import sklearn  (floor)", time_command([py, "-c", FLOOR], RUNS)),
        ("import skops.io  (baseline)", time_command([py, "-c", PLAIN], RUNS)),
        ("storage.skops_io()  (ours)", time_command([py, "-c", OURS], RUNS)),
    ]
    table("skops import in a model-loading process", rows, "ours well below the baseline")
    print(f"  {'peak RSS':<44} {'MiB':>9}")
    for label, code in (("floor", FLOOR), ("baseline", PLAIN), ("ours", OURS)):
        print(f"  {label:<44} {peak_mib(code):9.0f}")
    saved = statistics.median(rows[1][1]) - statistics.median(rows[2][1])
    print(f"\n  saved per model-loading process: {saved:.2f} s")

    rows = [(label, time_command([py, "-c", code], RUNS)) for label, code in AFTER_MLFLOW.items()]
    table("a process that imports MLflow, then skops", rows, "ours below the baseline")
    saved = statistics.median(rows[1][1]) - statistics.median(rows[2][1])
    print(f"\n  saved per process that talks to MLflow and loads a model: {saved:.2f} s")


if __name__ == "__main__":
    main()

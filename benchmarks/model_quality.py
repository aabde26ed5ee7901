"""Claim: the default models reach the Fraud Detection Handbook's baseline quality.

Prints this run's test ROC AUC and average precision (artifacts/eval/candidates.json, so run
`make pipeline` first) next to the handbook's published chapter 3.4 test figures for the same
model family. The settings differ: the handbook trains on one week and tests on the week after
a one-week delay, on its own simulated data; we train on ~12 weeks of our smaller simulated
world. Read the comparison as "same ballpark or better", not as a like-for-like replication.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# Le Borgne et al., Fraud Detection Handbook, "Baseline fraud detection system", test set.
HANDBOOK = {
    "hist_gradient_boosting": ("XGBoost", 0.862, 0.639),
    "logistic_regression": ("Logistic regression", 0.871, 0.606),
}


def main() -> None:
    root = Path(__file__).resolve().parents[1]
    path = root / "artifacts" / "eval" / "candidates.json"
    if not path.exists():
        sys.exit(f"model_quality: {path} not found; run `make pipeline` first")
    scores = json.loads(path.read_text())
    runs = json.loads((root / "artifacts" / "models" / "runs.json").read_text())
    print("\nModel quality on the test split  (handbook chapter 3.4 baseline alongside)")
    metric_cols = f"{'ROC AUC':>8} {'AP':>7}"
    print(f"  {'candidate':<10} {metric_cols}   {'handbook model':<22} {metric_cols}")
    for name, result in sorted(scores["scores"].items()):
        test = result["test"]
        kind = runs["candidates"][name]["type"]
        ref = HANDBOOK.get(kind)
        base = (
            f"{ref[0]:<22} {ref[1]:8.3f} {ref[2]:7.3f}"
            if ref
            else f"{'(no chapter-3 baseline)':<22}"
        )
        mark = " *" if name == scores["best"] else "  "
        print(f"{mark}{name:<10} {test['roc_auc']:8.3f} {test['average_precision']:7.3f}   {base}")
    print(f"  * best by validation {scores['select_by']}")


if __name__ == "__main__":
    main()

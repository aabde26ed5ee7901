"""Which drifted features explain a quality drop: each one's drift undone on its own, and the
quality the model would then have.

Drift statistics say how far a feature moved, not whether it cost anything: a feature the
model barely reads can move a lot for free. Here each drifted feature in turn gets values
drawn from the reference (its drift undone, the others left as they are), the window is
scored again with the version's model, and quality is estimated again from those scores
(`estimate`, no labels). The average precision regained is how much of the drop that
feature explains; features rank by it.

Realised labels cannot rank this way: they belong to the values the rows really had, so
scores from drawn values lose their link to the labels and any feature the model reads
would look costly. Two features that only hurt together show as neither, and a drawn value
ignores how the feature goes with the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from shipyard.monitoring.estimate import Estimate

TOP = 3  # how many the report's header names


@dataclass(frozen=True)
class Impact:
    feature: str
    gain: float | None  # estimated AP with the drift undone, minus as it is; None: no estimate

    def describe(self) -> str:
        if self.gain is None:
            return f"{self.feature} (not estimated)"
        return f"{self.feature} (estimated average precision {self.gain:+.3f} if undone)"


def rank(
    features: list[str],
    window: pd.DataFrame,
    reference: pd.DataFrame,
    score: Callable[[pd.DataFrame], np.ndarray],
    estimate_of: Callable[[np.ndarray], Estimate],
    seed: int = 0,
) -> list[Impact]:
    """Impacts of undoing each of `features`' drift, largest regained quality first.
    `score`: the model's scores for rows of the window; `estimate_of`: the label-free
    estimate for a window's scores."""
    rng = np.random.default_rng(seed)
    base = estimate_of(window["score"].to_numpy(dtype="float64")).average_precision
    out = []
    for feature in features:
        undone = window.copy()
        undone[feature] = rng.choice(reference[feature].dropna().to_numpy(), size=len(window))
        regained = estimate_of(np.asarray(score(undone), dtype="float64")).average_precision
        out.append(Impact(feature, None if regained is None or base is None else regained - base))
    return sorted(out, key=lambda i: -np.inf if i.gain is None else i.gain, reverse=True)

"""The drift judgement's own figures: live quality against the version's test metrics."""

from __future__ import annotations

from shipyard.monitoring.policy import load_monitoring_policy
from tests.conftest import REPO


def test_live_quality_drop_is_judged_against_the_versions_test_figures() -> None:
    import numpy as np
    import pandas as pd

    from shipyard.monitoring.drift import _live_quality
    from shipyard.monitoring.reference import Reference
    from shipyard.tags import VersionTags

    policy = load_monitoring_policy(REPO / "monitoring" / "policy.yaml")
    tags = {
        "shipyard.metrics.test.roc_auc": "0.90",
        "shipyard.metrics.test.average_precision": "0.6",
    }
    ref = Reference("m", "1", pd.DataFrame(), [], VersionTags.of(tags))
    rng = np.random.default_rng(0)
    y = (rng.uniform(size=2000) < 0.1).astype(int)
    good = pd.DataFrame({"label": y, "score": np.clip(y * 0.8 + rng.normal(0, 0.2, 2000), 0, 1)})
    figures, dropped = _live_quality(ref, good, policy, 0.01)
    assert dropped == [] and figures["roc_auc"]["live"] > 0.9
    noise = good.assign(score=rng.uniform(size=2000))  # the model no longer separates classes
    figures, dropped = _live_quality(ref, noise, policy, 0.01)
    assert [d.split()[0] for d in dropped] == ["roc_auc", "average_precision"]
    few = good.head(policy.quality.min_labelled_rows - 1)
    assert _live_quality(ref, few, policy, 0.01) == ({}, [])  # too few labels: not judged

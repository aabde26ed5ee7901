"""Version tags: one typed record, each tag named once, a malformed one named when read."""

from __future__ import annotations

import pytest

from shipyard.errors import ShipyardError
from shipyard.tags import TAG, VersionTags


def test_tags_read_typed_with_their_defaults() -> None:
    tags = VersionTags.of(
        {
            TAG["score_buckets"]: "[0.1,0.5,1.0]",
            TAG["field_ranges"]: '{"tx_amount": [0, 10]}',
            TAG["threshold_at_budget"]: "0.25",
            "shipyard.metrics.test.roc_auc": "0.91",
            "shipyard.someone.elses": "kept out",
        }
    )
    assert tags.score_buckets == (0.1, 0.5, 1.0)
    assert tags.field_ranges == {"tx_amount": (0.0, 10.0)}
    assert tags.threshold_at_budget == 0.25 and tags.test_metrics == {"roc_auc": 0.91}
    assert (tags.git_sha, tags.strategy, tags.pipeline_gates) == ("unknown", "canary", "missing")
    assert len(set(TAG.values())) == len(TAG)  # no two fields share a tag


@pytest.mark.parametrize(
    ("tag", "value"),
    [("score_buckets", "[0.1,"), ("threshold_at_budget", "high"), ("field_ranges", "[1]")],
)
def test_a_malformed_tag_is_named(tag: str, value: str) -> None:
    with pytest.raises(ShipyardError, match=f"tag {TAG[tag]}:"):
        VersionTags.of({TAG[tag]: value})

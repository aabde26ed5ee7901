"""The same closed loop on the team stack (PostgreSQL, S3 stand-in, artifact proxy, advisory
lock): every test of `test_demo.py`, with its `demo` the run on the stack."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.test_demo import (  # noqa: F401  (collected here again, on the stack's run)
    test_artifacts_went_where_the_backend_keeps_them,
    test_clients_never_failed_and_never_saw_the_bad_version,
    test_decision_records,
    test_drift_triggered_the_retraining,
    test_nothing_is_left_running,
    test_the_demo_runs_to_the_end,
    test_the_rollback_left_v2_serving,
    test_versions_and_aliases,
)

pytestmark = [pytest.mark.slow, pytest.mark.stack]


@pytest.fixture(scope="module")
def demo(stack_demo: dict[str, Any]) -> dict[str, Any]:
    return stack_demo

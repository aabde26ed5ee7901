"""The cross-machine lock's pure parts, and its one-line error when the database is away."""

from __future__ import annotations

import pytest

from shipyard import locks, runtime
from shipyard.deploy.processes import free_port
from shipyard.errors import ShipyardError


def test_keys_are_stable_signed_64_bit_and_distinct() -> None:
    a, b = locks.key("registry-fraud-detector"), locks.key("registry-other")
    assert a == locks.key("registry-fraud-detector") and a != b
    assert all(-(2**63) <= k < 2**63 for k in (a, b))


def test_an_error_names_the_database_without_its_password() -> None:
    uri = "postgresql://ci:hunter2@db.internal:5433/mlflow"
    assert locks.where(uri) == "postgresql://db.internal:5433/mlflow"


def test_an_unreachable_lock_database_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = free_port()  # nothing listens there
    monkeypatch.setenv(runtime.LOCK_ENV, f"postgresql://ci:pw@127.0.0.1:{port}/mlflow")
    with pytest.raises(ShipyardError) as err, runtime.lock("registry-x"):
        pytest.fail("the lock was granted without its database")
    message = str(err.value)
    assert message.startswith(f"lock: cannot reach postgresql://127.0.0.1:{port}/mlflow: ")
    assert "\n" not in message and "pw" not in message

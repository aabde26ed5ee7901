"""The team stack (PostgreSQL, moto's S3 server, `mlflow server`) as a pytest backend.

`backend` runs a test on the embedded sqlite store and again against the stack. The stack is
started once per worker; each stack test starts from an empty registry and lock on it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shipyard import stack


@pytest.fixture(scope="session")
def team_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[stack.Stack]:
    folder = tmp_path_factory.mktemp("stack")
    running = stack.up(folder, say=lambda _: None)
    try:
        yield running
    finally:
        stack.down(folder)


@pytest.fixture(params=["sqlite", pytest.param("stack", marks=pytest.mark.stack)])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "stack":
        running: stack.Stack = request.getfixturevalue("team_stack")
        for key, value in running.client_env().items():
            monkeypatch.setenv(key, value)
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=running.tracking_uri, registry_uri=running.tracking_uri)
        for model in client.search_registered_models():  # the server outlives each test
            client.delete_registered_model(model.name)
    return str(request.param)

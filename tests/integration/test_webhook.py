"""A real `mlflow server` fires its webhook into `shipyard webhook serve`, which dispatches to a
loopback stand-in for the GitHub API and guards @champion."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from shipyard.deploy.processes import free_port
from shipyard.stack import MLFLOW_SERVER_ENV
from tests.conftest import DECISION_KEY, REPO, empty_store
from tests.integration.hostile import raw
from tests.integration.registry_fixtures import NAME, register
from tests.integration.team_stack import team_stack

__all__ = ["team_stack"]  # fixture

pytestmark = pytest.mark.slow
SECRET = "webhook-secret"


def until(check: Callable[[], Any], timeout: float = 60, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


class GitHub:
    """Records what a repository_dispatch client sends; answers 204 like GitHub does."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.failures = 0  # answer this many dispatches with GitHub's 500 first
        self.failed = 0
        calls, hub = self.calls, self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if hub.failed < hub.failures:
                    hub.failed += 1
                    self.send_response(500)
                    self.end_headers()
                    return
                calls.append(
                    {
                        "path": self.path,
                        "headers": dict(self.headers.items()),
                        "body": json.loads(body),
                    }
                )
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module", params=["sqlite", pytest.param("stack", marks=pytest.mark.stack)])
def server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    store_template: Path,
) -> Iterator[dict[str, Any]]:
    """A real mlflow server whose webhook calls `shipyard webhook serve --mode github`: one
    per module, as a team runs one; each test registers versions of its own. `sqlite`: a
    server on a sqlite file; `stack`: the team stack's, on PostgreSQL with S3 artifacts."""
    from cryptography.fernet import Fernet

    tmp_path = tmp_path_factory.mktemp("webhook")

    bin_dir = str(Path(sys.executable).parent)
    base = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    mport, wport = free_port(), free_port()
    server_env = {
        **base,
        **MLFLOW_SERVER_ENV,
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": Fernet.generate_key().decode(),
    }
    server_env.pop("MLFLOW_TRACKING_URI", None)
    log = open(tmp_path / "mlflow-server.log", "wb")  # noqa: SIM115
    if request.param == "stack":
        from mlflow import MlflowClient

        team = request.getfixturevalue("team_stack")
        uri = team.tracking_uri
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        for model in client.search_registered_models():  # the server outlives each module
            client.delete_registered_model(model.name)
        for hook in client.list_webhooks():
            client.delete_webhook(hook.webhook_id)
    mlflow_proc = (
        None
        if request.param == "stack"
        else subprocess.Popen(
            [
                "mlflow",
                "server",
                "--backend-store-uri",
                empty_store(store_template, tmp_path),
                "--artifacts-destination",
                str(tmp_path / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(mport),
                "--workers",
                "1",
            ],
            env=server_env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    )
    uri = team.tracking_uri if request.param == "stack" else f"http://127.0.0.1:{mport}"
    github = GitHub()
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    raw = yaml.safe_load((REPO / "registry" / "policy.yaml").read_text())
    # 25 % first, as in the fault suite: at 100 % stable serves nothing, and its step-1 sample
    # (3 x 400 records at the 1 % budget) must hold an alert for the last step to be judged.
    raw["canary"].update(steps=[25, 100], step_seconds=3, min_requests=400, failures_tolerated=0)
    raw["serving"]["max_latency_ms"] = 10_000  # shed for the canary, not for pytest's load
    # This test is about the wiring, not the gates: loose enough for two equal models.
    raw["canary"]["gates"].update(
        max_p99_ms=3000,
        max_p99_ratio=10,
        max_score_psi=0.5,
        confidence=0.95,
        min_expected_positives=6,
    )
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(raw))
    deploy_port = free_port()
    hook_env = {
        **base,
        "MLFLOW_TRACKING_URI": uri,
        "SHIPYARD_WEBHOOK_SECRET": SECRET,
        "SHIPYARD_DECISION_KEY": DECISION_KEY,  # set before any test's own environment is
        "SHIPYARD_RUNTIME_DIR": str(tmp_path / "hook-runtime"),
        "GITHUB_REPOSITORY": "acme/shipyard",
        "GITHUB_TOKEN": "test-token",
        "GITHUB_API_URL": github.url,
        "BENTOML_HOME": str(tmp_path / "bentoml"),
    }
    hook_log = open(tmp_path / "webhook.log", "wb")  # noqa: SIM115
    hook_proc = subprocess.Popen(
        [
            "shipyard",
            "webhook",
            "serve",
            "--port",
            str(wport),
            "--mode",
            "github",
            "--deploy-port",
            str(deploy_port),
            "--policy",
            "policy.yaml",
        ],
        cwd=tmp_path,
        env=hook_env,
        stdout=hook_log,
        stderr=hook_log,
        start_new_session=True,
    )
    try:
        until(lambda: up(f"{uri}/health"), 90, "mlflow server")
        until(lambda: up(f"http://127.0.0.1:{wport}/livez"), 60, "webhook receiver")
        from mlflow import MlflowClient

        MlflowClient(tracking_uri=uri, registry_uri=uri).create_webhook(
            name="shipyard",
            url=f"http://127.0.0.1:{wport}/webhook",
            events=["model_version_alias.created"],
            secret=SECRET,
        )
        time.sleep(1.5)  # MLFLOW_WEBHOOK_CACHE_TTL
        yield {
            "github": github,
            "hook": f"http://127.0.0.1:{wport}/webhook",
            "log": tmp_path / "webhook.log",
            "tmp": tmp_path,
            "deploy_port": deploy_port,
            "uri": uri,
        }
    finally:
        stop = ["shipyard", "deploy", "stop", NAME]
        subprocess.run(stop, cwd=tmp_path, env=hook_env, capture_output=True, check=False)
        for proc in (hook_proc, mlflow_proc):
            if proc is not None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)


@pytest.fixture
def stack(server: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The module's server for this test's registrations, and a GitHub that saw nothing yet."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server["uri"])
    monkeypatch.setenv("SHIPYARD_RUNTIME_DIR", str(server["tmp"] / "runtime"))
    github: GitHub = server["github"]
    github.calls.clear()
    github.failures = github.failed = 0
    return server


def test_challenger_alias_dispatches_to_github(stack: dict[str, Any]) -> None:
    from shipyard import registry

    version = register(stack["tmp"])
    registry.set_alias(NAME, "challenger", version)
    github = stack["github"]
    until(lambda: github.calls, 60, "repository_dispatch")
    [call] = github.calls
    assert call["path"] == "/repos/acme/shipyard/dispatches"
    assert call["headers"]["Authorization"] == "Bearer test-token"
    assert call["body"]["event_type"] == "model-promoted"
    assert call["body"]["client_payload"] == {
        "model": NAME,
        "alias": "challenger",
        "version": version,
    }
    # deploy.yml re-judges the gates with `promote --to challenger`: that must not fire the
    # alias event again, or every deployment would dispatch the next one.
    from shipyard import promotion
    from shipyard.policy import load_policy

    promotion.promote(NAME, version, "challenger", load_policy(REPO / "registry/policy.yaml"))
    time.sleep(4)
    assert len(github.calls) == 1


def test_failed_dispatch_is_retried_and_sent_once(stack: dict[str, Any]) -> None:
    """GitHub answers 500 once: the receiver answers 502, MLflow retries the same delivery, and
    that retry dispatches (before, the id was recorded first and the retry was "ignored")."""
    from shipyard import registry

    github = stack["github"]
    github.failures = 1
    version = register(stack["tmp"])
    registry.set_alias(NAME, "challenger", version)
    until(lambda: github.calls, 60, "repository_dispatch after a retry")
    time.sleep(3)  # a second dispatch, if any, would have come by now
    assert github.failed == 1 and len(github.calls) == 1
    assert github.calls[0]["body"]["client_payload"]["version"] == version
    log = stack["log"].read_text()
    assert "webhook: 502 dispatch: model-promoted to acme/shipyard failed" in log
    # ...and the failure is counted where the alert rules look for it.
    metrics = stack["hook"].replace("/webhook", "/metrics")
    with urllib.request.urlopen(metrics, timeout=10) as page:
        text = page.read().decode()
    assert 'shipyard_webhook_deliveries_total{code="502"}' in text


# (headers, body, status): one stack for the whole table, each case on its own connection.
LENGTH_CASES = [
    (b"Content-Length: -1\r\n", b"x" * 1000, 400),
    (b"Content-Length: abc\r\n", b"", 400),
    (b"Content-Length: \xb2\r\n", b"x", 400),  # "\u00b2" in latin-1: str.isdigit says yes
    (b"", b"", 400),  # no length at all
    (b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n", 400),
    (b"Content-Length: 30000000\r\n", b"x" * 1000, 413),
    (b"Content-Length: 2\r\n", b"{}", 401),  # unsigned
]
SHAPES = [
    b"[]",
    b'"x"',
    b"\xff",
    b'{"entity": "model_version_alias", "action": "created", "data": []}',
]


def test_receiver_answers_hostile_requests_with_4xx_at_once(stack: dict[str, Any]) -> None:
    """Length is judged before the body is read; signed bodies of the wrong shape get a 400."""
    from shipyard.webhook import signature

    livez = stack["hook"].replace("/webhook", "/livez")
    for head, body, status in LENGTH_CASES:
        got, seconds = raw(stack["hook"], head, body)
        assert (got, seconds < 2) == (status, True), head
        assert up(livez)
    for body in SHAPES:
        stamp = str(int(time.time()))
        sig = signature(SECRET, "shape-1", stamp, body)
        head = (
            f"Content-Length: {len(body)}\r\nX-MLflow-Delivery-Id: shape-1\r\n"
            f"X-MLflow-Timestamp: {stamp}\r\nX-MLflow-Signature: {sig}\r\n"
        ).encode()
        got, seconds = raw(stack["hook"], head, body)
        assert (got, seconds < 2) == (400, True), body
        assert up(livez)


def test_forged_and_replayed_deliveries(stack: dict[str, Any]) -> None:
    from shipyard.webhook import signature

    body = json.dumps(
        {
            "entity": "model_version_alias",
            "action": "created",
            "data": {"name": NAME, "alias": "nightly", "version": "1"},
        }
    ).encode()
    stamp = str(int(time.time()))

    def post(sig: str) -> tuple[int, str]:
        req = urllib.request.Request(
            stack["hook"],
            body,
            {
                "Content-Type": "application/json",
                "X-MLflow-Delivery-Id": "replay-1",
                "X-MLflow-Timestamp": stamp,
                "X-MLflow-Signature": sig,
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())["status"]
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())["status"]

    assert post("v1,AAAA")[0] == 401
    good = signature(SECRET, "replay-1", stamp, body)
    assert post(good) == (200, "alias nightly: nothing to do")
    assert post(good) == (200, "duplicate delivery replay-1 ignored")
    assert "401 bad signature on delivery replay-1" in stack["log"].read_text()
    assert stack["github"].calls == []


def test_unapproved_champion_is_reverted(stack: dict[str, Any]) -> None:
    """Registry write access is not approval: forged grants and stale ones are both reverted."""
    from shipyard import promotion, registry
    from shipyard.policy import load_policy

    policy = load_policy(REPO / "registry" / "policy.yaml")
    v1 = register(stack["tmp"])
    promotion.promote(NAME, v1, "champion", policy)  # the approved first champion
    approved = f"champion {v1} approved by a signed {promotion.decision_tag('champion')} decision"
    until(lambda: approved in stack["log"].read_text(), 60, "the guard to approve v1")
    first = registry.resolve(NAME, v1).tags
    v2 = register(stack["tmp"], seed=1)
    tag = promotion.decision_tag("champion")
    # The attacker copies v1's signed grant onto v2, newer, and sets the alias by hand.
    forged = {tag: "passed", f"{tag}.time": "2999-01-01T00:00:00+00:00"}
    forged[f"{tag}.signature"] = first[f"{tag}.signature"]
    registry.set_version_tags(NAME, v2, forged)
    report = f"unapproved champion {v2}: reverted to version {v1}"

    def reverted(times: int) -> bool:
        mv = registry.version_by_alias(NAME, "champion")
        held = mv is not None and str(mv.version) == v1
        return held and stack["log"].read_text().count(report) == times

    registry.set_alias(NAME, "champion", v2)  # by hand, past every gate
    until(lambda: reverted(1), 60, "the guard to revert the forged @champion")
    tags = registry.resolve(NAME, v2).tags
    assert tags["shipyard.guard.champion"] == f"unapproved champion alias reverted to version {v1}"

    # v2 is then promoted honestly (signed canary, every gate) and rolled back: its grant
    # still verifies, but the rollback's is newer, so setting v2 by hand is reverted again.
    from shipyard import grant

    mv2 = registry.resolve(NAME, v2)  # as the canary controller records a passed canary
    registry.set_version_tags(NAME, v2, grant.stamp(mv2, promotion.CANARY_TAG, "passed"))
    promotion.promote(NAME, v2, "champion", policy)
    ok = f"champion {v2} approved by a signed {tag} decision"
    until(lambda: ok in stack["log"].read_text(), 60, "the guard to approve the promotion")
    promotion.rollback(NAME, "error rate up")
    back = f"champion {v1} approved by a signed {promotion.decision_tag('rollback')} decision"
    until(lambda: back in stack["log"].read_text(), 60, "the guard to approve the rollback")
    registry.set_alias(NAME, "champion", v2)
    until(lambda: reverted(2), 60, "the guard to revert the rolled-back @champion")

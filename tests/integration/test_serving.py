"""Package a registered version and serve it with a real `bentoml serve` process."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from shipyard.deploy.processes import free_port, tree
from tests.conftest import REPO, empty_store
from tests.integration.registry_fixtures import NAME, register

pytestmark = pytest.mark.slow
KEY = "s3cret"
RECORD = {"tx_amount": 1.2, "risk": -0.3}


def kill_tree(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    for pid in tree(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    proc.wait(timeout=30)


class Server:
    def __init__(self, base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.base, self.proc, self.log = base, proc, log

    def call(
        self, path: str, body: Any = None, key: str | None = KEY, raw: bytes | None = None
    ) -> tuple[int, Any]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        headers = {"content-type": "application/json"}
        if key:
            headers["x-api-key"] = key
        req = urllib.request.Request(self.base + path, data=data, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                text = resp.read().decode()
                status = resp.status
        except urllib.error.HTTPError as err:
            text, status = err.read().decode(), err.code
        try:
            return status, json.loads(text)
        except json.JSONDecodeError:
            return status, text


def start(tmp: Path, env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            "shipyard",
            "serve",
            f"{NAME}@champion",
            "--port",
            str(port),
            "--prediction-log",
            str(tmp / "predictions"),
            "--policy",
            str(REPO / "registry" / "policy.yaml"),
        ],
        cwd=tmp,
        env=env,
        stdout=open(tmp / "serve.log", "ab"),  # BentoML logs to stdout
        stderr=subprocess.STDOUT,
    )


def wait_ready(base: str, proc: subprocess.Popen[bytes], log: Path, path: str = "/readyz") -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(base + path, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise AssertionError("server never became ready:\n" + log.read_text()[-3000:])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, store_template: Path) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("serving")
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": empty_store(store_template, tmp),
        "SHIPYARD_RUNTIME_DIR": str(tmp / "runtime"),
        "BENTOML_HOME": str(tmp / "bentoml"),
        "SHIPYARD_API_KEY": KEY,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        from shipyard import registry

        version = register(tmp, tags={"shipyard.threshold_at_budget": "0.5"})
        registry.set_alias(NAME, "champion", version)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    (tmp / "params.yaml").write_text((REPO / "params.yaml").read_text())
    port = free_port()
    proc = start(tmp, env, port)
    server = Server(f"http://127.0.0.1:{port}", proc, tmp / "serve.log")
    server.env = env  # type: ignore[attr-defined]
    server.tmp = tmp  # type: ignore[attr-defined]
    wait_ready(server.base, proc, server.log)
    yield server
    kill_tree(server.proc, signal.SIGTERM)  # the kill test may have restarted it
    time.sleep(1)
    assert [pid for pid in tree(server.proc.pid) if pid != server.proc.pid] == []


def test_package_twice_gives_one_bento(served: Server) -> None:
    env, tmp = served.env, served.tmp  # type: ignore[attr-defined]
    policy = str(REPO / "registry" / "policy.yaml")
    tags = [
        subprocess.run(
            ["shipyard", "package", f"{NAME}@champion", "--policy", policy],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for _ in range(2)
    ]
    assert tags[0] == tags[1] and tags[0].startswith(f"{NAME}-service:v1-")
    listed = subprocess.run(
        ["bentoml", "list", "-o", "json"], env=env, capture_output=True, text=True, check=True
    ).stdout
    bentos = [b for b in json.loads(listed) if b["tag"].startswith(f"{NAME}-service:")]
    assert len(bentos) == 1
    info = yaml.safe_load(
        subprocess.run(
            ["bentoml", "get", tags[0], "-o", "yaml"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert info["labels"]["model_version"] == "1" and info["labels"]["git_sha"] == "abc123"
    assert info["labels"]["data_hash"] == "md5:test"


def test_predict_and_batch(served: Server) -> None:
    status, body = served.call("/predict", {"features": RECORD, "request_id": "abc"})
    assert status == 200, body
    assert body["request_id"] == "abc" and body["model_version"] == "1"
    assert 0 <= body["score"] <= 1 and body["decision"] == (body["score"] >= 0.5)
    status, body = served.call(
        "/predict_batch", {"records": [RECORD, {**RECORD, "tx_amount": 4.0}]}
    )
    assert status == 200
    scores = [p["score"] for p in body["predictions"]]
    assert scores[1] > scores[0]  # more amount, more risk in the fixture model


def test_auth(served: Server) -> None:
    assert served.call("/predict", {"features": RECORD}, key=None)[0] == 401
    assert served.call("/predict", {"features": RECORD}, key="wrong")[0] == 401
    for path in ("/livez", "/readyz", "/metrics"):
        assert served.call(path, key=None)[0] == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"features": {"tx_amount": 1.0}}, ["features", "risk"]),
        ({"features": {**RECORD, "risk": "high"}}, ["features", "risk"]),
        ({"features": {**RECORD, "colour": "red"}}, ["features", "colour"]),
        ({"records": []}, ["records"]),
    ],
)
def test_bad_requests_get_field_level_4xx(served: Server, body: Any, field: list[str]) -> None:
    path = "/predict_batch" if "records" in body else "/predict"
    status, answer = served.call(path, body)
    assert status == 400
    assert any(d["loc"][: len(field)] == field for d in answer["detail"]), answer


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_finite_numbers_are_rejected(served: Server, token: bytes) -> None:
    raw = b'{"features": {"tx_amount": ' + token + b', "risk": 0.1}}'
    status, answer = served.call("/predict", raw=raw)
    assert status == 400 and answer["detail"][0]["type"] == "json", answer
    assert answer["error"] == f"{token.decode()} is not JSON (numbers must be finite)"


def test_out_of_range_numbers_name_the_field_and_the_bound(served: Server) -> None:
    status, answer = served.call("/predict", {"features": {**RECORD, "tx_amount": 1e308}})
    assert status == 400, answer
    assert answer["detail"][0]["loc"] == ["features", "tx_amount"]
    assert answer["detail"][0]["msg"].startswith("Input should be less than or equal to ")


def test_hostile_requests_get_a_4xx_at_once_directly_and_through_envoy(
    served: Server, tmp_path: Path
) -> None:
    """Every case in `hostile.service_cases`, on the service and on the deployment's Envoy in
    front of it: the status, within 2 s, and a valid request answered afterwards."""
    from shipyard.deploy import processes, proxy
    from tests.integration.hostile import raw, service_cases

    port = free_port()
    stable = proxy.Upstream("stable", "1", int(served.base.rsplit(":", 1)[1]))
    pid = proxy.start(tmp_path / "envoy", port, proxy.Split(stable))
    try:
        proxy.wait_ready(proxy.Files(tmp_path / "envoy"), pid)
        for base in (served.base, f"http://127.0.0.1:{port}"):
            for name, path, head, data, status in service_cases(KEY, RECORD, 2_000_000):
                got, seconds = raw(base + path, head, data)
                assert (got, round(seconds, 1) if seconds >= 2 else "fast") == (status, "fast"), (
                    f"{base}: {name}"
                )
                assert served.call("/predict", {"features": RECORD})[0] == 200, name
    finally:
        processes.stop(pid)
    _, text = served.call("/metrics", key=None)
    for reason in ("auth", "too_large", "content_type", "duplicate_key", "unknown_field"):
        assert f'reason="{reason}"}} 0.0' not in text, reason
    log = served.log.read_text()
    assert "rejected /predict 415 content_type: Content-Type must be application/json" in log
    assert "Traceback" not in log and "[ERROR]" not in log  # a 4xx is the client's mistake


def test_schemathesis_finds_no_server_error_or_schema_violation(served: Server) -> None:
    """Every check schemathesis has, for a minute, against the document the service serves."""
    st = str(Path(sys.executable).parent / "st")  # the venv's, whatever PATH says
    cmd = [st, "run", f"{served.base}/docs.json", "-H", f"X-API-Key: {KEY}"]
    cmd += ["--checks", "all", "--max-time", "60", "--seed", "1", "--no-color"]
    tmp = served.tmp  # type: ignore[attr-defined]
    run = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-6000:]


def test_oversized_batch_and_body(served: Server) -> None:
    status, answer = served.call("/predict_batch", {"records": [RECORD] * 1001})
    assert status == 400 and "at most 1000" in json.dumps(answer)
    big = b'{"features": {"tx_amount": 1.0, "risk": 0.1, "pad": "' + b"x" * 2_100_000 + b'"}}'
    assert served.call("/predict", raw=big)[0] == 413
    assert served.call("/predict", {"features": RECORD})[0] == 200  # still serving


def test_metrics_are_labelled_by_version(served: Server) -> None:
    served.call("/predict", {"features": RECORD})
    _, text = served.call("/metrics", key=None)
    assert (
        'shipyard_prediction_score_bucket{le="1.0",model_name="fraud-detector",model_version="1"}'
        in text
    )
    assert 'path="/predict",status="200"' in text and 'status="400"' in text
    assert (
        'shipyard_http_request_duration_seconds_count{model_name="fraud-detector",model_version="1",path="/predict"}'
        in text
    )
    status, _ = served.call("/metrics", raw=b"{}", key=None)  # served by the service itself
    assert status == 405


def test_concurrent_single_requests_are_batched(served: Server) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> int:
        return served.call("/predict", {"features": {**RECORD, "tx_amount": i / 100}})[0]

    with ThreadPoolExecutor(32) as pool:
        assert set(pool.map(one, range(200))) == {200}
    _, text = served.call("/metrics", key=None)
    labels = '{model_name="fraud-detector",model_version="1"}'
    count = float(text.split(f"shipyard_model_batch_size_count{labels} ")[1].split()[0])
    total = float(text.split(f"shipyard_model_batch_size_sum{labels} ")[1].split()[0])
    assert total > count  # at least one model call scored several requests together


def test_prediction_log_is_complete_after_a_normal_stop_and_auth_can_be_off(
    served: Server,
) -> None:
    from shipyard.serving.predlog import read_log

    tmp, env = served.tmp, served.env  # type: ignore[attr-defined]
    folder = tmp / "predictions"
    for i in range(5):
        assert served.call("/predict", {"features": RECORD, "request_id": f"stop-{i}"})[0] == 200
    kill_tree(served.proc, signal.SIGTERM)  # at once: no time for the 1 s flush timer
    records, bad = read_log(folder)
    assert {f"stop-{i}" for i in range(5)} <= {r["request_id"] for r in records} and bad == 0
    open_env = {k: v for k, v in env.items() if k != "SHIPYARD_API_KEY"}
    port = free_port()
    served.proc, served.base = start(tmp, open_env, port), f"http://127.0.0.1:{port}"
    wait_ready(served.base, served.proc, served.log)
    assert served.call("/predict", {"features": RECORD}, key=None)[0] == 200
    assert served.call("/predict", {"features": RECORD}, key="anything")[0] == 200


def test_prediction_log_survives_a_kill(served: Server) -> None:
    """Flushed records survive SIGKILL intact; at most the unflushed tail is lost."""
    from shipyard.serving.predlog import read_log

    tmp, env = served.tmp, served.env  # type: ignore[attr-defined]
    folder = tmp / "predictions"
    for i in range(10):
        assert served.call("/predict", {"features": RECORD, "request_id": f"kept-{i}"})[0] == 200
    time.sleep(2.5)  # past the 1 s flush interval
    for i in range(5):
        served.call("/predict", {"features": RECORD, "request_id": f"tail-{i}"})
    kill_tree(served.proc, signal.SIGKILL)  # the server and its worker, with no chance to flush
    records, bad = read_log(folder)
    ids = [r["request_id"] for r in records]
    assert {f"kept-{i}" for i in range(10)} <= set(ids)
    assert bad <= 1  # a torn last line at worst, never an earlier one
    kept = next(r for r in records if r["request_id"] == "kept-0")
    assert kept["features"] == RECORD and kept["model_version"] == "1"
    assert set(kept) >= {"timestamp", "score", "decision", "model_name"}
    # The folder keeps serving a restarted process; old lines are left as they were.
    port = free_port()
    proc = start(tmp, env, port)
    served.proc, served.base = proc, f"http://127.0.0.1:{port}"
    wait_ready(served.base, proc, served.log)
    assert served.call("/predict", {"features": RECORD})[0] == 200
    assert [r["request_id"] for r in read_log(folder)[0]][: len(ids)] == ids

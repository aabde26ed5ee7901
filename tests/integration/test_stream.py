"""`shipyard stream` for real: a Redis server on a free loopback port, the consumer as its own
process, events published as a payment flow would. What the stream decides must equal what
the batch engine computes for the same rows; each event gets exactly one decision and one log
record through duplicates, a kill -9 and a broker that is not there yet; every bad event is a
dead letter with its reason."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pandas as pd
import pytest
import yaml

from shipyard.config import load_params
from shipyard.deploy.processes import free_port
from shipyard.scoring import producer
from shipyard.serving.predlog import read_log
from tests.conftest import REPO, empty_store
from tests.integration import scoring_world

pytestmark = pytest.mark.slow
SHIPYARD = str(Path(sys.executable).with_name("shipyard"))
REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"
COLUMNS = ["transaction_id", "tx_datetime", "customer_id", "terminal_id", "tx_amount", "tx_fraud"]
DATA = load_params(REPO / "params.yaml").data


@contextmanager
def redis_server(port: int, folder: Path, durable: bool = False) -> Iterator[Any]:
    """`durable`: every write in the append-only file before it is answered, so that the
    streams, groups and ledger outlive a restart of the server, as on a broker in production."""
    import redis

    folder.mkdir(parents=True, exist_ok=True)
    argv = [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(folder)]
    argv += ["--appendonly", "yes" if durable else "no", "--appendfsync", "always"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    try:
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        yield client
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, store_template: Path
) -> Iterator[dict[str, Any]]:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    root = tmp_path_factory.mktemp("stream")
    empty_store(store_template, root)
    with scoring_world.registered(root, raw) as w:
        yield w


def events(frame: pd.DataFrame, label: bool = True) -> list[bytes]:
    """Rows as a payment flow publishes them: `shipyard data publish`'s own events."""
    return producer.bodies(frame, DATA, label)


def publish(client: Any, bodies: list[bytes], stream: str = "transactions") -> list[str]:
    pipe = client.pipeline(transaction=False)
    for body in bodies:
        pipe.xadd(stream, {"__data__": body})
    return [i.decode() for i in pipe.execute()]


def decisions(client: Any, stream: str = "decisions") -> list[dict[str, Any]]:
    return [orjson.loads(f[b"__data__"]) for _, f in client.xrange(stream)]


def dead_letters(client: Any) -> list[dict[str, Any]]:
    return decisions(client, "transactions.dead")


class Consumer:
    """`shipyard stream` as its own process, in the world's folder."""

    def __init__(self, world: dict[str, Any], port: int, *args: str, ref: str = "champion") -> None:
        root = world["root"]
        self.metrics_port = free_port()
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
        env["SHIPYARD_RUNTIME_DIR"] = str(root / "runtime")
        argv = [SHIPYARD, "stream", f"{scoring_world.NAME}@{ref}"]
        argv += ["--broker", f"redis://127.0.0.1:{port}/0", "--consumer", "c1"]
        argv += ["--metrics-port", str(self.metrics_port), *args]
        self.stderr = root / f"stream-{time.monotonic_ns()}.err"
        with self.stderr.open("w") as err:
            self.proc = subprocess.Popen(argv, cwd=root, env=env, stderr=err)

    def metrics(self) -> dict[str, float]:
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        return {
            line.split(" ")[0]: float(line.split(" ")[1])
            for line in text.splitlines()
            if line.startswith("shipyard_stream") and " " in line
        }

    def text(self) -> str:
        return self.stderr.read_text()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(60)


def wait_until(check: Any, timeout: float = 120, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def logged(world: dict[str, Any], folder: str = "fraud-detector-stream") -> list[dict[str, Any]]:
    records, corrupt = read_log(world["root"] / "runtime" / "predictions" / folder)
    assert corrupt == 0
    return records


def batch_scores(world: dict[str, Any], frame: pd.DataFrame, past: pd.DataFrame) -> pd.Series:
    """What the batch engine gives the same rows, with the same history, in this process."""
    from shipyard.policy import load_policy
    from shipyard.scoring import model as scoring_model
    from shipyard.scoring import rows

    params = world["params"]
    policy = load_policy(world["root"] / "registry" / "policy.yaml")
    version = scoring_model.resolve(f"{scoring_world.NAME}@champion", params, policy)
    estimator = scoring_model.load(version)
    good = rows.check(frame[COLUMNS], params.data, "rows").good
    past_good = rows.check(past[COLUMNS], params.data, "past").good
    out, rejects = rows.score(estimator, good, version, params.data, params.featurize, past_good)
    assert rejects.empty
    return pd.Series(out["score"].to_numpy(), index=out["request_id"].astype(str))


def own_group(group: str, decided: str, log: Path) -> list[str]:
    """A consumer's arguments for a group, decisions stream and log of its own, in batches
    of 20 (many batches, so a kill or a loss lands mid-stream)."""
    return ["--group", group, "--decisions", decided, "--batch", "20", "--prediction-log", str(log)]


def one_decision_and_record_each(got: list[dict[str, Any]], day: pd.DataFrame, log: Path) -> None:
    ids = [d["event_id"] for d in got]
    assert len(ids) == len(day) and set(ids) == {str(i) for i in day["transaction_id"]}
    records, corrupt = read_log(log)
    assert corrupt == 0
    assert sorted(r["request_id"] for r in records) == sorted(ids)


def same_scores_as_batch(
    world: dict[str, Any], got: list[dict[str, Any]], day: pd.DataFrame
) -> None:
    expected = batch_scores(world, day, world["history"])
    scores = pd.Series([d["score"] for d in got], index=[d["event_id"] for d in got])
    np.testing.assert_allclose(scores[expected.index], expected, rtol=0, atol=1e-12)


@pytest.fixture(scope="module")
def live(world: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One broker and one consumer for the module's first tests: 60 days already in the
    stream when the group is created (its history), then live events."""
    port = free_port()
    with redis_server(port, tmp_path_factory.mktemp("redis")) as client:
        publish(client, events(world["history"]))
        consumer = Consumer(world, port)
        wait_until(lambda: "to take back" in consumer.text(), what="the consumer to start")
        yield client, consumer, port
        consumer.stop()


def test_each_event_gets_the_batch_engines_score_once_and_duplicates_are_dead_letters(
    world: dict[str, Any], live: Any
) -> None:
    client, consumer, _ = live
    assert "36372 event(s) of history" in consumer.text()
    day = world["later"].iloc[:1500]
    bodies = events(day, label=False)
    publish(client, bodies[:700])
    # A producer retrying: the same event ids again, one of them with another amount.
    again = [bodies[3], bodies[10]]
    altered = orjson.loads(bodies[20])
    altered["tx_amount"] = 1.0
    publish(client, [*again, orjson.dumps(altered), *bodies[700:]])
    wait_until(lambda: len(decisions(client)) >= 1500, what="1500 decisions")
    wait_until(lambda: len(dead_letters(client)) >= 3, what="3 dead letters")
    time.sleep(1)  # nothing more may come

    got = decisions(client)
    ids = [d["event_id"] for d in got]
    assert len(ids) == 1500 and len(set(ids)) == 1500
    assert ids == [str(i) for i in day["transaction_id"]]  # in the order published
    dead = dead_letters(client)
    assert len(dead) == 3
    assert all("transaction_id: duplicate: event" in d["reason"] for d in dead)

    same_scores_as_batch(world, got, day)
    assert all(d["model_name"] == "fraud-detector" and d["model_version"] == "1" for d in got)

    records = logged(world)
    assert sorted(r["request_id"] for r in records) == sorted(ids)
    by_id = {r["request_id"]: r for r in records}
    assert all(by_id[d["event_id"]]["score"] == d["score"] for d in got)
    figures = consumer.metrics()
    assert figures['shipyard_stream_events_total{outcome="scored"}'] == 1500
    assert figures['shipyard_stream_events_total{outcome="dead_letter"}'] == 3
    assert figures["shipyard_stream_lag"] == 0
    assert figures["shipyard_stream_latency_seconds_count"] == 1500


BAD: list[tuple[bytes | dict[str, Any], str]] = [
    (b"{not json", "body: json: not a JSON document"),
    (b"[1, 2]", "body: json: not a JSON object"),
    (b'{"transaction_id": NaN}', "body: json: not a JSON document"),
    ({"drop": "customer_id"}, "customer_id: columns: required field is missing"),
    ({"customer_id": "12"}, "customer_id: type: expected int, got str"),
    ({"tx_amount": True}, "tx_amount: type: expected float, got bool"),
    ({"customer_id": 10**30}, "customer_id: type: expected int"),
    ({"customer_id": 1.5}, "customer_id: type: expected int"),
    ({"tx_amount": -3.0}, "tx_amount: range: below min"),
    ({"tx_datetime": "yesterday"}, "tx_datetime: type: expected datetime"),
    ({"transaction_id": None}, "transaction_id: nulls: null value"),
    ({"card_number": "4111"}, "card_number: fields: not a column of the data contract"),
    ({"model_version": "7"}, "model_version: model: '7' is not served here (version 1)"),
    ({"model_name": "churn"}, "model_name: model: 'churn' is not served here"),
    ({"tx_amount": 1e12}, "tx_amount: range: outside the served range"),
]


def test_every_bad_event_is_a_dead_letter_with_its_reason_and_the_consumer_goes_on(
    world: dict[str, Any], live: Any
) -> None:
    client, consumer, _ = live
    before = len(dead_letters(client))
    base = orjson.loads(events(world["later"].iloc[2000:2001])[0])
    # A customer and terminal of their own: an amount outside the served range is refused,
    # yet it is history, as in batch (its windows would push later events out of range too).
    base.update(customer_id=999_999, terminal_id=999_999)
    bodies = []
    for n, (change, _) in enumerate(BAD):
        if isinstance(change, bytes):
            bodies.append(change)
            continue
        event = {**base, "transaction_id": 900_000_000 + n}  # no simulated id is this high
        if "drop" in change:
            del event[change["drop"]]
        else:
            event.update(change)
        bodies.append(json.dumps(event).encode())  # orjson refuses 10**30; a producer may not
    good = orjson.loads(events(world["later"].iloc[2001:2002])[0])
    ids = publish(client, [*bodies, orjson.dumps(good)])
    wait_until(lambda: len(dead_letters(client)) >= before + len(BAD), what="the dead letters")
    wait_until(
        lambda: str(good["transaction_id"]) in {d["event_id"] for d in decisions(client)},
        what="the good event after the bad ones",
    )
    dead = dead_letters(client)[before:]
    assert [d["message_id"] for d in dead] == ids[: len(BAD)]
    for letter, (_, reason) in zip(dead, BAD, strict=True):
        assert letter["reason"].startswith(reason), (letter, reason)
    assert consumer.proc.poll() is None


def test_a_broken_challenger_in_shadow_publishes_nothing_and_is_rejected_by_the_gates(
    world: dict[str, Any], live: Any
) -> None:
    """A second consumer group scores the same events with a miscalibrated version; the
    canary's model gates, on the two logs joined by event id, reject it."""
    from shipyard import registry
    from shipyard.tags import VersionTags

    client, _, port = live
    broken = copy.deepcopy(world["model"])
    broken[-1].intercept_ = broken[-1].intercept_ + 2.0  # the odds of every event times e**2
    version = world["register"](broken)
    shadow = Consumer(world, port, "--shadow", ref=version)
    try:
        wait_until(lambda: "to take back" in shadow.text(), what="the shadow to start")
        assert f"group shipyard.fraud-detector.shadow-v{version}" in shadow.text()
        rows = world["later"].iloc[4200:5700]
        publish(client, events(rows, label=False))
        folder = f"fraud-detector-stream-shadow-v{version}"
        wait_until(lambda: len(logged(world, folder)) == 1500, what="the shadow's 1500")
        wait_until(
            lambda: len(decisions(client)) >= 3000,
            what=f"the live decisions: {len(decisions(client))}, {dead_letters(client)[-6:]}",
        )
    finally:
        assert shadow.stop() == 0
    assert all(d["model_version"] == "1" for d in decisions(client))  # a shadow publishes none

    judged = judge_stream(world, f"{scoring_world.NAME}@{version}")
    assert judged.returncode == 1, judged.stdout + judged.stderr
    assert "on 1500 events" in judged.stdout
    assert "max_logit_shift" in judged.stderr and "rolled back" in judged.stderr
    tags = VersionTags.of(registry.resolve(scoring_world.NAME, version))
    assert tags.canary_failed_gate and tags.canary_failed_gate.startswith("max_logit_shift")
    champion = registry.version_by_alias(scoring_world.NAME, "champion")
    assert champion is not None and str(champion.version) == "1"


def judge_stream(world: dict[str, Any], ref: str) -> subprocess.CompletedProcess[str]:
    root = world["root"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    env["SHIPYARD_RUNTIME_DIR"] = str(root / "runtime")
    return subprocess.run(
        [SHIPYARD, "stream-judge", ref],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_graceful_stop_finishes_the_batch_in_hand(world: dict[str, Any], live: Any) -> None:
    client, consumer, _ = live
    bodies = events(world["later"].iloc[2100:4100], label=False)
    publish(client, bodies)
    wait_until(lambda: len(decisions(client)) > 1510, what="the first decisions")
    assert consumer.stop() == 0
    assert "stopped after" in consumer.text()
    pending = client.xpending("transactions", "shipyard.fraud-detector")
    assert pending["pending"] == 0  # what it was given, it finished and acknowledged
    decided = {d["event_id"] for d in decisions(client)}
    wanted = {str(i) for i in world["later"]["transaction_id"].iloc[2100:4100]}
    info = {g["name"].decode(): g for g in client.xinfo_groups("transactions")}
    assert info["shipyard.fraud-detector"]["lag"] == len(wanted - decided)  # the rest waits


def test_entries_read_as_the_stop_came_are_decided_before_the_consumer_exits(
    world: dict[str, Any], tmp_path: Path
) -> None:
    """faststream's stop cancels a read in flight, which Redis may have answered already: its
    entries are then the consumer's, pending, and never handed to it. Made here on purpose,
    by reading them as the consumer in one transaction with their publishing; the graceful
    stop must decide, log and acknowledge them all the same."""
    port, group = free_port(), "drain-test"
    day = world["later"].iloc[:5]
    with redis_server(port, tmp_path / "redis") as client:
        consumer = Consumer(world, port, *own_group(group, "drain.decisions", tmp_path / "log"))
        try:
            # Its handlers, and so its graceful stop, are in place once faststream says so.
            wait_until(lambda: "started successfully" in consumer.text(), what="the consumer")
            pipe = client.pipeline(transaction=True)
            for body in events(day, label=False):
                pipe.xadd("transactions", {"__data__": body})
            pipe.xreadgroup(group, "c1", {"transactions": ">"}, count=len(day))
            assert len(pipe.execute()[-1][0][1]) == len(day)  # the test's read got them all
            assert client.xpending("transactions", group)["pending"] == len(day)
            assert consumer.stop() == 0
        finally:
            consumer.stop(signal.SIGKILL)
        assert client.xpending("transactions", group)["pending"] == 0
        got = decisions(client, "drain.decisions")
    one_decision_and_record_each(got, day, tmp_path / "log")
    assert f"{len(day)} event(s) read as the stop came: deciding them" in consumer.text()


def test_kill_9_mid_stream_then_restart_leaves_one_decision_and_one_record_per_event(
    world: dict[str, Any], tmp_path: Path
) -> None:
    port, group = free_port(), "kill-test"
    args = own_group(group, "kill.decisions", tmp_path / "log")
    day = world["later"].iloc[:3000]
    with redis_server(port, tmp_path / "redis") as client:
        publish(client, events(world["history"]))
        first = Consumer(world, port, *args)
        wait_until(lambda: "to take back" in first.text(), what="the consumer to start")
        publish(client, events(day, label=False))
        wait_until(lambda: client.xlen("kill.decisions") > 600, what="600 decisions")
        first.stop(signal.SIGKILL)
        second = Consumer(world, port, *args)
        wait_until(lambda: client.xlen("kill.decisions") >= 3000, what="every decision")
        time.sleep(1)
        second.stop()
        assert client.xpending("transactions", group)["pending"] == 0
        got = decisions(client, "kill.decisions")
    one_decision_and_record_each(got, day, tmp_path / "log")
    # The restart rebuilt the history from the stream: the 60 days and what the first run
    # was given, the batch in hand at the kill included (most often, it takes it back).
    found = re.search(r"kill-test: (\d+) event\(s\) of history, (\d+) to take back", second.text())
    assert found and int(found[1]) > 36372 + 600, second.text()
    same_scores_as_batch(world, got, day)


def test_a_broker_not_there_yet_is_waited_for_then_used(
    world: dict[str, Any], tmp_path: Path
) -> None:
    port = free_port()
    consumer = Consumer(world, port, "--group", "late", "--decisions", "late.decisions")
    try:
        wait_until(lambda: "unreachable" in consumer.text(), what="the unreachable line")
        with redis_server(port, tmp_path / "redis") as client:
            wait_until(lambda: "to take back" in consumer.text(), what="the consumer to start")
            publish(client, events(world["later"].iloc[:5], label=False))
            wait_until(lambda: client.xlen("late.decisions") == 5, what="5 decisions")
            assert consumer.stop() == 0
    finally:
        consumer.stop(signal.SIGKILL)
    line = next(x for x in consumer.text().splitlines() if "unreachable" in x)
    assert f"redis://127.0.0.1:{port}/0: unreachable" in line and "retry in" in line


def test_a_broker_lost_mid_stream_is_waited_for_and_nothing_is_lost_or_decided_twice(
    world: dict[str, Any], tmp_path: Path
) -> None:
    port, group = free_port(), "loss-test"
    args = own_group(group, "loss.decisions", tmp_path / "log")
    day = world["later"].iloc[:3000]
    bodies = events(day, label=False)
    with redis_server(port, tmp_path / "redis", durable=True) as client:
        publish(client, events(world["history"]))
        consumer = Consumer(world, port, *args)
        wait_until(lambda: "to take back" in consumer.text(), what="the consumer to start")
        publish(client, bodies[:2000])
        wait_until(lambda: client.xlen("loss.decisions") > 300, what="300 decisions")
    try:  # the server is gone, the consumer mid-stream; then it is back, with its data
        wait_until(lambda: "retry in" in consumer.text(), timeout=60, what="the lost line")
        with redis_server(port, tmp_path / "redis", durable=True) as client:
            publish(client, bodies[2000:])
            wait_until(lambda: client.xlen("loss.decisions") >= 3000, what="every decision")
            time.sleep(1)
            assert consumer.stop() == 0
            assert client.xpending("transactions", group)["pending"] == 0
            got = decisions(client, "loss.decisions")
    finally:
        consumer.stop(signal.SIGKILL)
    one_decision_and_record_each(got, day, tmp_path / "log")
    line = next(x for x in consumer.text().splitlines() if "retry in" in x)
    assert f"redis://127.0.0.1:{port}/0" in line
    same_scores_as_batch(world, got, day)


def test_a_file_published_as_events_is_checked_first_and_lands_whole_in_time_order(
    world: dict[str, Any], tmp_path: Path
) -> None:
    """`shipyard data publish`: what the consumer reads is the library's events for the
    file's rows (the tests above publish those); a file that breaks the contract publishes
    nothing; a broker away is one line."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    day = world["later"].iloc[:300][COLUMNS]
    good, bad = tmp_path / "day.csv", tmp_path / "bad.csv"
    day.iloc[::-1].to_csv(good, index=False)  # out of order: published in time order
    day.drop(columns="terminal_id").to_csv(bad, index=False)
    unlabelled = tmp_path / "live.csv"  # a payment flow's: no outcome known yet
    day.drop(columns="tx_fraud").to_csv(unlabelled, index=False)

    def run(path: Path, *args: str, broker: str = url) -> subprocess.CompletedProcess[str]:
        argv = [SHIPYARD, "data", "publish", str(path), "--broker", broker, *args]
        return subprocess.run(argv, cwd=world["root"], capture_output=True, text=True, timeout=120)

    with redis_server(port, tmp_path / "redis") as client:
        refused = run(bad)
        assert refused.returncode == 1
        assert refused.stderr.strip().splitlines()[-1] == (
            f"error: {bad}: column 'terminal_id': rule 'columns': required column is missing"
        )
        assert client.xlen("transactions") == 0
        done = run(good, "--rate", "3000", "--stream", "payments")
        assert done.returncode == 0, done.stderr
        assert re.fullmatch(
            rf"300 events to payments at {re.escape(url)}, \d+\.\d s\n", done.stdout
        )
        bodies = [fields[b"__data__"] for _, fields in client.xrange("payments")]
        labelled = run(good, "--labels", "--stream", "history")
        assert labelled.returncode == 0, labelled.stderr
        history = [orjson.loads(f[b"__data__"]) for _, f in client.xrange("history")]
        live = run(unlabelled, "--stream", "live")
        assert live.returncode == 0, live.stderr
        assert [f[b"__data__"] for _, f in client.xrange("live")] == bodies
        no_labels = run(unlabelled, "--labels", "--stream", "none")
        assert no_labels.returncode == 1 and client.xlen("none") == 0
        assert no_labels.stderr.strip().splitlines()[-1] == (
            f"error: {unlabelled}: column 'tx_fraud': rule 'columns': required column is missing"
        )
    sent = [orjson.loads(body) for body in bodies]
    assert sent == [orjson.loads(body) for body in events(day, label=False)]
    assert [e["transaction_id"] for e in sent] == day["transaction_id"].tolist()
    assert all(set(e) == set(COLUMNS) - {"tx_fraud"} for e in sent)
    when = pd.to_datetime([e["tx_datetime"] for e in sent], format="ISO8601")
    assert (when == day["tx_datetime"].to_numpy()).all()
    assert [e["tx_fraud"] for e in history] == day["tx_fraud"].tolist()
    away = run(good)
    assert away.returncode == 1
    assert away.stderr.strip().splitlines()[-1].startswith(f"error: --broker {url}: unreachable")
    kafka = run(good, broker="kafka://127.0.0.1:9092")
    assert kafka.returncode == 1 and "expected redis://HOST:PORT[/DB]" in kafka.stderr

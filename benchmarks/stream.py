"""Claim: one `shipyard stream` consumer sustains at least the HTTP path's single-record
throughput, with p99 event-to-decision latency <= 50 ms at half of its own maximum rate.

Run after `make pipeline` (`make benchmarks` installs wrk). In one run, on this machine:
- a Redis server on a free loopback port; the pipeline's transactions before the last
  BACKLOG + 2 * RATE_SECONDS * (max rate / 2) are published first, as the consumer's history;
- the consumer (`fraud-detector@<registered version>`, OMP_NUM_THREADS=1, --batch BATCH);
- maximum rate: BACKLOG events published at once, drained by the consumer. Events/s are
  the backlog over the time from the first event entering the stream to the last decision;
- latency: events published at half that rate for RATE_SECONDS, paced every 5 ms. An event's
  latency is its decision entry's time minus its own entry's time: both are Redis's clock;
- the HTTP path: `shipyard serve` of the same version, one record per request, wrk as in
  `benchmarks.serving` (CONNECTIONS connections, DURATION seconds).
Publisher, broker, consumer and wrk share the two cores.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from benchmarks import serving
from benchmarks._timing import VENV_BIN, env, scratch
from shipyard.config import load_params
from shipyard.data.replay import load_period
from shipyard.deploy.processes import free_port
from shipyard.scoring import producer

ROOT = Path(__file__).resolve().parents[1]
BACKLOG = int(os.environ.get("BACKLOG", "30000"))
RATE_SECONDS = float(os.environ.get("RATE_SECONDS", "10"))
BATCH = int(os.environ.get("BATCH", "500"))
PACED_MAX = 60_000  # events kept for the paced run: fewer at a high rate shorten it


def ms(entry_id: Any) -> int:
    return int(bytes(entry_id).split(b"-")[0])


def decided(client: Any, after: bytes) -> list[tuple[int, str]]:
    """(decision time ms, event id) of the decisions after entry `after`."""
    out = []
    for mid, fields in client.xrange("decisions", b"(" + after if after != b"-" else b"-"):
        out.append((ms(mid), orjson.loads(fields[b"__data__"])["event_id"]))
    return out


def wait_for(client: Any, count: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while client.xlen("decisions") < count:
        if time.monotonic() > deadline:
            sys.exit(f"stream: {client.xlen('decisions')} of {count} decisions after {timeout}s")
        time.sleep(0.05)


def paced(client: Any, items: list[bytes], rate: float) -> dict[str, int]:
    """Publish at `rate` events/s; each event's entry time (ms) by its id."""
    start, sent, times = time.perf_counter(), 0, {}
    while sent < len(items):
        due = min(len(items), int((time.perf_counter() - start) * rate) + 1)
        if due > sent:
            pipe = client.pipeline(transaction=False)
            for body in items[sent:due]:
                pipe.xadd("transactions", {"__data__": body})
            for body, mid in zip(items[sent:due], pipe.execute(), strict=True):
                times[str(orjson.loads(body)["transaction_id"])] = ms(mid)
            sent = due
        time.sleep(0.005)
    return times


def main() -> None:
    import redis

    redis_bin = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(redis_bin).exists():
        sys.exit("stream: redis-server not found; `make tools` installs it")
    if shutil.which("wrk") is None:
        sys.exit("stream: wrk not found; `make benchmarks` installs it (apt-get install wrk)")
    record = json.loads((ROOT / "artifacts/registered/registration.json").read_text())
    version = str(record["version"])
    params = load_params(ROOT / "params.yaml")
    data, table = params.data, load_period(ROOT / "data/transactions.csv", params)
    live_rows = BACKLOG + PACED_MAX
    history, live = table.iloc[:-live_rows], table.iloc[-live_rows:]
    tmp = scratch("bench-stream-")
    port = free_port()
    argv = [redis_bin, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    broker = subprocess.Popen(
        [*argv, "--appendonly", "no", "--dir", str(tmp)], stdout=subprocess.DEVNULL
    )
    client = redis.Redis(port=port)
    time.sleep(0.5)
    consumer = None
    try:
        producer.publish(client, "transactions", producer.bodies(history, data, labels=True))
        cmd = [str(VENV_BIN / "shipyard"), "stream", f"fraud-detector@{version}"]
        cmd += ["--broker", f"redis://127.0.0.1:{port}/0", "--batch", str(BATCH)]
        cmd += ["--prediction-log", str(tmp / "log")]
        err = (tmp / "consumer.err").open("w")
        consumer = subprocess.Popen(
            cmd, cwd=ROOT, env={**env(), "OMP_NUM_THREADS": "1"}, stderr=err
        )
        deadline = time.monotonic() + 300
        while "to take back" not in (said := (tmp / "consumer.err").read_text()):
            if consumer.poll() is not None or time.monotonic() > deadline:
                sys.exit("stream: the consumer did not start:\n" + said[-3000:])
            time.sleep(0.2)

        items = producer.bodies(live, data, labels=False)
        backlog, rest = items[:BACKLOG], items[BACKLOG:]
        first: Any = client.xadd("transactions", {"__data__": backlog[0]})
        producer.publish(client, "transactions", backlog[1:])
        wait_for(client, BACKLOG)
        newest: Any = client.xrevrange("decisions", count=1)
        last: bytes = newest[0][0]
        max_rate = BACKLOG / max((ms(last) - ms(first)) / 1000, 1e-3)

        rate = max_rate / 2
        count = min(len(rest), int(rate * RATE_SECONDS))
        sent = paced(client, rest[:count], rate)
        wait_for(client, BACKLOG + count)
        lat = [float(t - sent[e]) for t, e in decided(client, last) if e in sent]
    finally:
        if consumer is not None:
            consumer.send_signal(signal.SIGTERM)
            consumer.wait(60)
        broker.terminate()
        broker.wait(10)

    http_port = free_port()
    http = serving.serve(
        "shipyard",
        serving.shipyard_serve(version, http_port, tmp),
        "/readyz",
        http_port,
        {},
        [("/predict", http_bodies())],
        tmp,
    )[0]

    p50, p99 = (float(np.percentile(np.asarray(lat), q)) for q in (50, 99))
    rows = [
        (f"stream, backlog of {BACKLOG} (maximum)", max_rate, "", ""),
        (f"stream, paced at half ({len(lat)} events)", rate, f"{p50:.1f}", f"{p99:.1f}"),
        ("HTTP: shipyard serve, 1 record per request", http["rps"], http["p50"], http["p99"]),
    ]
    print(f"\nStream: fraud-detector v{version}, one consumer, --batch {BATCH}, Redis on loopback")
    print(f"  {'path':<44} {'per s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for label, per_s, lo, hi in rows:
        print(f"  {label:<44} {per_s:9.0f} {lo!s:>8} {hi!s:>8}")
    ok_rate = max_rate >= http["rps"]
    print(f"\n  goal: maximum >= HTTP's {http['rps']:.0f}/s: {'met' if ok_rate else 'NOT met'}")
    print(f"  goal: p99 <= 50 ms at half the maximum: {'met' if p99 <= 50 else 'NOT met'}")


def http_bodies() -> list[bytes]:
    fields = json.loads((ROOT / "artifacts/features/features.json").read_text())
    cols = fields["numeric"] + fields["categorical"]
    ref = pd.read_parquet(ROOT / "artifacts/registered/reference.parquet")[cols].head(500)
    rows = [{k: float(v) for k, v in r.items()} for r in ref.to_dict("records")]
    return [json.dumps({"features": r}).encode() for r in rows]


if __name__ == "__main__":
    main()

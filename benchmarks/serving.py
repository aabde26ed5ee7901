"""Claim: Shipyard's service serves single records at ≥ 2,000 req/s with p99 ≤ 25 ms, ≥ 20 times
`mlflow models serve` on the same model version; 100-record requests at ≥ 30,000 rows/s; and
the whole local deployment (Envoy, stable, canary at 10 %) at ≥ 1,500 req/s, p99 ≤ 30 ms.

Run after `make pipeline` (`make benchmarks` installs wrk). Each server runs alone on a free
loopback port with one worker and OMP_NUM_THREADS=1 and takes the same wrk load: CONNECTIONS
connections for DURATION seconds, cycling over the same 500 records, one record per request
and then 100 per request. Two floors are measured in the same run: a bare ASGI endpoint under
uvicorn (nothing a JSON service does is cheaper here) and in-process predict on the same rows.
The deployment serves the one registered version as both stable and canary: the path and the
work per request are a real canary's, whichever version answers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks._timing import VENV_BIN, env, scratch
from shipyard.deploy import processes, proxy

CONNECTIONS = int(os.environ.get("CONNECTIONS", "16"))
DURATION = int(os.environ.get("DURATION", "15"))
ROOT = Path(__file__).resolve().parents[1]
LUA = """
local bodies = {}
for line in io.lines(os.getenv("WRK_BODIES")) do bodies[#bodies + 1] = line end
local i = 0
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, bodies[i])
end
"""
UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"serving: server exited early ({url})")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    sys.exit(f"serving: {url} never became ready")


def wrk(url: str, bodies: list[bytes], tmp: Path) -> dict[str, float]:
    data = tmp / "bodies.jsonl"
    data.write_bytes(b"\n".join(bodies) + b"\n")
    script = tmp / "post.lua"
    script.write_text(LUA)
    out = subprocess.run(
        ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{DURATION}s", "--latency", "-s", str(script), url],
        env={**os.environ, "WRK_BODIES": str(data)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def latency(pct: str) -> float:
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        return float(m.group(1)) * UNITS[m.group(2)] if m else float("nan")

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    socket_errors = sum(int(g) for g in errors.groups()) if errors else 0
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "p50": latency("50"),
        "p99": latency("99"),
        "errors": (int(bad.group(1)) if bad else 0) + socket_errors,
    }


def launch(name: str, cmd: list[str], extra: dict[str, str], tmp: Path) -> subprocess.Popen[bytes]:
    log = open(tmp / f"{name}.log", "wb")  # noqa: SIM115
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        env={**env(), "OMP_NUM_THREADS": "1", **extra},
        stdout=log,
        stderr=log,
        start_new_session=True,
    )


def halt(proc: subprocess.Popen[bytes], port: int) -> None:
    subprocess.run(["pkill", "-TERM", "-s", str(proc.pid)], check=False)
    subprocess.run(["pkill", "-TERM", "-f", f"port {port}"], check=False)
    subprocess.run(["pkill", "-TERM", "-f", "--", f"-p {port}"], check=False)
    proc.wait(timeout=60)
    time.sleep(2)


def load(port: int, loads: list[tuple[str, list[bytes]]], tmp: Path) -> list[dict[str, Any]]:
    results = []
    for path, bodies in loads:
        url = f"http://127.0.0.1:{port}{path}"
        for body in bodies[:20]:  # warm-up
            urllib.request.urlopen(
                urllib.request.Request(url, body, {"content-type": "application/json"}),
                timeout=30,
            ).read()
        results.append(wrk(url, bodies, tmp))
    return results


def serve(
    name: str,
    cmd: list[str],
    ready: str,
    port: int,
    extra: dict[str, str],
    loads: list[tuple[str, list[bytes]]],
    tmp: Path,
) -> list[dict[str, Any]]:
    proc = launch(name, cmd, extra, tmp)
    try:
        wait(f"http://127.0.0.1:{port}{ready}", proc)
        return load(port, loads, tmp)
    finally:
        halt(proc, port)


def shipyard_serve(version: str, port: int, tmp: Path) -> list[str]:
    return [
        str(VENV_BIN / "shipyard"),
        "serve",
        f"fraud-detector@{version}",
        "--port",
        str(port),
        "--prediction-log",
        str(tmp / f"predictions-{port}"),
    ]


def deployment(
    version: str, loads: list[tuple[str, list[bytes]]], tmp: Path
) -> list[dict[str, Any]]:
    """The local target's data path: Envoy from the deployment's own configuration, 90/10."""
    ports = [free_port(), free_port()]
    procs = [launch(f"variant-{p}", shipyard_serve(version, p, tmp), {}, tmp) for p in ports]
    front, files = free_port(), proxy.Files(tmp / "envoy")
    split = proxy.Split(
        proxy.Upstream("stable", version, ports[0]), proxy.Upstream("canary", version, ports[1]), 10
    )
    pid = None
    try:
        for port, proc in zip(ports, procs, strict=True):
            wait(f"http://127.0.0.1:{port}/readyz", proc)
        pid = proxy.start(files.folder, front, split)
        proxy.wait_ready(files, pid)
        return load(front, loads, tmp)
    finally:
        if pid is not None:
            processes.stop(pid)
        for port, proc in zip(ports, procs, strict=True):
            halt(proc, port)


def floor(bodies: list[bytes], tmp: Path) -> dict[str, Any]:
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "benchmarks._asgi_floor:app", "--port", str(port)]
    cmd += ["--host", "127.0.0.1", "--no-access-log", "--log-level", "warning"]
    return serve("floor", cmd, "/", port, {}, [("/predict", bodies)], tmp)[0]


def in_process(model: Any, rows: Any) -> tuple[float, float, float]:
    """Median and p99 ms of one-row predict, and ms of one 100-row predict."""
    single = []
    for i in range(300):
        start = time.perf_counter()
        model.predict_proba(rows.iloc[i % len(rows) : i % len(rows) + 1])
        single.append((time.perf_counter() - start) * 1000)
    start = time.perf_counter()
    for _ in range(20):
        model.predict_proba(rows.head(100))
    batch = (time.perf_counter() - start) * 1000 / 20
    q = statistics.quantiles(single, n=100)
    return q[49], q[98], batch


def main() -> None:
    import joblib
    import pandas as pd

    from shipyard.models import storage

    if shutil.which("wrk") is None:
        sys.exit("serving: wrk not found; `make benchmarks` installs it (apt-get install wrk)")
    record = json.loads((ROOT / "artifacts/registered/registration.json").read_text())
    version, best = record["version"], record["candidate"]
    fields = json.loads((ROOT / "artifacts/features/features.json").read_text())
    cols = fields["numeric"] + fields["categorical"]
    ref = pd.read_parquet(ROOT / "artifacts/registered/reference.parquet")[cols].head(500)
    rows = [{k: float(v) for k, v in r.items()} for r in ref.to_dict("records")]
    chunks = [rows[i : i + 100] for i in range(0, 500, 100)]
    ours = (
        [json.dumps({"features": r}).encode() for r in rows],
        [json.dumps({"records": c}).encode() for c in chunks],
    )
    mlflow_bodies = (
        [json.dumps({"dataframe_records": [r]}).encode() for r in rows],
        [json.dumps({"dataframe_records": c}).encode() for c in chunks],
    )

    runs = json.loads((ROOT / "artifacts/models/runs.json").read_text())
    model = storage.load(
        ROOT / "artifacts/models" / best / "model.skops", runs["candidates"][best]["trusted_types"]
    )
    tmp = scratch("bench-serving-")
    joblib.dump(model, tmp / "model.joblib")
    tracking = f"sqlite:///{ROOT / '.shipyard' / 'mlflow.db'}"

    table: list[tuple[str, list[dict[str, Any]]]] = []
    port = free_port()
    ours_loads = [("/predict", ours[0]), ("/predict_batch", ours[1])]
    table.append(
        (
            "shipyard (BentoML)",
            serve(
                "shipyard", shipyard_serve(version, port, tmp), "/readyz", port, {}, ours_loads, tmp
            ),
        )
    )
    table.append(("deployment: Envoy, 90/10", deployment(version, ours_loads, tmp)))
    port = free_port()
    table.append(
        (
            "mlflow models serve",
            serve(
                "mlflow",
                [
                    str(VENV_BIN / "mlflow"),
                    "models",
                    "serve",
                    "-m",
                    f"models:/fraud-detector/{version}",
                    "--env-manager",
                    "local",
                    "-w",
                    "1",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                ],
                "/ping",
                port,
                {"MLFLOW_TRACKING_URI": tracking},
                [("/invocations", mlflow_bodies[0]), ("/invocations", mlflow_bodies[1])],
                tmp,
            ),
        )
    )
    port = free_port()
    table.append(
        (
            "FastAPI + joblib",
            serve(
                "fastapi",
                [sys.executable, "-m", "benchmarks._fastapi_joblib", str(port)],
                "/docs",
                port,
                {"BASELINE_MODEL": str(tmp / "model.joblib")},
                [("/predict", ours[0]), ("/predict_batch", ours[1])],
                tmp,
            ),
        )
    )
    bare = floor(ours[0], tmp)
    p50, p99, batch_ms = in_process(model, ref)

    print(
        f"\nServing {best} (version {version}): wrk, {CONNECTIONS} connections, {DURATION} s, "
        "1 worker, OMP_NUM_THREADS=1"
    )
    for i, label in enumerate(("1 record per request", "100 records per request")):
        print(f"  {label:<28} {'req/s':>8} {'rows/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
        size = 1 if i == 0 else 100
        for name, results in table:
            r = results[i]
            print(
                f"  {name:<28} {r['rps']:8.1f} {r['rps'] * size:9.0f} {r['p50']:8.1f} "
                f"{r['p99']:8.1f} {r['errors']:7d}"
            )
        if i == 0:
            print(
                f"  {'bare ASGI floor (uvicorn)':<28} {bare['rps']:8.1f} {bare['rps']:9.0f} "
                f"{bare['p50']:8.1f} {bare['p99']:8.1f} {bare['errors']:7d}"
            )
    print(
        f"  {'in-process floor':<28} one row p50 {p50:.2f} ms, p99 {p99:.2f} ms; "
        f"100 rows {batch_ms:.2f} ms"
    )
    service, whole, mlflow = table[0][1], table[1][1], table[2][1]
    ratio = service[0]["rps"] / mlflow[0]["rps"] if mlflow[0]["rps"] else float("nan")
    print("  targets:")
    print(
        f"    service, 1 record: {service[0]['rps']:.0f} req/s (≥ 2,000), {ratio:.1f}× mlflow "
        f"(≥ 20), p99 {service[0]['p99']:.1f} ms (≤ 25), errors {service[0]['errors']} (0)"
    )
    print(f"    service, 100 records: {service[1]['rps'] * 100:.0f} rows/s (≥ 30,000)")
    print(
        f"    deployment, 1 record: {whole[0]['rps']:.0f} req/s (≥ 1,500), "
        f"p99 {whole[0]['p99']:.1f} ms (≤ 30), errors {whole[0]['errors']} (0)"
    )
    print("  before (issue 15): the service did 361 req/s, p50 42 ms, p99 284 ms; mlflow 82 req/s")


if __name__ == "__main__":
    main()

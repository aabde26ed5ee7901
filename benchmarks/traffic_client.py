"""Claim: the traffic clients (`shipyard.traffic.Clients`: the demo's live traffic and
canaries, `shipyard data replay`, the tests' clients) spend about a quarter of the CPU per
request that the same clients built on httpx spent (0.19 ms against 0.68 ms here).

They share the cores with what they call: in the demo and the tests, every millisecond a
client spends is one the services, Envoy and the controller do not get. Same run, alternating,
`ROUNDS` rounds of `REQUESTS` single-record POSTs from `THREADS` threads, each thread on one
kept-alive connection, to a server in another process (so only the clients' CPU is counted):
- ours: `traffic.Clients`, one `http.client` connection per thread;
- baseline: the same loop on one `httpx.Client` per thread, as the clients were written before.
Run with `.venv/bin/python -m benchmarks.traffic_client`.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import httpx

from shipyard import traffic
from shipyard.deploy import processes

REQUESTS = 4000
THREADS = 8
ROUNDS = 5
SERVER = """
import http.server, sys
class Answer(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # as uvicorn and Envoy do: no 40 ms wait per answer
    def do_POST(self):
        self.rfile.read(int(self.headers["content-length"]))
        body = b'{"request_id": "1", "score": 0.01, "decision": false}'
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.send_header("x-shipyard-variant", "stable")
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Answer)
print("ready", flush=True)
server.serve_forever()
"""


def with_httpx(url: str, payloads: list[bytes]) -> None:
    """The clients' loop as it was on httpx: one client per thread, kept alive."""

    def loop(k: int) -> None:
        headers = {"content-type": "application/json"}
        with httpx.Client(timeout=30, headers=headers, verify=processes.client_tls()) as client:
            for body in payloads[k::THREADS]:
                answer = client.post(f"{url}/predict", content=body)
                answer.headers.get("x-shipyard-variant", "")

    threads = [threading.Thread(target=loop, args=(k,)) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def ours(url: str, payloads: list[bytes]) -> None:
    tally = traffic.Clients(url, payloads, threads=THREADS).wait()
    if tally.failed:
        raise SystemExit(f"traffic_client: {tally.failed} requests failed: {tally.first_error}")


def cpu_ms_per_request(
    run: Callable[[str, list[bytes]], None], url: str, payloads: list[bytes]
) -> float:
    before = resource.getrusage(resource.RUSAGE_SELF)
    run(url, payloads)
    after = resource.getrusage(resource.RUSAGE_SELF)
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return used / len(payloads) * 1000


def main() -> None:
    port = processes.free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        url = f"http://127.0.0.1:{port}"
        record = {f"f{i}": 0.5 for i in range(11)}
        payloads = [
            json.dumps({"features": record, "request_id": str(i)}).encode() for i in range(REQUESTS)
        ]
        ways = {"ours: http.client": ours, "baseline: httpx": with_httpx}
        for run in ways.values():
            run(url, payloads[:200])  # connections, imports, first calls
        figures: dict[str, list[float]] = {label: [] for label in ways}
        for _ in range(ROUNDS):
            for label, run in ways.items():
                figures[label].append(cpu_ms_per_request(run, url, payloads))
                time.sleep(0.2)
    finally:
        server.terminate()
        server.wait()
    print(f"\nclient CPU per request ({REQUESTS} requests, {THREADS} threads, median of {ROUNDS})")
    for label, values in figures.items():
        print(f"  {label:<22} {statistics.median(values):6.3f} ms")
    ours_ms, base_ms = (statistics.median(v) for v in figures.values())
    print(f"  saved per request: {base_ms - ours_ms:.3f} ms ({1 - ours_ms / base_ms:.0%})")


if __name__ == "__main__":
    main()

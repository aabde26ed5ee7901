"""Claim: a call from the canary controller to a service it runs (a `/metrics` scrape, a
readiness poll, an Envoy admin request) costs about a millisecond of CPU, where it cost over
20: the calls share one TLS context (`processes.client_tls`) instead of httpx building one,
CA bundle and all, per call.

The controller makes several such calls a second through every canary, and the webhook
receiver runs one canary after another in one process. Same run, alternating, `CALLS` plain
HTTP GETs on loopback per round, `ROUNDS` rounds; CPU of the calling thread only (the server
answers from another thread):
- ours: `httpx.get(url, verify=processes.client_tls())`, as the deploy code calls;
- baseline: `httpx.get(url)`, httpx's default;
- floor: `http.client`, one connection per call and no TLS context at all.
Run with `.venv/bin/python -m benchmarks.client_tls`.
"""

from __future__ import annotations

import http.client
import http.server
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from shipyard.deploy import processes

CALLS = 50
ROUNDS = 7


class Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


def per_call_ms(call: Callable[[], object]) -> float:
    start = time.thread_time()
    for _ in range(CALLS):
        call()
    return (time.thread_time() - start) / CALLS * 1000


def main() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_port
    url = f"http://127.0.0.1:{port}/metrics"

    def floor() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/metrics")
        conn.getresponse().read()
        conn.close()

    ways: dict[str, Callable[[], object]] = {
        "ours: one shared TLS context": lambda: httpx.get(url, verify=processes.client_tls()),
        "baseline: httpx's default, one per call": lambda: httpx.get(url),
        "floor: http.client, no TLS context": floor,
    }
    for call in ways.values():
        call()  # imports and first-call set-up
    figures: dict[str, list[float]] = {label: [] for label in ways}
    for _ in range(ROUNDS):
        for label, call in ways.items():
            figures[label].append(per_call_ms(call))
    server.shutdown()
    print(f"\nCPU per loopback GET ({CALLS} calls a round, median of {ROUNDS} rounds)")
    for label, values in figures.items():
        print(f"  {label:<42} {statistics.median(values):7.2f} ms")
    ours, base = (statistics.median(figures[k]) for k in list(ways)[:2])
    print(f"  saved per call: {base - ours:.2f} ms ({1 - ours / base:.0%})")


if __name__ == "__main__":
    main()

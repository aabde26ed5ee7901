"""Clients that send feature rows to a service over HTTP, with what each request got back.

One client for `shipyard data replay` (each row once) and the demo's and tests' live traffic
(round and round). Envoy marks every answer with the variant that gave it, so the demo
can say how many requests failed during a canary and whether a shadow ever answered a client.

Each thread keeps one `http.client` connection alive. The clients share the cores with the
services they call (a demo on a laptop, the tests), so they are kept cheap: on httpx they took
about four times the CPU per request (`benchmarks/traffic_client.py`).
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pandas as pd

from shipyard.deploy.processes import client_tls

TIMEOUT = 30.0  # seconds for the connection, and for each read of an answer


@dataclass
class Tally:
    """(status, variant) of every answer; `unreachable` counts connections that failed."""

    answers: Counter[tuple[int, str]] = field(default_factory=Counter)
    unreachable: int = 0
    first_error: str = ""  # the first failed answer: status and the start of its body

    @property
    def sent(self) -> int:
        return sum(self.answers.values()) + self.unreachable

    @property
    def failed(self) -> int:
        return self.unreachable + sum(n for (s, _), n in self.answers.items() if s >= 400)

    def by_variant(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for (_, variant), n in self.answers.items():
            out[variant or "direct"] += n
        return dict(out)


def bodies(features: pd.DataFrame, id_column: str) -> list[bytes]:
    """One /predict body per row; the request id is the row's id, so labels join back."""
    names = [c for c in features.columns if c != id_column]
    out = []
    for row in features.itertuples(index=False):
        record = dict(zip(features.columns, row, strict=True))
        payload = {"features": {n: record[n] for n in names}, "request_id": str(record[id_column])}
        out.append(json.dumps(payload, default=float).encode())
    return out


class Clients:
    """`threads` clients POSTing `bodies` to `url`: once each, or round and round until closed."""

    def __init__(
        self,
        url: str,
        payloads: list[bytes],
        *,
        threads: int = 8,
        repeat: bool = False,
        pause: float = 0.0,
        api_key: str | None = None,
    ) -> None:
        self.target = urlsplit(url.rstrip("/") + "/predict")
        self.headers = {"content-type": "application/json"}
        if api_key:
            self.headers["authorization"] = f"Bearer {api_key}"
        self.payloads = payloads
        self.repeat = repeat
        self.pause = pause
        self.tls = client_tls()  # before the threads: each would build its own at once
        self.tally = Tally()
        self.events: list[tuple[float, int, str]] = []  # (monotonic time, status, variant)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, args=(k, threads), daemon=True)
            for k in range(threads)
        ]
        for t in self._threads:
            t.start()

    def _connection(self) -> http.client.HTTPConnection:
        host, port = self.target.hostname or "", self.target.port
        if self.target.scheme == "https":
            return http.client.HTTPSConnection(host, port, timeout=TIMEOUT, context=self.tls)
        return http.client.HTTPConnection(host, port, timeout=TIMEOUT)

    def _loop(self, k: int, stride: int) -> None:
        i = k
        conn = self._connection()  # kept alive between requests; reopened when closed
        try:
            while not self._stop.is_set() and (self.repeat or i < len(self.payloads)):
                body = self.payloads[i % len(self.payloads)]
                i += stride
                try:
                    status, variant, content = self._post(conn, body)
                except (OSError, http.client.HTTPException) as err:
                    conn.close()
                    with self._lock:
                        self.tally.unreachable += 1
                        self.tally.first_error = self.tally.first_error or f"unreachable: {err!r}"
                    time.sleep(0.5)
                    continue
                with self._lock:
                    self.tally.answers[(status, variant)] += 1
                    self.events.append((time.monotonic(), status, variant))
                    if status >= 400 and not self.tally.first_error:
                        self.tally.first_error = f"{status} {content[:200]!r}"
                if self.pause:
                    time.sleep(self.pause)
        finally:
            conn.close()

    def _post(self, conn: http.client.HTTPConnection, body: bytes) -> tuple[int, str, bytes]:
        """One request. A kept-alive connection the server closed as we reused it is retried
        once on a new one, as browsers do; a refused connection is not."""
        reused = conn.sock is not None
        try:
            return self._exchange(conn, body)
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            conn.close()
            if not reused:
                raise
            return self._exchange(conn, body)

    def _exchange(self, conn: http.client.HTTPConnection, body: bytes) -> tuple[int, str, bytes]:
        conn.request("POST", self.target.path, body=body, headers=self.headers)
        answer = conn.getresponse()
        content = answer.read()
        return answer.status, answer.getheader("x-shipyard-variant", ""), content

    def wait(self) -> Tally:
        """Until every body was sent once (repeat=False)."""
        for t in self._threads:
            t.join()
        return self.tally

    def close(self) -> Tally:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=40)
        return self.tally

    def seen(self) -> list[tuple[int, str]]:
        """(status, variant) of every answer, in order."""
        return [(status, variant) for _, status, variant in self.events]

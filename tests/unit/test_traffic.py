"""The traffic clients against a real HTTP server on loopback: what they count as sent, as
failed, and which variant answered."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from shipyard import traffic


class Service(http.server.BaseHTTPRequestHandler):
    """Answers /predict like a service behind Envoy; `close_after` closes a kept-alive
    connection after that many answers without saying so, as an idle timeout does."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    close_after = 0
    seen: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.seen.append({"path": self.path, "auth": self.headers["authorization"], **body})
        status = 400 if body.get("bad") else 200
        answer = b'{"detail": "bad record"}' if status == 400 else b'{"score": 0.1}'
        self.send_response(status)
        self.send_header("content-length", str(len(answer)))
        self.send_header("x-shipyard-variant", "canary" if body.get("canary") else "stable")
        self.end_headers()
        self.wfile.write(answer)
        self.answered = getattr(self, "answered", 0) + 1
        if self.close_after and self.answered >= self.close_after:
            self.close_connection = True  # no `connection: close` header: the client must cope

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def service() -> Iterator[tuple[str, type[Service]]]:
    handler = type("Handler", (Service,), {"seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/", handler
    finally:
        server.shutdown()
        server.server_close()


def bodies(*records: dict[str, Any]) -> list[bytes]:
    return [json.dumps(r).encode() for r in records]


def test_each_body_is_sent_once_with_the_key_and_counted_by_variant(
    service: tuple[str, type[Service]],
) -> None:
    url, handler = service
    sent = bodies(*({"request_id": str(i), "canary": i % 3 == 0} for i in range(30)))
    tally = traffic.Clients(url, sent, threads=4, api_key="k3y").wait()
    assert tally.sent == 30 and tally.failed == 0 and tally.first_error == ""
    assert tally.by_variant() == {"stable": 20, "canary": 10}
    assert sorted(int(r["request_id"]) for r in handler.seen) == list(range(30))
    assert {(r["path"], r["auth"]) for r in handler.seen} == {("/predict", "Bearer k3y")}


def test_a_4xx_is_a_failure_with_its_body(service: tuple[str, type[Service]]) -> None:
    url, _ = service
    tally = traffic.Clients(url, bodies({"bad": True}, {}, {}), threads=1).wait()
    assert tally.sent == 3 and tally.failed == 1
    assert tally.first_error == '400 b\'{"detail": "bad record"}\''


def test_a_connection_the_server_closed_is_reopened_without_a_failure(
    service: tuple[str, type[Service]],
) -> None:
    url, handler = service
    handler.close_after = 1  # every kept-alive connection is closed after one answer
    tally = traffic.Clients(url, bodies(*({"request_id": str(i)} for i in range(20))), threads=2)
    assert tally.wait().failed == 0
    assert sorted(int(r["request_id"]) for r in handler.seen) == list(range(20))


def test_a_refused_connection_is_counted_unreachable_and_named() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        tally = traffic.Clients(f"http://127.0.0.1:{port}", bodies({}, {}), threads=1).wait()
    assert tally.sent == 2 and tally.failed == 2 and tally.unreachable == 2
    assert tally.first_error.startswith("unreachable: ConnectionRefusedError")


def test_repeating_clients_go_round_until_closed(service: tuple[str, type[Service]]) -> None:
    url, handler = service
    clients = traffic.Clients(url, bodies({"request_id": "a"}, {"request_id": "b"}), repeat=True)
    while len(handler.seen) < 50:
        threading.Event().wait(0.01)
    tally = clients.close()
    assert tally.sent >= 50 and tally.failed == 0
    assert {r["request_id"] for r in handler.seen} == {"a", "b"}
    assert clients.seen()[:3] == [(200, "stable")] * 3

"""The traffic clients against a real HTTP server on loopback: what they count as sent, as
failed, and which variant answered."""

from __future__ import annotations

import http.server
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
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
    deadline = time.monotonic() + 10
    while len(handler.seen) < 50 and time.monotonic() < deadline:
        time.sleep(0.01)
    tally = clients.close()
    assert tally.sent >= 50 and tally.failed == 0
    assert {r["request_id"] for r in handler.seen} == {"a", "b"}
    assert clients.seen()[:3] == [(200, "stable")] * 3


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that no CA signed."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_an_https_service_is_verified_before_any_record_is_sent(
    service: tuple[str, type[Service]], tmp_path: Path
) -> None:
    """`shipyard data replay` may send records to a remote service: a certificate no CA
    signed gets nothing, however the service answers."""
    _, handler = service
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(*self_signed(tmp_path))
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        https = f"https://127.0.0.1:{server.server_port}"
        tally = traffic.Clients(https, bodies({"request_id": "x"}), threads=1).wait()
    finally:
        server.shutdown()
        server.server_close()
    assert tally.unreachable == 1 and "CERTIFICATE_VERIFY_FAILED" in tally.first_error
    assert handler.seen == []

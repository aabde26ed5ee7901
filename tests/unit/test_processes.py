"""Calls to the processes a deployment runs (BentoML, Envoy's admin socket) and traffic
clients share one TLS context: httpx made a new one, CA bundle and all, for every scrape,
every admin poll and every client thread."""

from __future__ import annotations

import http.server
import os
import socketserver
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shipyard import traffic
from shipyard.deploy import deployment, processes, proxy


class Answer(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a service answers

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        self.do_GET()

    def log_message(self, *args: Any) -> None:
        pass


class UnixAnswer(Answer):
    def address_string(self) -> str:  # a Unix socket's peer has no host
        return "unix"


class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    tcp = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    unix = UnixServer(str(tmp_path / "admin.sock"), UnixAnswer)
    for server in (tcp, unix):
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{tcp.server_port}", tmp_path
    finally:
        for server in (tcp, unix):
            server.shutdown()
            server.server_close()


@pytest.fixture
def contexts(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """How many TLS contexts were built (httpx builds its default with this call)."""
    made: list[int] = []
    build = ssl.create_default_context

    def counted(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        made.append(1)
        return build(*args, **kwargs)

    processes.client_tls.cache_clear()
    monkeypatch.setattr(ssl, "create_default_context", counted)
    yield made
    processes.client_tls.cache_clear()


def test_scrapes_polls_and_admin_calls_build_one_tls_context(
    servers: tuple[str, Path], contexts: list[int]
) -> None:
    url, folder = servers
    files = proxy.Files(folder)
    for _ in range(3):
        assert deployment._call("GET", f"{url}/metrics").text == "ok"
        processes.wait_ready(f"{url}/readyz", os.getpid(), folder / "log")
        assert proxy.admin_get(files, "/ready") == "ok"
    assert len(contexts) == 1


def test_traffic_clients_build_one_tls_context(
    servers: tuple[str, Path], contexts: list[int]
) -> None:
    for _ in range(2):
        tally = traffic.Clients(servers[0], [b"{}"] * 12, threads=4).wait()
        assert tally.answers == {(200, ""): 12}
    assert len(contexts) == 1


def test_the_shared_context_verifies_as_httpx_does() -> None:
    """Shared, but not weakened: an https URL would still be checked against the CA bundle."""
    tls = processes.client_tls()
    assert tls is processes.client_tls()
    assert tls.verify_mode == ssl.CERT_REQUIRED and tls.check_hostname

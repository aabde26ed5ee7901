"""Hand-written HTTP requests, and the table of hostile ones every public endpoint must refuse.

A raw socket, because the interesting requests are those no client library will send: bytes
that are not UTF-8 in a header, a lying Content-Length, a chunked body past the limit.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from typing import Any
from urllib.parse import urlparse


def raw(url: str, head: bytes, body: bytes = b"") -> tuple[int, float]:
    """Status and seconds for one request on its own connection (`head`: header lines)."""
    where = urlparse(url)
    start = time.monotonic()
    with socket.create_connection((where.hostname, where.port), timeout=5) as sock:
        request = b"POST " + where.path.encode() + b" HTTP/1.1\r\nHost: x\r\n"
        request += b"Connection: close\r\n"
        # Refused mid-upload, the answer may still be there to read.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request + head + b"\r\n" + body)
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return int(answer.split(b" ", 2)[1]), time.monotonic() - start


def chunked(body: bytes, size: int = 65536) -> bytes:
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


Case = tuple[str, str, bytes, bytes, int]  # name, path, header lines, body, status


def service_cases(key: str, record: dict[str, Any], limit: int) -> list[Case]:
    """Every case the service, and the Envoy in front of it, must answer at once."""
    cases: list[Case] = []

    def add(
        name: str,
        data: bytes,
        status: int,
        path: str = "/predict",
        ctype: bytes | None = b"application/json",
        auth: bytes | None = b"X-API-Key: " + key.encode(),
        extra: bytes = b"",
        length: bool = True,
    ) -> None:
        head = b"" if ctype is None else b"Content-Type: " + ctype + b"\r\n"
        head += b"" if auth is None else auth + b"\r\n"
        head += extra + (b"Content-Length: %d\r\n" % len(data) if length else b"")
        cases.append((name, path, head, data, status))

    def body(value: Any) -> bytes:
        return json.dumps(value).encode()

    one = body({"features": record})
    add("a valid record", one, 200)
    add("Bearer in lower case", one, 200, auth=b"Authorization: bearer " + key.encode())
    add("no key", one, 401, auth=None)
    add("a key without a scheme", one, 401, auth=b"Authorization: " + key.encode())
    for field in record:
        for value in (1e308, -1e308, 1e300, 10**400):
            add(f"{field}={str(value)[:8]}", body({"features": {**record, field: value}}), 400)
    add("a 5000-digit integer", b'{"features": {"tx_amount": 1' + b"0" * 5000 + b"}}", 400)
    for token in (b"NaN", b"Infinity", b"-Infinity"):
        add(token.decode(), b'{"features": {"tx_amount": ' + token + b', "risk": 0.1}}', 400)
    add("an unknown top-level field", body({"features": record, "extra_top": 1}), 400)
    add("an unknown record field", body({"features": {**record, "colour": "red"}}), 400)
    add("a duplicate record key", b'{"features": {"tx_amount": 1, "tx_amount": 2}}', 400)
    add("a duplicate top-level key", b'{"features": {}, "features": ' + body(record) + b"}", 400)
    add("text/plain", one, 415, ctype=b"text/plain")
    add("form-encoded", one, 415, ctype=b"application/x-www-form-urlencoded")
    add("no content type", one, 415, ctype=None)
    add("a latin-1 charset", one, 415, ctype=b"application/json; charset=latin-1")
    add("a utf-8 charset", one, 200, ctype=b"application/json; charset=utf-8")
    for rid, status in (("r" * 129, 400), ("r" * 100_000, 400), ("a\nb", 400), (5, 400)):
        add(f"request_id {str(rid)[:12]!r}", body({"features": record, "request_id": rid}), status)
    add(
        "request_id of 128 safe characters",
        body({"features": record, "request_id": "a.b:c-d_" * 16}),
        200,
    )
    add("a body that is not UTF-8", b'{"features": "\xff"}', 400)
    add("arrays nested 100,000 deep", b"[" * 100_000, 400)
    add("objects nested 20 deep", b'{"a": ' * 20 + b"1" + b"}" * 20, 400)
    add("an empty body", b"", 400)
    add("a JSON list", b"[]", 400)
    add("a JSON string", b'"x"', 400)
    add("a string for a number", body({"features": {**record, "risk": "high"}}), 400)
    add("a bool for a number", body({"features": {**record, "risk": True}}), 400)
    batch = "/predict_batch"
    add("1001 records", body({"records": [record] * 1001}), 400, path=batch)
    add("no records", body({"records": []}), 400, path=batch)
    add("3 records", body({"records": [record] * 3}), 200, path=batch)
    # A header byte past ASCII: the service, and Envoy before it, answer 400.
    add("a header byte that is not UTF-8", one, 400, extra=b"X-Request-Key: \xff\r\n")
    add("a declared body past the limit", b'{"x": "' + b"x" * limit + b'"}', 413)
    add(
        "20 MB chunked",
        chunked(b"x" * 20_000_000),
        413,
        extra=b"Transfer-Encoding: chunked\r\n",
        length=False,
    )
    add("Content-Length -1", b"{}", 400, extra=b"Content-Length: -1\r\n", length=False)
    return cases

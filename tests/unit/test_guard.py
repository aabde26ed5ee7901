"""The service's ASGI guard, driven message by message: what it lets through and what it answers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import MutableMapping
from typing import Any

import pytest

from shipyard.serving.guard import Guard

KEY = "s3cret"
LIMIT = 2048


async def _echo(scope: Any, receive: Any, send: Any) -> None:
    message = await receive()
    body = message["body"]
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def call(
    headers: list[tuple[bytes, bytes]], chunks: list[bytes], path: str = "/predict"
) -> tuple[int, bytes]:
    guard = Guard(_echo, api_key=KEY, max_body_bytes=LIMIT)
    incoming = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "path": path, "headers": headers}
    asyncio.run(guard(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], body


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ([(b"x-api-key", KEY.encode())], 200),
        ([(b"authorization", b"Bearer " + KEY.encode())], 200),
        ([(b"authorization", b"bearer " + KEY.encode())], 200),
        ([(b"authorization", b"BEARER  " + KEY.encode())], 200),
        ([(b"authorization", KEY.encode())], 401),  # no scheme
        ([(b"authorization", b"Basic " + KEY.encode())], 401),
        ([(b"authorization", b"Bearer")], 401),
        ([(b"x-api-key", b"wrong")], 401),
        ([], 401),
        ([(b"x-api-key", KEY.encode()), (b"x-junk", b"\xff")], 400),
        ([(b"x-junk", b"\xff")], 400),  # before the key is even read
    ],
)
def test_api_key_and_headers(headers: list[tuple[bytes, bytes]], status: int) -> None:
    assert call(headers, [b"{}"])[0] == status


def test_open_paths_need_no_key() -> None:
    assert call([], [b""], path="/readyz")[0] == 200


def test_body_limit_holds_for_declared_and_chunked_bodies() -> None:
    key = [(b"x-api-key", KEY.encode())]
    assert call(key, [b"x" * LIMIT]) == (200, b"x" * LIMIT)
    # Chunked (no Content-Length): the guard answers 413 itself, never the app's 500.
    status, body = call(key, [b"x" * 1000] * 5)
    assert status == 413 and "larger than" in json.loads(body)["error"]
    assert call([*key, (b"content-length", str(LIMIT + 1).encode())], [b"x"])[0] == 413
    assert call([*key, (b"content-length", b"-1")], [b"x"])[0] == 400
    assert call([*key, (b"content-length", "\u00b2".encode())], [b"x"])[0] == 400  # "²" isdigit
    # Chunks within the limit reach the app as one body.
    assert call(key, [b"ab", b"cd", b"ef"]) == (200, b"abcdef")


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xfe{",  # not UTF-8
        b"[" * 100_000 + b"]" * 100_000,  # deeper than the parser goes
        b'{"request_id": {"a": 1}}',
        b"[1, 2]",
        b'"x"',
        b"",
    ],
)
def test_router_key_survives_any_body(body: bytes) -> None:
    from shipyard.deploy.router import request_key

    assert len(request_key(body, {})) == 32  # a random key; the service judges the body
    assert request_key(b'{"request_id": "abc"}', {}) == "abc"

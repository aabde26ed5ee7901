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


FIELDS = {"/predict": frozenset({"features", "request_id"})}


def strict(body: bytes, ctype: bytes = b"application/json") -> tuple[int, str, list[Any]]:
    """Status, the reason reported, and what reached the app, for one POST /predict."""
    reported: list[Any] = []
    reached: list[bytes] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append((await receive())["body"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    guard = Guard(app, None, LIMIT, bodies=FIELDS, on_reject=reported.append)
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    headers = [(b"content-type", ctype)] if ctype else []
    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": headers}
    asyncio.run(guard(scope, receive, send))
    reason = reported[0].reason if reported else ""
    return sent[0]["status"], reason, reached


@pytest.mark.parametrize(
    ("body", "ctype", "status", "reason"),
    [
        (b'{"features": {"a": 1}}', b"application/json", 200, ""),
        (b'{"features": {"a": 1}}', b"Application/JSON; charset=UTF-8", 200, ""),
        (b'{"features": {"a": 1}}', b"text/plain", 415, "content_type"),
        (b'{"features": {"a": 1}}', b"", 415, "content_type"),
        (b'{"features": {"a": 1}}', b"application/json; charset=utf-16", 415, "content_type"),
        (b'{"features": {"a": 1, "a": 2}}', b"application/json", 400, "duplicate_key"),
        (b'{"features": {"a": NaN}}', b"application/json", 400, "json"),
        (b'{"features": {"a": -Infinity}}', b"application/json", 400, "json"),
        (b'{"features": {}, "extra": 1}', b"application/json", 400, "unknown_field"),
        (b"[" * 1020, b"application/json", 400, "depth"),  # past the parser: RecursionError
        (b'{"features": ' + b'{"a": ' * 9 + b"1" + b"}" * 10, b"application/json", 400, "depth"),
        (b'{"features": "\xff"}', b"application/json", 400, "json"),
        (b"\xff\xfe{\x00}\x00", b"application/json", 400, "json"),  # UTF-16, which json takes
        (b"", b"application/json", 400, "json"),
        (b'"x"', b"application/json", 400, "shape"),
    ],
)
def test_prediction_bodies_must_be_strict_json(
    body: bytes, ctype: bytes, status: int, reason: str
) -> None:
    got, why, reached = strict(body, ctype)
    assert (got, why) == (status, reason)
    assert reached == ([body] if status == 200 else [])  # a refused body never reaches the app


def test_the_apps_own_4xx_is_reported_in_one_line() -> None:
    reported: list[Any] = []
    detail = {"error": "1 validation error", "detail": [{"loc": ["features", "a"], "msg": "big"}]}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 400, "headers": []})
        await send({"type": "http.response.body", "body": json.dumps(detail).encode()})

    guard = Guard(app, None, LIMIT, bodies=FIELDS, on_reject=reported.append)
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b'{"features": {}}', "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/predict",
        "headers": [(b"content-type", b"application/json")],
    }
    asyncio.run(guard(scope, receive, send))
    assert [(r.status, r.reason, r.message) for r in reported] == [
        (400, "validation", "features.a: big")
    ]
    assert json.loads(sent[1]["body"]) == detail  # passed on as the app sent it


def _direct(body: bytes, answer: tuple[int, bytes]) -> tuple[list[Any], list[Any], list[Any], int]:
    """Guard with an endpoint on /predict: what it was given, what was reported, what the app
    behind saw, and the status sent."""
    given: list[Any] = []
    reported: list[Any] = []
    behind: list[Any] = []

    async def endpoint(payload: dict[str, Any], headers: Any) -> tuple[int, bytes]:
        given.append((payload, headers.get("x-request-id")))
        return answer

    async def app(scope: Any, receive: Any, send: Any) -> None:
        behind.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    guard = Guard(app, None, LIMIT, FIELDS, reported.append, endpoints={"/predict": endpoint})
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    headers = [(b"content-type", b"application/json"), (b"x-request-id", b"r-1")]
    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": headers}
    asyncio.run(guard(scope, receive, send))
    return given, reported, behind, int(sent[0]["status"])


def test_an_endpoint_answers_a_checked_body_and_the_app_behind_is_not_called() -> None:
    given, reported, behind, status = _direct(b'{"features": {"a": 1}}', (200, b'{"score":1}'))
    assert given == [({"features": {"a": 1}}, "r-1")] and behind == [] and reported == []
    assert status == 200


def test_an_endpoints_4xx_is_reported_and_a_refused_body_never_reaches_it() -> None:
    detail = {"error": "1 validation error", "detail": [{"loc": ["features", "a"], "msg": "big"}]}
    _, reported, _, status = _direct(b'{"features": {}}', (400, json.dumps(detail).encode()))
    assert status == 400
    assert [(r.reason, r.message) for r in reported] == [("validation", "features.a: big")]
    given, reported, behind, status = _direct(b'{"features": {"a": 1, "a": 2}}', (200, b"{}"))
    assert (status, given, behind, reported[0].reason) == (400, [], [], "duplicate_key")

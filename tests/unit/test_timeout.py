"""The service's replacement for BentoML's TimeoutMiddleware, driven as BentoML drives it."""

from __future__ import annotations

import asyncio
from typing import Any

from bentoml._internal.server.http import traffic

from shipyard.serving import timeout
from shipyard.serving.timeout import CancellingTimeout


def _run(app: Any, seconds: float) -> tuple[list[Any], list[asyncio.TimerHandle], float]:
    """Sent messages, the timers armed, and the wall time of one request."""
    sent: list[Any] = []
    timers: list[asyncio.TimerHandle] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    async def main() -> float:
        loop = asyncio.get_running_loop()
        arm = loop.call_later

        def recorded(*args: Any, **kwargs: Any) -> asyncio.TimerHandle:
            handle = arm(*args, **kwargs)
            timers.append(handle)
            return handle

        loop.call_later = recorded  # type: ignore[method-assign,assignment]
        start = loop.time()
        scope = {"type": "http", "path": "/predict", "method": "POST", "headers": []}
        await CancellingTimeout(app, timeout=seconds)(scope, receive, send)
        return loop.time() - start

    return sent, timers, asyncio.run(main())


async def _answer(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def test_an_answered_request_leaves_no_timer_armed() -> None:
    sent, timers, _ = _run(_answer, 30)
    assert [m.get("status") for m in sent] == [200, None]
    assert len(timers) == 1 and timers[0].cancelled()


def test_a_slow_app_still_gets_a_504() -> None:
    async def slow(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(5)

    sent, _, took = _run(slow, 0.2)
    assert sent[0]["status"] == 504 and b"0.2 seconds" in sent[1]["body"]
    assert took < 2


def test_an_app_that_ends_without_answering_is_not_held_until_the_timeout() -> None:
    async def gone(scope: Any, receive: Any, send: Any) -> None:
        return  # the client went away before its body arrived

    sent, timers, took = _run(gone, 30)
    assert sent == [] and took < 1 and timers[0].cancelled()


def test_install_replaces_the_class_bentoml_builds_its_app_with() -> None:
    original = traffic.TimeoutMiddleware
    try:
        timeout.install()
        from bentoml._internal.server.http.traffic import TimeoutMiddleware

        assert TimeoutMiddleware is CancellingTimeout
        assert issubclass(CancellingTimeout, original)  # BentoML's constructor and timer hook
    finally:
        traffic.TimeoutMiddleware = original  # type: ignore[misc]

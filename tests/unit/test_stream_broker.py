"""The consumer's line for a broker lost while it waits on faststream's read, not its own; its
lag gauge, read from the broker at each scrape."""

from __future__ import annotations

import logging
import math
from typing import Any

import pytest

from shipyard.scoring import stream

URL = "redis://127.0.0.1:1/0"


def record(exc: BaseException | None) -> logging.LogRecord:
    info = (type(exc), exc, None) if exc is not None else None
    return logging.LogRecord(
        "broker", logging.ERROR, __file__, 1, "Message fetch error", None, info
    )


def test_a_lost_broker_is_one_line_with_the_retry_not_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from faststream.redis.subscriber.usecases.basic import CONSUME_ERROR_BACKOFF_SECONDS
    from redis.exceptions import ConnectionError as RedisConnectionError

    assert stream.FETCH_RETRY_SECONDS == CONSUME_ERROR_BACKOFF_SECONDS  # the wait it names
    lost = stream.BrokerLost(URL)
    refused = RedisConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")
    assert lost.filter(record(refused)) is False  # no traceback
    err = capsys.readouterr().err
    assert (
        f"broker {URL}: Error 111 connecting to 127.0.0.1:1. Connection refused.; retry in 5s"
        in err
    )
    assert err.count("\n") == 1


def test_anything_but_a_lost_broker_is_logged_as_it_was(capsys: pytest.CaptureFixture[str]) -> None:
    lost = stream.BrokerLost(URL)
    assert lost.filter(record(ValueError("a bug"))) is True
    assert lost.filter(record(None)) is True
    assert capsys.readouterr().err == ""


class Groups:
    """What redis-py's `xinfo_groups` answers, or the error it raises."""

    def __init__(self, answer: list[dict[str, Any]] | BaseException) -> None:
        self.answer = answer

    def xinfo_groups(self, source: str) -> list[dict[str, Any]]:
        assert source == "transactions"
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer


def test_the_lag_is_the_groups_own_and_a_scrape_never_fails_on_it() -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import ResponseError

    groups = [{"name": b"other", "lag": 9}, {"name": b"shipyard.m", "lag": 4}]
    assert stream.lag_of(Groups(groups), "transactions", "shipyard.m") == 4.0
    assert math.isnan(stream.lag_of(Groups(groups), "transactions", "shipyard.x"))
    unknown = [{"name": b"shipyard.m", "lag": None}]  # Redis cannot tell after a deletion
    assert math.isnan(stream.lag_of(Groups(unknown), "transactions", "shipyard.m"))
    for err in (RedisConnectionError("refused"), ResponseError("no such key"), TimeoutError()):
        assert math.isnan(stream.lag_of(Groups(err), "transactions", "shipyard.m"))

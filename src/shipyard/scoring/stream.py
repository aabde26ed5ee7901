"""`shipyard stream`: a consumer group on a broker stream, scoring each transaction event
with one registered version and publishing its decision.

Delivery is at least once, with one decision per event id:
- an entry is acknowledged only after its decision is published (atomically with its
  ledger record, `ledger.Ledger`), and logged and fsynced;
- a redelivered entry gets its recorded decision back, and is logged only if the log lacks it;
- the same event id in a new entry, and any event that cannot be scored, goes to the
  dead-letter stream with the reason, once, and is acknowledged: never retried forever;
- a restarted consumer first takes back the entries it was given and never acknowledged,
  then reads new ones. Entries another consumer of the group left behind are claimed once
  they have been idle for `claim_idle_ms`.

The history windows live in memory (`events.History`). On start they are rebuilt from the
input stream itself, every entry up to the last one the group was given, so the stream's
retention must cover the longest window plus the label delay and a day for late events (38
days by default).

Redis Streams is what runs here. faststream speaks Kafka too; `kafka://` is not wired.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from shipyard.artifacts import progress
from shipyard.errors import ShipyardError
from shipyard.monitoring.logreader import logged_request_ids
from shipyard.scoring.events import DeadLetter, Decision, Incoming, Scorer
from shipyard.scoring.ledger import DATA_KEY, Ledger
from shipyard.serving.predlog import PredictionLog

RETRY_MAX_SECONDS = 30.0
# Timeouts, so that a connection left half-open by a broker that went away fails and is
# retried instead of waiting for an answer forever.
SOCKET_TIMEOUT, CONNECT_TIMEOUT = 10.0, 5.0
REBUILD_PAGE = 10_000
FETCH_RETRY_SECONDS = 5.0  # faststream's fixed wait after a failed read (its basic.py)
DRAIN_SECONDS = 30.0  # at a stop, for the entries a cancelled read left behind


@dataclass(frozen=True)
class Settings:
    broker: str  # redis://host:port/db
    source: str
    decisions: str
    dead_letters: str
    group: str
    consumer: str
    log_folder: Path
    batch: int = 100
    poll_ms: int = 50
    shadow: bool = False  # score and log, never publish a decision: a challenger beside
    from_start: bool = False  # a new group takes every retained event, not just new ones
    metrics_port: int | None = None
    ledger_ttl: int = 7 * 86400  # how long an event id is remembered against duplicates
    claim_idle_ms: int = 60_000
    retry_seconds: float = 1.0  # first wait after the broker is lost; doubles to 30 s


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter(
            "shipyard_stream_events",
            "Events by outcome: consumed, scored, dead_letter, redelivered",
            ["outcome"],
            registry=self.registry,
        )
        self.lag = Gauge(
            "shipyard_stream_lag",
            "Entries of the input stream not yet given to this consumer group",
            registry=self.registry,
        )
        self.latency = Histogram(
            "shipyard_stream_latency_seconds",
            "From the broker taking an event to its decision being published",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            registry=self.registry,
        )


def _entry(message_id: bytes | str, fields: dict[Any, Any]) -> Incoming:
    """One stream entry as an event: faststream's `__data__` body (its envelope unwrapped),
    else the entry's fields as one JSON object, as faststream itself reads a raw entry."""
    from faststream.redis.parser.binary import BinaryMessageFormatV1

    mid = message_id.decode() if isinstance(message_id, bytes) else message_id
    raw = fields.get(DATA_KEY.encode(), fields.get(DATA_KEY))
    if raw is None:
        raw = orjson.dumps({_text(k): _text(v) for k, v in fields.items()})
    body = raw if isinstance(raw, bytes) else raw.encode()
    if body.startswith(BinaryMessageFormatV1.IDENTITY_HEADER):  # published by faststream
        body, _ = BinaryMessageFormatV1.parse(body)
    return Incoming(mid, body, int(mid.split("-", 1)[0]))


def _text(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


class Consumer:
    """What one consumer does with a batch of entries; the broker adapter calls `handle`."""

    def __init__(self, settings: Settings, scorer: Scorer, client: Any) -> None:
        self.settings, self.scorer, self.client = settings, scorer, client
        self.ledger = Ledger(client, settings.group, settings.ledger_ttl)
        self.metrics = Metrics()
        self.log = PredictionLog(settings.log_folder, writer=False)  # `_attempt` flushes
        self.logged = logged_request_ids(settings.log_folder)
        self.predicted = False  # the model has scored an event in this process

    async def join(self) -> None:
        """Create the group if it is new: at the stream's end (or its start), so that what
        is already in the stream is history either way."""
        from redis.exceptions import ResponseError

        s = self.settings
        try:
            await self.client.xgroup_create(
                s.source, s.group, id="0" if s.from_start else "$", mkstream=True
            )
        except ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise

    async def rebuild(self) -> int:
        """The history windows from the input stream: every entry up to the last one the
        group was given, less those given and not acknowledged, which are taken back next
        (`pending`) and join the history as they are decided, in their order."""
        last = await self._last_delivered()
        if last is None:
            return 0
        unsettled = await self._pending_ids(last)
        start, added = "-", 0
        while True:
            page = await self.client.xrange(self.settings.source, start, last, REBUILD_PAGE)
            batch = [_entry(mid, fields) for mid, fields in page]
            added += self.scorer.remember([b for b in batch if b.message_id not in unsettled])
            if len(page) < REBUILD_PAGE:
                return added
            start = "(" + page[-1][0].decode()

    async def _pending_ids(self, last: str) -> set[str]:
        found = await self.client.xpending_range(
            self.settings.source, self.settings.group, "-", last, 1_000_000
        )
        return {_text(p["message_id"]) for p in found}

    async def _last_delivered(self) -> str | None:
        from redis.exceptions import ResponseError

        try:
            groups = await self.client.xinfo_groups(self.settings.source)
        except ResponseError:  # no such stream yet
            return None
        for group in groups:
            if _text(group["name"]) == self.settings.group:
                last = _text(group["last-delivered-id"])
                return None if last == "0-0" else str(last)
        return None

    async def pending(self) -> list[Incoming]:
        """Entries this consumer was given and never acknowledged (a kill), oldest first."""
        from redis.exceptions import ResponseError

        s = self.settings
        try:
            answer = await self.client.xreadgroup(
                s.group, s.consumer, {s.source: "0"}, count=1_000_000
            )
        except ResponseError:  # no group yet: nothing was given
            return []
        return [_entry(mid, fields) for _, entries in answer for mid, fields in entries]

    async def handle(self, batch: list[Incoming]) -> None:
        """Decide, publish, log, then acknowledge; every step can be repeated safely, so a
        lost broker is waited out and the whole batch redone."""
        wait = self.settings.retry_seconds
        while True:
            try:
                await self._handle(await self._with_stragglers(batch))
                return
            except Exception as err:
                if not is_connection_error(err):
                    raise
                progress("stream", f"broker {self.settings.broker}: {err}; retry in {wait:g}s")
            await asyncio.sleep(wait)
            wait = min(wait * 2, RETRY_MAX_SECONDS)

    async def _with_stragglers(self, batch: list[Incoming]) -> list[Incoming]:
        """The batch, or, when entries given to this consumer before it were never handled,
        all its unacknowledged entries, oldest first (this batch among them). A read whose
        answer the broker sent as it went away leaves such entries: handled first, they are
        history for this batch, as if nothing had happened."""
        s = self.settings
        if not batch:
            return batch
        older = await self.client.xpending_range(
            s.source, s.group, "-", "(" + batch[0].message_id, 1, s.consumer
        )
        return await self.pending() if older else batch

    async def _handle(self, batch: list[Incoming]) -> None:
        with self.scorer.history.tentative():  # a failed attempt leaves no trace in it
            await self._attempt(batch)

    async def _attempt(self, batch: list[Incoming]) -> None:
        s, counts = self.settings, self.metrics.events
        read = self.scorer.read(batch)
        known = await self.ledger.known([e for e in self.scorer.event_ids(read) if e])
        outcomes = self.scorer.decide(batch, known, read)
        letters = [o for o in outcomes if isinstance(o, DeadLetter)]
        decided = [o for o in outcomes if isinstance(o, Decision)]
        new = [d for d in decided if not d.replayed]
        # A shadow publishes nothing: the live group answers and dead-letters for the stream.
        standing = await self.ledger.settle(
            new, [] if s.shadow else letters, s.decisions, s.dead_letters, publish=not s.shadow
        )
        records = dict(zip((d.message_id for d in new), standing, strict=True))
        now = datetime.now(UTC)
        stamp = now.isoformat(timespec="milliseconds")
        written = []
        for decision in decided:
            if decision.event_id not in self.logged:
                self._log(decision, records.get(decision.message_id, decision.record), stamp)
                written.append(decision.event_id)
            self.metrics.latency.observe(max(0.0, now.timestamp() - decision.published_ms / 1e3))
        self.log.flush()  # written and fsynced before the broker forgets the entries
        self.logged.update(written)  # only now: a failed write is written again on retry
        await self.client.xack(s.source, s.group, *[item.message_id for item in batch])
        counts.labels("consumed").inc(len(batch))
        counts.labels("scored").inc(len(new))
        if new and not self.predicted:
            # The model may load its library only at its first prediction (the MLP imports
            # torch): frozen too, each full collection no longer walks those 100k objects.
            self.predicted = True
            _freeze()
        counts.labels("redelivered").inc(len(decided) - len(new))
        counts.labels("dead_letter").inc(len(letters))

    def _log(self, outcome: Decision, record: dict[str, Any], stamp: str) -> None:
        self.log.append(
            {
                "request_id": outcome.event_id,
                "timestamp": stamp,
                "model_name": record["model_name"],
                "model_version": record["model_version"],
                "features": outcome.features,
                "score": record["score"],
                "decision": record["decision"],
            }
        )

    def close(self) -> None:
        self.log.close()


def _freeze() -> None:
    """Collect, then move every object left to the permanent generation."""
    gc.collect()
    gc.freeze()


def is_connection_error(err: BaseException) -> bool:
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    # The builtin ones are a refused or reset socket, or a timeout: the broker, not the disk.
    return isinstance(
        err, RedisConnectionError | RedisTimeoutError | ConnectionError | TimeoutError
    )


class BrokerLost(logging.Filter):
    """faststream's fetch loop logs a lost broker as a traceback per try, every
    `FETCH_RETRY_SECONDS`, and a consumer idle when the broker went away saw nothing else:
    one line per try instead, as a lost batch or a broker not there at start gives."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url

    def filter(self, record: logging.LogRecord) -> bool:
        err = record.exc_info[1] if record.exc_info else None
        if err is None or not is_connection_error(err):
            return True
        progress("stream", f"broker {self.url}: {err}; retry in {FETCH_RETRY_SECONDS:g}s")
        return False


def check_url(url: str) -> None:
    """Only Redis is wired: anything else is refused before a connection is tried."""
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ShipyardError(f"--broker {url!r}: expected redis://HOST:PORT[/DB]")


def sync_client(url: str) -> Any:
    """A blocking client of its own: the metrics server's thread, `shipyard data publish`."""
    import redis

    return redis.Redis.from_url(
        url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=CONNECT_TIMEOUT
    )


def lag_of(client: Any, source: str, group: str) -> float:
    """Redis' own count of the group's entries not yet given to it, asked when /metrics is
    scraped: asked after every batch, it cost a round trip in each (about 1 ms of a 25 ms
    batch), and went stale whenever the stream went quiet. NaN when the broker does not
    answer or has no such group, so a scrape never fails on it."""
    from redis.exceptions import RedisError

    try:
        groups = client.xinfo_groups(source)
    except (RedisError, ConnectionError, TimeoutError):
        return math.nan
    for found in groups:
        if _text(found["name"]) == group and found.get("lag") is not None:
            return float(found["lag"])
    return math.nan


async def drain(consumer: Consumer, seconds: float) -> None:
    """Decide the entries the broker gave this consumer that never reached its handler.
    faststream's stop waits for the batch in hand, then cancels the read loop; a read in
    flight at that moment has already been answered by Redis, so its entries are this
    consumer's, pending, and unseen. A graceful stop handles them too. If the broker does not
    answer within `seconds`, they stay pending and the next start takes them back."""
    try:
        left = await asyncio.wait_for(consumer.pending(), seconds)
        if left:
            progress("stream", f"{len(left)} event(s) read as the stop came: deciding them")
            await asyncio.wait_for(consumer.handle(left), seconds)
    except Exception as err:
        if not is_connection_error(err):  # a timeout among them
            raise
        progress("stream", f"stop: {err or 'no answer'}; what was read stays pending")


async def connect(url: str, retry_seconds: float) -> Any:
    """A client that answered PING; one line per failed try, then a longer wait."""
    import redis.asyncio as aioredis

    check_url(url)
    client = aioredis.Redis.from_url(
        url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=CONNECT_TIMEOUT
    )
    wait = retry_seconds
    while True:
        try:
            await client.ping()
            return client
        except Exception as err:
            if not is_connection_error(err):
                raise
            progress("stream", f"broker {url}: unreachable ({err}); retry in {wait:g}s")
            await asyncio.sleep(wait)
            wait = min(wait * 2, RETRY_MAX_SECONDS)


async def serve(settings: Settings, scorer: Scorer) -> None:
    """Consume until SIGTERM or SIGINT, then finish the batch in hand and stop."""
    from faststream import AckPolicy, FastStream
    from faststream.redis import RedisBroker, StreamSub
    from faststream.redis.annotations import RedisBatchStreamMessage, RedisStreamMessage

    client = await connect(settings.broker, settings.retry_seconds)
    consumer = Consumer(settings, scorer, client)
    await consumer.join()
    kept = await consumer.rebuild()
    recovered = await consumer.pending()
    progress(
        "stream",
        f"{settings.group}: {kept} event(s) of history, {len(recovered)} to take back",
    )
    if recovered:
        await consumer.handle(recovered)
    # As in the service: the model's and the libraries' objects live as long as the process;
    # frozen, the collector stops walking them on every collection, which held batches up
    # (the consumer freezes once more after its first prediction).
    _freeze()
    if settings.metrics_port is not None:
        from prometheus_client import start_http_server

        lag = sync_client(settings.broker)
        consumer.metrics.lag.set_function(lambda: lag_of(lag, settings.source, settings.group))
        start_http_server(settings.metrics_port, "127.0.0.1", consumer.metrics.registry)
    quiet = logging.getLogger("shipyard.stream.broker")
    quiet.setLevel(logging.WARNING)
    quiet.addFilter(BrokerLost(settings.broker))
    broker = RedisBroker(
        settings.broker,
        graceful_timeout=30.0,
        logger=quiet,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=CONNECT_TIMEOUT,
    )

    async def on_batch(msg: Any) -> None:
        raw = msg.raw_message
        await consumer.handle(
            [_entry(m, f) for m, f in zip(raw["message_ids"], raw["data"], strict=True)]
        )

    async def on_claimed(msg: Any) -> None:
        raw = msg.raw_message  # one entry per claim
        await consumer.handle([_entry(m, raw["data"]) for m in raw["message_ids"]])

    # faststream reads a handler's annotations to know what to pass it; this module's are
    # strings (`from __future__ import annotations`), so the real classes are set here.
    on_batch.__annotations__["msg"] = RedisBatchStreamMessage
    on_claimed.__annotations__["msg"] = RedisStreamMessage
    broker.subscriber(
        stream=StreamSub(
            settings.source,
            batch=True,
            max_records=settings.batch,
            polling_interval=settings.poll_ms,
            group=settings.group,
            consumer=settings.consumer,
        ),
        ack_policy=AckPolicy.MANUAL,
    )(on_batch)
    broker.subscriber(
        stream=StreamSub(
            settings.source,
            min_idle_time=settings.claim_idle_ms,
            polling_interval=1000,
            group=settings.group,
            consumer=settings.consumer,
        ),
        ack_policy=AckPolicy.MANUAL,
    )(on_claimed)

    app = FastStream(broker, logger=quiet)
    started = time.monotonic()
    try:
        await app.run(log_level=logging.WARNING)
        await drain(consumer, DRAIN_SECONDS)
    finally:
        consumer.close()
        await client.aclose()
        progress("stream", f"stopped after {time.monotonic() - started:.0f}s")

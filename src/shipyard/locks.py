"""A lock every machine of a team sees: a PostgreSQL advisory lock.

MLflow has no compare-and-set on aliases, so two promoters on two machines, each holding its
own file lock, can both move `@champion`. A session-level advisory lock on the database a team
already runs (the MLflow server's own, in the team stack) serialises them instead. PostgreSQL
releases it when the holder's connection ends, so a killed promoter frees it at once.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from shipyard.errors import ShipyardError

CONNECT_TIMEOUT = 10  # seconds to reach the database before giving up with one line


def key(name: str) -> int:
    """A stable signed 64-bit key for `name` (advisory locks are keyed by bigint)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def where(uri: str) -> str:
    """The URI without its password, to name the database in an error."""
    parts = urlsplit(uri)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


@contextmanager
def advisory(uri: str, name: str, timeout: float = 600) -> Iterator[None]:
    """Hold the advisory lock for `name` on `uri`; waits for it at most `timeout` seconds."""
    import psycopg2

    try:
        conn = psycopg2.connect(uri, connect_timeout=CONNECT_TIMEOUT)
    except psycopg2.Error as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ShipyardError(f"lock: cannot reach {where(uri)}: {first}") from None
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            deadline = time.monotonic() + timeout
            while True:
                cur.execute("SELECT pg_try_advisory_lock(%s)", (key(name),))
                row = cur.fetchone()
                if row is not None and row[0]:
                    break
                if time.monotonic() > deadline:
                    raise ShipyardError(
                        f"lock: {name} on {where(uri)} still held after {timeout:.0f} s"
                    )
                time.sleep(0.05)
        try:
            yield
        finally:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", (key(name),))
    finally:
        conn.close()

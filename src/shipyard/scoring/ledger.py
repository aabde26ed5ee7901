"""Which events are decided, kept in Redis beside the streams: exactly one decision per event
id however often the broker delivers it.

A decision is published and recorded in one Lua script, which Redis runs atomically. A
consumer killed at any point therefore leaves either both or neither. A redelivered event
finds its record and gets the same decision back, and nothing is published twice. The
dead-letter stream is written the same way, once per broker entry.
"""

from __future__ import annotations

from typing import Any

import orjson

from shipyard.scoring.events import DeadLetter, Decision, Known

DATA_KEY = "__data__"  # the field faststream publishes a stream entry's body in

# KEYS: record, stream. ARGV: record, body, publish ("1" or ""), ttl seconds.
# Returns the prior record, or nil when this call made the decision.
_ONCE = """
local prior = redis.call('GET', KEYS[1])
if prior then return prior end
if ARGV[3] == '1' then redis.call('XADD', KEYS[2], '*', '__data__', ARGV[2]) end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[4]))
return false
"""


class Ledger:
    def __init__(self, client: Any, group: str, ttl_seconds: int) -> None:
        self.client, self.ttl = client, ttl_seconds
        self.prefix = f"shipyard:stream:{group}"
        self._once = client.register_script(_ONCE)

    def _event_key(self, event_id: str) -> str:
        return f"{self.prefix}:event:{event_id}"

    async def known(self, event_ids: list[str]) -> dict[str, Known]:
        """The recorded decisions of these event ids."""
        if not event_ids:
            return {}
        values = await self.client.mget([self._event_key(e) for e in event_ids])
        out = {}
        for event_id, value in zip(event_ids, values, strict=True):
            if value is not None:
                stored = orjson.loads(value)
                out[event_id] = Known(stored["message_id"], stored["record"], stored["features"])
        return out

    async def settle(
        self,
        decisions: list[Decision],
        letters: list[DeadLetter],
        decided: str,
        dead: str,
        publish: bool,
    ) -> list[dict[str, Any]]:
        """Publish (unless `publish` is off: a shadow) and record every new decision, and
        every dead letter, in one round trip. Returns the decision records that stand: a
        record made earlier wins over this call's."""
        pipe = self.client.pipeline(transaction=False)
        for decision in decisions:
            record = orjson.dumps(
                {
                    "message_id": decision.message_id,
                    "record": decision.record,
                    "features": decision.features,  # what the log needs if a kill came first
                }
            )
            keys = [self._event_key(decision.event_id), decided]
            body = orjson.dumps(decision.record)
            flag = "1" if publish else ""
            await self._once(keys=keys, args=[record, body, flag, self.ttl], client=pipe)
        for letter in letters:
            keys = [f"{self.prefix}:dead:{letter.message_id}", dead]
            body = orjson.dumps(letter.payload())
            await self._once(keys=keys, args=[b"1", body, "1", self.ttl], client=pipe)
        answers = await pipe.execute()
        return [
            d.record if prior is None else orjson.loads(prior)["record"]
            for d, prior in zip(decisions, answers, strict=False)
        ]

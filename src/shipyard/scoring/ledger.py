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

# Per item, KEYS: its record and its stream; ARGV: the ttl in seconds, then per item its
# record, its body and whether to publish it ("1" or ""). Returns, per item, the prior record,
# or false (nil) when this call made the decision. One call for a whole batch: a script call
# per event cost the consumer about 0.08 ms of Python per event to pack and parse.
_ONCE = """
local out = {}
for i = 1, #KEYS / 2 do
  local prior = redis.call('GET', KEYS[2 * i - 1])
  if prior then
    out[i] = prior
  else
    if ARGV[3 * i + 1] == '1' then
      redis.call('XADD', KEYS[2 * i], '*', '__data__', ARGV[3 * i])
    end
    redis.call('SET', KEYS[2 * i - 1], ARGV[3 * i - 1], 'EX', tonumber(ARGV[1]))
    out[i] = false
  end
end
return out
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
        every dead letter, in one script call: all of them or none. Returns the decision
        records that stand: a record made earlier wins over this call's."""
        keys: list[str] = []
        args: list[Any] = [self.ttl]
        for decision in decisions:
            record = orjson.dumps(
                {
                    "message_id": decision.message_id,
                    "record": decision.record,
                    "features": decision.features,  # what the log needs if a kill came first
                }
            )
            keys += [self._event_key(decision.event_id), decided]
            args += [record, orjson.dumps(decision.record), "1" if publish else ""]
        for letter in letters:
            keys += [f"{self.prefix}:dead:{letter.message_id}", dead]
            args += [b"1", orjson.dumps(letter.payload()), "1"]
        answers = await self._once(keys=keys, args=args) if keys else []
        return [
            d.record if prior is None else orjson.loads(prior)["record"]
            for d, prior in zip(decisions, answers, strict=False)
        ]

"""A micro-batch of broker events to decisions and dead letters: the core of `shipyard
stream`, with no broker in it, so that tests drive it directly.

An event is a JSON object of the contract's raw columns, the form the pipeline trains on. It
is checked with the batch engine's `rows.check`, gets the history features featurize computes
from the bounded `History`, and is held to the served ranges and scored at the version's
threshold by the batch engine's own steps (`rows`), so an event cannot be judged differently
from the same row in a table. What would make the API
refuse a record makes the event a dead letter, with the reason, never a retry.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pandas as pd

from shipyard.config import DataSection, FeaturizeSection
from shipyard.history import history_columns
from shipyard.scoring import rows
from shipyard.scoring.model import ScoringModel

# Optional keys an event may carry to say which version it is meant for.
ADDRESS = ("model_name", "model_version")
EXACT_INT = 2**53  # beyond this a JSON integer has no exact float64, the model's number type
INTERNAL_REASON_CHARS = 300
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Incoming:
    message_id: str  # the broker's id of the entry: a redelivery carries the same one
    body: bytes
    published_ms: int  # when the broker took the event; latency is measured from it


@dataclass(frozen=True)
class Decision:
    message_id: str
    event_id: str
    record: dict[str, Any]  # what is published: event_id, score, decision, model name, version
    features: dict[str, float]  # the model's fields, as the API logs them
    published_ms: int
    replayed: bool = False  # decided before (a redelivery): published once already


@dataclass(frozen=True)
class DeadLetter:
    message_id: str
    reason: str  # `field: rule: detail`, as `validate` and the API name it
    body: bytes

    def payload(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "reason": self.reason,
            "body": self.body.decode("utf-8", "replace"),
        }


Outcome = Decision | DeadLetter


@dataclass(frozen=True)
class Known:
    """An event id decided before, by the ledger: the entry it came from, and the record."""

    message_id: str
    record: dict[str, Any]
    features: dict[str, float]


def _json_type(value: Any, kind: str) -> bool:
    """JSON's own types only: "12" is not a number and `true` is not 1, as in the API."""
    if kind in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return kind == "float" or abs(value) < EXACT_INT
    if kind == "bool":
        return isinstance(value, bool)
    return isinstance(value, str)


def parse(body: bytes, data: DataSection, model: ScoringModel) -> dict[str, Any] | str:
    """The event's declared values, or why it cannot be scored (one reason)."""
    try:
        event = orjson.loads(body)  # refuses NaN and Infinity, which json.loads takes
    except orjson.JSONDecodeError:
        return "body: json: not a JSON document"
    if not isinstance(event, dict):
        return "body: json: not a JSON object"
    for key in event:
        if key not in data.columns and key not in ADDRESS:
            return f"{key}: fields: not a column of the data contract"
    name, version = event.get("model_name"), event.get("model_version")
    if name is not None and name != model.name:
        return f"model_name: model: {name!r} is not served here ({model.name})"
    if version is not None and str(version) != model.version:
        return f"model_version: model: {version!r} is not served here (version {model.version})"
    for column, spec in data.columns.items():
        if column not in event:
            if column == data.target:
                continue
            return f"{column}: columns: required field is missing"
        value = event[column]
        if value is None:
            if column == data.id:
                return f"{column}: nulls: null value"
            continue  # the contract's null rule names it
        if not _json_type(value, spec.type):
            return f"{column}: type: expected {spec.type}, got {type(value).__name__}"
        if spec.type == "int" and isinstance(value, float) and value.is_integer():
            event[column] = int(value)  # 7.0 and 7 are one id, as pandas reads them
    return {k: v for k, v in event.items() if k in data.columns}


class EntityIndex:
    """Where each value's rows are in a frame, kept sorted by the value's hash, so that the
    rows of a batch's customers and terminals are found by binary search: `isin` over the
    whole history cost about 1 ms per entity and batch. Kept up to date when rows are
    appended or dropped (a stable sort of two sorted runs, O(rows)), never sorted afresh.

    Hashes, not values, so any column type sorts; two values of one hash (about 2^-64) only
    add rows of another entity, which no window of these entities counts."""

    def __init__(self, keys: np.ndarray, rows: np.ndarray) -> None:
        self.keys, self.rows = keys, rows  # sorted hashes, and the row of each

    @classmethod
    def empty(cls) -> EntityIndex:
        return cls(np.empty(0, dtype="uint64"), np.empty(0, dtype="int64"))

    def appended(self, values: pd.Series, start: int) -> EntityIndex:
        """With `values` as the rows from `start` on."""
        keys = np.concatenate([self.keys, _hashes(values)])
        rows = np.concatenate([self.rows, np.arange(start, start + len(values))])
        order = np.argsort(keys, kind="stable")
        return EntityIndex(keys[order], rows[order])

    def kept(self, keep: np.ndarray) -> EntityIndex:
        """After the rows where `keep` is False are dropped and the rest renumbered."""
        stays = keep[self.rows]
        renumbered = np.cumsum(keep) - 1
        return EntityIndex(self.keys[stays], renumbered[self.rows[stays]])

    def find(self, values: pd.Series) -> np.ndarray:
        """The rows of every one of `values`, in no order."""
        wanted = np.unique(_hashes(values))
        low = np.searchsorted(self.keys, wanted, "left")
        counts = np.searchsorted(self.keys, wanted, "right") - low
        ends = np.cumsum(counts)
        return self.rows[np.repeat(low - ends + counts, counts) + np.arange(ends[-1:].sum())]


def _hashes(values: pd.Series) -> np.ndarray:
    return np.asarray(pd.util.hash_array(values.to_numpy()), dtype="uint64")


class History:
    """The rows the next events' windows reach back to: the history columns and the event id
    of every accepted event within the lookback (and a day's lateness) of the newest one.

    It lives in the consumer's memory. A restarted consumer rebuilds it from the input
    stream itself (`stream.Consumer.rebuild`), which holds every event the group was given.
    """

    # Rows are kept for the lookback, plus LATENESS before the newest row kept: an event up
    # to a day older than the newest one seen (a late one) still finds its whole windows.
    # Pruning waits for SLACK more, so it runs about once a day of event time, not per batch.
    LATENESS = pd.Timedelta(days=1)
    SLACK = pd.Timedelta(days=1)
    # Rows added since the last merge are kept in a small frame of their own: appending each
    # batch to the whole history copied all of it, 2.8 ms a batch at 75k rows.
    TAIL_ROWS = 5000

    def __init__(self, data: DataSection, cfg: FeaturizeSection) -> None:
        self.data, self.cfg = data, cfg
        self.columns = [data.id, *history_columns(cfg, data.timestamp, data.target)]
        self.lookback = pd.Timedelta(days=rows.lookback_days(cfg))
        self.entities = [g.entity for g in (cfg.spending, cfg.risk) if g is not None]
        self._kept: pd.DataFrame | None = None  # merged rows, oldest first
        self._index = {e: EntityIndex.empty() for e in self.entities}  # of the merged rows
        self._tail: pd.DataFrame | None = None  # rows added after them, in order
        self._span: tuple[pd.Timestamp, pd.Timestamp] | None = None  # oldest, newest kept
        # The kept event ids, as text: the duplicates' test. Changed in place, never copied:
        # a new set of 75k ids at each prune cost 4 ms, and as much again in each of the
        # next young-generation collections, which walked it until it aged.
        self.ids: set[str] = set()
        self._changed: tuple[list[str], list[str]] | None = None  # ids added, dropped

    @property
    def frame(self) -> pd.DataFrame | None:
        """Every kept row, in the order added."""
        self._merge()
        return self._kept

    def _merge(self) -> None:
        if self._tail is None:
            return
        start = 0 if self._kept is None else len(self._kept)
        self._index = {e: ix.appended(self._tail[e], start) for e, ix in self._index.items()}
        parts = [self._tail] if self._kept is None else [self._kept, self._tail]
        self._kept, self._tail = rows.stack(parts, self.columns), None

    @contextmanager
    def tentative(self) -> Iterator[None]:
        """Rows added inside are taken back if it raises. A batch whose publish failed (the
        broker went away) is decided again: its events must not find themselves in the
        history, or they would be dead letters as duplicates of themselves. Costs the batch's
        size, not the history's."""
        state = (self._kept, self._index, self._tail, self._span)
        added: list[str] = []
        dropped: list[str] = []
        self._changed = (added, dropped)
        try:
            yield
        except BaseException:
            self.ids.update(dropped)  # first: an id added, then pruned, stays out
            self.ids.difference_update(added)
            self._kept, self._index, self._tail, self._span = state
            raise
        finally:
            self._changed = None

    def past(self, batch: pd.DataFrame) -> pd.DataFrame | None:
        """The kept rows whose windows the batch's rows share: those of the same customers
        or terminals (every window is one entity's), in their order, less the batch's own
        events (a redelivered one may be kept already: it must not count twice). Windows
        over these few rows equal those over all of them, at a cost that does not grow with
        the history."""
        if self._kept is None and self._tail is None:
            return None
        own = batch[self.data.id]
        kept_own = any(t in self.ids for t in own.astype(str).tolist())
        frames, picks = [], []
        if self._kept is not None:
            keep = np.zeros(len(self._kept), dtype=bool)
            for entity, index in self._index.items():
                keep[index.find(batch[entity])] = True
            frames.append(self._kept)
            # Positions, not the mask: six columns masked over every kept row cost 0.45 ms.
            picks.append(np.flatnonzero(keep))
        if self._tail is not None:
            keep = np.zeros(len(self._tail), dtype=bool)
            for entity in self.entities:
                keep |= self._tail[entity].isin(batch[entity]).to_numpy()
            frames.append(self._tail)
            picks.append(np.flatnonzero(keep))
        if kept_own:
            for k, (frame, at) in enumerate(zip(frames, picks, strict=True)):
                picks[k] = at[~frame[self.data.id].iloc[at].isin(own).to_numpy()]
        return rows.stack(frames, self.columns, picks)

    def add(self, good: pd.DataFrame) -> None:
        """Keep these rows: the first of each event id, and none already kept."""
        texts = good[self.data.id].astype(str).tolist()
        seen: set[str] = set()
        fresh = []  # `ids` is the kept rows' ids, as text; a set, not drop_duplicates (1 ms)
        for text in texts:
            fresh.append(text not in self.ids and text not in seen)
            seen.add(text)
        new = good if all(fresh) else good.loc[fresh]
        if not len(new):
            return
        added = [t for t, f in zip(texts, fresh, strict=True) if f]
        self.ids.update(added)
        if self._changed is not None:
            self._changed[0].extend(added)
        stamps = new[self.data.timestamp]
        low, high = stamps.min(), stamps.max()
        if self._span is not None:
            low, high = min(low, self._span[0]), max(high, self._span[1])
        self._span = (low, high)
        tail = rows.stack([new] if self._tail is None else [self._tail, new], self.columns)
        self._tail = tail
        horizon = high - self.lookback - self.LATENESS
        if low < horizon - self.SLACK:
            self._prune(horizon, high)
        elif len(tail) > self.TAIL_ROWS:
            self._merge()

    def _prune(self, horizon: pd.Timestamp, high: pd.Timestamp) -> None:
        self._merge()
        kept = self._kept
        assert kept is not None
        recent = (kept[self.data.timestamp] >= horizon).to_numpy()
        first = int(recent.argmax())
        prefix = bool(recent[first:].all())  # events came in time order: the old rows lead
        gone_rows = kept.iloc[:first] if prefix else kept.loc[~recent]
        gone = gone_rows[self.data.id].astype(str).tolist()
        self.ids.difference_update(gone)
        if self._changed is not None:
            self._changed[1].extend(gone)
        self._index = {e: ix.kept(recent) for e, ix in self._index.items()}
        # A slice, not a copy of 75k rows (2 ms), where the rows that go come first; its
        # labels are left as they are, as every reader takes the kept rows by position.
        kept = kept.iloc[first:] if prefix else kept.loc[recent]
        self._kept = kept
        self._span = (kept[self.data.timestamp].min(), high)

    def __len__(self) -> int:
        return sum(len(f) for f in (self._kept, self._tail) if f is not None)


class Scorer:
    """One loaded version and its history; `decide` is all a broker adapter calls."""

    def __init__(
        self,
        estimator: Any,
        model: ScoringModel,
        data: DataSection,
        cfg: FeaturizeSection,
    ) -> None:
        self.estimator, self.model, self.data, self.cfg = estimator, model, data, cfg
        self.history = History(data, cfg)

    def read(self, batch: list[Incoming]) -> list[dict[str, Any] | str]:
        """Each entry's declared values, or why it cannot be read."""
        return [parse(item.body, self.data, self.model) for item in batch]

    def event_ids(self, read: list[dict[str, Any] | str]) -> list[str | None]:
        """Each read entry's event id, or None where it could not be read."""
        return [None if isinstance(e, str) else str(e[self.data.id]) for e in read]

    def frame(self, events: list[dict[str, Any]]) -> pd.DataFrame:
        """Events as a frame for `rows.check`; numbers (JSON numbers, by `parse`) as float64,
        which the contract's checks read at a fraction of the cost of Python objects."""
        columns: dict[str, Any] = {}
        for name, spec in self.data.columns.items():
            values = [event.get(name) for event in events]
            if spec.type in ("int", "float"):
                columns[name] = np.array([np.nan if v is None else v for v in values], float)
            else:
                columns[name] = pd.Series(values, dtype=object)
        return pd.DataFrame(columns, copy=False)

    def remember(self, batch: list[Incoming]) -> int:
        """Add events handled before to the history, as deciding them did: those that read
        and pass the contract, the first entry of each event id. A restart's rebuild.
        Returns how many were read and passed."""
        events = [e for e in self.read(batch) if isinstance(e, dict)]
        if not events:
            return 0
        checked = rows.check(self.frame(events), self.data, "event")
        self.history.add(checked.good)
        return len(checked.good)

    def decide(
        self,
        batch: list[Incoming],
        known: dict[str, Known],
        read: list[dict[str, Any] | str] | None = None,
    ) -> list[Outcome]:
        """An outcome per delivery, in order. `known`: the ledger's records of event ids
        decided earlier. A redelivery of the entry that was decided gets that decision back;
        the same event id in another entry is a duplicate, and a dead letter. `read`: the
        entries as `read` gave them, if the caller has them already.

        An event that makes scoring raise would fail its batch on every redelivery and hold
        the stream up behind it. The batch is then decided one event at a time, in order, and
        the event that raises is a dead letter (`internal: ...`); the others are decided as
        they would have been. The history changes only once a batch is decided whole."""
        read = read if read is not None else self.read(batch)
        try:
            return self._decide(batch, known, read)
        except Exception as err:
            if len(batch) == 1:
                reason = f"internal: {type(err).__name__}: {err}"[:INTERNAL_REASON_CHARS]
                logger.warning("event %s: %s", batch[0].message_id, reason)
                return [DeadLetter(batch[0].message_id, reason, batch[0].body)]
        return [
            outcome
            for k in range(len(batch))
            for outcome in self.decide(batch[k : k + 1], known, read[k : k + 1])
        ]

    def _decide(
        self, batch: list[Incoming], known: dict[str, Known], read: list[dict[str, Any] | str]
    ) -> list[Outcome]:
        out: dict[int, Outcome] = {}
        entries: list[tuple[int, Incoming, dict[str, Any], Decision | None]] = []
        seen: dict[str, str] = {}
        for i, (item, parsed) in enumerate(zip(batch, read, strict=True)):
            if isinstance(parsed, str):
                out[i] = DeadLetter(item.message_id, parsed, item.body)
                continue
            event_id = str(parsed[self.data.id])
            first = known[event_id].message_id if event_id in known else seen.get(event_id)
            if first is None and event_id in self.history.ids:
                first = "an earlier entry"  # in the history, never decided by this group
            if first is None:
                seen[event_id] = item.message_id
                entries.append((i, item, parsed, None))
            elif first == item.message_id and event_id in known:
                stored = known[event_id]
                again = Decision(
                    item.message_id,
                    event_id,
                    stored.record,
                    stored.features,
                    item.published_ms,
                    replayed=True,
                )
                entries.append((i, item, parsed, again))
            else:
                reason = f"{self.data.id}: duplicate: event {event_id} was decided from {first}"
                out[i] = DeadLetter(item.message_id, reason, item.body)
        out.update(self._score(entries))
        return [out[i] for i in range(len(batch))]

    def _score(
        self, entries: list[tuple[int, Incoming, dict[str, Any], Decision | None]]
    ) -> dict[int, Outcome]:
        """Score the entries without a decision. Those with one (a redelivery) are rows of
        the same frame all the same: two events at the same instant count in each other's
        windows by their order in the stream, so the order must be the stream's.

        The steps are the batch engine's (`rows`): contract, history windows, fields,
        served ranges, score and threshold; only its output table is not built."""
        out: dict[int, Outcome] = {i: again for i, _, _, again in entries if again is not None}
        if not entries:
            return out
        checked = rows.check(self.frame([e for _, _, e, _ in entries]), self.data, "event")
        refused = iter(checked.rejects[rows.REASON].tolist())
        accepted = []
        for entry, good in zip(entries, checked.accepted, strict=True):
            if good:
                accepted.append(entry)
                continue
            reason = next(refused)
            if entry[3] is None:
                out[entry[0]] = DeadLetter(entry[1].message_id, reason, entry[1].body)
        keep = checked.good
        if all(again is not None for *_, again in accepted):
            # All decided before (a batch settled, then a kill before its acknowledgement):
            # nothing to score, but they are history all the same.
            self.history.add(keep)
            return out
        windows = rows.history(keep, self.data, self.cfg, self.history.past(keep))
        feats = rows.fields(keep, windows, self.model, self.data)
        refusal = rows.out_of_range(feats, self.model)
        ok, outside = refusal.isna().to_numpy(), refusal.tolist()
        scores = rows.predict(self.estimator, feats.loc[ok])
        decisions = rows.alerts(scores, self.model)
        values = feats.to_numpy(dtype="float64")
        event_ids = keep[self.data.id].astype(str).tolist()
        n = 0  # the scores are those of the rows inside the ranges, in order
        for j, (i, item, _, again) in enumerate(accepted):
            if not ok[j]:
                if again is None:
                    out[i] = DeadLetter(item.message_id, str(outside[j]), item.body)
                continue
            if again is None:
                event_id = event_ids[j]
                record = {
                    "event_id": event_id,
                    "score": float(scores[n]),
                    "decision": bool(decisions[n]),
                    "model_name": self.model.name,
                    "model_version": self.model.version,
                }
                named = dict(zip(self.model.fields, values[j].tolist(), strict=True))
                out[i] = Decision(item.message_id, event_id, record, named, item.published_ms)
            n += 1
        self.history.add(keep)  # a row outside the served ranges is still history, as in batch
        return out

"""The stream's core without a broker: an event's reasons to be a dead letter, the ledger's
answer to a redelivery and to a duplicate, and history windows that give each event the
features featurize gives the same row in a table, however the events are batched."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest

from shipyard.config import Params, load_params, parse_params
from shipyard.data.simulator import Simulator
from shipyard.history import feature_names, history_features
from shipyard.scoring import producer
from shipyard.scoring.events import (
    DeadLetter,
    Decision,
    EntityIndex,
    History,
    Incoming,
    Known,
    Scorer,
    parse,
)
from shipyard.scoring.model import ScoringModel
from tests.conftest import REPO

COLUMNS = ["transaction_id", "tx_datetime", "customer_id", "terminal_id", "tx_amount", "tx_fraud"]
DATA = load_params(REPO / "params.yaml").data


class Amounts:
    """A model whose score is a fixed function of its fields, so a test can recompute it."""

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        z = np.tanh(frame.to_numpy(dtype="float64").sum(axis=1) / 1000.0)
        p = (z + 1) / 2
        return np.column_stack([1 - p, p])


@pytest.fixture
def params(raw_params: dict[str, Any]) -> Params:
    return parse_params(raw_params)


@pytest.fixture
def model(params: Params) -> ScoringModel:
    fields = ["tx_amount", *feature_names(params.featurize)]
    return ScoringModel(
        name="fraud-detector",
        version="4",
        uri="models:/fraud-detector/4",
        fields=fields,
        threshold=0.6,
        field_ranges={"tx_amount": (0.0, 5000.0)},
        data_hash="md5:x",
    )


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return Simulator(n_customers=40, n_terminals=60, seed=8).period(0, 45)


def as_events(frame: pd.DataFrame, first: int = 0) -> list[Incoming]:
    """Rows as `shipyard data publish` publishes them, labels included, as broker entries."""
    bodies = producer.bodies(frame[COLUMNS], DATA, labels=True)
    return [Incoming(f"{first + i}-0", body, 0) for i, body in enumerate(bodies)]


GOOD = {
    "transaction_id": 7,
    "tx_datetime": "2025-02-01 10:00:00",
    "customer_id": 3,
    "terminal_id": 9,
    "tx_amount": 12.5,
}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe", "body: json: not a JSON document"),
        (b'"text"', "body: json: not a JSON object"),
        (b'{"transaction_id": Infinity}', "body: json: not a JSON document"),
        ({**GOOD, "tx_amount": "12.5"}, "tx_amount: type: expected float, got str"),
        ({**GOOD, "customer_id": False}, "customer_id: type: expected int, got bool"),
        ({**GOOD, "customer_id": 2**53}, "customer_id: type: expected int, got int"),
        ({**GOOD, "tx_datetime": 1700000000}, "tx_datetime: type: expected datetime, got int"),
        ({**GOOD, "extra": 1}, "extra: fields: not a column of the data contract"),
        ({**GOOD, "transaction_id": None}, "transaction_id: nulls: null value"),
        ({**GOOD, "model_version": 5}, "model_version: model: 5 is not served here"),
        ({k: v for k, v in GOOD.items() if k != "terminal_id"}, "terminal_id: columns:"),
    ],
)
def test_an_event_that_cannot_be_read_names_its_field_and_rule(
    body: bytes | dict[str, Any], reason: str, params: Params, model: ScoringModel
) -> None:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    got = parse(raw, params.data, model)
    assert isinstance(got, str) and got.startswith(reason), got


def test_a_good_event_reads_whole_and_an_integral_float_id_is_the_same_id(
    params: Params, model: ScoringModel
) -> None:
    assert parse(orjson.dumps(GOOD), params.data, model) == GOOD
    addressed = {**GOOD, "transaction_id": 7.0, "model_version": "4"}
    assert parse(orjson.dumps(addressed), params.data, model) == GOOD


@pytest.mark.parametrize("tail_rows", [5000, 7], ids=["tail kept apart", "tail merged often"])
def test_features_match_featurize_however_the_events_are_batched(
    table: pd.DataFrame,
    params: Params,
    model: ScoringModel,
    tail_rows: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Batches of 1 (the last 100), 37 and 500, with the history pruned as it goes, against
    the windows featurize computes over the whole table; and the rebuild path (`remember`).
    With the history's tail merged rarely and often: windows must not see the difference."""
    monkeypatch.setattr(History, "TAIL_ROWS", tail_rows)
    expected = history_features(table, params.featurize, "tx_datetime", "tx_fraud")
    names = feature_names(params.featurize)
    events = as_events(table)
    start = len(table) - 100  # score the last 100 one by one: it is slow per event
    for size in (1, 37, 500):
        scorer = Scorer(Amounts(), model, params.data, params.featurize)
        if size == 1:
            scorer.remember(events[:start])
            todo = range(start, len(events))
        else:
            todo = range(len(events))
        got: list[Decision] = []
        for lo in range(todo.start, todo.stop, size):
            outcomes = scorer.decide(events[lo : min(lo + size, todo.stop)], {})
            got += [o for o in outcomes if isinstance(o, Decision)]
        assert len(got) == len(todo)
        feats = pd.DataFrame([d.features for d in got])[names]
        want = expected.iloc[todo.start :][names].reset_index(drop=True)
        np.testing.assert_allclose(feats.to_numpy(), want.to_numpy(), rtol=1e-9, atol=1e-9)
        stamps = pd.to_datetime(table["tx_datetime"])
        assert scorer.history.frame is not None
        kept = pd.to_datetime(scorer.history.frame["tx_datetime"])
        assert kept.min() >= stamps.max() - pd.Timedelta(days=38 + 1)  # pruned


def test_a_redelivery_gets_its_decision_back_and_a_duplicate_is_a_dead_letter(
    table: pd.DataFrame, params: Params, model: ScoringModel
) -> None:
    scorer = Scorer(Amounts(), model, params.data, params.featurize)
    events = as_events(table.iloc[:5])
    first = scorer.decide(events, {})
    assert all(isinstance(o, Decision) and not o.replayed for o in first)
    stored = {
        d.event_id: Known(d.message_id, d.record, d.features)
        for d in first
        if isinstance(d, Decision)
    }
    again = scorer.decide([events[1]], stored)[0]
    assert isinstance(again, Decision) and again.replayed
    assert again.record == stored[again.event_id].record
    copy = Incoming("99-0", events[2].body, 0)
    ledger_dup = scorer.decide([copy], stored)[0]
    assert isinstance(ledger_dup, DeadLetter) and "decided from 2-0" in ledger_dup.reason
    # Its ledger record gone (expired), the event is still in the history: a duplicate.
    history_dup = scorer.decide([copy], {})[0]
    assert isinstance(history_dup, DeadLetter)
    assert "decided from an earlier entry" in history_dup.reason
    later = as_events(table.iloc[5:6], first=200)[0]
    inner = scorer.decide([later, Incoming("201-0", later.body, 0)], {})
    assert isinstance(inner[0], Decision)
    assert isinstance(inner[1], DeadLetter)
    assert inner[1].reason.startswith("transaction_id: duplicate: event 5 was decided from 200-0")
    assert len(scorer.history) == 6


def test_an_amount_outside_the_served_range_is_a_dead_letter_but_still_history(
    table: pd.DataFrame, params: Params, model: ScoringModel
) -> None:
    scorer = Scorer(Amounts(), model, params.data, params.featurize)
    row = orjson.loads(as_events(table.iloc[:1])[0].body)
    big = Incoming("1-0", orjson.dumps({**row, "tx_amount": 9000.0}), 0)
    out = scorer.decide([big], {})[0]
    assert isinstance(out, DeadLetter)
    assert out.reason.startswith("tx_amount: range: outside the served range [0, 5000]")
    assert len(scorer.history) == 1


def test_a_batch_taken_back_after_a_restart_gets_the_features_it_got_the_first_time(
    table: pd.DataFrame, params: Params, model: ScoringModel
) -> None:
    """A restart rebuilds the history from the stream, less the batch it then takes back,
    some of it decided before the kill: those are rows of the frame in their stream order, so
    the others' windows are what they were the first time."""
    events = as_events(table)
    start = len(table) - 200
    first = Scorer(Amounts(), model, params.data, params.featurize)
    first.remember(events[:start])
    straight: list[Any] = []
    for lo in range(start, len(events), 20):
        straight += first.decide(events[lo : lo + 20], {})
    for lo in range(start, len(events) - 20, 60):
        again = Scorer(Amounts(), model, params.data, params.featurize)
        again.remember(events[:lo])  # the rebuild: all but the entries taken back
        taken = straight[lo - start : lo - start + 20]
        cut = 20 if lo == start else 7  # the first: all decided before the kill, none acked
        known = {d.event_id: Known(d.message_id, d.record, d.features) for d in taken[:cut]}
        got = again.decide(events[lo : lo + 20], known)
        for new, old in zip(got, taken, strict=True):
            assert isinstance(new, Decision) and isinstance(old, Decision)
            assert new.replayed == (new.event_id in known)
            assert new.features.keys() == old.features.keys()
            for name, value in new.features.items():
                assert value == pytest.approx(old.features[name], rel=1e-12, abs=1e-12), name
        # What comes next sees the taken-back batch in its windows, decided before or not.
        after = again.decide(events[lo + 20 : lo + 40], {})
        for new, old in zip(after, straight[lo - start + 20 : lo - start + 40], strict=True):
            assert isinstance(new, Decision) and isinstance(old, Decision)
            for name, value in new.features.items():
                assert value == pytest.approx(old.features[name], rel=1e-12, abs=1e-12), name


class Poisoned(Amounts):
    """A model that raises on one amount: what a bug in a model or a library does to one
    event in a million."""

    POISON = 666.25

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        if (frame["tx_amount"] == self.POISON).any():
            raise ValueError("cannot score this")
        return super().predict_proba(frame)


def test_an_event_that_makes_scoring_raise_is_a_dead_letter_and_the_rest_are_decided(
    table: pd.DataFrame, params: Params, model: ScoringModel
) -> None:
    """Redelivered whole, such a batch would fail forever and hold up the stream behind it."""
    events = as_events(table.iloc[:30])
    body = orjson.loads(events[11].body)
    poison = Incoming(events[11].message_id, orjson.dumps({**body, "tx_amount": 666.25}), 0)
    batch = [*events[:11], poison, *events[12:]]
    clean = Scorer(Amounts(), model, params.data, params.featurize)
    want = clean.decide([*events[:11], *events[12:]], {})
    scorer = Scorer(Poisoned(), model, params.data, params.featurize)
    got = scorer.decide(batch, {})
    letter = got[11]
    assert isinstance(letter, DeadLetter) and letter.message_id == events[11].message_id
    assert letter.reason == "internal: ValueError: cannot score this"
    decided = [o for o in got if isinstance(o, Decision)]
    assert len(decided) == 29
    # One at a time, each event's windows are those it gets in the batch, as the others' are.
    for new, old in zip(decided, want, strict=True):
        assert isinstance(old, Decision)
        assert new.record == old.record
    # The failed whole-batch attempt left no trace in the history: no event is a duplicate.
    assert len(scorer.history) == 29
    after = scorer.decide(as_events(table.iloc[30:40], first=100), {})
    assert all(isinstance(o, Decision) for o in after)


def test_a_batch_whose_publish_failed_is_decided_again_not_taken_for_duplicates(
    table: pd.DataFrame, params: Params, model: ScoringModel
) -> None:
    """The broker went away between deciding a batch and publishing it: the retry must find
    the history as it was, or every event would be a duplicate of itself."""
    events = as_events(table)
    start = len(events) - 300
    scorer = Scorer(Amounts(), model, params.data, params.featurize)
    scorer.remember(events[:start])
    before, ids = len(scorer.history), set(scorer.history.ids)
    with pytest.raises(ConnectionError), scorer.history.tentative():
        scorer.decide(events[start : start + 100], {})
        scorer.decide(events[start + 100 :], {})  # a day later: the history is pruned
        assert not ids <= scorer.history.ids  # some were pruned
        raise ConnectionError("broker lost")
    assert len(scorer.history) == before
    assert scorer.history.ids == ids  # the pruned ones back: still duplicates if sent again
    got = scorer.decide(events[start:], {})
    assert all(isinstance(o, Decision) for o in got), [o for o in got if isinstance(o, DeadLetter)]
    straight = Scorer(Amounts(), model, params.data, params.featurize)
    straight.remember(events[:start])
    want = straight.decide(events[start:], {})
    assert [o.record for o in got] == [o.record for o in want]  # type: ignore[union-attr]


@pytest.mark.parametrize("kind", ["int64", "float64", "object"])
def test_the_entity_index_finds_what_isin_finds_as_rows_come_and_go(kind: str) -> None:
    """Appended in runs, pruned by masks, looked up by batches (some values absent, repeated,
    or missing): its rows are always those `isin` marks in the frame they index."""
    rng = np.random.default_rng(3)

    def values(n: int) -> pd.Series:
        raw = rng.integers(0, 300, n)
        if kind == "object":
            return pd.Series([f"t{v}" if v % 17 else None for v in raw], dtype=object)
        column = pd.Series(raw, dtype=kind)
        return column.where(column % 17 != 0) if kind == "float64" else column

    frame, index = pd.Series([], dtype=kind), EntityIndex.empty()
    for step in range(40):
        if step % 7 == 6:  # a prune: a random tenth of the rows go
            keep = rng.random(len(frame)) > 0.1
            frame, index = frame[keep].reset_index(drop=True), index.kept(keep)
        else:
            new = values(int(rng.integers(0, 400)))
            index = index.appended(new, len(frame))
            frame = pd.concat([frame, new], ignore_index=True)
        batch = pd.concat([values(30), frame.sample(min(5, len(frame)), random_state=step)])
        found = np.zeros(len(frame), dtype=bool)
        found[index.find(batch)] = True
        np.testing.assert_array_equal(found, frame.isin(batch).to_numpy())
        assert len(index.find(batch)) == found.sum()  # each row once


def test_the_first_field_outside_its_served_range_is_named() -> None:
    """In the ranges' order, as the API names it; NaN is outside; unranged fields pass."""
    from shipyard.scoring.rows import out_of_range

    ranged = ScoringModel(
        name="m",
        version="1",
        uri="models:/m/1",
        fields=["a", "b", "c"],
        threshold=0.5,
        field_ranges={"b": (0.0, 1.0), "a": (-2.5, 2.5), "gone": (0.0, 1.0)},
        data_hash="md5:x",
    )
    feats = pd.DataFrame(
        {
            "a": [0.0, 3.0, 0.0, 9.0, np.nan, -2.5],
            "b": [0.5, 0.5, -1.0, 7.0, 0.5, 1.0],
            "c": [1e9, 0.0, 0.0, 0.0, 0.0, 0.0],
        },
        index=[10, 11, 12, 13, 14, 15],
    )
    got = out_of_range(feats, ranged)
    assert list(got.index) == list(feats.index)
    assert got.tolist() == [
        pd.NA,
        "a: range: outside the served range [-2.5, 2.5]",
        "b: range: outside the served range [0, 1]",
        "b: range: outside the served range [0, 1]",  # both out: b comes first
        "a: range: outside the served range [-2.5, 2.5]",
        pd.NA,  # the bounds themselves are inside
    ]


def test_history_keeps_the_first_row_of_each_event_id_once(
    table: pd.DataFrame, params: Params
) -> None:
    history = History(params.data, params.featurize)
    rows = table[COLUMNS].iloc[:6].reset_index(drop=True)
    history.add(rows.iloc[:2])
    again = rows.iloc[[1, 2, 3, 2, 4]].copy()  # 1 kept already; 2 twice in the batch
    again["tx_amount"] = [-1.0, 10.0, 11.0, 12.0, 13.0]
    history.add(again.reset_index(drop=True))
    kept = history.frame
    assert kept is not None
    assert kept["transaction_id"].tolist() == rows["transaction_id"].iloc[:5].tolist()
    assert kept["tx_amount"].tolist()[1:] == [rows["tx_amount"].iloc[1], 10.0, 11.0, 13.0]
    assert history.ids == {str(i) for i in rows["transaction_id"].iloc[:5]}


@pytest.mark.parametrize("late", [False, True], ids=["in time order", "one old row late"])
def test_a_prune_keeps_exactly_the_rows_inside_the_horizon(
    table: pd.DataFrame, params: Params, late: bool
) -> None:
    """Rows in time order go as a leading slice; a late old row among recent ones goes too."""
    rows = table[COLUMNS].reset_index(drop=True)
    if late:  # an early row arrives among the last ones
        order = [*range(1, len(rows) - 50), 0, *range(len(rows) - 50, len(rows))]
        rows = rows.iloc[order].reset_index(drop=True)
    history = History(params.data, params.featurize)
    for lo in range(0, len(rows), 200):
        history.add(rows.iloc[lo : lo + 200].reset_index(drop=True))
    kept = history.frame
    assert kept is not None
    stamps = pd.to_datetime(kept["tx_datetime"])
    newest = pd.to_datetime(rows["tx_datetime"]).max()
    assert stamps.min() >= newest - pd.Timedelta(days=38 + 1)  # pruned, by its slack at most
    want = rows[pd.to_datetime(rows["tx_datetime"]) >= stamps.min()]
    assert sorted(kept["transaction_id"]) == sorted(want["transaction_id"])
    assert history.ids == {str(i) for i in kept["transaction_id"]}
    assert str(rows["transaction_id"].iloc[len(rows) - 51 if late else 0]) not in history.ids

"""No leakage: neither through the time split nor through the history windows."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from shipyard.config import FeaturizeSection, SplitConfig, parse_params
from shipyard.data.simulator import Simulator
from shipyard.history import feature_names, history_features
from shipyard.pipeline.featurize import featurize, split_by_time

TS, TARGET = "tx_datetime", "tx_fraud"


@pytest.fixture(scope="module")
def transactions() -> pd.DataFrame:
    return Simulator(n_customers=60, n_terminals=80, seed=3).period(0, 50)


@pytest.fixture
def cfg(raw_params: dict[str, Any]) -> FeaturizeSection:
    return parse_params(raw_params).featurize


def test_split_is_time_ordered_with_a_gap() -> None:
    ts = pd.date_range("2025-01-01", periods=100, freq="D")
    frame = pd.DataFrame({TS: ts, "x": range(100)})
    parts = split_by_time(frame, TS, SplitConfig(validation=0.2, test=0.2, gap_days=5))
    train, val, test = parts["train"], parts["validation"], parts["test"]
    assert train[TS].max() < val[TS].min() and val[TS].max() < test[TS].min()
    assert (val[TS].min() - train[TS].max()).days > 5
    assert (test[TS].min() - val[TS].max()).days > 5
    assert len(train) + len(val) + len(test) == 100 - 2 * 5


def test_one_instant_never_lands_in_two_splits() -> None:
    ts = pd.to_datetime(["2025-01-01"] * 50 + ["2025-01-02"] * 50 + ["2025-01-03"] * 50)
    parts = split_by_time(pd.DataFrame({TS: ts}), TS, SplitConfig(validation=0.3, test=0.3))
    seen = [set(p[TS]) for p in parts.values()]
    assert not (seen[0] & seen[1]) and not (seen[1] & seen[2]) and not (seen[0] & seen[2])


def test_history_ignores_the_future(transactions: pd.DataFrame, cfg: FeaturizeSection) -> None:
    """Rewrite everything after a cut-off: features before it must not move."""
    cut = transactions[TS].quantile(0.6)
    before = transactions[TS] <= cut
    changed = transactions.copy()
    later = ~before
    changed.loc[later, "tx_amount"] = changed.loc[later, "tx_amount"] * 7 + 100
    changed.loc[later, TARGET] = 1 - changed.loc[later, TARGET]
    a = history_features(transactions, cfg, TS, TARGET)[before]
    b = history_features(changed, cfg, TS, TARGET)[before]
    pd.testing.assert_frame_equal(a, b)


def test_risk_never_sees_labels_younger_than_the_delay(
    transactions: pd.DataFrame, cfg: FeaturizeSection
) -> None:
    """Flip every label of the last `delay` days before a row: its features must not move."""
    assert cfg.risk is not None
    delay = pd.Timedelta(days=cfg.risk.delay_days)
    i = len(transactions) * 3 // 4
    at = pd.Timestamp(transactions[TS].iloc[i])
    terminal = transactions["terminal_id"].iloc[i]
    recent = (transactions[TS] > at - delay) & (transactions[TS] <= at)
    flipped = transactions.copy()
    flipped.loc[recent, TARGET] = 1 - flipped.loc[recent, TARGET]
    risk_cols = [c for c in feature_names(cfg) if "risk" in c or "labelled" in c]
    a = history_features(transactions, cfg, TS, TARGET).iloc[i][risk_cols]
    b = history_features(flipped, cfg, TS, TARGET).iloc[i][risk_cols]
    pd.testing.assert_series_equal(a, b)
    # ...whereas labels just older than the delay do reach it (the test can fail).
    older = (transactions[TS] > at - delay - pd.Timedelta(days=30)) & ~recent
    older &= transactions["terminal_id"] == terminal
    assert older.any()
    flipped.loc[older, TARGET] = 1 - flipped.loc[older, TARGET]
    c = history_features(flipped, cfg, TS, TARGET).iloc[i][risk_cols]
    assert not np.allclose(a.to_numpy(), c.to_numpy())


def test_spending_windows_on_a_hand_built_history(cfg: FeaturizeSection) -> None:
    frame = pd.DataFrame(
        {
            TS: pd.to_datetime(
                ["2025-01-01 10:00", "2025-01-01 12:00", "2025-01-03 09:00", "2025-01-03 09:00"]
            ),
            "customer_id": [1, 1, 1, 2],
            "terminal_id": [5, 5, 5, 5],
            "tx_amount": [10.0, 30.0, 50.0, 7.0],
            TARGET: [0, 1, 0, 0],
        }
    )
    out = history_features(frame, cfg, TS, TARGET)
    assert out["customer_id_nb_tx_1d"].tolist() == [1, 2, 1, 1]
    assert out["customer_id_avg_tx_amount_1d"].tolist() == [10.0, 20.0, 50.0, 7.0]
    assert out["customer_id_nb_tx_7d"].tolist() == [1, 2, 3, 1]
    assert out["customer_id_avg_tx_amount_7d"].tolist() == [10.0, 20.0, 30.0, 7.0]
    # Within the 7-day delay nothing is labelled yet.
    assert out["terminal_id_nb_labelled_7d"].tolist() == [0, 0, 0, 0]


def test_request_history_matches_training_features(
    transactions: pd.DataFrame, cfg: FeaturizeSection
) -> None:
    """A request builder passes past rows plus the new one and gets training's features."""
    full = history_features(transactions, cfg, TS, TARGET)
    i = len(transactions) - 1
    row = transactions.iloc[[i]].assign(**{TARGET: np.nan})  # label unknown at serve time
    past = transactions.iloc[:i]
    served = history_features(pd.concat([past, row]), cfg, TS, TARGET).iloc[[-1]]
    pd.testing.assert_frame_equal(served, full.iloc[[i]])


def test_featurize_outputs_named_model_fields(raw_params: dict[str, Any]) -> None:
    raw_params["featurize"]["split"]["gap_days"] = 1
    params = parse_params(raw_params)
    frame = Simulator(n_customers=60, n_terminals=80, seed=3).period(0, 50)
    frame = frame.drop(columns="tx_fraud_scenario")
    splits, cols = featurize(frame, params)
    assert cols.numeric[0] == "tx_amount" and "terminal_id_risk_30d" in cols.numeric
    for part in splits.values():
        assert list(part.columns[:3]) == ["transaction_id", TS, TARGET]
        assert set(cols.all) <= set(part.columns)
        assert "tx_fraud_scenario" not in part.columns


def test_empty_split_is_a_clear_error() -> None:
    from shipyard.errors import ShipyardError

    frame = pd.DataFrame({TS: pd.date_range("2025-01-01", periods=10, freq="D")})
    with pytest.raises(ShipyardError, match=r"featurize\.split: split 'validation' is empty"):
        split_by_time(frame, TS, SplitConfig(validation=0.1, test=0.1, gap_days=3))


def test_reference_skips_the_feature_warm_up(raw_params: dict[str, Any]) -> None:
    """Drift compares serving rows (full history windows) with training rows that had them."""
    from shipyard.pipeline.register import reference_sample, warm_up

    params = parse_params(raw_params)
    assert warm_up(params) == pd.Timedelta(days=37)  # 7 days of label delay + 30-day window
    ts = params.data.timestamp
    days = pd.date_range("2025-01-01", periods=60, freq="D")
    train = pd.DataFrame({params.data.id: range(60), ts: days, params.data.target: 0})

    class Constant:
        def predict_proba(self, x: pd.DataFrame) -> np.ndarray:
            return np.tile([0.9, 0.1], (len(x), 1))

    from shipyard.pipeline.featurize import FeatureColumns

    cols = FeatureColumns(numeric=[], categorical=[])
    sample = reference_sample(train, cols, Constant(), params)
    assert sample[ts].min() >= days[0] + pd.Timedelta(days=37) and len(sample) == 23


def _windows_by_hand(frame: pd.DataFrame, days: int) -> tuple[list[float], list[float]]:
    """Each row's customer window over (t - days, t], rows at its own time counted up to
    itself, by looping over every pair: the definition, not the algorithm."""
    counts, means = [], []
    for i in range(len(frame)):
        t, who = frame[TS].iloc[i], frame["customer_id"].iloc[i]
        values = [
            frame["tx_amount"].iloc[j]
            for j in range(len(frame))
            if frame["customer_id"].iloc[j] == who
            and t - pd.Timedelta(days=days) < frame[TS].iloc[j]
            and (frame[TS].iloc[j] < t or (frame[TS].iloc[j] == t and j <= i))
            and not np.isnan(frame["tx_amount"].iloc[j])
        ]
        counts.append(float(len(values)))
        means.append(float(np.mean(values)) if values else np.nan)
    return counts, means


@pytest.mark.parametrize("bucket_rows", [1_000_000, 70], ids=["one-pass", "entity-buckets"])
def test_windows_match_their_definition_on_ties_gaps_and_disorder(
    cfg: FeaturizeSection, bucket_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unsorted rows, equal times, missing amounts and a busy customer: every window is what
    a pairwise loop over the definition gives, in one pass or in buckets of entities."""
    monkeypatch.setattr("shipyard.history.BUCKET_ROWS", bucket_rows)
    rng = np.random.default_rng(7)
    n = 300
    frame = pd.DataFrame(
        {
            TS: pd.Timestamp("2025-01-01")
            + pd.to_timedelta(rng.integers(0, 20 * 24, n), unit="h"),  # many ties
            "customer_id": rng.choice([1, 2, 3, 40], n, p=[0.7, 0.1, 0.1, 0.1]),
            "terminal_id": rng.integers(0, 5, n),
            "tx_amount": np.where(rng.random(n) < 0.1, np.nan, rng.gamma(2.0, 30.0, n)),
            TARGET: rng.integers(0, 2, n),
        }
    )
    out = history_features(frame, cfg, TS, TARGET)
    for days in (1, 7):
        counts, means = _windows_by_hand(frame, days)
        assert out[f"customer_id_nb_tx_{days}d"].tolist() == counts
        np.testing.assert_allclose(out[f"customer_id_avg_tx_amount_{days}d"], means, rtol=1e-12)


@pytest.mark.parametrize("bucket_rows", [1_000_000, 500], ids=["one-pass", "entity-buckets"])
def test_rows_after_start_get_the_whole_tables_features(
    transactions: pd.DataFrame,
    cfg: FeaturizeSection,
    bucket_rows: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What a chunked batch or a stream relies on: the last `lookback` days of rows, given
    as history before `start`, give later rows the features the whole table gives them."""
    monkeypatch.setattr("shipyard.history.BUCKET_ROWS", bucket_rows)
    ordered = transactions.sort_values(TS, kind="stable")
    cut = ordered[TS].max() - pd.Timedelta(days=3)
    reach = cut - pd.Timedelta(days=37)  # 7-day label delay + 30-day window
    tail = ordered.loc[ordered[TS] > reach]
    assert len(tail) < len(ordered)
    start = int((tail[TS] <= cut).sum())
    whole = history_features(ordered, cfg, TS, TARGET).loc[tail.index[start:]]
    part = history_features(tail, cfg, TS, TARGET, start=start)
    assert list(part.index) == list(tail.index[start:])
    pd.testing.assert_frame_equal(part, whole, check_exact=False, rtol=1e-12)
    # ...and one day too little history does change them (the test can fail).
    short = ordered.loc[ordered[TS] > reach + pd.Timedelta(days=1)]
    start = int((short[TS] <= cut).sum())
    assert not history_features(short, cfg, TS, TARGET, start=start).equals(whole)


def test_narrowed_history_rows_give_the_same_features(
    transactions: pd.DataFrame, cfg: FeaturizeSection
) -> None:
    """Batch scoring keeps its 37-day window at int32 ids and float32 labels: the features
    are those of the int64 and float64 rows, and an id that does not fit keeps int64."""
    from shipyard.scoring.rows import narrow

    rows = transactions[[TS, "customer_id", "tx_amount", "terminal_id", TARGET]].astype(
        {TARGET: "float64"}
    )
    rows.loc[rows.index[::7], TARGET] = np.nan  # labels not known yet
    small = narrow(rows, TARGET)
    assert small.dtypes.to_dict() == {
        TS: rows[TS].dtype,
        "customer_id": np.dtype("int32"),
        "tx_amount": np.dtype("float64"),
        "terminal_id": np.dtype("int32"),
        TARGET: np.dtype("float32"),
    }
    whole = history_features(rows, cfg, TS, TARGET)
    pd.testing.assert_frame_equal(history_features(small, cfg, TS, TARGET), whole)
    big = rows.assign(customer_id=rows["customer_id"] + 2**31)
    assert narrow(big, TARGET)["customer_id"].dtype == np.dtype("int64")
    pd.testing.assert_frame_equal(history_features(narrow(big, TARGET), cfg, TS, TARGET), whole)


@pytest.mark.parametrize("zone", [None, "Asia/Kolkata"])
def test_calendar_features_are_each_times_own_weekday_and_hour(zone: str | None) -> None:
    """Naive times are read off their nanoseconds, zoned ones through pandas: both must be
    pandas' weekday and hour, before 1970 too, and a missing time is neither."""
    from shipyard.history import _calendar

    rng = np.random.default_rng(11)
    times = pd.Series(pd.to_datetime(rng.integers(-2 * 10**18, 2 * 10**18, 20_000)))
    stamps = times.where(np.arange(len(times)) % 97 != 0)  # every 97th missing
    if zone is not None:
        stamps = stamps.dt.tz_localize("UTC").dt.tz_convert(zone)
    weekend, night = _calendar(stamps)
    assert np.array_equal(weekend, (stamps.dt.dayofweek >= 5).to_numpy(dtype=float))
    assert np.array_equal(night, (stamps.dt.hour < 6).to_numpy(dtype=float))
    assert weekend[::97].sum() == night[::97].sum() == 0

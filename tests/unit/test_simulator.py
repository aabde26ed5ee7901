"""The default dataset is reproducible to the byte, and its drift knob really drifts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shipyard.data.simulator import Drift, Simulator, write_csv

N_TERMINALS = 300


def small(seed: int = 7) -> Simulator:
    return Simulator(n_customers=150, n_terminals=N_TERMINALS, seed=seed)


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    write_csv(small().period(0, 20), str(a))
    write_csv(small().period(0, 20), str(b))
    assert a.read_bytes() == b.read_bytes()
    c = tmp_path / "c.csv"
    write_csv(small(seed=8).period(0, 20), str(c))
    assert c.read_bytes() != a.read_bytes()


def test_a_period_does_not_depend_on_where_generation_started() -> None:
    sim = small()
    whole = sim.period(0, 40)
    tail = sim.period(30, 40)
    later = whole[whole["tx_datetime"] >= tail["tx_datetime"].min().normalize()]
    assert later.reset_index(drop=True).equals(tail)


def test_default_world_matches_the_handbook_design() -> None:
    frame = Simulator().period(0, 60)
    rate = frame["tx_fraud"].mean()
    assert 0.002 < rate < 0.01  # fraud is rare: under 1%
    assert set(frame["tx_fraud_scenario"]) == {0, 1, 2, 3}
    assert (frame.loc[frame["tx_fraud_scenario"] == 1, "tx_amount"] > 220).all()
    assert frame["tx_datetime"].is_monotonic_increasing
    assert frame["transaction_id"].is_unique
    per_day = frame.groupby(frame["tx_datetime"].dt.date).size()
    assert per_day.std() < per_day.mean() * 0.2  # Poisson arrivals, no gaps


def test_drift_knob() -> None:
    sim = small()
    base = sim.period(60, 74)
    drifted = sim.period(
        60, 74, Drift(amount_inflation=1.5, new_terminal_share=0.3, night_fraud_share=0.02)
    )
    assert drifted["tx_amount"].median() > base["tx_amount"].median() * 1.3
    assert (drifted["terminal_id"] >= N_TERMINALS).mean() == pytest.approx(0.3, abs=0.05)
    assert (base["terminal_id"] < N_TERMINALS).all()
    night = drifted[drifted["tx_fraud_scenario"] == 4]
    assert len(night) > 0 and (night["tx_datetime"].dt.hour < 6).all()
    assert drifted["tx_fraud"].mean() > base["tx_fraud"].mean()


def test_bad_drift_is_refused() -> None:
    with pytest.raises(ValueError, match="new_terminal_share"):
        Drift(new_terminal_share=1.5)
    assert Drift().is_neutral and not Drift(amount_inflation=2).is_neutral
    assert np.isfinite(small().period(0, 1)["tx_amount"]).all()

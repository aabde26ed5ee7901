"""Card-transaction simulator written from the design of the Fraud Detection Handbook.

Design (Le Borgne et al., "Reproducible Machine Learning for Credit Card Fraud Detection",
chapter 3): customers and terminals sit on a 100x100 grid; a customer pays at terminals within
a radius; daily transaction counts are Poisson with a per-customer rate; amounts are normal
with a per-customer mean. Three fraud scenarios label transactions:

1. amount above a threshold;
2. compromised terminals: every transaction there is fraud for `terminal_days` days;
3. compromised cards: for `card_days` days a share of the card's transactions are fraud,
   with their amount multiplied.

Every day draws from its own seed, so any period `[first_day, last_day)` is reproducible on
its own and the monitoring work can replay later periods. `Drift` is the knob for those
periods: inflated amounts, traffic moving to terminals never seen in training, and a new
fraud pattern (small night-time amounts on compromised cards).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

SECONDS_PER_DAY = 86_400
COLUMNS = [
    "transaction_id",
    "tx_datetime",
    "customer_id",
    "terminal_id",
    "tx_amount",
    "tx_fraud",
    "tx_fraud_scenario",
]


@dataclass(frozen=True)
class Drift:
    """Changes applied to a simulated period; all neutral by default."""

    amount_inflation: float = 1.0
    new_terminal_share: float = 0.0
    night_fraud_share: float = 0.0

    def __post_init__(self) -> None:
        if self.amount_inflation <= 0:
            raise ValueError("amount_inflation must be > 0")
        for name in ("new_terminal_share", "night_fraud_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be within [0, 1]")

    @property
    def is_neutral(self) -> bool:
        return self == Drift()


@dataclass(frozen=True)
class Simulator:
    """The world: fixed customers and terminals; `period()` draws their transactions."""

    n_customers: int = 1000
    n_terminals: int = 2000
    start_date: str = "2025-01-01"
    seed: int = 7
    radius: float = 5.0
    amount_threshold: float = 220.0
    # Handbook rates: 2 terminals per 10,000 and 3 cards per 5,000 compromised each day.
    terminal_rate: float = 2 / 10_000
    terminal_days: int = 28
    card_rate: float = 3 / 5_000
    card_days: int = 14
    card_fraud_share: float = 1 / 3
    card_amount_factor: float = 5.0
    _world: dict[str, np.ndarray] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0]))
        cust_xy = rng.uniform(0, 100, size=(self.n_customers, 2))
        mean_amount = rng.uniform(5, 100, size=self.n_customers)
        tx_rate = rng.uniform(0, 4, size=self.n_customers)
        term_xy = rng.uniform(0, 100, size=(self.n_terminals, 2))
        dist = np.linalg.norm(cust_xy[:, None, :] - term_xy[None, :, :], axis=2)
        near = dist < self.radius
        # A customer with no terminal in reach pays at the closest one.
        lonely = ~near.any(axis=1)
        near[lonely, dist[lonely].argmin(axis=1)] = True
        rows, cols = np.nonzero(near)
        counts = np.bincount(rows, minlength=self.n_customers)
        self._world.update(
            mean_amount=mean_amount,
            std_amount=mean_amount / 2,
            tx_rate=tx_rate,
            terminals=cols,
            term_start=np.concatenate([[0], np.cumsum(counts)[:-1]]),
            term_count=counts,
        )

    def _day_rng(self, day: int, stream: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.seed, 1 + stream, day]))

    def _compromised(self, day: int, population: int, rate: float, stream: int) -> np.ndarray:
        rng = self._day_rng(day, stream)
        n = min(population, int(rng.poisson(rate * population)))
        return rng.choice(population, size=n, replace=False)

    def _active(self, day: int, population: int, rate: float, days: int, stream: int) -> set[int]:
        active: set[int] = set()
        for start in range(max(0, day - days + 1), day + 1):
            active.update(int(i) for i in self._compromised(start, population, rate, stream))
        return active

    def _day(self, day: int, drift: Drift) -> pd.DataFrame:
        w = self._world
        rng = self._day_rng(day, 0)
        n_tx = rng.poisson(w["tx_rate"])
        cust = np.repeat(np.arange(self.n_customers), n_tx)
        n = len(cust)
        seconds = np.mod(rng.normal(SECONDS_PER_DAY / 2, 20_000, size=n), SECONDS_PER_DAY)
        seconds = seconds.astype(np.int64)
        mean, std = w["mean_amount"][cust], w["std_amount"][cust]
        amount = rng.normal(mean, std)
        negative = amount < 0
        amount[negative] = rng.uniform(0, 2 * mean[negative])
        amount *= drift.amount_inflation
        pick = np.floor(rng.uniform(size=n) * w["term_count"][cust]).astype(np.int64)
        terminal = w["terminals"][w["term_start"][cust] + pick]
        if drift.new_terminal_share > 0:
            moved = rng.uniform(size=n) < drift.new_terminal_share
            terminal = terminal.copy()
            terminal[moved] = self.n_terminals + rng.integers(
                0, self.n_terminals // 10 + 1, moved.sum()
            )

        scenario = np.zeros(n, dtype=np.int64)
        scenario[amount > self.amount_threshold] = 1
        bad_terms = self._active(day, self.n_terminals, self.terminal_rate, self.terminal_days, 1)
        scenario[np.isin(terminal, list(bad_terms)) & (scenario == 0)] = 2
        bad_cards = self._active(day, self.n_customers, self.card_rate, self.card_days, 2)
        card_hit = np.isin(cust, list(bad_cards)) & (rng.uniform(size=n) < self.card_fraud_share)
        card_hit &= scenario == 0
        amount[card_hit] *= self.card_amount_factor
        scenario[card_hit] = 3
        if drift.night_fraud_share > 0:
            night = (rng.uniform(size=n) < drift.night_fraud_share) & (scenario == 0)
            seconds[night] = rng.integers(0, 6 * 3600, night.sum())
            amount[night] = rng.uniform(1, 20, night.sum())
            scenario[night] = 4

        order = np.lexsort((cust, seconds))
        start = pd.Timestamp(self.start_date) + pd.Timedelta(days=day)
        return pd.DataFrame(
            {
                "transaction_id": day * 1_000_000 + np.arange(n),
                "tx_datetime": start + pd.to_timedelta(seconds[order], unit="s"),
                "customer_id": cust[order],
                "terminal_id": terminal[order],
                "tx_amount": np.round(amount[order], 2),
                "tx_fraud": (scenario[order] > 0).astype(np.int64),
                "tx_fraud_scenario": scenario[order],
            }
        )

    def period(self, first_day: int, last_day: int, drift: Drift | None = None) -> pd.DataFrame:
        """Transactions of days `[first_day, last_day)`, in time order."""
        if not 0 <= first_day < last_day:
            raise ValueError(f"empty or negative period [{first_day}, {last_day})")
        drift = drift or Drift()
        days = [self._day(d, drift) for d in range(first_day, last_day)]
        frame = pd.concat(days, ignore_index=True)
        return frame[COLUMNS]


def write_csv(frame: pd.DataFrame, path: str) -> None:
    """Byte-stable CSV, so the same seed always hashes to what data.dvc records."""
    frame.to_csv(
        path,
        index=False,
        float_format="%.2f",
        date_format="%Y-%m-%d %H:%M:%S",
        lineterminator="\n",
    )

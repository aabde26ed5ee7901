"""History-dependent features, computed one way for training, replay and batch scoring.

Each row's features use only rows at or before its own time, and labels only of rows at
least `delay_days` older (labels arrive late). A request builder passes the entity's past
rows plus the new row and gets exactly what featurize computed for training.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shipyard.config import FeaturizeSection, RiskConfig, SpendingConfig


def feature_names(cfg: FeaturizeSection) -> list[str]:
    names: list[str] = []
    if cfg.calendar:
        names += ["is_weekend", "is_night"]
    if cfg.spending:
        s = cfg.spending
        for w in s.windows_days:
            names += [f"{s.entity}_nb_tx_{w}d", f"{s.entity}_avg_{s.amount}_{w}d"]
    if cfg.risk:
        r = cfg.risk
        for w in r.windows_days:
            names += [f"{r.entity}_nb_labelled_{w}d", f"{r.entity}_risk_{w}d"]
    return names


def _rolling(frame: pd.DataFrame, entity: str, ts: str, column: str, days: int) -> pd.DataFrame:
    """Count, sum and mean of `column` over (t - days, t] per entity, in `frame`'s row order."""
    order = np.lexsort((np.arange(len(frame)), frame[ts].to_numpy(), frame[entity].to_numpy()))
    part = frame.iloc[order]
    rolled = part.set_index(ts).groupby(entity, sort=True)[column].rolling(f"{days}D")
    out = pd.DataFrame(
        {"count": rolled.count().to_numpy(), "sum": rolled.sum().to_numpy()}, index=order
    ).sort_index()
    out["mean"] = out["sum"] / out["count"].where(out["count"] > 0)
    return out.reset_index(drop=True)


def _spending(frame: pd.DataFrame, ts: str, cfg: SpendingConfig) -> dict[str, np.ndarray]:
    cols: dict[str, np.ndarray] = {}
    for w in cfg.windows_days:
        r = _rolling(frame, cfg.entity, ts, cfg.amount, w)
        cols[f"{cfg.entity}_nb_tx_{w}d"] = r["count"].to_numpy(dtype=float)
        cols[f"{cfg.entity}_avg_{cfg.amount}_{w}d"] = r["mean"].to_numpy(dtype=float)
    return cols


def _risk(frame: pd.DataFrame, ts: str, target: str, cfg: RiskConfig) -> dict[str, np.ndarray]:
    cols: dict[str, np.ndarray] = {}
    recent = _rolling(frame, cfg.entity, ts, target, cfg.delay_days)
    for w in cfg.windows_days:
        # Rows in (t - delay - w, t - delay]: the window minus the part whose labels are unknown.
        whole = _rolling(frame, cfg.entity, ts, target, cfg.delay_days + w)
        count = (whole["count"] - recent["count"]).to_numpy(dtype=float)
        frauds = (whole["sum"] - recent["sum"]).to_numpy(dtype=float)
        cols[f"{cfg.entity}_nb_labelled_{w}d"] = count
        cols[f"{cfg.entity}_risk_{w}d"] = np.divide(
            frauds, count, out=np.zeros_like(frauds), where=count > 0
        )
    return cols


def history_features(
    frame: pd.DataFrame, cfg: FeaturizeSection, timestamp: str, target: str
) -> pd.DataFrame:
    """The feature columns for every row of `frame`, aligned with its index.

    Rows whose label is not known yet may carry any target value (e.g. NaN): a row's own
    label and those of the last `delay_days` never reach its features.
    """
    base = frame.reset_index(drop=True)
    cols: dict[str, np.ndarray] = {}
    if cfg.calendar:
        when = pd.to_datetime(base[timestamp])
        cols["is_weekend"] = (when.dt.dayofweek >= 5).to_numpy(dtype=float)
        cols["is_night"] = (when.dt.hour < 6).to_numpy(dtype=float)
    if cfg.spending:
        cols.update(_spending(base, timestamp, cfg.spending))
    if cfg.risk:
        labelled = base.assign(**{target: pd.to_numeric(base[target]).fillna(0.0)})
        cols.update(_risk(labelled, timestamp, target, cfg.risk))
    return pd.DataFrame(cols, index=frame.index)[feature_names(cfg)]

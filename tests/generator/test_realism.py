"""Statistical properties of a generated trading day (fixed seed, no anomalies)."""

from __future__ import annotations

import numpy as np

from flowforge_pipeline.generator.instruments import load_instruments

from .conftest import TRADING_DAY, Day

INSTRUMENTS = {i.symbol: i for i in load_instruments()}
DAY_US = 86_400_000_000


def _minute_log_prices(trades: np.ndarray, day_start: int) -> np.ndarray:
    """Last trade price of each minute between the first and last traded minute, filled."""
    minute = ((trades[:, 0] - day_start) // 60_000_000).astype(int)
    last = np.full(1440, np.nan)
    last[minute] = trades[:, 1]  # fancy assignment keeps the last write per minute
    lo, hi = minute.min(), minute.max()
    out = np.log(last[lo : hi + 1])
    for k in range(1, len(out)):
        if np.isnan(out[k]):
            out[k] = out[k - 1]
    return out


def _acf(x: np.ndarray, lag: int) -> float:
    x = x - x.mean()
    return float((x[:-lag] * x[lag:]).sum() / (x * x).sum())


def _standardized_returns(day: Day, step: int) -> np.ndarray:
    start = int(TRADING_DAY.timestamp()) * 1_000_000
    out = []
    for trades in day.trades.values():
        logp = _minute_log_prices(trades, start)[::step]
        ret = np.diff(logp)
        out.append(ret / ret.std())
    return np.concatenate(out)


def test_stream_is_ordered_with_event_time_timestamps(trading_day: Day) -> None:
    assert trading_day.records > 1_000_000
    assert trading_day.ordered
    assert trading_day.timestamps_ok
    assert trading_day.event_time_ok


def test_bid_below_ask_in_every_quote(trading_day: Day) -> None:
    for quotes in trading_day.quotes.values():
        assert (quotes[:, 1] < quotes[:, 2]).all()


def test_prices_on_tick_grid_and_sizes_on_lots(trading_day: Day) -> None:
    for symbol, inst in INSTRUMENTS.items():
        q, t = trading_day.quotes[symbol], trading_day.trades[symbol]
        for prices in (q[:, 1], q[:, 2], t[:, 1]):
            ticks = prices / inst.tick_size
            assert np.abs(ticks - np.rint(ticks)).max() < 1e-6, symbol
            assert (prices > 0).all()
        for sizes in (q[:, 3], q[:, 4], t[:, 2]):
            lots = sizes / inst.lot_size
            assert np.abs(lots - np.rint(lots)).max() < 1e-6, symbol
            assert (np.rint(lots) >= 1).all()


def test_every_trade_within_prevailing_quote(trading_day: Day) -> None:
    at_touch = inside = 0
    for t in trading_day.trades.values():
        price, bid, ask = t[:, 1], t[:, 3], t[:, 4]
        assert ((price >= bid - 1e-9) & (price <= ask + 1e-9)).all()
        at_touch += int(np.sum(np.isclose(price, bid) | np.isclose(price, ask)))
        inside += int(np.sum((price > bid + 1e-9) & (price < ask - 1e-9)))
    assert inside > 0
    assert at_touch > 10 * inside  # mostly at the touch, sometimes inside


def test_returns_heavy_tailed_uncorrelated_and_volatility_clustered(trading_day: Day) -> None:
    r5 = _standardized_returns(trading_day, 5)
    excess_kurtosis = float(((r5 - r5.mean()) ** 4).mean() / r5.var() ** 2 - 3)
    assert excess_kurtosis > 3
    r1 = _standardized_returns(trading_day, 1)
    for lag in range(1, 11):
        assert abs(_acf(r1, lag)) < 0.1, lag
    assert _acf(np.abs(r1), 1) > 0.1


def test_session_volume_is_u_shaped(trading_day: Day) -> None:
    start = int(TRADING_DAY.timestamp()) * 1_000_000
    first, last, mid = [], [], []
    for symbol, inst in INSTRUMENTS.items():
        if inst.is_24h:
            continue
        t = trading_day.trades[symbol]
        minute = ((t[:, 0] - start) // 60_000_000).astype(int)
        volume = np.bincount(minute, weights=t[:, 2], minlength=1440) / t[:, 2].sum()
        ((lo, hi, _),) = inst.sessions_utc(TRADING_DAY.date())
        centre = (lo + hi) // 2
        first.append(volume[lo : lo + 30].mean())
        last.append(volume[hi - 30 : hi].mean())
        mid.append(volume[centre - 60 : centre + 60].mean())
        assert volume[:lo].sum() == 0 and volume[hi:].sum() == 0, symbol  # only in session
    assert np.mean(first) >= 1.5 * np.mean(mid)
    assert np.mean(last) >= 1.5 * np.mean(mid)


def test_average_spread_rises_with_volatility(trading_day: Day) -> None:
    vols, spreads = [], []
    for symbol, inst in INSTRUMENTS.items():
        q = trading_day.quotes[symbol]
        mid = (q[:, 1] + q[:, 2]) / 2
        spreads.append(float(np.mean((q[:, 2] - q[:, 1]) / mid)))
        vols.append(inst.annual_volatility)
    rank_v = np.argsort(np.argsort(vols))
    rank_s = np.argsort(np.argsort(spreads))
    assert np.corrcoef(rank_v, rank_s)[0, 1] > 0.6


def test_heartbeats_keep_every_symbol_moving(trading_day: Day) -> None:
    """Every 10 s interval of every symbol holds a trade or ends with a heartbeat."""
    start = int(TRADING_DAY.timestamp()) * 1_000_000
    step = 10_000_000
    for symbol in INSTRUMENTS:
        traded = (trading_day.trades[symbol][:, 0] - start) // step
        beaten = (trading_day.heartbeats[symbol] - start) // step - 1
        assert ((trading_day.heartbeats[symbol] - start) % step == 0).all()
        covered = np.concatenate((traded, beaten))
        # the last interval's heartbeat carries the next day's first instant: outside the range
        assert np.isin(np.arange(DAY_US // step - 1), covered).all(), symbol

"""Top of book and prints for one instrument and one minute.

Quotes sit around the efficient price with a spread of at least one tick that widens with the
minute's volatility, so bid < ask by construction. Trades print at the prevailing quote: at
the ask for buys and the bid for sells, occasionally strictly inside. Trade signs are
persistent (a Markov chain), but they never move the efficient price, so they cannot make
returns autocorrelated; they only add the small bid-ask bounce real tapes have.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from flowforge_pipeline.generator.anomalies import Anomaly, log_offset
from flowforge_pipeline.generator.arrivals import uniform_times
from flowforge_pipeline.generator.instruments import Instrument
from flowforge_pipeline.generator.prices import DayPath
from flowforge_pipeline.generator.seeding import Component, stream

MINUTE_US = 60_000_000
#: Spread in units of the minute's price standard deviation (before the 1-tick floor).
SPREAD_PER_SIGMA = 0.25
#: Probability that the next trade has the same sign as the last (order-flow persistence).
SIGN_PERSISTENCE = 0.7
#: Probability that a trade prints strictly inside a spread of two ticks or more.
INSIDE_PROB = 0.08
#: Pareto tail index of trade sizes (heavy-tailed, finite mean).
SIZE_TAIL = 1.6
#: Trading accounts and how much of the flow each one does.
ACCOUNTS: tuple[str, ...] = (
    "ACC-ALPHA",
    "ACC-BRAVO",
    "ACC-CHARLIE",
    "ACC-DELTA",
    "ACC-ECHO",
    "ACC-FOXTROT",
    "ACC-GOLF",
    "ACC-HOTEL",
)
_ACCOUNT_P = np.array([1.0 / (k + 1) for k in range(len(ACCOUNTS))])
ACCOUNT_P = _ACCOUNT_P / _ACCOUNT_P.sum()
#: Typical trade notional per asset class, in the instrument's currency (FX: base units).
_TYPICAL_NOTIONAL = {"equity": 20_000.0, "crypto": 5_000.0}
_TYPICAL_FX_UNITS = 100_000.0


def base_lots(inst: Instrument) -> int:
    """Typical trade size in lots: the scale of both trade and quote sizes."""
    if inst.asset_class == "fx":
        return max(1, round(_TYPICAL_FX_UNITS / inst.lot_size))
    notional = _TYPICAL_NOTIONAL[inst.asset_class]
    return max(1, round(notional / (inst.reference_price * inst.lot_size)))


@dataclass
class MinuteBook:
    """Quotes and trades of one instrument in one minute; offsets in microseconds."""

    q_off: np.ndarray  # int64, sorted, q_off[0] == 0 (the minute's opening quote)
    bid: np.ndarray  # int64 ticks
    ask: np.ndarray  # int64 ticks
    bid_lots: np.ndarray  # int64
    ask_lots: np.ndarray  # int64
    q_emit: np.ndarray  # bool: False for quotes a stale-quote anomaly withholds
    t_off: np.ndarray  # int64, sorted
    t_price: np.ndarray  # int64 ticks
    t_lots: np.ndarray  # int64
    t_buy: np.ndarray  # bool
    t_account: np.ndarray  # int64 index into ACCOUNTS
    # Anomaly prints outside the regular sequence: (offset, bid, ask, bid_lots, ask_lots, id)
    x_quotes: list[tuple[int, int, int, int, int, str]]
    # (offset, price, lots, buy, account, id)
    x_trades: list[tuple[int, int, int, bool, int, str]]


def _bridge(rng: np.random.Generator, tau: np.ndarray) -> np.ndarray:
    """Standard Brownian bridge (0 at 0 and at 1) at sorted times `tau` in [0, 1)."""
    steps = np.diff(np.concatenate(([0.0], tau, [1.0])))
    walk = np.cumsum(np.sqrt(steps) * rng.standard_normal(len(steps)))
    return np.asarray(walk[:-1] - tau * walk[-1])


def minute_book(
    seed: int,
    inst: Instrument,
    ordinal: int,
    minute: int,
    path: DayPath,
    n_quotes: int,
    n_trades: int,
    burst: list[tuple[int, int, int]],
    anomalies: list[Anomaly],
    day_start_us: int,
) -> MinuteBook:
    """Simulate the minute; `burst` holds extra trades (count, lo, hi offsets) of volume bursts.

    The minute always opens with a quote at offset 0, so every trade has a prevailing quote
    from the same minute and a minute can be simulated without the one before it.
    """
    rng = stream(seed, Component.BOOK, inst.key, ordinal, minute)
    minute_us = day_start_us + minute * MINUTE_US
    q_off = np.concatenate(([0], uniform_times(rng, n_quotes, 1, MINUTE_US)))
    tau = q_off / MINUTE_US
    sigma = float(path.sigma[minute])
    log_p = (
        path.log_start[minute]
        + (path.diffusion[minute] + path.drift[minute]) * tau
        + sigma * _bridge(rng, tau)
        + np.where(q_off >= path.jump_at[minute], path.jump[minute], 0.0)
    )
    if anomalies:
        log_p = log_p + log_offset(anomalies, q_off + minute_us, day_start_us + 1440 * MINUTE_US)
    price = np.exp(log_p)
    mid_ticks = price / inst.tick_size
    noise = rng.uniform(0.7, 1.3, len(q_off))
    spread = np.maximum(1, np.rint(SPREAD_PER_SIGMA * sigma * mid_ticks * noise)).astype(np.int64)
    q_emit = np.ones(len(q_off), dtype=bool)
    for a in anomalies:
        window = (q_off + minute_us >= a.start_us) & (q_off + minute_us < a.end_us)
        if a.kind == "spread_blowout":
            spread = np.where(window, np.rint(spread * a.magnitude).astype(np.int64), spread)
        elif a.kind == "stale_quote":
            q_emit &= ~window
    bid = np.maximum(1, np.floor(mid_ticks - spread / 2.0 + 0.5).astype(np.int64))
    ask = bid + spread
    lots = base_lots(inst)
    bid_lots = rng.geometric(0.3, len(q_off)).astype(np.int64) * lots
    ask_lots = rng.geometric(0.3, len(q_off)).astype(np.int64) * lots

    t_off = uniform_times(rng, n_trades, 0, MINUTE_US)
    for count, lo, hi in burst:
        t_off = np.concatenate((t_off, uniform_times(rng, count, lo, hi)))
    t_off = np.sort(t_off, kind="stable")
    nt = len(t_off)
    prevailing = np.searchsorted(q_off, t_off, side="right") - 1
    flips = np.where(rng.random(nt) < SIGN_PERSISTENCE, 1, -1)
    first = 1 if rng.random() < 0.5 else -1
    t_buy = (first * np.cumprod(flips)) > 0
    t_bid, t_ask = bid[prevailing], ask[prevailing]
    t_price = np.where(t_buy, t_ask, t_bid)
    inside = (rng.random(nt) < INSIDE_PROB) & (t_ask - t_bid >= 2)
    step = 1 + np.floor(rng.random(nt) * (t_ask - t_bid - 1)).astype(np.int64)
    t_price = np.where(inside, t_bid + step, t_price)
    tail = (1.0 - rng.random(nt)) ** (-1.0 / SIZE_TAIL)
    t_lots = np.clip(np.floor(0.5 * lots * tail), 1, 500 * lots).astype(np.int64)
    t_account = rng.choice(len(ACCOUNTS), size=nt, p=ACCOUNT_P)

    x_quotes: list[tuple[int, int, int, int, int, str]] = []
    x_trades: list[tuple[int, int, int, bool, int, str]] = []
    for a in anomalies:
        if a.kind not in ("crossed_book", "fat_finger") or not a.overlaps(
            minute_us, minute_us + MINUTE_US
        ):
            continue
        off = a.start_us - minute_us
        k = int(np.searchsorted(q_off, off, side="right") - 1)
        if a.kind == "crossed_book":
            crossed_bid = int(bid[k]) + int(a.magnitude)
            x_quotes.append(
                (
                    off,
                    crossed_bid,
                    int(bid[k]),
                    int(bid_lots[k]),
                    int(ask_lots[k]),
                    f"{a.anomaly_id}-q",
                )
            )
        else:
            mid = (bid[k] + ask[k]) / 2.0
            fat = max(1, math.floor(mid * (1.0 + a.magnitude) + 0.5))
            x_trades.append((off, fat, 50 * lots, a.magnitude > 0, 0, f"{a.anomaly_id}-t"))
    return MinuteBook(
        q_off,
        bid,
        ask,
        bid_lots,
        ask_lots,
        q_emit,
        t_off,
        t_price,
        t_lots,
        t_buy,
        t_account,
        x_quotes,
        x_trades,
    )

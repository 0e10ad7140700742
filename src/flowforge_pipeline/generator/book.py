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
    """Quotes and trades of several instruments in one minute; offsets in microseconds.

    Columns run instrument by instrument (in the order given to `minute_books`), each
    instrument's rows sorted by offset; `q_inst`/`t_inst` hold the instrument of each row.
    """

    q_inst: np.ndarray  # int64 instrument index (in the universe) of each quote
    q_off: np.ndarray  # int64, sorted per instrument, each instrument's first offset is 0
    bid: np.ndarray  # int64 ticks
    ask: np.ndarray  # int64 ticks
    bid_lots: np.ndarray  # int64
    ask_lots: np.ndarray  # int64
    q_emit: np.ndarray  # bool: False for quotes a stale-quote anomaly withholds
    t_inst: np.ndarray  # int64 instrument index of each trade
    t_off: np.ndarray  # int64, sorted per instrument
    t_price: np.ndarray  # int64 ticks
    t_lots: np.ndarray  # int64
    t_buy: np.ndarray  # bool
    t_account: np.ndarray  # int64 index into ACCOUNTS
    # Anomaly prints outside the regular sequence:
    # (instrument, offset, bid, ask, bid_lots, ask_lots, id)
    x_quotes: list[tuple[int, int, int, int, int, int, str]]
    # (instrument, offset, price, lots, buy, account, id)
    x_trades: list[tuple[int, int, int, int, bool, int, str]]
    # Earliest offset of each volume burst's extra trades in this minute, by anomaly id
    # (bursts that drew no trade in this minute are absent).
    burst_first: dict[str, int]


@dataclass
class BookInput:
    """One instrument's part of a minute: what `minute_books` simulates for it."""

    index: int  # in the universe
    inst: Instrument
    path: DayPath
    n_quotes: int
    n_trades: int
    burst: list[tuple[int, int, int, str]]  # extra trades: (count, lo, hi, anomaly id)
    anomalies: list[Anomaly]


_ACCOUNT_CDF = ACCOUNT_P.cumsum()
_ACCOUNT_CDF /= _ACCOUNT_CDF[-1]
_OFF_BITS = 32


def _segments(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start of each segment of the given lengths, and the segment of each row."""
    starts = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    return starts, np.repeat(np.arange(len(counts)), counts)


def _sort_within(seg: np.ndarray, values: np.ndarray) -> np.ndarray:
    """`values` (non-negative, < 2**32) sorted inside each segment, segments kept in order."""
    key = np.sort((seg << _OFF_BITS) | values)
    return np.asarray(key & ((1 << _OFF_BITS) - 1))


def minute_books(
    seed: int, ordinal: int, minute: int, day_start_us: int, inputs: list[BookInput]
) -> MinuteBook:
    """Simulate the minute of every given instrument.

    Each instrument draws from its own random stream, in a fixed order and amount that only
    depend on its counts, so its rows are a pure function of (seed, instrument, day, minute):
    the draws are made instrument by instrument and everything computed from them runs once
    over the whole minute, element by element (the same float operations on the same values
    as one instrument at a time, hence the same results).

    Every instrument's minute opens with a quote at offset 0, so every trade has a prevailing
    quote from the same minute and a minute can be simulated without the one before it.
    """
    minute_us = day_start_us + minute * MINUTE_US
    n_in = len(inputs)
    nq = np.array([b.n_quotes + 1 for b in inputs], dtype=np.int64)
    nt = np.array([b.n_trades + sum(c[0] for c in b.burst) for b in inputs], dtype=np.int64)
    q_start, q_seg = _segments(nq)
    t_start, t_seg = _segments(nt)
    # The bridge draws one normal per quote plus one for the end of the minute.
    w_start = q_start + np.arange(n_in + 1)
    q_raw = np.zeros(int(q_start[-1]), dtype=np.int64)
    normals = np.empty(int(w_start[-1]))
    noise = np.empty(len(q_raw))
    bid_geo = np.empty(len(q_raw), dtype=np.int64)
    ask_geo = np.empty(len(q_raw), dtype=np.int64)
    t_raw = np.empty(int(t_start[-1]), dtype=np.int64)
    r_flip, r_inside, r_step, r_tail, r_account = (np.empty(len(t_raw)) for _ in range(5))
    first = np.empty(n_in)
    burst_first: dict[str, int] = {}
    for k, b in enumerate(inputs):
        rng = stream(seed, Component.BOOK, b.inst.key, ordinal, minute)
        q0, q1, t0, t1 = int(q_start[k]), int(q_start[k + 1]), int(t_start[k]), int(t_start[k + 1])
        q_raw[q0 + 1 : q1] = rng.integers(1, MINUTE_US, size=b.n_quotes, dtype=np.int64)
        rng.standard_normal(out=normals[w_start[k] : w_start[k + 1]])
        noise[q0:q1] = rng.uniform(0.7, 1.3, q1 - q0)
        bid_geo[q0:q1] = rng.geometric(0.3, q1 - q0)
        ask_geo[q0:q1] = rng.geometric(0.3, q1 - q0)
        t_raw[t0 : t0 + b.n_trades] = rng.integers(0, MINUTE_US, size=b.n_trades, dtype=np.int64)
        lo = t0 + b.n_trades
        for count, b_lo, b_hi, anomaly_id in b.burst:
            t_raw[lo : lo + count] = rng.integers(b_lo, b_hi, size=count, dtype=np.int64)
            if count:
                burst_first[anomaly_id] = int(t_raw[lo : lo + count].min())
            lo += count
        rng.random(out=r_flip[t0:t1])
        first[k] = rng.random()
        rng.random(out=r_inside[t0:t1])
        rng.random(out=r_step[t0:t1])
        rng.random(out=r_tail[t0:t1])
        rng.random(out=r_account[t0:t1])  # what `choice(p=ACCOUNT_P)` draws

    # ---- quotes: the efficient price along a Brownian bridge, a spread around it
    q_off = _sort_within(q_seg, q_raw)
    tau = q_off / MINUTE_US
    w_seg = np.repeat(np.arange(n_in), nq + 1)
    w_row = np.arange(len(normals)) - w_start[w_seg]
    ends = w_start[1:] - 1  # the extra point of each segment: tau = 1
    tau_ext = np.ones(len(normals))
    tau_ext[np.flatnonzero(w_row < nq[w_seg])] = tau
    prev = np.zeros(len(normals))
    inner = np.flatnonzero(w_row > 0)
    prev[inner] = tau_ext[inner - 1]
    scaled = np.sqrt(tau_ext - prev) * normals
    walk = np.empty(len(normals))
    for k in range(n_in):
        np.cumsum(scaled[w_start[k] : w_start[k + 1]], out=walk[w_start[k] : w_start[k + 1]])
    keep = np.ones(len(normals), dtype=bool)
    keep[ends] = False
    bridge = walk[keep] - tau * walk[ends][q_seg]

    index = np.array([b.index for b in inputs], dtype=np.int64)
    log_start = np.array([b.path.log_start[minute] for b in inputs])
    slope = np.array([b.path.diffusion[minute] + b.path.drift[minute] for b in inputs])
    sigma = np.array([float(b.path.sigma[minute]) for b in inputs])
    jump_at = np.array([b.path.jump_at[minute] for b in inputs])
    jump = np.array([b.path.jump[minute] for b in inputs])
    tick = np.array([b.inst.tick_size for b in inputs])
    lots = np.array([base_lots(b.inst) for b in inputs], dtype=np.int64)
    q_sigma = sigma[q_seg]
    log_p = (
        log_start[q_seg]
        + slope[q_seg] * tau
        + q_sigma * bridge
        + np.where(q_off >= jump_at[q_seg], jump[q_seg], 0.0)
    )
    day_end_us = day_start_us + 1440 * MINUTE_US
    for k, b in enumerate(inputs):
        if b.anomalies:
            q0, q1 = int(q_start[k]), int(q_start[k + 1])
            shift = log_offset(b.anomalies, q_off[q0:q1] + minute_us, day_end_us)
            log_p[q0:q1] = log_p[q0:q1] + shift
    price = np.exp(log_p)
    mid_ticks = price / tick[q_seg]
    spread = np.maximum(1, np.rint(SPREAD_PER_SIGMA * q_sigma * mid_ticks * noise)).astype(
        np.int64
    )
    q_emit = np.ones(len(q_off), dtype=bool)
    for k, b in enumerate(inputs):
        q0, q1 = int(q_start[k]), int(q_start[k + 1])
        for a in b.anomalies:
            at = q_off[q0:q1] + minute_us
            window = (at >= a.start_us) & (at < a.end_us)
            if a.kind == "spread_blowout":
                part = spread[q0:q1]
                spread[q0:q1] = np.where(window, np.rint(part * a.magnitude).astype(np.int64), part)
            elif a.kind == "stale_quote":
                q_emit[q0:q1] &= ~window
    bid = np.maximum(1, np.floor(mid_ticks - spread / 2.0 + 0.5).astype(np.int64))
    ask = bid + spread
    q_lots = lots[q_seg]
    bid_lots = bid_geo * q_lots
    ask_lots = ask_geo * q_lots

    # ---- trades: at the prevailing quote, persistent signs, heavy-tailed sizes
    t_off = _sort_within(t_seg, t_raw)
    q_key, t_key = (q_seg << _OFF_BITS) | q_off, (t_seg << _OFF_BITS) | t_off
    prevailing = np.searchsorted(q_key, t_key, side="right") - 1
    # The sign is the segment's first sign times the product of the flips so far (+1 with
    # probability SIGN_PERSISTENCE, else -1): odd counts of -1 flip it.
    flipped = np.cumsum(r_flip >= SIGN_PERSISTENCE)
    before = np.concatenate(([0], flipped))[t_start[:-1]]
    odd = ((flipped - before[t_seg]) & 1).astype(bool)
    t_buy = (first[t_seg] < 0.5) ^ odd
    t_bid, t_ask = bid[prevailing], ask[prevailing]
    t_price = np.where(t_buy, t_ask, t_bid)
    inside = (r_inside < INSIDE_PROB) & (t_ask - t_bid >= 2)
    step = 1 + np.floor(r_step * (t_ask - t_bid - 1)).astype(np.int64)
    t_price = np.where(inside, t_bid + step, t_price)
    tail = (1.0 - r_tail) ** (-1.0 / SIZE_TAIL)
    t_lots_of = lots[t_seg]
    t_lots = np.clip(np.floor(0.5 * t_lots_of * tail), 1, 500 * t_lots_of).astype(np.int64)
    t_account = _ACCOUNT_CDF.searchsorted(r_account, side="right")

    x_quotes: list[tuple[int, int, int, int, int, int, str]] = []
    x_trades: list[tuple[int, int, int, int, bool, int, str]] = []
    for k, b in enumerate(inputs):
        q0, q1 = int(q_start[k]), int(q_start[k + 1])
        for a in b.anomalies:
            if a.kind not in ("crossed_book", "fat_finger") or not a.overlaps(
                minute_us, minute_us + MINUTE_US
            ):
                continue
            off = a.start_us - minute_us
            j = q0 + int(np.searchsorted(q_off[q0:q1], off, side="right") - 1)
            if a.kind == "crossed_book":
                crossed_bid = int(bid[j]) + int(a.magnitude)
                x_quotes.append(
                    (
                        b.index,
                        off,
                        crossed_bid,
                        int(bid[j]),
                        int(bid_lots[j]),
                        int(ask_lots[j]),
                        f"{a.anomaly_id}-q",
                    )
                )
            else:
                mid = (bid[j] + ask[j]) / 2.0
                fat = max(1, math.floor(mid * (1.0 + a.magnitude) + 0.5))
                x_trades.append(
                    (b.index, off, fat, 50 * int(lots[k]), a.magnitude > 0, 0, f"{a.anomaly_id}-t")
                )
    return MinuteBook(
        index[q_seg],
        q_off,
        bid,
        ask,
        bid_lots,
        ask_lots,
        q_emit,
        index[t_seg],
        t_off,
        t_price,
        t_lots,
        t_buy,
        t_account,
        x_quotes,
        x_trades,
        burst_first,
    )

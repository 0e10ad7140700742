"""The efficient price: GARCH(1,1) with Student-t shocks and jumps, one UTC day at a time.

Volatility clusters (GARCH), returns have heavy tails (Student-t shocks plus rare jumps) and
the variance of each minute is scaled by the instrument's activity, so the open and close of a
session are the most volatile minutes. A day's path is a pure function of (seed, instrument,
day): it starts from a daily anchor price and is gently steered to the next day's anchor, so
any day can be computed without the days before it and consecutive days still join up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from functools import lru_cache

import numpy as np

from flowforge_pipeline.generator.instruments import Instrument
from flowforge_pipeline.generator.seeding import Component, stream

MINUTES = 1440
#: GARCH(1,1) on a unit-variance scale: h = OMEGA + ALPHA * h * z^2 + BETA * h.
ALPHA, BETA = 0.07, 0.915
OMEGA = 1.0 - ALPHA - BETA
#: Degrees of freedom of the Student-t shocks (finite kurtosis needs > 4).
NU = 4.5
#: Probability of a jump in an open minute and its size in units of the minute's volatility.
JUMP_PROB, JUMP_SCALE = 0.002, 8.0
#: Daily anchors follow a slow mean-reverting walk around the reference price.
ANCHOR_REVERSION, ANCHOR_MEMORY, ANCHOR_CHUNK = 0.995, 1024, 256
#: Share of a day's standard deviation that falls overnight for session instruments.
OVERNIGHT_SHARE = 0.35


@dataclass(frozen=True)
class DayPath:
    """One instrument's efficient log price over one UTC day, minute by minute.

    Within minute m the log price goes from `log_start[m]` by `diffusion[m]` (a Brownian
    bridge with standard deviation `sigma[m]`), a linear `drift[m]` and an optional jump of
    `jump[m]` at microsecond `jump_at[m]` of the minute.
    """

    log_start: np.ndarray  # (1441,) log price at each minute start; [1440] is the day's end
    diffusion: np.ndarray  # (1440,) Brownian part of the minute's log return
    drift: np.ndarray  # (1440,) steering toward the next day's anchor
    sigma: np.ndarray  # (1440,) standard deviation of the minute's log return, 0 when closed
    h: np.ndarray  # (1440,) GARCH variance factor (mean 1)
    jump: np.ndarray  # (1440,) log jump, 0 without one
    jump_at: np.ndarray  # (1440,) microsecond offset of the jump in its minute


def _student_t(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.asarray(rng.standard_t(NU, size=n) * math.sqrt((NU - 2.0) / NU))


@lru_cache(maxsize=4096)
def _daily_shocks(seed: int, key: int, chunk: int, sd: float) -> np.ndarray:
    rng = stream(seed, Component.DAILY_SHOCK, key, chunk & 0xFFFFFFFF)
    return np.asarray(rng.normal(0.0, sd, size=ANCHOR_CHUNK))


def _shock(seed: int, inst: Instrument, ordinal: int) -> np.ndarray:
    """Daily shocks for day ordinals [ordinal - ANCHOR_MEMORY, ordinal), oldest first."""
    sd = inst.annual_volatility / math.sqrt(365.0)
    first = ordinal - ANCHOR_MEMORY
    chunks = range(first // ANCHOR_CHUNK, (ordinal - 1) // ANCHOR_CHUNK + 1)
    flat = np.concatenate([_daily_shocks(seed, inst.key, c, sd) for c in chunks])
    offset = first - chunks[0] * ANCHOR_CHUNK
    return flat[offset : offset + ANCHOR_MEMORY]


def anchor_log_price(seed: int, inst: Instrument, day: date) -> float:
    """Log price at 00:00 UTC of `day`: a mean-reverting walk around the reference price.

    Written as a finite weighted sum of past daily shocks, so it needs no starting date and no
    history: every day's anchor is computed directly.
    """
    shocks = _shock(seed, inst, day.toordinal())
    weights = ANCHOR_REVERSION ** np.arange(ANCHOR_MEMORY - 1, -1, -1)
    return math.log(inst.reference_price) + float(weights @ shocks)


def minute_variance(inst: Instrument, act: np.ndarray) -> np.ndarray:
    """Unconditional variance of each minute's log return: annual variance x activity."""
    return np.asarray(inst.annual_volatility**2 / inst.minutes_per_year * act)


def day_path(seed: int, inst: Instrument, day: date, act: np.ndarray) -> DayPath:
    """Simulate the day: GARCH variance over the open minutes, t shocks, jumps, steering."""
    ordinal = day.toordinal()
    open_mask = act > 0
    n_open = int(open_mask.sum())
    start = anchor_log_price(seed, inst, day)
    h = np.ones(MINUTES)
    diffusion = np.zeros(MINUTES)
    sigma = np.zeros(MINUTES)
    jump = np.zeros(MINUTES)
    jump_at = np.zeros(MINUTES, dtype=np.int64)
    drift = np.zeros(MINUTES)
    if n_open:
        rng = stream(seed, Component.GARCH, inst.key, ordinal)
        h0 = float(np.exp(rng.normal(-0.1, 0.45)))
        z = _student_t(rng, n_open)
        hs = np.empty(n_open)
        cur = h0
        for k in range(n_open):
            hs[k] = cur
            cur = OMEGA + ALPHA * cur * z[k] * z[k] + BETA * cur
        h[open_mask] = hs
        base = minute_variance(inst, act)
        sigma = np.sqrt(base * h)
        diffusion[open_mask] = sigma[open_mask] * z
        jrng = stream(seed, Component.JUMPS, inst.key, ordinal)
        hit = jrng.random(n_open) < JUMP_PROB
        sizes = jrng.standard_normal(n_open) * JUMP_SCALE * np.sqrt(base[open_mask])
        at = jrng.integers(0, 60_000_000, size=n_open, dtype=np.int64)
        jump[open_mask] = np.where(hit, sizes, 0.0)
        jump_at[open_mask] = at
        # Steer toward the next day's anchor (less an overnight gap for session instruments)
        # with a constant drift per open minute: tiny next to the noise, and it joins days up.
        target = anchor_log_price(seed, inst, date.fromordinal(ordinal + 1))
        if not inst.is_24h:
            orng = stream(seed, Component.OVERNIGHT, inst.key, ordinal)
            daily_sd = inst.annual_volatility / math.sqrt(365.0)
            target -= float(orng.normal(0.0, OVERNIGHT_SHARE * daily_sd))
        free_end = start + diffusion.sum() + jump.sum()
        drift[open_mask] = (target - free_end) / n_open
    log_start = np.empty(MINUTES + 1)
    log_start[0] = start
    log_start[1:] = start + np.cumsum(diffusion + jump + drift)
    return DayPath(log_start, diffusion, drift, sigma, h, jump, jump_at)

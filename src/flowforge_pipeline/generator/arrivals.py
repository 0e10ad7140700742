"""When things happen: intraday activity profiles and per-minute arrival intensities.

One activity factor per instrument drives both its volatility (`prices`) and how often it
trades and quotes (here), which is what makes busy periods volatile ones, as on a real tape.
Arrivals are a Cox process: Poisson counts per minute whose intensity is the activity times
the instrument's GARCH variance, so trading clusters where volatility clusters.
"""

from __future__ import annotations

from datetime import date

import numpy as np

from flowforge_pipeline.generator.instruments import Instrument
from flowforge_pipeline.generator.seeding import Component, stream

MINUTES = 1440
#: Relative share of the universe's flow by asset class.
CLASS_WEIGHT: dict[str, float] = {"equity": 0.7, "fx": 1.0, "crypto": 1.0}
#: Intraday U-shape of a session: open and close bursts decaying over ~7% of the session.
U_OPEN, U_CLOSE, U_DECAY = 2.6, 2.0, 0.07
#: How strongly the GARCH variance lifts trading intensity (intensity ~ h ** this).
INTENSITY_VOL_POWER = 0.5


def _u_shape(x: np.ndarray) -> np.ndarray:
    """Reverse-J/U session profile with mean 1 over the session (x = session fraction)."""
    raw = 1.0 + U_OPEN * np.exp(-x / U_DECAY) + U_CLOSE * np.exp(-(1.0 - x) / U_DECAY)
    mean = 1.0 + (U_OPEN + U_CLOSE) * U_DECAY * (1.0 - np.exp(-1.0 / U_DECAY))
    return np.asarray(raw / mean)


def _fx_profile() -> np.ndarray:
    """24h FX activity: Tokyo, London and New York sessions, overlap busiest, mean 1."""
    hour = (np.arange(MINUTES) + 0.5) / 60.0

    def bump(centre: float, width: float) -> np.ndarray:
        return np.asarray(np.exp(-0.5 * ((hour - centre) / width) ** 2))

    raw = 0.35 + 0.35 * bump(3.0, 2.5) + 0.9 * bump(11.0, 2.5) + 1.0 * bump(15.5, 2.5)
    return np.asarray(raw / raw.mean())


def _crypto_profile() -> np.ndarray:
    """24h crypto activity: a mild afternoon-UTC peak, mean 1."""
    hour = (np.arange(MINUTES) + 0.5) / 60.0
    return np.asarray(1.0 + 0.3 * np.cos(2 * np.pi * (hour - 15.0) / 24.0))


_FX = _fx_profile()
_CRYPTO = _crypto_profile()


def activity(inst: Instrument, day: date) -> np.ndarray:
    """Activity of each UTC minute of `day`: 0 when closed, mean 1 over an open session."""
    out = np.zeros(MINUTES)
    if inst.is_24h:
        if not inst.trades_on(day):
            return out
        if inst.asset_class == "fx":
            return _FX.copy()
        return _CRYPTO * (0.75 if day.weekday() >= 5 else 1.0)
    for lo, hi, opened in inst.sessions_utc(day):
        x = (np.arange(lo, hi) - opened + 0.5) / inst.session_minutes
        out[lo:hi] = _u_shape(x)
    return out


def weight(inst: Instrument, act: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Unnormalized pull of an instrument on the flow: class weight x activity x volatility."""
    return np.asarray(CLASS_WEIGHT[inst.asset_class] * act * h**INTENSITY_VOL_POWER)


def shares(weights: list[np.ndarray]) -> list[np.ndarray]:
    """Each instrument's fraction of the universe's flow per minute (fractions sum to 1).

    Normalizing by the whole universe keeps the total at the configured rate at every moment,
    while each instrument's own profile still shows in its share.
    """
    total = np.maximum(np.sum(weights, axis=0), 1e-12)
    return [np.asarray(w / total) for w in weights]


def minute_counts(
    seed: int, inst: Instrument, day: date, expected: np.ndarray, kind: int
) -> np.ndarray:
    """Poisson event counts per minute given the expected count of each minute.

    `kind` separates the quote stream (0) from the trade stream (1) of the same instrument.
    """
    rng = stream(seed, Component.COUNTS, inst.key, day.toordinal(), kind)
    return rng.poisson(expected).astype(np.int64)


def uniform_times(rng: np.random.Generator, n: int, lo: int, hi: int) -> np.ndarray:
    """`n` sorted microsecond offsets in [lo, hi): arrivals given a count are uniform."""
    return np.sort(rng.integers(lo, hi, size=n, dtype=np.int64))

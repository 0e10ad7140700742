"""Independent random streams keyed by what they are for, never by how far a run got.

Every draw comes from a generator seeded with (seed, component, instrument, time block), so
any stretch of the tape can be recomputed on its own: a restart, a different pacing or a
different batch size cannot shift a single random number.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Component(IntEnum):
    """What a random stream is used for; part of every stream's key."""

    DAILY_SHOCK = 1
    OVERNIGHT = 2
    GARCH = 3
    JUMPS = 4
    COUNTS = 5
    BOOK = 6
    ANOMALY_PLAN = 7
    ANOMALY_BOOK = 8


def stream(seed: int, component: Component, *parts: int) -> np.random.Generator:
    """The random generator of one (seed, component, instrument, block) combination."""
    key = [seed, int(component), *(p & 0xFFFFFFFF for p in parts)]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(key)))

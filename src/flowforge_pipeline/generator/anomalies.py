"""Labeled anomalies: opt-in disturbances of the tape whose truth goes to `ground_truth`.

Each day's anomalies are planned up front from their own random stream (seed, day), so
enabling them never changes the plan of another day, and a label is exact: the detector can
be scored against the id, symbol, type, window and magnitude written here. Labels are never
written to `trades` or `quotes`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date

import numpy as np

from flowforge_pipeline.generator.instruments import Instrument
from flowforge_pipeline.generator.seeding import Component, stream

KINDS: tuple[str, ...] = (
    "spread_blowout",
    "volume_burst",
    "price_jump",
    "flash_crash",
    "fat_finger",
    "stale_quote",
    "crossed_book",
)
#: The three levels of the severe grade: every one is at or above the size that must be
#: caught (spread >= 3x, volume >= 5x, price jump >= 8 one-minute sd; every fat finger, stale
#: quote and crossed book). `mixed` draws among them.
SEVERITIES: tuple[str, ...] = ("low", "medium", "high")
#: Grades below the severe one, opt-in (`milder` draws among them); only the kinds whose
#: severity is a size have them.
MILDER_SEVERITIES: tuple[str, ...] = ("mild", "moderate")
#: Every grade from the smallest up.
GRADES: tuple[str, ...] = MILDER_SEVERITIES + SEVERITIES

#: Magnitude by severity, in each kind's natural unit (see `docs/generator.md`).
MAGNITUDE: dict[str, tuple[float, float, float]] = {
    "spread_blowout": (4.0, 8.0, 16.0),  # spread multiple
    "volume_burst": (5.0, 10.0, 20.0),  # trade-rate multiple
    "price_jump": (8.0, 15.0, 30.0),  # 5-minute standard deviations (signed fraction in label)
    "flash_crash": (8.0, 15.0, 30.0),  # 5-minute standard deviations, reverts at the end
    "fat_finger": (0.02, 0.05, 0.10),  # fraction away from the mid
    "stale_quote": (60.0, 180.0, 600.0),  # seconds without a quote update
    "crossed_book": (1.0, 3.0, 10.0),  # ticks the bid sits above the ask
}
#: Magnitude of the milder grades (mild, moderate), below the severe grade's floor.
MILDER_MAGNITUDE: dict[str, tuple[float, float]] = {
    "spread_blowout": (1.5, 2.0),
    "volume_burst": (2.0, 3.0),
    # 4 and 6 one-minute sd, in five-minute sd as above
    "price_jump": (4.0 / math.sqrt(5.0), 6.0 / math.sqrt(5.0)),
    "flash_crash": (4.0 / math.sqrt(5.0), 6.0 / math.sqrt(5.0)),
}
MILDER_KINDS: tuple[str, ...] = tuple(k for k in KINDS if k in MILDER_MAGNITUDE)
#: Duration range in seconds of kinds that last (the others are one event at `start`).
DURATION: dict[str, tuple[int, int]] = {
    "spread_blowout": (30, 180),
    "volume_burst": (30, 120),
    "flash_crash": (20, 120),
}


@dataclass(frozen=True)
class AnomalyOptions:
    """What to inject: expected labels per hour over the universe, severity, kinds."""

    rate_per_hour: float = 2.0
    # a grade of GRADES, 'mixed' (the severe ones) or 'milder' (the ones below)
    severity: str = "mixed"
    kinds: tuple[str, ...] = KINDS

    def __post_init__(self) -> None:
        if self.severity not in (*GRADES, "mixed", "milder"):
            raise ValueError(f"unknown anomaly severity {self.severity!r}")
        if self.severity in ("milder", *MILDER_SEVERITIES):
            severe_only = [k for k in self.kinds if k not in MILDER_MAGNITUDE]
            if severe_only:
                raise ValueError(
                    f"{','.join(severe_only)} has no grade below severe (every one is severe); "
                    f"milder grades exist for {','.join(MILDER_KINDS)}"
                )


def kinds_for(severity: str) -> tuple[str, ...]:
    """Every kind that can be injected at `severity`."""
    return MILDER_KINDS if severity in ("milder", *MILDER_SEVERITIES) else KINDS


def magnitude_of(kind: str, severity: str) -> float:
    """Magnitude of `kind` at `severity`, in the kind's natural unit (before any sign)."""
    if severity in MILDER_SEVERITIES:
        return MILDER_MAGNITUDE[kind][MILDER_SEVERITIES.index(severity)]
    return MAGNITUDE[kind][SEVERITIES.index(severity)]


@dataclass(frozen=True)
class Anomaly:
    """One injected disturbance; its fields are the label written to `ground_truth`."""

    anomaly_id: str
    instrument: int  # index in the universe
    kind: str
    severity: str
    start_us: int
    end_us: int
    magnitude: float

    def overlaps(self, lo_us: int, hi_us: int) -> bool:
        """Whether the anomaly acts on [lo_us, hi_us); instantaneous ones act at `start_us`."""
        if self.end_us == self.start_us:
            return lo_us <= self.start_us < hi_us
        return self.start_us < hi_us and lo_us < self.end_us


def plan_day(
    seed: int,
    day: date,
    instruments: tuple[Instrument, ...],
    acts: list[np.ndarray],
    options: AnomalyOptions,
) -> list[Anomaly]:
    """The anomalies of one UTC day, sorted by start; only on instruments that are open."""
    ordinal = day.toordinal()
    rng = stream(seed, Component.ANOMALY_PLAN, ordinal)
    n = int(rng.poisson(options.rate_per_hour * 24.0))
    day_us = (ordinal - date(1970, 1, 1).toordinal()) * 86_400_000_000
    stamp = day.strftime("%Y%m%d")
    out: list[Anomaly] = []
    for k in range(n):
        kind = options.kinds[int(rng.integers(len(options.kinds)))]
        idx = int(rng.integers(len(instruments)))
        if options.severity == "mixed":
            severity = SEVERITIES[int(rng.integers(3))]
        elif options.severity == "milder":
            severity = MILDER_SEVERITIES[int(rng.integers(2))]
        else:
            severity = options.severity
        u = float(rng.random())
        sign = 1.0 if rng.random() < 0.5 else -1.0
        dur_lo, dur_hi = DURATION.get(kind, (0, 0))
        duration_s = int(rng.integers(dur_lo, dur_hi + 1)) if dur_hi else 0
        open_minutes = np.flatnonzero(acts[idx] > 0)
        if not len(open_minutes):
            continue  # the drawn instrument is closed all day: nothing to disturb
        minute = int(open_minutes[min(int(u * len(open_minutes)), len(open_minutes) - 1)])
        start = day_us + minute * 60_000_000 + int(rng.integers(0, 60_000_000))
        inst = instruments[idx]
        magnitude = magnitude_of(kind, severity)
        if kind == "stale_quote":
            duration_s = int(magnitude)
        if kind in ("price_jump", "flash_crash"):
            five_min_sd = inst.annual_volatility * math.sqrt(5.0 / inst.minutes_per_year)
            magnitude = sign * magnitude * five_min_sd
        elif kind == "fat_finger":
            magnitude = sign * magnitude
        out.append(
            Anomaly(
                anomaly_id=f"{seed}-{stamp}-a{k}",
                instrument=idx,
                kind=kind,
                severity=severity,
                start_us=start,
                end_us=start + duration_s * 1_000_000,
                magnitude=round(magnitude, 6),
            )
        )
    out.sort(key=lambda a: (a.start_us, a.anomaly_id))
    return out


def log_offset(anomalies: list[Anomaly], times_us: np.ndarray, day_end_us: int) -> np.ndarray:
    """Additive log-price offset at `times_us` from price jumps and flash crashes.

    A permanent jump fades linearly to nothing at the end of the UTC day, so the next day's
    path (computed independently) joins up without a reversal anyone could see.
    """
    out = np.zeros(len(times_us))
    for a in anomalies:
        if a.kind == "flash_crash":
            out += np.where((times_us >= a.start_us) & (times_us < a.end_us), a.magnitude, 0.0)
        elif a.kind == "price_jump":
            fade = (day_end_us - times_us) / max(day_end_us - a.start_us, 1)
            out += np.where(times_us >= a.start_us, a.magnitude * fade, 0.0)
    return out

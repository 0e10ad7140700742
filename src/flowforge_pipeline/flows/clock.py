"""An event clock that gives the same windows on every replay and still closes them live.

Bytewax's `EventClock` lets the watermark advance with the system time elapsed since the
newest event. Over a backfill, event time runs far ahead of system time, so whether a record
is judged late depends on how the machine happened to schedule the flow: the same input gave
different windows on different runs. This clock separates the two regimes, per key:

* **replay** (the newest event is older than the allowed lateness when it arrives): the
  watermark is `newest event time - lateness` and nothing else. It depends only on the order
  of the key's records, which Kafka fixes per partition, so every run closes the same
  windows and judges the same records late. Quiet symbols advance through heartbeats.
* **live** (the newest event arrived within the allowed lateness of the wall clock): the
  watermark also follows `now - lateness`, so a window closes `lateness` after its end even
  if no further record arrives, and a record is late when it was delivered more than
  `lateness` after its event time.

The watermark never goes back; at end of input every window closes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

from bytewax.operators.windowing import Clock, ClockLogic

from flowforge_pipeline.flows.common import utc_now

V = TypeVar("V")

UTC_MIN = datetime.min.replace(tzinfo=UTC)
UTC_MAX = datetime.max.replace(tzinfo=UTC)


@dataclass
class ClockState:
    """Per-key clock state, snapshotted by Bytewax recovery."""

    newest_event: datetime = UTC_MIN
    watermark: datetime = UTC_MIN
    live: bool = False


def _minus(ts: datetime, delta: timedelta) -> datetime:
    return ts - delta if ts > UTC_MIN + delta else UTC_MIN


@dataclass
class _ReplayableClockLogic(ClockLogic[V, ClockState]):
    ts_getter: Callable[[V], datetime]
    lateness: timedelta
    now_getter: Callable[[], datetime]
    state: ClockState = field(default_factory=ClockState)
    _now: datetime = field(init=False)

    def __post_init__(self) -> None:
        self._now = self.now_getter()

    def before_batch(self) -> None:
        self._now = max(self._now, self.now_getter())

    def _advance(self) -> datetime:
        candidate = _minus(self.state.newest_event, self.lateness)
        if self.state.live:
            candidate = max(candidate, _minus(self._now, self.lateness))
        if candidate > self.state.watermark:
            self.state.watermark = candidate
        return self.state.watermark

    def on_item(self, value: V) -> tuple[datetime, datetime]:
        ts = self.ts_getter(value)
        if ts > self.state.newest_event:
            self.state.newest_event = ts
            self.state.live = self._now - ts <= self.lateness
        return ts, self._advance()

    def on_notify(self) -> datetime:
        self.before_batch()
        return self._advance()

    def on_eof(self) -> datetime:
        return UTC_MAX

    def to_system_utc(self, timestamp: datetime) -> datetime | None:
        # Live: wake when the system clock makes the watermark pass `timestamp`.
        # Replay: never wake on system time; the next record (or end of input) closes.
        return timestamp + self.lateness if self.state.live else None

    def snapshot(self) -> ClockState:
        return copy.deepcopy(self.state)


@dataclass
class ReplayableEventClock(Clock[V, ClockState], Generic[V]):
    """Event-time clock, deterministic over replays (see the module docstring)."""

    ts_getter: Callable[[V], datetime]
    lateness: timedelta
    now_getter: Callable[[], datetime] = utc_now

    def build(self, resume_state: ClockState | None) -> _ReplayableClockLogic[V]:
        """A clock logic for one key, resumed from its snapshot if any."""
        return _ReplayableClockLogic(
            self.ts_getter, self.lateness, self.now_getter, resume_state or ClockState()
        )

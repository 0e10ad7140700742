"""Batching rows for ClickHouse inside the dataflow, so a batch survives a crash.

A buffer flushes at `flush_size` rows or `max_wait` after its first row, whichever comes
first. When batches keep filling up faster than `max_wait`, the size threshold doubles, so at
high rates ClickHouse sees about one insert per `max_wait` per table instead of thousands;
when the rate drops it halves back. The buffer is Bytewax state: it is snapshotted with the
source offsets, so rows buffered at a crash are neither lost nor doubled.

`batch_row_lists` takes rows in lists (a whole input batch's rows for one table at once)
instead of one by one: at high rates the per-item cost of a Bytewax step is larger than the
work done on a row, so a flow that can produce its rows per input batch should.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Generic, TypeVar

import bytewax.operators as op
from bytewax.operators import KeyedStream, StatefulLogic

from flowforge_pipeline.flows.common import utc_now

T = TypeVar("T")

#: Upper bound of the adaptive threshold: keeps one insert's memory and latency bounded.
MAX_BATCH_ROWS = 200_000


@dataclass
class BatchBuffer(Generic[T]):
    """Rows waiting for one insert, and the adaptive size threshold."""

    flush_size: int
    max_wait: timedelta
    threshold: int = 0
    rows: list[T] = field(default_factory=list)
    opened_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.threshold <= 0:
            self.threshold = self.flush_size

    def add(self, row: T, now: datetime) -> list[T] | None:
        """Buffer a row; return a full batch when the threshold is reached."""
        return self.extend((row,), now)

    def extend(self, rows: Sequence[T], now: datetime) -> list[T] | None:
        """Buffer a list of rows; return everything buffered once the threshold is reached.

        A list is never split: splitting one input batch's rows at 50, 100, 200, ... would
        make several inserts in a row where one does, and ClickHouse prefers few, large
        inserts. A batch can therefore exceed the threshold by less than one list.
        """
        if not rows:
            return None
        if not self.rows:
            self.opened_at = now
        self.rows.extend(rows)
        if len(self.rows) >= self.threshold:
            return self._take(now, full=True)
        return None

    def copy(self) -> BatchBuffer[T]:
        """A snapshot copy; rows are immutable tuples, so copying the list is enough."""
        return BatchBuffer(
            self.flush_size, self.max_wait, self.threshold, list(self.rows), self.opened_at
        )

    def due(self, now: datetime) -> list[T] | None:
        """Return the batch when it has waited `max_wait`, else None."""
        if self.rows and self.opened_at is not None and now >= self.opened_at + self.max_wait:
            return self._take(now, full=False)
        return None

    def drain(self) -> list[T] | None:
        """Everything buffered (at end of input)."""
        return self._take(None, full=False) if self.rows else None

    def deadline(self) -> datetime | None:
        """When the current batch must flush at the latest."""
        return self.opened_at + self.max_wait if self.rows and self.opened_at else None

    def _take(self, now: datetime | None, *, full: bool) -> list[T]:
        batch, self.rows = self.rows, []
        filled_fast = (
            full and now is not None and self.opened_at is not None
            and now - self.opened_at < self.max_wait
        )
        if filled_fast:
            self.threshold = min(self.threshold * 2, MAX_BATCH_ROWS)
        elif not full and len(batch) < self.threshold // 2:
            self.threshold = max(self.threshold // 2, self.flush_size)
        self.opened_at = None
        return batch


@dataclass
class _BatchLogic(StatefulLogic[T | list[T], list[T], BatchBuffer[T]]):
    """One key's buffer as a Bytewax step; items are rows, or lists of rows (`lists`)."""

    buffer: BatchBuffer[T]
    now: Callable[[], datetime]
    lists: bool = False

    def on_item(self, value: T | list[T]) -> tuple[Iterable[list[T]], bool]:
        rows: Sequence[T] = value if self.lists else (value,)  # type: ignore[assignment]
        return self._emit(self.buffer.extend(rows, self.now()))

    def on_notify(self) -> tuple[Iterable[list[T]], bool]:
        return self._emit(self.buffer.due(self.now()))

    def on_eof(self) -> tuple[Iterable[list[T]], bool]:
        return self._emit(self.buffer.drain())

    def notify_at(self) -> datetime | None:
        return self.buffer.deadline()

    def snapshot(self) -> BatchBuffer[T]:
        return self.buffer.copy()

    @staticmethod
    def _emit(batch: list[T] | None) -> tuple[Iterable[list[T]], bool]:
        return ([batch] if batch else [], StatefulLogic.RETAIN)


def _batched(
    step_id: str,
    up: KeyedStream[T] | KeyedStream[list[T]],
    flush_size: int,
    max_wait: timedelta,
    now: Callable[[], datetime],
    lists: bool,
) -> KeyedStream[list[T]]:
    def build(resume: BatchBuffer[T] | None) -> _BatchLogic[T]:
        return _BatchLogic(resume or BatchBuffer(flush_size, max_wait), now, lists)

    return op.stateful(step_id, up, build)  # type: ignore[arg-type]


def batch_rows(
    step_id: str,
    up: KeyedStream[T],
    *,
    flush_size: int,
    max_wait: timedelta,
    now: Callable[[], datetime] = utc_now,
) -> KeyedStream[list[T]]:
    """Group each key's rows into insert batches (see the module docstring)."""
    return _batched(step_id, up, flush_size, max_wait, now, lists=False)


def batch_row_lists(
    step_id: str,
    up: KeyedStream[list[T]],
    *,
    flush_size: int,
    max_wait: timedelta,
    now: Callable[[], datetime] = utc_now,
) -> KeyedStream[list[T]]:
    """`batch_rows` for rows that arrive in lists, one step call per list (see `extend`)."""
    return _batched(step_id, up, flush_size, max_wait, now, lists=True)

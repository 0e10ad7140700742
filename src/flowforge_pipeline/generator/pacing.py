"""When records leave: real time, accelerated (x N) or as fast as possible (backfill).

Pacing only decides *when* a record is handed to the sink, never *what* it is: the tape is
computed the same way in every mode, which is why the bytes are identical across modes.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter

import numpy as np

from flowforge_pipeline.generator.tape import Record

_HEARTBEAT_OPENING = '{"event_time"'


class Sink:
    """Where records go: a Kafka producer, a JSON-lines file, or nowhere (benchmarks)."""

    def write(self, records: list[Record]) -> None:
        """Hand over records in order; may buffer."""
        raise NotImplementedError

    def poll(self) -> None:
        """Serve delivery callbacks while the pacer waits."""

    def close(self) -> None:
        """Flush everything buffered; raise if anything could not be delivered."""


@dataclass
class Counts:
    """What a run sent, by kind."""

    by_kind: Counter[str] = field(default_factory=Counter)

    def add(self, records: list[Record]) -> None:
        """Count records as trades, heartbeats, quotes or labels.

        Heartbeats are the only payloads that open with event_time (keys are sorted, and
        every other kind has a key before it); both counts run in C, not per record in Python.
        """
        self.by_kind.update(map(itemgetter(0), records))
        beats = sum(map(str.startswith, map(itemgetter(3), records), repeat(_HEARTBEAT_OPENING)))
        self.by_kind["trades"] -= beats
        self.by_kind["heartbeats"] += beats

    @property
    def total(self) -> int:
        """All records sent."""
        return sum(self.by_kind.values())

    def summary(self) -> str:
        """One line for the operator, e.g. after Ctrl-C."""
        order = ("trades", "quotes", "heartbeats", "ground_truth")
        return ", ".join(f"{self.by_kind[k]} {k}" for k in order)


def pump(
    batches: Iterable[tuple[np.ndarray, list[Record]]],
    sink: Sink,
    start_us: int,
    speed: float | None,
    batch_size: int = 1000,
    counts: Counts | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    stop: threading.Event | None = None,
) -> Counts:
    """Send every batch to the sink, pacing event time at `speed` x wall time (None: no wait).

    The schedule is anchored once (event `start_us` = now), so pacing never drifts: a slow
    write is caught up on by the following records instead of shifting all later ones.
    `stop` is checked between writes only, so a write and its count are never split by Ctrl-C.
    """
    stopping = stop.is_set if stop is not None else (lambda: False)
    counts = counts if counts is not None else Counts()
    wall0 = clock()
    for times, records in batches:
        n = len(records)
        if speed is None:
            for lo in range(0, n, batch_size):
                if stopping():
                    return counts
                chunk = records[lo : lo + batch_size]
                sink.write(chunk)
                counts.add(chunk)
            continue
        due = wall0 + (times - start_us) / (1e6 * speed)
        lo = 0
        while lo < n:
            if stopping():
                return counts
            now = clock()
            ready = int(np.searchsorted(due, now, side="right"))
            if ready <= lo:
                sink.poll()
                sleep(min(float(due[lo]) - now, 0.05))
                continue
            hi = min(ready, lo + batch_size)
            chunk = records[lo:hi]
            sink.write(chunk)
            counts.add(chunk)
            lo = hi
    return counts

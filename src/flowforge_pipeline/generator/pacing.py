"""When records leave: real time, accelerated (x N) or as fast as possible (backfill).

Pacing only decides *when* a record is handed to the sink, never *what* it is: the tape is
computed the same way in every mode, which is why the bytes are identical across modes.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from flowforge_pipeline.generator.tape import KIND_NAMES, Batch, Record


class StopFlag(Protocol):
    """What asks a run to stop: a threading or multiprocessing Event."""

    def is_set(self) -> bool:
        """True once a stop was asked for."""
        ...


class Sink:
    """Where records go: a Kafka producer, a JSON-lines file, or nowhere (benchmarks)."""

    def write(self, batch: Batch | list[Record]) -> None:
        """Hand over records in order (a batch, or record tuples); may buffer."""
        raise NotImplementedError

    def poll(self) -> None:
        """Serve delivery callbacks while the pacer waits."""

    def flush(self) -> None:
        """Wait until everything written so far has arrived; raise if anything did not."""

    def close(self) -> None:
        """Flush everything buffered; raise if anything could not be delivered."""


@dataclass
class Counts:
    """What a run sent, by kind."""

    by_kind: Counter[str] = field(default_factory=Counter)

    def add(self, batch: Batch) -> None:
        """Count the batch's trades, quotes, heartbeats and labels."""
        n = np.bincount(batch.kinds, minlength=len(KIND_NAMES))
        for name, count in zip(KIND_NAMES, n.tolist(), strict=True):
            self.by_kind[name] += count

    def merge(self, by_kind: dict[str, int]) -> None:
        """Add counts made elsewhere (another process)."""
        self.by_kind.update(by_kind)

    @property
    def total(self) -> int:
        """All records sent."""
        return sum(self.by_kind.values())

    def summary(self) -> str:
        """One line for the operator, e.g. after Ctrl-C."""
        order = ("trades", "quotes", "heartbeats", "ground_truth")
        return ", ".join(f"{self.by_kind[k]} {k}" for k in order)


def pump(
    batches: Iterable[Batch],
    sink: Sink,
    start_us: int,
    speed: float | None,
    batch_size: int = 1000,
    counts: Counts | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    stop: StopFlag | None = None,
) -> Counts:
    """Send every batch to the sink, pacing event time at `speed` x wall time (None: no wait).

    The schedule is anchored once (event `start_us` = now), so pacing never drifts: a slow
    write is caught up on by the following records instead of shifting all later ones.
    `stop` is checked between writes only, so a write and its count are never split by Ctrl-C.
    """
    stopping = stop.is_set if stop is not None else (lambda: False)
    counts = counts if counts is not None else Counts()
    wall0 = clock()
    for batch in batches:
        n = len(batch)
        if speed is None:
            for lo in range(0, n, batch_size):
                if stopping():
                    return counts
                chunk = batch if n <= batch_size else batch.slice(lo, lo + batch_size)
                sink.write(chunk)
                counts.add(chunk)
            continue
        due = wall0 + (batch.times - start_us) / (1e6 * speed)
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
            chunk = batch.slice(lo, hi)
            sink.write(chunk)
            counts.add(chunk)
            lo = hi
    return counts

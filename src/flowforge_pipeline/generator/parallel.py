"""Backfill on several cores: worker processes compute minutes, the caller sends them in order.

A minute of the tape is a pure function of the settings and the minute (every random stream is
keyed by seed, component, instrument and time block), so any process can compute any minute
and the result is the same bytes. Workers therefore run minutes ahead while the parent
process produces the earlier ones; results are taken strictly in minute order, so what leaves
is exactly `Tape.records`. At most `ahead` minutes are in flight, so a slow sink bounds memory.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections import deque
from collections.abc import Iterator
from multiprocessing.pool import AsyncResult, Pool

import numpy as np

from flowforge_pipeline.generator.tape import MinuteColumns, Record, Tape

_TAPE: Tape | None = None
#: Payloads cross the process boundary as one string; compact JSON has no raw newline.
_SEPARATOR = "\n"

#: (times, topics, instruments, payloads joined by _SEPARATOR)
_Packed = tuple[np.ndarray, np.ndarray, np.ndarray, str]


def _init(tape: Tape) -> None:
    global _TAPE
    # Ctrl-C is the parent's to handle: it flushes the sink and stops the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _TAPE = tape


def _packed_minute(minute_index: int) -> _Packed:
    assert _TAPE is not None
    c = _TAPE.minute_columns(minute_index)
    return c.times, c.topics, c.instruments, _SEPARATOR.join(c.values)


def _unpacked(tape: Tape, packed: _Packed) -> tuple[np.ndarray, list[Record]]:
    times, topics, instruments, text = packed
    values = text.split(_SEPARATOR) if len(times) else []
    return times, tape.rows(MinuteColumns(times, topics, instruments, values))


def records(
    tape: Tape, start_us: int, end_us: int | None, processes: int, ahead: int = 8
) -> Iterator[tuple[np.ndarray, list[Record]]]:
    """`tape.records(start_us, end_us)`, computed by `processes` worker processes.

    The workers start now (about a second: each imports numpy and the package), so a caller
    that opens its sink next overlaps the two; closing the iterator stops them.
    """
    if processes < 1:
        raise ValueError("processes must be >= 1")
    # forkserver: workers do not inherit the parent's threads (librdkafka's, for one).
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["flowforge_pipeline.generator.parallel"])
    pool = context.Pool(processes, initializer=_init, initargs=(tape,))
    return _ordered(tape, pool, start_us, end_us, ahead)


def _ordered(
    tape: Tape, pool: Pool, start_us: int, end_us: int | None, ahead: int
) -> Iterator[tuple[np.ndarray, list[Record]]]:
    pending: deque[AsyncResult[_Packed]] = deque()

    def results() -> Iterator[tuple[np.ndarray, list[Record]]]:
        for minute_index in Tape._minutes(start_us, end_us):
            pending.append(pool.apply_async(_packed_minute, (minute_index,)))
            if len(pending) >= ahead:
                yield _unpacked(tape, pending.popleft().get())
        while pending:
            yield _unpacked(tape, pending.popleft().get())

    try:
        yield from Tape._window(start_us, end_us, results())
    finally:
        pool.terminate()
        pool.join()

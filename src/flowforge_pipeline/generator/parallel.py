"""Backfill on several cores: processes take turns sending blocks of minutes they computed.

A minute of the tape is a pure function of the settings and the minute (every random stream is
keyed by seed, component, instrument and time block), so any process can compute any minute
and the result is the same bytes. The range is cut into blocks of whole minutes; process k of
N computes blocks k, k + N, k + 2N, ... and sends a block only when its turn comes: after the
process before it has sent the previous block and seen every record of it acknowledged. So
while one process sends, the others compute, and what reaches each topic and partition is
exactly the single-process order (one writer at a time, blocks in order).
"""

from __future__ import annotations

import multiprocessing
import queue
import signal
from collections.abc import Callable
from multiprocessing.synchronize import Event, Semaphore
from typing import Any

from flowforge_pipeline.generator.pacing import Counts, Sink, StopFlag, pump
from flowforge_pipeline.generator.tape import Tape, minutes

#: Records per block: large enough that the wait for acknowledgements at each hand-over
#: (a few ms) is small against sending the block, small enough to bound memory.
BLOCK_RECORDS = 200_000


class WorkerError(RuntimeError):
    """A backfill process failed; the message is its error."""


def blocks(tape: Tape, start_us: int, end_us: int, records: int = BLOCK_RECORDS) -> list[range]:
    """Minute ranges of about `records` records each, covering [start_us, end_us)."""
    per_minute = (tape.trades_per_second + tape.quotes_per_second) * 60.0
    per_minute += len(tape.instruments) * 60 / tape.heartbeat_seconds
    size = max(1, int(records // per_minute))
    all_minutes = list(minutes(start_us, end_us))
    return [range(m, min(m + size, all_minutes[-1] + 1)) for m in all_minutes[::size]]


def backfill(
    tape: Tape,
    start_us: int,
    end_us: int,
    open_sink: Callable[[], Sink],
    processes: int,
    batch_size: int = 1000,
    counts: Counts | None = None,
    stop: StopFlag | None = None,
    block_records: int = BLOCK_RECORDS,
) -> Counts:
    """Send [start_us, end_us) through `processes` processes taking turns; return the counts.

    `open_sink` (picklable: each process opens its own sink) must append, not truncate.
    `stop` is honoured between writes: the sending process flushes what it wrote and the
    counts then match what was sent. A failure in any process stops all and raises.
    """
    if processes < 1:
        raise ValueError("processes must be >= 1")
    counts = counts if counts is not None else Counts()
    todo = blocks(tape, start_us, end_us, block_records)
    # forkserver: the processes do not inherit this one's threads (librdkafka's, for one).
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["flowforge_pipeline.generator.parallel"])
    turns = [ctx.Semaphore(1 if k == 0 else 0) for k in range(processes)]
    halt = ctx.Event()
    results: multiprocessing.Queue[tuple[str, Any]] = ctx.Queue()
    workers = [
        ctx.Process(
            target=_work,
            args=(k, processes, tape, start_us, end_us, todo, open_sink, batch_size),
            kwargs={"turns": turns, "halt": halt, "results": results},
            daemon=True,
        )
        for k in range(processes)
    ]
    for w in workers:
        w.start()
    error: str | None = None
    done = 0
    try:
        while done < processes:
            if stop is not None and stop.is_set():
                halt.set()
            try:
                what, payload = results.get(timeout=0.1)
            except queue.Empty:
                if not any(w.is_alive() for w in workers) and results.empty():
                    error = error or "a backfill process ended without reporting"
                    break
                continue
            if what == "counts":
                counts.merge(payload)
            elif what == "error":
                error = error or payload
                halt.set()
            else:
                done += 1
    finally:
        halt.set()
        for w in workers:
            w.join(10)
            if w.is_alive():
                w.terminate()
                w.join()
    if error:
        raise WorkerError(error)
    return counts


def _work(
    k: int,
    n: int,
    tape: Tape,
    start_us: int,
    end_us: int,
    todo: list[range],
    open_sink: Callable[[], Sink],
    batch_size: int,
    *,
    turns: list[Semaphore],
    halt: Event,
    results: multiprocessing.Queue[tuple[str, Any]],
) -> None:
    # Ctrl-C is the parent's to handle: it sets `halt`, and the sender stops between writes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        sink = open_sink()
        for b in range(k, len(todo), n):
            window = Tape.window(start_us, end_us, map(tape.minute_batch, todo[b]))
            batches = list(window)
            while not turns[k].acquire(timeout=0.1):
                if halt.is_set():
                    return
            sent = Counts()
            try:
                if not halt.is_set():
                    pump(batches, sink, start_us, None, batch_size, sent, stop=halt)
                sink.flush()
            except BaseException:
                # Halt before the turn passes on: the next process must not send a later
                # block after one that did not fully arrive (a gap, and records out of order).
                halt.set()
                raise
            finally:
                results.put(("counts", dict(sent.by_kind)))
                turns[(k + 1) % n].release()
        sink.close()
    except Exception as exc:  # reported to the parent, which stops everyone and raises
        halt.set()
        results.put(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        results.put(("done", k))

from datetime import UTC, datetime, timedelta

from flowforge_pipeline.flows.batching import MAX_BATCH_ROWS, BatchBuffer

T = datetime(2024, 1, 1, tzinfo=UTC)
WAIT = timedelta(seconds=1)


def test_flushes_at_size_or_after_max_wait() -> None:
    buf: BatchBuffer[int] = BatchBuffer(flush_size=3, max_wait=WAIT)
    assert buf.add(1, T) is None
    assert buf.deadline() == T + WAIT
    assert buf.due(T + timedelta(milliseconds=999)) is None
    assert buf.due(T + WAIT) == [1]
    assert buf.deadline() is None
    # slow trickle: size never reached, threshold stays at flush_size
    assert buf.threshold == 3


def test_threshold_grows_at_high_rates_and_shrinks_back() -> None:
    buf: BatchBuffer[int] = BatchBuffer(flush_size=50, max_wait=WAIT)
    now = T
    sizes = []
    for i in range(10_000):  # 10,000 rows within 100 ms
        out = buf.add(i, now)
        if out:
            sizes.append(len(out))
        now += timedelta(microseconds=10)
    assert sizes[:4] == [50, 100, 200, 400]
    assert buf.threshold > 50
    grown = buf.threshold
    buf.drain()
    # a quiet period: batches flush by time with one row, the threshold halves each time
    halvings = 0
    while buf.threshold > 50:
        buf.add(0, now)
        assert buf.due(now + WAIT) == [0]
        now += 2 * WAIT
        halvings += 1
    assert buf.threshold == 50
    assert halvings == (grown // 50).bit_length() - 1


def test_threshold_is_capped() -> None:
    buf: BatchBuffer[int] = BatchBuffer(flush_size=MAX_BATCH_ROWS, max_wait=WAIT)
    for i in range(MAX_BATCH_ROWS):
        buf.add(i, T)
    assert buf.threshold == MAX_BATCH_ROWS


def test_drain_returns_everything() -> None:
    buf: BatchBuffer[int] = BatchBuffer(flush_size=10, max_wait=WAIT)
    buf.add(1, T)
    buf.add(2, T)
    assert buf.drain() == [1, 2]
    assert buf.drain() is None


def test_extend_flushes_whole_lists_and_grows_like_add() -> None:
    buf: BatchBuffer[int] = BatchBuffer(flush_size=50, max_wait=WAIT)
    now = T
    assert buf.extend([1] * 30, now) is None
    assert buf.extend([], now) is None
    full = buf.extend([2] * 4_000, now)  # crosses 50: everything goes, the list is not split
    assert full is not None and len(full) == 4_030
    assert buf.threshold == 100 and buf.rows == []
    assert buf.extend([3] * 98, now) is None
    assert buf.deadline() == now + WAIT
    snapshot = buf.copy()
    assert buf.extend([4], now) is None
    assert snapshot.rows == [3] * 98  # the snapshot does not share the live buffer's list
    assert buf.due(now + WAIT) == [3] * 98 + [4]
    # a slow trickle that never fills shrinks the threshold back
    assert buf.extend([6], now + 2 * WAIT) is None
    assert buf.due(now + 3 * WAIT) == [6]
    assert buf.threshold == 50

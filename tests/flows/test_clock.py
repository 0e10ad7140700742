from datetime import UTC, datetime, timedelta

from flowforge_pipeline.flows.clock import UTC_MAX, ReplayableEventClock

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
S = timedelta(seconds=1)


class FakeClock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def _logic(fake: FakeClock):
    return ReplayableEventClock(lambda ts: ts, S, now_getter=fake).build(None)


def test_replay_watermark_follows_events_only() -> None:
    fake = FakeClock()
    logic = _logic(fake)
    past = datetime(2024, 3, 4, tzinfo=UTC)
    logic.before_batch()
    assert logic.on_item(past) == (past, past - S)
    fake.now += timedelta(hours=1)  # a stall of the machine changes nothing
    assert logic.on_notify() == past - S
    assert logic.to_system_utc(past) is None
    # an older record does not move the watermark back
    assert logic.on_item(past - timedelta(minutes=1))[1] == past - S
    assert logic.on_eof() == UTC_MAX


def test_live_watermark_follows_the_wall_clock() -> None:
    fake = FakeClock()
    logic = _logic(fake)
    event = NOW - 200 * timedelta(milliseconds=1)
    logic.before_batch()
    _, wm = logic.on_item(event)
    assert wm == NOW - S
    fake.now += 10 * S  # nothing arrives: the window still closes
    assert logic.on_notify() == NOW + 9 * S
    assert logic.to_system_utc(NOW) == NOW + S


def test_snapshot_resumes_the_same_watermark() -> None:
    fake = FakeClock()
    logic = _logic(fake)
    past = datetime(2024, 3, 4, tzinfo=UTC)
    logic.on_item(past)
    resumed = ReplayableEventClock(lambda ts: ts, S, now_getter=fake).build(logic.snapshot())
    assert resumed.on_notify() == past - S

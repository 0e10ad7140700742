"""SIGKILL a flow, the ClickHouse server, Valkey and PostgreSQL in turn during a backfill.

The smaller version of `bench/faults.py` (same harness): a private stack on random ports;
the generator's backfill of 2 minutes (across a 5-minute window boundary) with a fixed
seed, sent at a fixed rate to four flows (raw_sink, vwap, positions, live_views). While it
is being sent each component is SIGKILLed in turn and restarted (each store after being
down longer than the sinks' old retry budget). While a store is down no flow may exit, and
`status` must show the flows that write to it as retrying with the store named. Afterwards
the same flows read the same topics again, uninterrupted, into fresh outputs; both serving
layers must be equal.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import faults  # noqa: E402

pytestmark = pytest.mark.slow

FLOWS = ("raw_sink", "vwap", "positions", "live_views")
KILLS = [("vwap", 0.1), ("clickhouse", 0.3), ("valkey", 0.5), ("postgres", 0.7)]


@pytest.fixture(scope="module")
def stack_and_input(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[faults.Stack, list]]:
    path = tmp_path_factory.mktemp("faults") / "input.jsonl"
    gen = faults.start_generator(
        "2026-11-24T14:34:00+00:00", "2026-11-24T14:36:00+00:00", 11, path
    )
    try:
        s = faults.Stack.start()
    except BaseException:
        gen.kill()
        raise
    try:
        yield s, faults.generated(gen, path)
    finally:
        s.stop()


def test_killed_components_recover_with_nothing_lost_or_doubled(
    stack_and_input: tuple[faults.Stack, list],
) -> None:
    stack, records = stack_and_input
    faulted = faults.Run(stack, FLOWS, f"faulted_{uuid.uuid4().hex[:6]}", redis_db=2)
    plain = faults.Run(stack, FLOWS, f"plain_{uuid.uuid4().hex[:6]}", redis_db=3)
    try:
        faulted.start()
        feeder = faults.Feeder(stack.settings, records, 1500.0)
        feeder.start()
        outcomes = faults.inject_in_turn(faulted, feeder, KILLS, 4.0, status_cli=False)
        feeder.join()
        assert feeder.error is None
        # the uninterrupted run reads the same topics, now complete, into its own outputs
        plain.start()
        got, _ = faults.settle(faulted, None, 30)
        want, _ = faults.settle(plain, got, 30)
    finally:
        for run in (faulted, plain):
            run.stop()
            run.drop()

    assert [o.component for o in outcomes] == [c for c, _ in KILLS]
    for o in outcomes:
        assert not o.error, f"{o.component}: {o.error}"
        assert o.recovered_after == o.recovered_after  # measured (not NaN)
        if o.component != "vwap":
            assert o.status_ok, f"{o.component} down, status said: {o.status_seen}"
            store = faults.COMPONENT_STORE[o.component]
            assert f"{store} unreachable" in o.status_seen
    assert faults.differences(got, want) == []
    # the comparison covers real output of every kind
    assert got["clickhouse raw_trades"]["rows"] > 500
    assert got["clickhouse raw_quotes"]["rows"] > 2000
    assert got["clickhouse raw_trades"]["rows"] == got["clickhouse raw_trades"]["distinct"]
    assert len(got["vwap_5min rows"]) > 0
    assert any(k.startswith("latest:position:") for k in got["redis latest keys"])
    assert any(k.startswith("latest:vwap:") for k in got["redis latest keys"])
    assert len(got["postgres live_positions"]) > 50

"""SIGKILL a flow, the ClickHouse server, Valkey and PostgreSQL in turn during a backfill.

The smaller version of `bench/faults.py` (same harness): a private stack on random ports;
the generator's backfill of 3 minutes (across a 5-minute window boundary) with a fixed
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
KILLS = [("vwap", 0.05), ("clickhouse", 0.25), ("valkey", 0.5), ("postgres", 0.75)]


@pytest.fixture(scope="module")
def stack() -> Iterator[faults.Stack]:
    s = faults.Stack.start()
    try:
        yield s
    finally:
        s.stop()


def test_killed_components_recover_with_nothing_lost_or_doubled(stack: faults.Stack) -> None:
    records = faults.generate(
        stack.settings, "2026-11-24T14:33:30+00:00", "2026-11-24T14:36:30+00:00", 11,
        stack.settings.state_path / "input.jsonl",
    )
    got, outcomes, _ = faults.one_run(
        stack, records, 280.0, f"faulted_{uuid.uuid4().hex[:6]}", 2, KILLS, None,
        down_seconds=4.0, settle_seconds=30, flows=FLOWS, status_cli=False,
    )
    assert [o.component for o in outcomes] == [c for c, _ in KILLS]
    for o in outcomes:
        assert not o.error, f"{o.component}: {o.error}"
        assert o.recovered_after == o.recovered_after  # measured (not NaN)
        if o.component != "vwap":
            assert o.status_ok, f"{o.component} down, status said: {o.status_seen}"
            store = faults.COMPONENT_STORE[o.component]
            assert f"{store} unreachable" in o.status_seen

    want, _, _ = faults.one_run(
        stack, records, 0.0, f"plain_{uuid.uuid4().hex[:6]}", 3, [], got,
        down_seconds=0.0, settle_seconds=30, flows=FLOWS, feed=False,
    )
    assert faults.differences(got, want) == []
    # the comparison covers real output of every kind
    assert got["clickhouse raw_trades"]["rows"] > 500
    assert got["clickhouse raw_quotes"]["rows"] > 2000
    assert got["clickhouse raw_trades"]["rows"] == got["clickhouse raw_trades"]["distinct"]
    assert len(got["vwap_5min rows"]) > 0
    assert any(k.startswith("latest:position:") for k in got["redis latest keys"])
    assert any(k.startswith("latest:vwap:") for k in got["redis latest keys"])
    assert len(got["postgres live_positions"]) > 50

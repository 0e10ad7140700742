"""5-minute VWAP with Quix Streams: tumbling window `reduce().final()` (run in .venv-peers).

Usage: python bench/peers/quix_vwap.py BOOTSTRAP TOPIC OUTPUT STATE_DIR

Reads TOPIC from the beginning, windows by the record's `event_time` (UTC-aligned 5-minute
tumbling windows, 500 ms grace, as the project's flow), skips heartbeats' prices (they only
move time) and writes one JSON line per closed window with at least one trade. Runs until
killed, like a deployed consumer. Quix's defaults are kept (RocksDB state with changelog
topics, at-least-once) since that is how it is deployed, except the consumer's session
timeout: 6 s (the least a Kafka broker accepts by default) instead of 45 s, because the local
broker holds a new group's first join for half the session timeout (about 3 s here instead of
23 s; a Kafka broker delays a new group's first rebalance by 3 s).
"""

from __future__ import annotations

import json
import sys
import uuid
from datetime import datetime
from typing import Any

from quixstreams import Application

WINDOW_MS = 5 * 60 * 1000
GRACE_MS = 500


def event_ms(value: Any, _headers: Any, _timestamp: float, _kind: Any) -> int:
    return int(datetime.fromisoformat(value["event_time"]).timestamp() * 1000)


def initial(value: dict[str, Any]) -> dict[str, Any]:
    acc = {"notional": 0.0, "volume": 0.0, "trade_count": 0}
    return reduce(acc, value)


def reduce(acc: dict[str, Any], value: dict[str, Any]) -> dict[str, Any]:
    if value.get("type", "trade") == "trade":
        price, quantity = float(value["price"]), float(value["quantity"])
        acc["notional"] += price * quantity
        acc["volume"] += quantity
        acc["trade_count"] += 1
    return acc


def main() -> None:
    bootstrap, topic_name, output, state_dir = sys.argv[1:5]
    app = Application(
        broker_address=bootstrap,
        consumer_group=f"quix-vwap-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        state_dir=state_dir,
        loglevel="WARNING",
        consumer_extra_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000},
    )
    topic = app.topic(topic_name, value_deserializer="json", timestamp_extractor=event_ms)
    out = open(output, "w", encoding="utf-8")  # noqa: SIM115 - open for the process's life

    def write(row: dict[str, Any], key: Any, *_: Any) -> None:
        acc = row["value"]
        if acc["trade_count"] == 0:
            return
        symbol = key.decode() if isinstance(key, bytes) else str(key)
        out.write(json.dumps({
            "symbol": symbol,
            "window_start": row["start"],
            "vwap": acc["notional"] / acc["volume"],
            "volume": acc["volume"],
            "notional": acc["notional"],
            "trade_count": acc["trade_count"],
        }) + "\n")
        out.flush()

    sdf = app.dataframe(topic)
    sdf = sdf.tumbling_window(WINDOW_MS, grace_ms=GRACE_MS).reduce(reduce, initial).final()
    sdf = sdf.update(write, metadata=True)
    app.run()


if __name__ == "__main__":
    main()

"""5-minute VWAP as a plain confluent-kafka consumer loop with `json` (no framework).

Usage: python bench/peers/plain_vwap.py BOOTSTRAP TOPIC OUTPUT

What a developer would write by hand: assign every partition of the topic from the beginning
(no consumer group, as the Bytewax Kafka source does), consume batches, `json.loads` each
record, keep the
open windows of each symbol in a dict, close a symbol's windows once its newest event time
is 500 ms past their end, write one JSON line per closed window with at least one trade.
No recovery, no dead letters. Runs until killed, like a deployed consumer.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

WINDOW_S = 300
LATENESS_S = 0.5


def main() -> None:
    bootstrap, topic, output = sys.argv[1:4]
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "plain-vwap",  # required by the client; no group membership is used
        "enable.auto.commit": False,
    })
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    out = open(output, "w", encoding="utf-8")  # noqa: SIM115 - open for the process's life
    # symbol -> window start (s) -> [notional, volume, count]
    windows: dict[str, dict[int, list[float]]] = {}
    newest: dict[str, float] = {}
    while True:
        for msg in consumer.consume(1000, 0.1):
            if msg.error():
                continue
            rec = json.loads(msg.value())
            symbol = rec["symbol"]
            ts = datetime.fromisoformat(rec["event_time"]).timestamp()
            if rec.get("type", "trade") == "trade":
                start = int(ts // WINDOW_S) * WINDOW_S
                acc = windows.setdefault(symbol, {}).setdefault(start, [0.0, 0.0, 0])
                price, quantity = float(rec["price"]), float(rec["quantity"])
                acc[0] += price * quantity
                acc[1] += quantity
                acc[2] += 1
            if ts > newest.get(symbol, 0.0):
                newest[symbol] = ts
                watermark = ts - LATENESS_S
                open_ = windows.get(symbol, {})
                closed = sorted(s for s in open_ if s + WINDOW_S <= watermark)
                for start in closed:
                    notional, volume, count = open_.pop(start)
                    out.write(json.dumps({
                        "symbol": symbol,
                        "window_start": start * 1000,
                        "vwap": notional / volume,
                        "volume": volume,
                        "notional": notional,
                        "trade_count": count,
                    }) + "\n")
                if closed:
                    out.flush()


if __name__ == "__main__":
    main()

"""Precision, recall and detection delay of the anomaly flow on a labeled backfill.

The generator's tape (the same records `generate --backfill --anomalies` would produce) is
fed through the real anomaly dataflow in this process; the labels are the tape's
`ground_truth` records. A label is detected by an alert of the matching type and symbol
whose event time is in [start, end + 60 s]; delay = that first alert's event time - start.
An alert matching no label is a false alert. No point adjustment. A second run of the same
window without injections gives the false-alert rate per instrument and day.

Delays are from the label's start. The generator writes each label at its first evidence,
the event time of the first record the anomaly changes (the first withheld quote, the first
extra trade, ...; see `Tape._first_evidence`): before it the tape is the tape without the
anomaly and no detector could see anything. `first_evidence` finds that record again
independently, by comparing with the same seed's tape without injections; the delays from
it and how far it lies after the label's start (0 when the labels are right) are reported
as a check.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.testing import TestingSink, run_main

from flowforge_pipeline.contract.catalog import GROUND_TRUTH_TOPIC
from flowforge_pipeline.flows import anomaly
from flowforge_pipeline.flows.common import SourceItem, parse_event_time
from flowforge_pipeline.generator.anomalies import GRADES, KINDS, AnomalyOptions, kinds_for
from flowforge_pipeline.generator.instruments import load_instruments
from flowforge_pipeline.generator.tape import KIND_QUOTE, KIND_TRADE, Tape, to_us

#: Which alert type detects which injected kind (a flash crash starts as a price jump).
DETECTED_BY: dict[str, str] = {
    "spread_blowout": "spread_blowout",
    "volume_burst": "volume_burst",
    "price_jump": "price_jump",
    "flash_crash": "price_jump",
    "fat_finger": "fat_finger",
    "stale_quote": "stale_quote",
    "crossed_book": "crossed_book",
}
#: How long after a label's end an alert still counts as detecting it.
GRACE = timedelta(seconds=60)


@dataclass(frozen=True)
class Label:
    """One injected anomaly from `ground_truth`."""

    symbol: str
    kind: str
    severity: str
    start: datetime
    end: datetime


@dataclass(frozen=True)
class SeenAlert:
    """The part of an `alerts` message scoring needs."""

    symbol: str
    alert_type: str
    event_time: datetime


#: Kinds that change the values of quotes the tape has anyway (not which records exist).
_CHANGES_QUOTES = frozenset({"spread_blowout", "price_jump", "flash_crash"})


def _symbol_records(tape: Tape, symbol: str, lo_us: int, hi_us: int) -> set[tuple[int, int]]:
    """The symbol's quotes and trades in [lo, hi) as (event time, kind).

    Values are left out: a price jump moves every later quote of the day (it fades out by
    midnight), and extra trades in a minute redraw the side, size and account of its other
    trades from the same law; neither says when the labeled anomaly first shows.
    """
    out: set[tuple[int, int]] = set()
    for batch in tape.batches(lo_us, hi_us):
        for t, kind, key in zip(batch.times.tolist(), batch.kinds.tolist(), batch.keys,
                                strict=True):
            if key == symbol and kind in (KIND_QUOTE, KIND_TRADE):
                out.add((t, kind))
    return out


def first_evidence(labels: list[Label], labeled: Tape, clean: Tape) -> list[datetime | None]:
    """Per label: event time of the first record of its symbol that shows it.

    That is the first quote or trade, from the label's start on, that the labeled tape has
    and `clean` (the same seed without injections) lacks, or the other way round: the first
    withheld quote of a stale quote, the first extra trade of a volume burst, the injected
    print of a fat finger or a crossed book. A spread blowout, price jump or flash crash
    changes quotes that exist anyway: its first evidence is the first quote from its start
    on. None when nothing shows in [start, end] (at least `EVIDENCE_WINDOW` long). A label
    overlapping another of the same symbol may take the other's first evidence.
    """
    out: list[datetime | None] = []
    for lab in labels:
        # A jump or a one-off print has end == start; its effect shows from there on.
        lo, hi = to_us(lab.start), to_us(max(lab.end, lab.start + EVIDENCE_WINDOW)) + 1
        mine = _symbol_records(labeled, lab.symbol, lo, hi)
        if lab.kind in _CHANGES_QUOTES:
            shown = [t for t, kind in mine if kind == KIND_QUOTE]
        else:
            shown = [t for t, _ in mine ^ _symbol_records(clean, lab.symbol, lo, hi)]
        first = min(shown, default=None)
        out.append(None if first is None else _EPOCH + timedelta(microseconds=first))
    return out


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: How far past its start a label's first evidence is looked for, at least.
EVIDENCE_WINDOW = timedelta(seconds=60)


class _TapePartition(StatefulSourcePartition[SourceItem, None]):
    def __init__(self, batches: Iterator[list[SourceItem]]) -> None:
        self._batches = batches

    def next_batch(self) -> list[SourceItem]:
        return next(self._batches)  # StopIteration ends the input

    def snapshot(self) -> None:
        return None


@dataclass
class TapeSource(FixedPartitionedSource[SourceItem, None]):
    """The generator's tape as Kafka messages, one minute per batch; labels set aside."""

    tape: Tape
    start: datetime
    end: datetime
    labels: list[Label] = field(default_factory=list)

    def list_parts(self) -> list[str]:
        """One partition: the tape is already in event-time order."""
        return ["tape"]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _TapePartition:
        """Generate lazily so a whole day never sits in memory."""
        return _TapePartition(self._batches())

    def _batches(self) -> Iterator[list[SourceItem]]:
        offset = 0
        for _, records in self.tape.records(to_us(self.start), to_us(self.end)):
            batch: list[SourceItem] = []
            for topic, key, _, value in records:
                if topic == GROUND_TRUTH_TOPIC.name:
                    self.labels.append(label(json.loads(value)))
                    continue
                batch.append(KafkaSourceMessage(key=key.encode(), value=value.encode(),
                                                topic=topic, partition=0, offset=offset))
                offset += 1
            yield batch


def label(obj: dict[str, Any]) -> Label:
    """A `ground_truth` message as a label."""
    return Label(obj["symbol"], obj["type"], obj["severity"],
                 parse_event_time(obj["start_time"]), parse_event_time(obj["end_time"]))


def run_flow(
    seed: int, start: datetime, end: datetime, *, rate_per_hour: float | None,
    limits: anomaly.Thresholds, severity: str = "mixed",
) -> tuple[list[SeenAlert], list[Label], int]:
    """Backfill the tape through the anomaly flow; alerts, labels and instrument count."""
    return _run_flow(seed, start, end, rate_per_hour=rate_per_hour, limits=limits,
                     severity=severity)[:3]


def _run_flow(
    seed: int, start: datetime, end: datetime, *, rate_per_hour: float | None,
    limits: anomaly.Thresholds, severity: str = "mixed",
) -> tuple[list[SeenAlert], list[Label], int, Tape]:
    instruments = load_instruments()
    options = None if rate_per_hour is None else AnomalyOptions(
        rate_per_hour=rate_per_hour, severity=severity, kinds=kinds_for(severity))
    tape = Tape(instruments, seed, 10.0, 50.0, anomalies=options)
    source = TapeSource(tape, start, end)
    alerts: list[Any] = []
    rows: list[Any] = []
    dead: list[Any] = []
    flow = anomaly.build(
        source, TestingSink(alerts), TestingSink(rows), TestingSink(dead),
        symbols=frozenset(i.symbol for i in instruments), limits=limits,
        flush_size=1000, max_wait=timedelta(seconds=1),
        calendar=anomaly.SessionCalendar(instruments),
    )
    run_main(flow)  # type: ignore[no-untyped-call]
    seen = []
    for msg in alerts:
        obj = json.loads(msg.value)
        seen.append(SeenAlert(obj["symbol"], obj["alert_type"],
                              parse_event_time(obj["event_time"])))
    return seen, source.labels, len(instruments), tape


def _matches(alert: SeenAlert, lab: Label) -> bool:
    return (
        alert.symbol == lab.symbol
        and alert.alert_type == DETECTED_BY[lab.kind]
        and lab.start <= alert.event_time <= lab.end + GRACE
    )


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def score(
    alerts: list[SeenAlert], labels: list[Label],
    evidence: list[datetime | None] | None = None,
) -> dict[str, Any]:
    """Recall and delays per kind and severity; precision per alert type.

    With `evidence` (per label, see `first_evidence`), delays are also given from it.
    """
    evidence = evidence or [None] * len(labels)
    first_seen = dict(zip(map(id, labels), evidence, strict=True))
    by_symbol: dict[str, list[SeenAlert]] = defaultdict(list)
    for a in alerts:
        by_symbol[a.symbol].append(a)
    recall: dict[str, Any] = {}
    for kind in KINDS:
        mine = [lab for lab in labels if lab.kind == kind]
        delays: list[float] = []
        from_evidence: list[float] = []
        lags: list[float] = []
        per_sev: dict[str, list[int]] = {s: [0, 0] for s in GRADES}
        for lab in mine:
            hits = [a.event_time for a in by_symbol[lab.symbol] if _matches(a, lab)]
            per_sev[lab.severity][1] += 1
            seen = first_seen[id(lab)]
            if seen is not None:
                lags.append((seen - lab.start).total_seconds())
            if hits:
                per_sev[lab.severity][0] += 1
                delays.append((min(hits) - lab.start).total_seconds())
                from_evidence.append((min(hits) - (seen or lab.start)).total_seconds())
        recall[kind] = {
            "labels": len(mine),
            "detected": len(delays),
            "recall": len(delays) / len(mine) if mine else None,
            "median_delay_s": statistics.median(delays) if delays else None,
            "p95_delay_s": _pct(delays, 0.95),
            "median_delay_from_evidence_s": (
                statistics.median(from_evidence) if from_evidence else None),
            "p95_delay_from_evidence_s": _pct(from_evidence, 0.95),
            "evidence_after_start_median_s": statistics.median(lags) if lags else None,
            "evidence_after_start_p95_s": _pct(lags, 0.95),
            "recall_by_severity": {
                s: (d / n if n else None) for s, (d, n) in per_sev.items()
            },
            "labels_by_severity": {s: n for s, (_, n) in per_sev.items()},
        }
    precision: dict[str, Any] = {}
    for kind in anomaly.ALERT_TYPES:
        mine_a = [a for a in alerts if a.alert_type == kind]
        good = sum(
            1 for a in mine_a
            if any(_matches(a, lab) for lab in labels if lab.symbol == a.symbol)
        )
        precision[kind] = {
            "alerts": len(mine_a),
            "true": good,
            "precision": good / len(mine_a) if mine_a else None,
        }
    return {"recall": recall, "precision": precision}


def evaluate(
    seed: int, start: datetime, end: datetime, *, rate_per_hour: float = 30.0,
    clean_seed: int | None = None, limits: anomaly.Thresholds | None = None,
    severity: str = "mixed",
) -> dict[str, Any]:
    """Score an injected backfill and measure false alerts on a clean one.

    `severity` is the generator's: 'mixed' injects the severe grade (low, medium, high),
    'milder' the grades below it (mild, moderate) of the kinds that have them.
    """
    limits = limits or anomaly.Thresholds()
    alerts, labels, n_inst, tape = _run_flow(seed, start, end, rate_per_hour=rate_per_hour,
                                             limits=limits, severity=severity)
    same_seed_clean = Tape(tape.instruments, seed, tape.trades_per_second,
                           tape.quotes_per_second, tape.heartbeat_seconds)
    result = score(alerts, labels, first_evidence(labels, tape, same_seed_clean))
    clean_alerts, _, _ = run_flow(seed if clean_seed is None else clean_seed, start, end,
                                  rate_per_hour=None, limits=limits)
    inst_days = n_inst * (end - start).total_seconds() / 86_400
    result["clean"] = {
        "seed": seed if clean_seed is None else clean_seed,
        "instrument_days": inst_days,
        "false_alerts_per_instrument_day": {
            kind: sum(1 for a in clean_alerts if a.alert_type == kind) / inst_days
            for kind in anomaly.ALERT_TYPES
        },
    }
    result["window"] = {"seed": seed, "start": start.isoformat(), "end": end.isoformat(),
                        "rate_per_hour": rate_per_hour, "severity": severity}
    return result

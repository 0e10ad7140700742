"""The tape: every instrument's quotes, trades and heartbeats merged in event-time order.

A UTC day is planned once (paths, counts, anomalies); each minute is then simulated on its
own and turned into Kafka-ready records. Record order, ids and bytes depend only on the seed,
the settings and the minute, which is what makes any two runs over the same range identical.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import numpy as np

from flowforge_pipeline.contract.catalog import GROUND_TRUTH_TOPIC, QUOTES_TOPIC, TRADES_TOPIC
from flowforge_pipeline.generator import arrivals, prices
from flowforge_pipeline.generator.anomalies import Anomaly, AnomalyOptions, plan_day
from flowforge_pipeline.generator.book import (
    ACCOUNTS,
    MINUTE_US,
    BookInput,
    MinuteBook,
    minute_books,
)
from flowforge_pipeline.generator.instruments import Instrument
from flowforge_pipeline.generator.seeding import Component, stream

#: Version of the JSON payloads; bump when a field changes meaning or format.
SCHEMA_VERSION = 1
DAY_US = 86_400_000_000
EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
#: Heartbeat intervals that divide a minute, so each minute's heartbeats are its own.
HEARTBEAT_CHOICES: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60)

#: (topic, key, Kafka timestamp in ms, JSON value)
Record = tuple[str, str, int, str]

#: Kinds of record, in the order records of one event time are sent.
KIND_LABEL, KIND_QUOTE, KIND_TRADE, KIND_HEARTBEAT = 0, 1, 2, 3
#: Name of each kind, as `Counts` reports them.
KIND_NAMES = ("ground_truth", "quotes", "trades", "heartbeats")
_K_LABEL, _K_QUOTE, _K_TRADE, _K_HEARTBEAT = KIND_LABEL, KIND_QUOTE, KIND_TRADE, KIND_HEARTBEAT
#: Topic of each kind: label, quote, trade, heartbeat.
_TOPIC_OF_KIND = np.array(
    [GROUND_TRUTH_TOPIC.name, QUOTES_TOPIC.name, TRADES_TOPIC.name, TRADES_TOPIC.name],
    dtype=object,
)
_UNITS_BITS = 40
_DIGITS3 = np.array([f"{k:03d}" for k in range(1000)], dtype=object)
#: Last three digits of a sequence number: unpadded below 1000, zero-padded above.
_LOW3 = np.concatenate((np.array([str(k) for k in range(1000)], dtype=object), _DIGITS3))

#: One kind's part of a minute: times, kind, instrument indices, JSON values (object array).
Part = tuple[np.ndarray, int, np.ndarray, np.ndarray]


def to_us(moment: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime."""
    if moment.tzinfo is None:
        raise ValueError("event times must be timezone-aware (UTC)")
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def iso_times(times_us: np.ndarray) -> list[str]:
    """The documented event_time format: `YYYY-MM-DDTHH:MM:SS.ffffffZ`, always 6 digits."""
    text = np.datetime_as_string(times_us.astype("datetime64[us]"), unit="us")
    return [t + "Z" for t in text.tolist()]


def _minute_times(m_us: int, times_us: np.ndarray) -> list[np.ndarray]:
    """`iso_times` for times inside the minute starting at `m_us`, without the final `Z`.

    Only the seconds and microseconds vary inside a minute, so the text is picked from
    tables (60 seconds of this minute, 1000 milliseconds, 1000 microseconds) instead of
    formatting every timestamp as a date: same text, a fraction of the cost.
    """
    seconds = m_us + np.arange(60, dtype=np.int64) * 1_000_000
    table = np.array([t[:-7] for t in iso_times(seconds)], dtype=object)  # "...HH:MM:SS."
    offset = times_us - m_us
    micros = offset % 1_000_000
    return [table[offset // 1_000_000], _DIGITS3[micros // 1000], _DIGITS3[micros % 1000]]


def _by_value(
    inst: np.ndarray, units: np.ndarray, scale: np.ndarray, formats: list[str]
) -> np.ndarray:
    """`formats[i] % (units * scale[i])` of every row, as an object array of str.

    A minute repeats few (instrument, price) and (instrument, size) pairs, so each distinct
    pair is formatted once, by exactly the float arithmetic and `%` format of a per-record
    loop, and the rows share that text: same bytes, far fewer float formats.
    """
    if len(units) == 0:
        return np.zeros(0, dtype=object)
    if units.min() < 0 or units.max() >= 1 << _UNITS_BITS:
        keys_inst, keys_units, inverse = inst, units, np.arange(len(units))
    else:
        keys, inverse = np.unique((inst << _UNITS_BITS) | units, return_inverse=True)
        keys_inst, keys_units = keys >> _UNITS_BITS, keys & ((1 << _UNITS_BITS) - 1)
    values = keys_units * scale[keys_inst]
    table = np.array(
        [formats[i] % v for i, v in zip(keys_inst.tolist(), values.tolist(), strict=True)],
        dtype=object,
    )
    return np.asarray(table[inverse])


def _join(columns: list[np.ndarray]) -> np.ndarray:
    """Row-wise concatenation of object columns of str (the loop runs in C: map + join)."""
    return _objects(list(map("".join, zip(*(c.tolist() for c in columns), strict=True))))


def _id_pieces(head: str, base: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """`head + str(k)` for k in [base, base + n), as two columns of shared pieces.

    A sequence number is its thousands (one piece per thousand, prefixed with `head`) and
    its last three digits (a fixed table), so no string is built per record.
    """
    seq = np.arange(base, base + n, dtype=np.int64)
    high = seq // 1000
    first = base // 1000
    table = _objects([head + (str(h) if h else "") for h in range(first, (base + n) // 1000 + 1)])
    return table[high - first], _LOW3[seq % 1000 + 1000 * (high > 0)]


def _objects(items: list[str]) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def _empty_part(kind: int) -> Part:
    return np.zeros(0, dtype=np.int64), kind, np.zeros(0, dtype=np.int64), np.zeros(0, object)


@dataclass
class Batch:
    """Records in send order, as columns: what sinks write and counters count.

    Columns instead of one tuple per record: slicing, counting and producing then run over
    plain lists, and no per-record container is ever built.
    """

    times: np.ndarray  # int64 event time, microseconds
    kinds: np.ndarray  # KIND_* of each record
    topics: list[str]
    keys: list[str]
    timestamps: list[int]  # Kafka record timestamp: event time in ms
    values: list[str]  # JSON payloads

    def __len__(self) -> int:
        return len(self.values)

    def slice(self, lo: int, hi: int) -> Batch:
        """Records lo..hi-1."""
        return Batch(
            self.times[lo:hi],
            self.kinds[lo:hi],
            self.topics[lo:hi],
            self.keys[lo:hi],
            self.timestamps[lo:hi],
            self.values[lo:hi],
        )

    def records(self) -> list[Record]:
        """The records as (topic, key, timestamp ms, value) tuples."""
        return list(zip(self.topics, self.keys, self.timestamps, self.values, strict=True))

    @staticmethod
    def of(records: list[Record]) -> Batch:
        """A batch of given tuples (kinds from the topic and the payload's opening)."""
        kinds = [
            KIND_HEARTBEAT
            if v.startswith('{"event_time"')
            else {"ground_truth": KIND_LABEL, "quotes": KIND_QUOTE}.get(t, KIND_TRADE)
            for t, _, _, v in records
        ]
        return Batch(
            np.array([ts * 1000 for _, _, ts, _ in records], dtype=np.int64),
            np.array(kinds, dtype=np.int8),
            [r[0] for r in records],
            [r[1] for r in records],
            [r[2] for r in records],
            [r[3] for r in records],
        )


@dataclass
class DayPlan:
    """What a UTC day needs before any of its minutes can be simulated."""

    ordinal: int
    day_us: int
    stamp: str
    acts: list[np.ndarray]
    paths: list[prices.DayPath]
    q_counts: list[np.ndarray]
    t_counts: list[np.ndarray]
    q_base: np.ndarray  # regular quotes of the universe before each minute
    t_base: np.ndarray  # trades of the universe before each minute
    labels: list[Anomaly] = field(default_factory=list)
    by_inst: dict[int, list[Anomaly]] = field(default_factory=dict)
    # Extra trades of volume bursts per (instrument, minute): (count, lo, hi, anomaly id).
    bursts: dict[tuple[int, int], list[tuple[int, int, int, str]]] = field(default_factory=dict)
    # Start of each label as written to ground_truth (see `Tape._first_evidence`).
    shown: dict[str, int] = field(default_factory=dict)


class Tape:
    """Deterministic market-data tape of a universe; iterate it minute by minute."""

    def __init__(
        self,
        instruments: tuple[Instrument, ...],
        seed: int,
        trades_per_second: float,
        quotes_per_second: float,
        heartbeat_seconds: int = 10,
        anomalies: AnomalyOptions | None = None,
    ) -> None:
        if heartbeat_seconds not in HEARTBEAT_CHOICES:
            raise ValueError(f"heartbeat interval must divide 60 seconds: {HEARTBEAT_CHOICES}")
        self.instruments = instruments
        self.seed = seed
        self.trades_per_second = trades_per_second
        self.quotes_per_second = quotes_per_second
        self.heartbeat_seconds = heartbeat_seconds
        self.anomalies = anomalies
        self._plan: DayPlan | None = None
        self._templates = [self._make_templates(i) for i in instruments]
        self._symbols = np.array([i.symbol for i in instruments], dtype=object)
        self._tick = np.array([i.tick_size for i in instruments])
        self._lot = np.array([i.lot_size for i in instruments])
        # The templates above cut at their fields, each cut keeping the text that follows
        # the field, so a record is the row-wise concatenation of a few string columns.
        price = [f"%.{i.price_decimals}f" for i in instruments]
        size = [f"%.{i.size_decimals}f" for i in instruments]
        self._q_ask = ['{"ask":' + f + ',"ask_size":' for f in price]
        self._q_ask_size = [f + ',"bid":' for f in size]
        self._q_bid = [f + ',"bid_size":' for f in price]
        self._q_bid_size = [f + ',"event_time":"' for f in size]
        self._q_tail = np.array(
            [
                f'","schema_version":{SCHEMA_VERSION},"symbol":{json.dumps(i.symbol)}}}'
                for i in instruments
            ],
            dtype=object,
        )
        self._t_account = np.array(
            ['{"account":"' + a + '","event_time":"' for a in ACCOUNTS], dtype=object
        )
        self._t_price = ['Z","price":' + f + ',"quantity":' for f in price]
        self._t_quantity = [f + f',"schema_version":{SCHEMA_VERSION},"side":"' for f in size]
        # row 0: sell, row 1: buy
        self._t_side = np.array(
            [
                [f'{side}","symbol":{json.dumps(i.symbol)},"trade_id":"' for i in instruments]
                for side in ("sell", "buy")
            ],
            dtype=object,
        )
        self._t_tail = np.array(
            [f'","type":"trade","venue":{json.dumps(i.venue)}}}' for i in instruments],
            dtype=object,
        )

    def __getstate__(self) -> dict[str, Any]:
        # The cached day plan is recomputed where needed; not worth sending to a process.
        return {**self.__dict__, "_plan": None}

    @staticmethod
    def _make_templates(inst: Instrument) -> tuple[str, str, str]:
        sym = json.dumps(inst.symbol)
        venue = json.dumps(inst.venue)
        p, s = inst.price_decimals, inst.size_decimals
        quote = (
            f'{{"ask":%.{p}f,"ask_size":%.{s}f,"bid":%.{p}f,"bid_size":%.{s}f,'
            f'"event_time":"%s","quote_id":"%s","schema_version":{SCHEMA_VERSION},'
            f'"symbol":{sym}}}'
        )
        trade = (
            f'{{"account":"%s","event_time":"%s","price":%.{p}f,"quantity":%.{s}f,'
            f'"schema_version":{SCHEMA_VERSION},"side":"%s","symbol":{sym},'
            f'"trade_id":"%s","type":"trade","venue":{venue}}}'
        )
        heartbeat = (
            f'{{"event_time":"%s","schema_version":{SCHEMA_VERSION},'
            f'"symbol":{sym},"type":"heartbeat"}}'
        )
        return quote, trade, heartbeat

    # ------------------------------------------------------------------ planning
    def plan(self, ordinal: int) -> DayPlan:
        """The plan of the UTC day with this ordinal (kept for the day being simulated)."""
        if self._plan is not None and self._plan.ordinal == ordinal:
            return self._plan
        day = date.fromordinal(ordinal)
        insts = self.instruments
        acts = [arrivals.activity(i, day) for i in insts]
        paths = [prices.day_path(self.seed, i, day, a) for i, a in zip(insts, acts, strict=True)]
        shares = arrivals.shares(
            [arrivals.weight(i, a, p.h) for i, a, p in zip(insts, acts, paths, strict=True)]
        )
        n_open = np.sum([a > 0 for a in acts], axis=0)
        quote_rate = np.maximum(self.quotes_per_second - n_open / 60.0, 0.0)
        q_counts = [
            arrivals.minute_counts(self.seed, inst, day, sh * quote_rate * 60.0, kind=0)
            for inst, sh in zip(insts, shares, strict=True)
        ]
        t_counts = [
            arrivals.minute_counts(self.seed, inst, day, sh * self.trades_per_second * 60.0, kind=1)
            for inst, sh in zip(insts, shares, strict=True)
        ]
        plan = DayPlan(
            ordinal=ordinal,
            day_us=(ordinal - EPOCH_ORDINAL) * DAY_US,
            stamp=day.strftime("%Y%m%d"),
            acts=acts,
            paths=paths,
            q_counts=q_counts,
            t_counts=t_counts,
            q_base=np.zeros(1441, dtype=np.int64),
            t_base=np.zeros(1441, dtype=np.int64),
        )
        if self.anomalies is not None:
            self._plan_anomalies(plan, day, shares)
        extra_t = np.zeros(1440, dtype=np.int64)
        for (_, minute), chunks in plan.bursts.items():
            extra_t[minute] += sum(c[0] for c in chunks)
        plan.q_base[1:] = np.cumsum(np.sum(q_counts, axis=0) + n_open)
        plan.t_base[1:] = np.cumsum(np.sum(t_counts, axis=0) + extra_t)
        self._plan = plan
        return plan

    def _plan_anomalies(self, plan: DayPlan, day: date, shares: list[np.ndarray]) -> None:
        assert self.anomalies is not None
        plan.labels = plan_day(self.seed, day, self.instruments, plan.acts, self.anomalies)
        rng = stream(self.seed, Component.ANOMALY_PLAN, plan.ordinal, 1)
        for a in plan.labels:
            plan.by_inst.setdefault(a.instrument, []).append(a)
            if a.kind != "volume_burst":
                continue
            first = (a.start_us - plan.day_us) // MINUTE_US
            last = min((a.end_us - 1 - plan.day_us) // MINUTE_US, 1439)
            for minute in range(first, last + 1):
                m_us = plan.day_us + minute * MINUTE_US
                lo, hi = max(a.start_us, m_us) - m_us, min(a.end_us, m_us + MINUTE_US) - m_us
                if hi <= lo or plan.acts[a.instrument][minute] <= 0:
                    continue
                mean = shares[a.instrument][minute] * self.trades_per_second * (a.magnitude - 1)
                count = int(rng.poisson(mean * (hi - lo) / 1e6))
                plan.bursts.setdefault((a.instrument, minute), []).append(
                    (count, lo, hi, a.anomaly_id)
                )
        # Every burst is planned before any minute is simulated for a label's start: the
        # draws of one burst depend on the bursts before it in the same minute.
        plan.shown = {a.anomaly_id: self._first_evidence(plan, a) for a in plan.labels}

    def _book_input(self, plan: DayPlan, i: int, minute: int) -> BookInput:
        """What `minute_books` simulates for instrument `i` in `minute` of the plan's day."""
        m_us = plan.day_us + minute * MINUTE_US
        m_end = m_us + MINUTE_US
        return BookInput(
            i,
            self.instruments[i],
            plan.paths[i],
            int(plan.q_counts[i][minute]),
            int(plan.t_counts[i][minute]),
            plan.bursts.get((i, minute), []),
            [
                a
                for a in plan.by_inst.get(i, ())
                if a.overlaps(m_us, m_end) or (a.kind == "price_jump" and a.start_us < m_end)
            ],
        )

    def _first_evidence(self, plan: DayPlan, a: Anomaly) -> int:
        """Event time of the first record the anomaly changes: where its label starts.

        The injector acts from `a.start_us`, but until the first quote it withholds or
        alters, or the first extra trade it adds, the tape is the tape without it, and no
        detector could see anything. A fat finger or a crossed book is its own record at
        `a.start_us`. When nothing shows before the anomaly ends, the market closes or the
        UTC day ends, the label keeps `a.start_us`.
        """
        if a.kind in ("fat_finger", "crossed_book"):
            return a.start_us
        i = a.instrument
        day_end = plan.day_us + DAY_US
        stop = day_end if a.kind == "price_jump" else min(a.end_us, day_end)
        minute = (a.start_us - plan.day_us) // MINUTE_US
        while minute < 1440 and plan.day_us + minute * MINUTE_US < stop:
            if plan.acts[i][minute] > 0:
                m_us = plan.day_us + minute * MINUTE_US
                book = minute_books(
                    self.seed, plan.ordinal, minute, plan.day_us,
                    [self._book_input(plan, i, minute)],
                )
                if a.kind == "volume_burst":
                    if a.anomaly_id in book.burst_first:
                        return m_us + book.burst_first[a.anomaly_id]
                else:
                    at = book.q_off + m_us
                    hit = at[(at >= a.start_us) & (at < stop)]
                    if len(hit):
                        return int(hit[0])
            minute += 1
        return a.start_us

    # ------------------------------------------------------------------ one minute
    def minute(self, minute_index: int) -> tuple[np.ndarray, list[Record]]:
        """Records of one minute (minutes since the epoch), sorted by event time.

        The minute's heartbeats close its intervals, so the last ones carry the next minute's
        start as their event time.
        """
        batch = self.minute_batch(minute_index)
        return batch.times, batch.records()

    def minute_batch(self, minute_index: int) -> Batch:
        """`minute` as a `Batch`."""
        ordinal = EPOCH_ORDINAL + minute_index // 1440
        minute = minute_index % 1440
        plan = self.plan(ordinal)
        m_us = plan.day_us + minute * MINUTE_US
        m_end = m_us + MINUTE_US
        hb_us = self.heartbeat_seconds * 1_000_000
        n_bins = 60 // self.heartbeat_seconds
        inputs = [
            self._book_input(plan, i, minute)
            for i in range(len(self.instruments))
            if plan.acts[i][minute] > 0
        ]
        book = minute_books(self.seed, ordinal, minute, plan.day_us, inputs) if inputs else None
        # A heartbeat closes each interval in which an instrument did not trade.
        traded = np.zeros(len(self.instruments) * n_bins, dtype=bool)
        if book is not None:
            traded[book.t_inst * n_bins + book.t_off // hb_us] = True
            for x in book.x_trades:
                traded[x[0] * n_bins + x[1] // hb_us] = True
        quiet = np.flatnonzero(~traded)
        parts: list[Part] = [
            self._quotes(plan, minute, m_us, book),
            self._trades(plan, minute, m_us, book),
        ]
        if len(quiet):
            hb_t = m_us + (quiet % n_bins + 1) * hb_us
            parts.append(self._heartbeats(hb_t, quiet // n_bins))
        labels = [a for a in plan.labels if m_us <= plan.shown[a.anomaly_id] < m_end]
        if labels:
            parts.append(self._labels(labels, plan.shown))
        times = np.concatenate([p[0] for p in parts])
        kinds = np.concatenate([np.full(len(p[0]), p[1], dtype=np.int8) for p in parts])
        order = np.lexsort((kinds, times))
        times, kinds = times[order], kinds[order]
        return Batch(
            times,
            kinds,
            _TOPIC_OF_KIND[kinds].tolist(),
            self._symbols[np.concatenate([p[2] for p in parts])[order]].tolist(),
            (times // 1000).tolist(),
            np.concatenate([p[3] for p in parts])[order].tolist(),
        )

    def _quotes(self, plan: DayPlan, minute: int, m_us: int, book: MinuteBook | None) -> Part:
        if book is None:
            return _empty_part(_K_QUOTE)
        t = book.q_off + m_us
        cols = [book.bid, book.ask, book.bid_lots, book.ask_lots]
        extras = [(m_us + x[1], x[0], *x[2:]) for x in book.x_quotes]
        t, inst, cols, ids = self._ordered(
            plan.q_base[minute], plan.stamp, 'Z","quote_id":"', t, book.q_inst, cols,
            book.q_emit, extras,
        )
        values = _join(
            [
                _by_value(inst, cols[1], self._tick, self._q_ask),
                _by_value(inst, cols[3], self._lot, self._q_ask_size),
                _by_value(inst, cols[0], self._tick, self._q_bid),
                _by_value(inst, cols[2], self._lot, self._q_bid_size),
                *_minute_times(m_us, t),
                *ids,
                self._q_tail[inst],
            ]
        )
        return t, _K_QUOTE, inst, values

    def _trades(self, plan: DayPlan, minute: int, m_us: int, book: MinuteBook | None) -> Part:
        if book is None:
            return _empty_part(_K_TRADE)
        t = book.t_off + m_us
        cols = [book.t_price, book.t_lots, book.t_buy, book.t_account]
        extras = [(m_us + x[1], x[0], *x[2:]) for x in book.x_trades]
        t, inst, cols, ids = self._ordered(
            plan.t_base[minute], plan.stamp, "", t, book.t_inst, cols, None, extras
        )
        values = _join(
            [
                self._t_account[cols[3]],
                *_minute_times(m_us, t),
                _by_value(inst, cols[0], self._tick, self._t_price),
                _by_value(inst, cols[1], self._lot, self._t_quantity),
                self._t_side[cols[2].astype(np.int64), inst],
                *ids,
                self._t_tail[inst],
            ]
        )
        return t, _K_TRADE, inst, values

    def _ordered(
        self,
        base: int,
        stamp: str,
        lead: str,
        t: np.ndarray,
        inst: np.ndarray,
        cols: list[np.ndarray],
        emit: np.ndarray | None,
        extras: list[tuple[Any, ...]],
    ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[np.ndarray]]:
        """Sort a minute's events by (time, instrument), number them, add anomaly prints.

        Sequence numbers count withheld (stale) quotes too, so they never depend on which
        anomalies are active; anomaly prints carry their label's id instead. Ids come back
        as two string columns (see `_id_pieces`), each id preceded by `lead`.
        """
        order = np.lexsort((inst, t))
        ids = list(_id_pieces(f"{lead}{self.seed}-{stamp}-", base, len(order)))
        t, inst, cols = t[order], inst[order], [c[order] for c in cols]
        if emit is not None:
            keep = emit[order]
            if not keep.all():
                t, inst = t[keep], inst[keep]
                cols, ids = [c[keep] for c in cols], [c[keep] for c in ids]
        if extras:
            t = np.concatenate((t, [e[0] for e in extras])).astype(np.int64)
            inst = np.concatenate((inst, [e[1] for e in extras])).astype(np.int64)
            cols = [
                np.concatenate((c, [e[2 + k] for e in extras])).astype(c.dtype)
                for k, c in enumerate(cols)
            ]
            ids = [
                np.concatenate((ids[0], _objects([lead + str(e[-1]) for e in extras]))),
                np.concatenate((ids[1], _objects([""] * len(extras)))),
            ]
            order = np.lexsort((inst, t))
            t, inst = t[order], inst[order]
            cols, ids = [c[order] for c in cols], [c[order] for c in ids]
        return t, inst, cols, ids

    def _heartbeats(self, times: np.ndarray, inst: np.ndarray) -> Part:
        order = np.lexsort((inst, times))
        times, inst = times[order], inst[order]
        values = [
            self._templates[i][2] % ts
            for i, ts in zip(inst.tolist(), iso_times(times), strict=True)
        ]
        return times, _K_HEARTBEAT, inst, np.array(values, dtype=object)

    def _labels(self, labels: list[Anomaly], shown: dict[str, int]) -> Part:
        times = np.array([shown[a.anomaly_id] for a in labels], dtype=np.int64)
        # A price jump is instantaneous (end == start): it ends where it shows.
        ends = iso_times(np.maximum(np.array([a.end_us for a in labels], dtype=np.int64), times))
        values: list[str] = []
        for a, start, end in zip(labels, iso_times(times), ends, strict=True):
            values.append(
                json.dumps(
                    {
                        "anomaly_id": a.anomaly_id,
                        "end_time": end,
                        "magnitude": a.magnitude,
                        "schema_version": SCHEMA_VERSION,
                        "severity": a.severity,
                        "start_time": start,
                        "symbol": self.instruments[a.instrument].symbol,
                        "type": a.kind,
                    },
                    sort_keys=True,
                    separators=(",", ":"),
                )
            )
        inst = np.array([a.instrument for a in labels], dtype=np.int64)
        return times, _K_LABEL, inst, np.array(values, dtype=object)

    # ------------------------------------------------------------------ ranges
    def batches(self, start_us: int, end_us: int | None) -> Iterator[Batch]:
        """Minute batches of records with start_us <= event time < end_us (None: forever).

        Generation starts one minute early when `start_us` is a minute boundary, because the
        previous minute's last heartbeats carry exactly that time.
        """
        return self.window(start_us, end_us, map(self.minute_batch, minutes(start_us, end_us)))

    def records(
        self, start_us: int, end_us: int | None
    ) -> Iterator[tuple[np.ndarray, list[Record]]]:
        """`batches` as (event times, record tuples) per minute."""
        for batch in self.batches(start_us, end_us):
            yield batch.times, batch.records()

    @staticmethod
    def window(start_us: int, end_us: int | None, batches: Iterable[Batch]) -> Iterator[Batch]:
        """The records of `batches` with start_us <= event time < end_us."""
        for batch in batches:
            times = batch.times
            lo = int(np.searchsorted(times, start_us, side="left"))
            hi = len(times) if end_us is None else int(np.searchsorted(times, end_us, "left"))
            if hi > lo:
                yield batch if (lo, hi) == (0, len(times)) else batch.slice(lo, hi)


def minutes(start_us: int, end_us: int | None) -> Iterator[int]:
    """Indices (minutes since the epoch) of the minutes whose records cover [start, end)."""
    minute_index = (start_us - 1) // MINUTE_US
    while end_us is None or minute_index * MINUTE_US < end_us:
        yield minute_index
        minute_index += 1

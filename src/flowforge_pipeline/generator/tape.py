"""The tape: every instrument's quotes, trades and heartbeats merged in event-time order.

A UTC day is planned once (paths, counts, anomalies); each minute is then simulated on its
own and turned into Kafka-ready records. Record order, ids and bytes depend only on the seed,
the settings and the minute, which is what makes any two runs over the same range identical.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import numpy as np

from flowforge_pipeline.contract.catalog import GROUND_TRUTH_TOPIC, QUOTES_TOPIC, TRADES_TOPIC
from flowforge_pipeline.generator import arrivals, prices
from flowforge_pipeline.generator.anomalies import Anomaly, AnomalyOptions, plan_day
from flowforge_pipeline.generator.book import ACCOUNTS, MINUTE_US, MinuteBook, minute_book
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

_K_LABEL, _K_QUOTE, _K_TRADE, _K_HEARTBEAT = 0, 1, 2, 3
_QUOTE_COLS = ("bid", "ask", "bid_lots", "ask_lots")
_TRADE_COLS = ("t_price", "t_lots", "t_buy", "t_account")


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
    bursts: dict[tuple[int, int], list[tuple[int, int, int]]] = field(default_factory=dict)


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
        self._quote_tmpl = [q for q, _, _ in self._templates]
        self._trade_tmpl = [t for _, t, _ in self._templates]
        self._symbols = [i.symbol for i in instruments]
        self._tick = np.array([i.tick_size for i in instruments])
        self._lot = np.array([i.lot_size for i in instruments])

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
            extra_t[minute] += sum(c for c, _, _ in chunks)
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
                plan.bursts.setdefault((a.instrument, minute), []).append((count, lo, hi))

    # ------------------------------------------------------------------ one minute
    def minute(self, minute_index: int) -> tuple[np.ndarray, list[Record]]:
        """Records of one minute (minutes since the epoch), sorted by event time.

        The minute's heartbeats close its intervals, so the last ones carry the next minute's
        start as their event time.
        """
        ordinal = EPOCH_ORDINAL + minute_index // 1440
        minute = minute_index % 1440
        plan = self.plan(ordinal)
        m_us = plan.day_us + minute * MINUTE_US
        m_end = m_us + MINUTE_US
        hb_us = self.heartbeat_seconds * 1_000_000
        n_bins = 60 // self.heartbeat_seconds
        books: list[tuple[int, MinuteBook]] = []
        hb_t: list[np.ndarray] = []
        hb_i: list[np.ndarray] = []
        for i, inst in enumerate(self.instruments):
            traded = np.zeros(n_bins, dtype=bool)
            if plan.acts[i][minute] > 0:
                acting = [
                    a
                    for a in plan.by_inst.get(i, ())
                    if a.overlaps(m_us, m_end) or (a.kind == "price_jump" and a.start_us < m_end)
                ]
                book = minute_book(
                    self.seed,
                    inst,
                    ordinal,
                    minute,
                    plan.paths[i],
                    int(plan.q_counts[i][minute]),
                    int(plan.t_counts[i][minute]),
                    plan.bursts.get((i, minute), []),
                    acting,
                    plan.day_us,
                )
                books.append((i, book))
                traded[np.unique(book.t_off // hb_us)] = True
                for x in book.x_trades:
                    traded[x[0] // hb_us] = True
            quiet = np.flatnonzero(~traded)
            if len(quiet):
                hb_t.append(m_us + (quiet + 1) * hb_us)
                hb_i.append(np.full(len(quiet), i))
        parts: list[tuple[np.ndarray, int, list[Record]]] = []
        parts.append(self._quotes(plan, minute, m_us, books))
        parts.append(self._trades(plan, minute, m_us, books))
        if hb_t:
            parts.append(self._heartbeats(np.concatenate(hb_t), np.concatenate(hb_i)))
        labels = [a for a in plan.labels if m_us <= a.start_us < m_end]
        if labels:
            parts.append(self._labels(labels))
        times = np.concatenate([p[0] for p in parts])
        kinds = np.concatenate([np.full(len(p[0]), p[1]) for p in parts])
        records = [r for p in parts for r in p[2]]
        order = np.lexsort((kinds, times))
        return times[order], [records[k] for k in order.tolist()]

    def _quotes(
        self, plan: DayPlan, minute: int, m_us: int, books: list[tuple[int, MinuteBook]]
    ) -> tuple[np.ndarray, int, list[Record]]:
        if not books:
            return np.zeros(0, dtype=np.int64), _K_QUOTE, []
        t = np.concatenate([b.q_off for _, b in books]) + m_us
        inst = np.concatenate([np.full(len(b.q_off), i) for i, b in books])
        cols = [np.concatenate([getattr(b, c) for _, b in books]) for c in _QUOTE_COLS]
        emit = np.concatenate([b.q_emit for _, b in books])
        extras = [(m_us + x[0], i, *x[1:]) for i, b in books for x in b.x_quotes]
        t, inst, cols, ids = self._ordered(
            plan.q_base[minute], plan.stamp, t, inst, cols, emit, extras
        )
        tick, lot = self._tick[inst], self._lot[inst]
        values = (cols[1] * tick, cols[3] * lot, cols[0] * tick, cols[2] * lot)
        tmpl, syms, topic = self._quote_tmpl, self._symbols, QUOTES_TOPIC.name
        out: list[Record] = [
            (topic, syms[i], tt // 1000, tmpl[i] % (a, asz, b, bsz, ts, qid))
            for i, tt, a, asz, b, bsz, ts, qid in zip(
                inst.tolist(),
                t.tolist(),
                *(v.tolist() for v in values),
                iso_times(t),
                ids,
                strict=True,
            )
        ]
        return t, _K_QUOTE, out

    def _trades(
        self, plan: DayPlan, minute: int, m_us: int, books: list[tuple[int, MinuteBook]]
    ) -> tuple[np.ndarray, int, list[Record]]:
        if not books:
            return np.zeros(0, dtype=np.int64), _K_TRADE, []
        t = np.concatenate([b.t_off for _, b in books]) + m_us
        inst = np.concatenate([np.full(len(b.t_off), i) for i, b in books])
        cols = [np.concatenate([getattr(b, c) for _, b in books]) for c in _TRADE_COLS]
        extras = [(m_us + x[0], i, *x[1:]) for i, b in books for x in b.x_trades]
        t, inst, cols, ids = self._ordered(
            plan.t_base[minute], plan.stamp, t, inst, cols, None, extras
        )
        price = cols[0] * self._tick[inst]
        qty = cols[1] * self._lot[inst]
        tmpl, syms, topic = self._trade_tmpl, self._symbols, TRADES_TOPIC.name
        out: list[Record] = [
            (
                topic,
                syms[i],
                tt // 1000,
                tmpl[i] % (ACCOUNTS[acc], ts, p, q, "buy" if buy else "sell", tid),
            )
            for i, tt, p, q, buy, acc, ts, tid in zip(
                inst.tolist(),
                t.tolist(),
                price.tolist(),
                qty.tolist(),
                cols[2].tolist(),
                cols[3].tolist(),
                iso_times(t),
                ids,
                strict=True,
            )
        ]
        return t, _K_TRADE, out

    def _ordered(
        self,
        base: int,
        stamp: str,
        t: np.ndarray,
        inst: np.ndarray,
        cols: list[np.ndarray],
        emit: np.ndarray | None,
        extras: list[tuple[int, ...]],
    ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[str]]:
        """Sort a minute's events by (time, instrument), number them, add anomaly prints.

        Sequence numbers count withheld (stale) quotes too, so they never depend on which
        anomalies are active; anomaly prints carry their label's id instead.
        """
        order = np.lexsort((inst, t))
        prefix = f"{self.seed}-{stamp}-"
        ids = [prefix + str(n) for n in range(base, base + len(order))]
        t, inst, cols = t[order], inst[order], [c[order] for c in cols]
        if emit is not None:
            keep = emit[order]
            if not keep.all():
                t, inst, cols = t[keep], inst[keep], [c[keep] for c in cols]
                ids = [x for x, k in zip(ids, keep.tolist(), strict=True) if k]
        if extras:
            t = np.concatenate((t, [e[0] for e in extras])).astype(np.int64)
            inst = np.concatenate((inst, [e[1] for e in extras])).astype(np.int64)
            cols = [
                np.concatenate((c, [e[2 + k] for e in extras])).astype(c.dtype)
                for k, c in enumerate(cols)
            ]
            ids = ids + [str(e[-1]) for e in extras]
            order = np.lexsort((inst, t))
            t, inst, cols = t[order], inst[order], [c[order] for c in cols]
            ids = [ids[k] for k in order.tolist()]
        return t, inst, cols, ids

    def _heartbeats(
        self, times: np.ndarray, inst: np.ndarray
    ) -> tuple[np.ndarray, int, list[Record]]:
        order = np.lexsort((inst, times))
        times, inst = times[order], inst[order]
        out: list[Record] = [
            (TRADES_TOPIC.name, self.instruments[i].symbol, t // 1000, self._templates[i][2] % ts)
            for t, i, ts in zip(times.tolist(), inst.tolist(), iso_times(times), strict=True)
        ]
        return times, _K_HEARTBEAT, out

    def _labels(self, labels: list[Anomaly]) -> tuple[np.ndarray, int, list[Record]]:
        times = np.array([a.start_us for a in labels], dtype=np.int64)
        ends = iso_times(np.array([a.end_us for a in labels], dtype=np.int64))
        out: list[Record] = []
        for a, start, end in zip(labels, iso_times(times), ends, strict=True):
            symbol = self.instruments[a.instrument].symbol
            value = json.dumps(
                {
                    "anomaly_id": a.anomaly_id,
                    "end_time": end,
                    "magnitude": a.magnitude,
                    "schema_version": SCHEMA_VERSION,
                    "severity": a.severity,
                    "start_time": start,
                    "symbol": symbol,
                    "type": a.kind,
                },
                sort_keys=True,
                separators=(",", ":"),
            )
            out.append((GROUND_TRUTH_TOPIC.name, symbol, a.start_us // 1000, value))
        return times, _K_LABEL, out

    # ------------------------------------------------------------------ ranges
    def records(
        self, start_us: int, end_us: int | None
    ) -> Iterator[tuple[np.ndarray, list[Record]]]:
        """Minute batches of records with start_us <= event time < end_us (None: forever).

        Generation starts one minute early when `start_us` is a minute boundary, because the
        previous minute's last heartbeats carry exactly that time.
        """
        minute_index = (start_us - 1) // MINUTE_US
        while end_us is None or minute_index * MINUTE_US < end_us:
            times, recs = self.minute(minute_index)
            lo = int(np.searchsorted(times, start_us, side="left"))
            hi = len(times) if end_us is None else int(np.searchsorted(times, end_us, "left"))
            if hi > lo:
                yield times[lo:hi], recs[lo:hi]
            minute_index += 1

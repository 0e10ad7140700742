"""Fault injection: SIGKILL each flow and each store during a backfill; nothing lost or doubled.

A private local stack (broker, ClickHouse server, Valkey, PostgreSQL on random ports of
127.0.0.1, in a throw-away state directory) gets one deterministic input: the generator's
backfill of a fixed range with a fixed seed, produced once to the `trades` and `quotes`
topics. Every run then starts the registered flows on that input with empty outputs (its own
ClickHouse database, Redis database, Postgres schema and Bytewax recovery directories) and
lets them drain it as fast as they can:

* the **uninterrupted** run gives the expected serving layer;
* one run per component SIGKILLs it (its whole process group) once the flows are part-way
  through the input, then restarts it — a flow at once, a store after it has been down for
  `--down-seconds` (longer than the sinks' old retry budget), so the flows must wait for it;
  while a store is down, `flowforge-pipeline status --json` is read and must show the flows
  that write to it as `retrying` with the store named, and no flow may exit.

After each run has read all its input, the serving layer is compared with the uninterrupted
one until equal (or `--settle-seconds` pass): per ClickHouse table the row count and a digest
of every row (all columns but `ingested_at`), every `vwap_5min` and `rolling_volatility` row
by key, every `latest:*` Redis key (all fields but `updated_at`), every row of the three live
tables (all columns but `updated_at`). "Time to recover" runs from the restart to the moment
the component is healthy again and every flow it affects has read past where it was at the
kill (a store: and no flow reports it down any more).

Run: .venv/bin/python bench/faults.py [--minutes 10] [--rate 3000] [--only vwap clickhouse]
     [--json bench/results/faults.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import redis as redis_lib
from confluent_kafka import Producer
from psycopg import sql
from pydantic import SecretStr

from flowforge_pipeline.contract.apply import init_clickhouse
from flowforge_pipeline.contract.catalog import LIVE_PNL, LIVE_POSITIONS, LIVE_QUOTES
from flowforge_pipeline.contract.ddl import postgres_create
from flowforge_pipeline.flows.components import FLOW_NAMES, metrics_port
from flowforge_pipeline.settings import Settings
from flowforge_pipeline.stack import local, process
from flowforge_pipeline.stack.components import UpOptions
from flowforge_pipeline.stack.registry import component
from flowforge_pipeline.stores import clickhouse as ch_store

# Run as a script or imported by the test suite: benchlib sits beside this file either way.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import Figure, add_json_option, emit, free_block, private_stack  # noqa: E402

#: Topics each flow reads.
READS: dict[str, tuple[str, ...]] = {
    "raw_sink": ("trades", "quotes"),
    "vwap": ("trades",),
    "volatility": ("trades",),
    "positions": ("trades",),
    "live_views": ("trades", "quotes"),
    "anomaly": ("trades", "quotes"),
}
#: Flows that write to each store (the ClickHouse sinks also publish on Redis).
WRITERS: dict[str, tuple[str, ...]] = {
    "clickhouse": ("raw_sink", "vwap", "volatility", "anomaly"),
    "redis": ("raw_sink", "vwap", "volatility", "positions", "anomaly"),
    "postgres": ("live_views",),
}
#: Store name in the flows' reports → the local component serving it.
STORE_COMPONENT = {"clickhouse": "clickhouse", "redis": "valkey", "postgres": "postgres"}
COMPONENT_STORE = {v: k for k, v in STORE_COMPONENT.items()}
#: ClickHouse tables the flows write, with the columns naming one row (for "doubled").
CH_TABLES: dict[str, tuple[str, ...]] = {
    "raw_trades": ("trade_id",),
    "raw_quotes": ("quote_id",),
    "vwap_5min": ("symbol", "window_start"),
    "rolling_volatility": ("symbol", "window", "as_of"),
    "anomaly_alerts": ("alert_id",),
}
#: Items whose content depends on how the trades and quotes topics interleave on arrival,
#: which Kafka does not fix across two topics: two uninterrupted runs already differ. Only
#: "nothing doubled" is checked for them (see docs/faults.md).
ORDER_DEPENDENT = {"clickhouse anomaly_alerts"}
LIVE_TABLES = (LIVE_QUOTES, LIVE_POSITIONS, LIVE_PNL)
WALL_CLOCK = {"ingested_at", "updated_at"}  # when a row was written, not what it says
DELIVERY = {"kafka_partition", "kafka_offset"}  # where the broker put a record, not what it says


# --- the private stack -------------------------------------------------------------------


@dataclass
class Stack:
    """A private local stack of the stand-ins, started and restarted by the stack's own code."""

    settings: Settings

    @classmethod
    def start(cls, partitions: int = 3) -> Stack:
        """Start the stand-ins; on any failure (Ctrl-C included) stop what was started."""
        _, settings = private_stack(
            "flowforge-faults-",
            _env_file=None,  # nothing from a .env in the working directory
            KAFKA_TOPIC_PARTITIONS=partitions,
        )
        return cls(settings)

    def stop(self) -> None:
        local.down(self.settings, echo=lambda _: None)
        shutil.rmtree(self.settings.state_path, ignore_errors=True)

    def kill(self, name: str) -> None:
        """SIGKILL a service's whole process group (a server and its workers)."""
        rec = process.read_record(self.settings.state_path, name)
        if rec is None or not process.is_alive(rec):
            raise RuntimeError(f"{name} is not running")
        process.stop(rec, signal.SIGKILL, timeout=10)

    def restart(self) -> None:
        """Start what is not running, as `up` does after a crash (waits until healthy).

        A killed server's port can stay taken for a moment (a socket still closing, or an
        outgoing connection given the same local port): `up` refuses then; try again.
        """
        deadline = time.monotonic() + 30
        while True:
            try:
                local.up(self.settings, echo=lambda _: None, stages=("service",))
                return
            except local.StackError as exc:
                if "in use" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def reset_broker(self) -> None:
        """Empty topics for the next run: the local broker keeps them in memory only."""
        self.kill("broker")
        self.restart()

    def healthy(self, name: str) -> bool:
        try:
            component(name).ready(self.settings)
        except Exception:  # noqa: BLE001 - not (yet) healthy
            return False
        return True


# --- deterministic input -----------------------------------------------------------------


def start_generator(start: str, end: str, seed: int, path: Path) -> subprocess.Popen[bytes]:
    """The generator writing its backfill of [start, end) with `seed` to `path` (JSON lines).

    It needs no stack, so it can run while the stack starts.
    """
    return subprocess.Popen(
        [sys.executable, "-m", "flowforge_pipeline.cli", "generate", "--backfill", start, end,
         "--seed", str(seed), "--output", str(path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def generated(proc: subprocess.Popen[bytes], path: Path) -> list[dict]:
    """The records of a finished `start_generator`."""
    _, err = proc.communicate(timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"generate failed: {err.decode(errors='replace').strip()[-500:]}")
    with path.open() as fh:
        return [json.loads(line) for line in fh]


def produce(
    settings: Settings, records: list[dict], rate: float = 0.0,
    on_progress: Callable[[int], None] | None = None,
) -> None:
    """Send the records keyed by symbol; `rate` > 0 paces them at that many per second."""
    producer = Producer({"bootstrap.servers": settings.kafka_servers, "linger.ms": 5,
                         "queue.buffering.max.messages": 1_000_000})
    started = time.monotonic()
    for i, rec in enumerate(records):
        value = json.dumps(rec["value"], separators=(",", ":")).encode()
        producer.produce(rec["topic"], key=rec["key"].encode(), value=value)
        if i % 500 == 0:
            producer.poll(0)
            if rate > 0:
                ahead = i / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
            if on_progress:
                on_progress(i)
    if producer.flush(60):
        raise RuntimeError("the broker did not acknowledge every input record")


class Feeder(threading.Thread):
    """Sends the input at a fixed rate in the background (the backfill the flows keep up with)."""

    def __init__(self, settings: Settings, records: list[dict], rate: float) -> None:
        super().__init__(daemon=True)
        self.settings, self.records, self.rate = settings, records, rate
        self.sent = 0
        self.limit = 1.0  # share of the input it may send for now
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            produce(self.settings, self.records, self.rate, self._progress)
            self.sent = len(self.records)
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            self.error = exc

    def _progress(self, n: int) -> None:
        self.sent = n
        while n / len(self.records) >= self.limit:  # held until the next fault is under way
            time.sleep(0.05)

    def share(self) -> float:
        return self.sent / len(self.records) if self.records else 1.0


# --- one run of the flows ----------------------------------------------------------------


def parse_metrics(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                continue
    return out


@dataclass
class Run:
    """The flows on the stack's input, writing to outputs of their own."""

    stack: Stack
    flows: tuple[str, ...]
    tag: str
    settings: Settings = field(init=False)
    redis_db: int = 1

    def __post_init__(self) -> None:
        base = self.stack.settings
        schema = f"faults_{self.tag}"
        pg = base.postgres + "?options=" + quote(f"-c search_path={schema}")
        # its own state directory: pid files, logs and Bytewax recovery of this run's flows
        state = base.state_path / "runs" / self.tag
        state.mkdir(parents=True)
        self.settings = base.model_copy(update={
            "state_dir": state,
            "clickhouse_database": f"faults_{self.tag}",
            "redis_url": SecretStr(f"redis://127.0.0.1:{base.local_redis_port}/{self.redis_db}"),
            "live_views_url": SecretStr(pg),
            "local_flow_metrics_port": free_block(len(FLOW_NAMES)),
            "sink_flush_wait_seconds": 0.5,
            "flow_snapshot_seconds": 2,
        })
        init_clickhouse(self.settings)
        with psycopg.connect(base.postgres, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        with psycopg.connect(self.settings.postgres, autocommit=True) as conn:
            for t in LIVE_TABLES:
                conn.execute(postgres_create(t).encode())
        redis_lib.Redis.from_url(self.settings.redis).flushdb()

    # processes
    def start_flow(self, flow: str) -> None:
        comp = component(f"flow-{flow}")
        assert comp.prepare is not None
        comp.prepare(self.settings)
        process.spawn(
            self.settings.state_path, comp.name, comp.argv(self.settings, UpOptions()),
            port=metrics_port(self.settings, flow),
            env={**self.settings.as_env(), **comp.env(self.settings)},
        )

    def start(self) -> None:
        for flow in self.flows:
            self.start_flow(flow)
        wait_until("every flow answers /metrics", lambda: all(
            self.metrics(f) is not None for f in self.flows), self, timeout=120)

    def kill_flow(self, flow: str) -> None:
        rec = process.read_record(self.settings.state_path, f"flow-{flow}")
        assert rec is not None
        process.stop(rec, signal.SIGKILL, timeout=10)
        process.forget(self.settings.state_path, f"flow-{flow}")

    def stop(self) -> None:
        for flow in self.flows:
            rec = process.read_record(self.settings.state_path, f"flow-{flow}")
            if rec is not None:
                process.stop(rec, signal.SIGKILL, timeout=10)
                process.forget(self.settings.state_path, f"flow-{flow}")

    def drop(self) -> None:
        """Remove this run's outputs (after its snapshot was taken)."""
        try:
            ch = ch_store.client(self.settings, database="")
            ch.command(f"DROP DATABASE IF EXISTS {self.settings.clickhouse_database}")
            ch.close()
            with psycopg.connect(self.stack.settings.postgres, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                    sql.Identifier(f"faults_{self.tag}")))
        except Exception as exc:  # noqa: BLE001 - cleanup only
            print(f"  (cleanup of run {self.tag}: {exc})", file=sys.stderr)

    def dead(self) -> list[str]:
        """Flows whose process exited (a flow must never exit on a fault)."""
        out = []
        for flow in self.flows:
            rec = process.read_record(self.settings.state_path, f"flow-{flow}")
            if rec is None or not process.is_alive(rec):
                out.append(flow)
        return out

    def log_tail(self, flow: str) -> str:
        path = process.log_path(self.settings.state_path, f"flow-{flow}")
        return "\n".join(process.tail(path, 15))

    # observations
    def metrics(self, flow: str) -> dict[str, float] | None:
        url = f"http://127.0.0.1:{metrics_port(self.settings, flow)}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:  # noqa: S310
                return parse_metrics(resp.read().decode())
        except OSError:
            return None

    def events_in(self, flow: str) -> float:
        m = self.metrics(flow) or {}
        return sum(v for k, v in m.items() if k.startswith("flowforge_flow_events_in_total{"))

    def events_out(self, flow: str) -> float:
        m = self.metrics(flow) or {}
        return sum(v for k, v in m.items() if k.startswith("flowforge_flow_events_out_total{"))

    def lag(self, flow: str) -> float | None:
        """Records left to read (Bytewax's consumer lag, every partition); None: not known."""
        m = self.metrics(flow)
        if m is None:
            return None
        parts = [v for k, v in m.items() if k.startswith("bytewax_kafka_consumer_lag{")]
        want = len(READS[flow]) * self.stack.settings.kafka_topic_partitions
        return sum(parts) if len(parts) >= want else None

    def down_reported(self, flow: str) -> set[str]:
        m = self.metrics(flow) or {}
        return {k.split('store="', 1)[1].split('"', 1)[0] for k, v in m.items()
                if k.startswith("flowforge_sink_store_down_since_seconds{") and v > 0}

    def all_read(self) -> bool:
        return all(self.lag(f) == 0 for f in self.flows)

    def status(self, cli: bool = True) -> dict[str, Any]:
        """`flowforge-pipeline status --json` as a user runs it, for this run's settings.

        `cli=False`: only its `components` part, computed in this process (no freshness
        queries, which wait for their timeouts while a store is down).
        """
        if not cli:
            return {"components": local.component_status(self.settings)}
        proc = subprocess.run(
            [sys.executable, "-m", "flowforge_pipeline.cli", "status", "--json"],
            env={**os.environ, **self.settings.as_env()}, capture_output=True, text=True,
            timeout=120, check=False,
        )
        return dict(json.loads(proc.stdout))


def wait_until(what: str, check: Callable[[], bool], run: Run, timeout: float) -> float:
    """Poll `check` until true; fail if a flow exits meanwhile. Returns the seconds waited."""
    started = time.monotonic()
    while not check():
        dead = run.dead()
        if dead:
            raise FlowExited(f"{dead[0]} exited while waiting for {what}:\n{run.log_tail(dead[0])}")
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"gave up waiting for {what} after {timeout:.0f} s")
        time.sleep(0.2)
    return time.monotonic() - started


class FlowExited(AssertionError):
    """A flow process exited during a fault: exactly what must not happen."""


# --- the serving layer -------------------------------------------------------------------


def _json_safe(v: Any) -> Any:
    return v.isoformat() if hasattr(v, "isoformat") else v


def snapshot(run: Run) -> dict[str, Any]:
    """What FlowForge would read, minus write times: comparable across runs."""
    s = run.settings
    out: dict[str, Any] = {}
    ch = ch_store.client(s)
    try:
        for table, key in CH_TABLES.items():
            cols = [c for c in ch_columns(ch, table) if c not in WALL_CLOCK | DELIVERY]
            row_hash = f"cityHash64({', '.join(cols)})"
            keys = ", ".join(key)
            n, distinct, digest = ch.query(
                f"SELECT count(), uniqExact({keys}), sum({row_hash}) FROM {table}"
            ).result_rows[0]
            out[f"clickhouse {table}"] = {"rows": n, "distinct": distinct, "digest": digest}
        for table, key in (("vwap_5min", CH_TABLES["vwap_5min"]),
                           ("rolling_volatility", CH_TABLES["rolling_volatility"])):
            cols = [c for c in ch_columns(ch, table) if c not in WALL_CLOCK]
            rows = ch.query(f"SELECT {', '.join(cols)} FROM {table}").result_rows
            by_key: dict[str, Any] = {}
            for r in rows:
                rec = dict(zip(cols, (_json_safe(v) for v in r), strict=True))
                k = "|".join(str(rec[c]) for c in key)
                by_key.setdefault(k, []).append(rec)
            out[f"{table} rows"] = by_key
    finally:
        ch.close()
    r = redis_lib.Redis.from_url(s.redis, decode_responses=True)
    keys = sorted(r.scan_iter("latest:*", count=1000))
    values = r.mget(keys) if keys else []
    out["redis latest keys"] = {
        k: {f: x for f, x in json.loads(v).items() if f not in WALL_CLOCK}
        for k, v in zip(keys, values, strict=True) if v is not None
    }
    r.close()
    with psycopg.connect(s.postgres, autocommit=True) as conn:
        for t in LIVE_TABLES:
            cols = [c.name for c in t.columns if c.name not in WALL_CLOCK]
            rows = conn.execute(sql.SQL("SELECT {} FROM {}").format(
                sql.SQL(", ").join(map(sql.Identifier, cols)), sql.Identifier(t.name))).fetchall()
            out[f"postgres {t.name}"] = {
                "|".join(str(v) for v in r[: len(t.primary_key)]): [_json_safe(v) for v in r]
                for r in rows
            }
    return out


def ch_columns(ch: Any, table: str) -> list[str]:
    return [r[0] for r in ch.query(
        "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = {t:String}"
        " ORDER BY position", parameters={"t": table}).result_rows]


REL_TOL = 1e-9  # floats summed in another order differ in the last digits only


def same(a: Any, b: Any) -> bool:
    """Equal, floats within `REL_TOL` (sums over accounts depend on arrival order)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-9)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def differences(got: dict[str, Any], want: dict[str, Any], limit: int = 6) -> list[str]:
    """What differs, item by item (at most `limit` lines per item)."""
    out: list[str] = []
    for item in sorted(set(want) | set(got)):
        a, b = got.get(item), want.get(item)
        if same(a, b):
            continue
        if item in ORDER_DEPENDENT:
            assert isinstance(a, dict)
            if a["rows"] != a["distinct"]:
                out.append(f"{item}: {a['rows'] - a['distinct']} rows doubled")
            continue
        if item.startswith("clickhouse "):
            assert isinstance(a, dict) and isinstance(b, dict)
            doubled = a["rows"] - a["distinct"]
            out.append(
                f"{item}: {a['rows']} rows (want {b['rows']}), {doubled} doubled, "
                f"{b['distinct'] - a['distinct']} missing"
                + ("" if a["digest"] == b["digest"] or a["rows"] != b["rows"]
                   else ", same count but different contents")
            )
            continue
        a, b = a or {}, b or {}
        lines = []
        for k in sorted(set(a) | set(b)):
            if not same(a.get(k), b.get(k)):
                lines.append(f"{item} [{k}]: got {a.get(k)!r}, want {b.get(k)!r}")
        out.append(f"{item}: {len(lines)} of {len(b)} differ")
        out.extend("  " + line[:300] for line in lines[:limit])
    return out


def settle(run: Run, want: dict[str, Any] | None, timeout: float) -> tuple[dict[str, Any], float]:
    """Wait until every flow read all its input, then until the serving layer is final.

    With `want`, final means equal to it (or `timeout` passed: the last snapshot is returned
    for the differences); without, two snapshots 2 s apart that agree.
    """
    wait_until("every flow to read all its input", run.all_read, run, timeout=600)
    started = time.monotonic()
    last = snapshot(run)
    while time.monotonic() - started < timeout:
        time.sleep(1.0 if want is not None else 2.0)
        if run.dead():
            raise FlowExited(f"{run.dead()[0]} exited:\n{run.log_tail(run.dead()[0])}")
        now = snapshot(run)
        if (want is not None and not differences(now, want)) or (want is None and now == last):
            return now, time.monotonic() - started
        last = now
    return last, time.monotonic() - started


# --- faults ------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What happened to one component."""

    component: str
    killed_at: str = ""  # where in the input it was killed
    recovered_after: float = float("nan")  # seconds from the restart
    down_for: float = 0.0  # seconds from the kill to the restart
    status_seen: str = ""  # what `status` said about the flows while a store was down
    status_ok: bool | None = None
    differences: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def equal(self) -> bool:
        return not self.differences and not self.error


def affected(run: Run, comp: str) -> tuple[str, ...]:
    if comp in run.flows:
        return (comp,)
    return tuple(f for f in run.flows if f in WRITERS[COMPONENT_STORE[comp]])


def inject(run: Run, comp: str, down_seconds: float, status_cli: bool = True) -> Outcome:
    """SIGKILL `comp`, keep it down (a store), restart it, wait until it has recovered."""
    out = Outcome(comp)
    flows = affected(run, comp)
    lags = {f: run.lag(f) for f in flows}
    read = {f: run.events_in(f) for f in flows}
    out.killed_at = ", ".join(
        f"{f} had read {int(read[f]):,} records, {int(lags[f] or 0):,} left" for f in flows)
    t_kill = time.monotonic()
    written: dict[str, float] = {}  # rows written per flow before the restart (a store)
    if comp in run.flows:
        run.kill_flow(comp)
        t_restart = time.monotonic()
        run.start_flow(comp)
    else:
        store = COMPONENT_STORE[comp]
        run.stack.kill(comp)
        try:
            if flows:
                # the flows must notice, keep running, and say so in `status`
                wait_until(f"a flow to report {store} down",
                           lambda: any(store in run.down_reported(f) for f in flows),
                           run, timeout=30)
                st = run.status(cli=status_cli)
                seen = {c["name"].removeprefix("flow-"): (c["state"], c["error"])
                        for c in st["components"] if c["name"].startswith("flow-")}
                retrying = {f: e for f, (state, e) in seen.items()
                            if state == "retrying" and store in e}
                out.status_seen = "; ".join(
                    f"{f}: {e}" for f, e in sorted(retrying.items())
                ) or str({f: s for f, s in seen.items() if f in flows})
                out.status_ok = bool(retrying) and not run.dead()
            time.sleep(max(0.0, down_seconds - (time.monotonic() - t_kill)))
        finally:
            written = {f: run.events_out(f) for f in flows}
            t_restart = time.monotonic()
            run.stack.restart()

    def recovered() -> bool:
        """Healthy again, and every affected flow writes again (or has nothing left to)."""
        if comp not in run.flows and not run.stack.healthy(comp):
            return False
        for f in flows:
            if run.metrics(f) is None or run.down_reported(f):
                return False
            if run.events_out(f) <= written.get(f, 0.0) and run.lag(f) != 0:
                return False
        return True

    wait_until(f"{comp} to recover", recovered, run, timeout=300)
    out.down_for = t_restart - t_kill
    out.recovered_after = time.monotonic() - t_restart
    return out


# --- the benchmark -----------------------------------------------------------------------

COMPONENTS = (*FLOW_NAMES, "clickhouse", "valkey", "postgres")


def inject_in_turn(
    run: Run, feeder: Feeder, faults: list[tuple[str, float]], down_seconds: float,
    status_cli: bool = True,
) -> list[Outcome]:
    """Inject each `(component, share)` fault once that share of the input has been sent.

    With several faults, the input after the next fault's share is held back until the fault
    before it has recovered, so every fault lands while input flows.
    """
    shares = [share for _, share in faults] + [1.0, 1.0]
    feeder.limit = shares[1]
    outcomes: list[Outcome] = []
    for k, (comp, share) in enumerate(faults):
        out = Outcome(comp)
        try:
            wait_until(f"{share:.0%} of the input sent", lambda s=share: feeder.share() >= s,
                       run, timeout=600)
            sent = feeder.share()
            out = inject(run, comp, 0.0 if comp in run.flows else down_seconds,
                         status_cli=status_cli)
            out.killed_at = f"{sent:.0%} of the input sent; " + out.killed_at
        except (AssertionError, TimeoutError, RuntimeError) as exc:
            out.error = str(exc).splitlines()[0]
            print(str(exc), file=sys.stderr)
        finally:
            feeder.limit = shares[k + 2]
        outcomes.append(out)
    return outcomes


def one_run(
    stack: Stack, records: list[dict], rate: float, tag: str, redis_db: int,
    faults: list[tuple[str, float]], want: dict[str, Any] | None, down_seconds: float,
    settle_seconds: float, flows: tuple[str, ...] = FLOW_NAMES,
) -> tuple[dict[str, Any], list[Outcome], float]:
    """Feed the input at `rate` to fresh flows with `faults` injected; the final serving layer."""
    run = Run(stack, flows, tag, redis_db=redis_db)
    started = time.monotonic()
    try:
        run.start()
        feeder = Feeder(stack.settings, records, rate)
        feeder.start()
        outcomes = inject_in_turn(run, feeder, faults, down_seconds)
        feeder.join()
        if feeder.error:
            raise RuntimeError(f"feeding the input failed: {feeder.error}")
        got, _ = settle(run, want, settle_seconds)
        skipped = {f: v for f in run.flows for k, v in (run.metrics(f) or {}).items()
                   if k.startswith("flowforge_sink_skipped_already_stored_total") and v}
        if skipped:
            print(f"   rows skipped as already stored: {skipped}", flush=True)
        return got, outcomes, time.monotonic() - started
    finally:
        run.stop()
        run.drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=int, default=10,
                        help="event-time minutes of the backfill (default rates: ~3,600/min)")
    parser.add_argument("--start", default="2026-11-24T14:30:00+00:00")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rate", type=float, default=3000.0,
                        help="records per second the backfill is sent at")
    parser.add_argument("--only", nargs="*", default=[], choices=COMPONENTS,
                        help="kill only these components")
    parser.add_argument("--at", type=float, default=0.4,
                        help="kill once this share of the input has been sent")
    parser.add_argument("--down-seconds", type=float, default=6.0,
                        help="how long a killed store stays down before its restart")
    parser.add_argument("--settle-seconds", type=float, default=60.0)
    add_json_option(parser)
    args = parser.parse_args()
    from datetime import datetime, timedelta

    start = datetime.fromisoformat(args.start)
    end = start + timedelta(minutes=args.minutes)
    targets = args.only or list(COMPONENTS)
    t0 = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="flowforge-faults-input-"))
    gen = start_generator(start.isoformat(), end.isoformat(), args.seed, workdir / "input.jsonl")
    try:
        stack = Stack.start()
    except BaseException:
        gen.kill()
        raise
    outcomes: list[Outcome] = []
    try:
        records = generated(gen, workdir / "input.jsonl")
        shutil.rmtree(workdir, ignore_errors=True)
        print(f"input: generator seed {args.seed}, {start:%Y-%m-%d %H:%M} + {args.minutes} min "
              f"of event time: {len(records):,} records, sent at {args.rate:,.0f}/s "
              f"({time.monotonic() - t0:.0f} s to start the stack and generate it)", flush=True)
        want, _, base_seconds = one_run(
            stack, records, args.rate, f"base_{uuid.uuid4().hex[:6]}", 1, [], None,
            args.down_seconds, args.settle_seconds)
        print(f"uninterrupted run: {base_seconds:.1f} s; "
              + ", ".join(f"{k.removeprefix('clickhouse ')} {v['rows']:,}"
                          for k, v in want.items() if k.startswith("clickhouse "))
              + f", {len(want['redis latest keys'])} redis keys, "
              + ", ".join(f"{t.name} {len(want[f'postgres {t.name}'])}" for t in LIVE_TABLES),
              flush=True)
        for i, comp in enumerate(targets):
            stack.reset_broker()
            try:
                got, outs, _ = one_run(
                    stack, records, args.rate, f"{comp}_{uuid.uuid4().hex[:6]}", 2 + i % 14,
                    [(comp, args.at)], want, args.down_seconds, args.settle_seconds)
                out = outs[0]
                out.differences = differences(got, want)
            except (AssertionError, TimeoutError, RuntimeError) as exc:
                out = Outcome(comp, error=str(exc).splitlines()[0])
                print(str(exc), file=sys.stderr)
            outcomes.append(out)
            report(out)
    finally:
        stack.stop()
    total = time.monotonic() - t0
    print(f"\n{'component':<12} {'recovered after':>16} {'down':>6}  equal to uninterrupted")
    for o in outcomes:
        print(f"{o.component:<12} {o.recovered_after:>14.1f} s {o.down_for:>5.1f}s  "
              f"{'yes' if o.equal else 'NO'}")
    print(f"total {total:.0f} s")
    figures = [Figure("uninterrupted run (all six flows, the whole backfill)",
                      round(base_seconds, 1), "s")]
    for o in outcomes:
        figures.append(Figure(f"time to recover {o.component}", round(o.recovered_after, 1), "s"))
        figures.append(Figure(f"nothing lost or doubled {o.component}",
                              "yes" if o.equal else "no", target="yes", met=o.equal))
        if o.status_ok is not None:
            figures.append(Figure(f"status shows flows retrying while {o.component} is down",
                                  "yes" if o.status_ok else "no", target="yes", met=o.status_ok))
    emit(args.json, "faults", figures, extra={
        "input_records": len(records), "minutes": args.minutes, "seed": args.seed,
        "rate": args.rate, "outcomes": [o.__dict__ for o in outcomes],
    })
    if not all(o.equal for o in outcomes):
        sys.exit(1)


def report(o: Outcome) -> None:
    print(f"\n== {o.component}: killed when {o.killed_at}", flush=True)
    if o.down_for > 0.05:
        print(f"   down {o.down_for:.1f} s, then restarted")
    if o.status_seen:
        print(f"   status while down: {o.status_seen} ({'ok' if o.status_ok else 'NOT ok'})")
    print(f"   recovered after {o.recovered_after:.1f} s")
    if o.error:
        print(f"   FAILED: {o.error}")
    print(f"   equal to the uninterrupted run: {'yes' if o.equal else 'NO'}", flush=True)
    for d in o.differences:
        print(f"     {d}")


if __name__ == "__main__":
    main()

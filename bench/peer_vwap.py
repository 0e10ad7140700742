"""Peer comparison: the same 5-minute VWAP workload by this project's flow, Quix Streams and a
plain confluent-kafka loop; events/s of each, the ratios, and whether their VWAPs are identical.

Run: .venv/bin/python bench/peer_vwap.py [--trades 500000] [--repeat 1] [--only project plain]
     [--json FILE];  .venv/bin/python bench/peer_vwap.py --setup-only  (creates .venv-peers)

Workload: the project's generator (seed 42, 207 trades/s over the whole universe, from
2026-11-25 14:30 UTC) writes its trades-topic records (trades and the quiet symbols'
heartbeats, keyed by symbol) into a 2-partition `trades` topic of a private in-memory tansu
broker on a free port, once; every contender then reads that same topic from the beginning.
The records cover `--trades` / 207 seconds plus 15 s, so every 5-minute window but the last,
still open one is closed by the data itself.

Contenders, each its own process started with all input already on the topic, each writing
one JSON line per closed window (symbol, window start, vwap, volume, notional, trade count):

* **project**: `flowforge_pipeline.flows.vwap.build` run by `python -m bytewax.run` with
  recovery (as `up` runs it), Kafka source, validation, dead letters to the broker; its rows
  go to the file instead of ClickHouse and its latest values are dropped instead of sent to
  Redis (bench/peers/project_vwap.py).
* **quix**: Quix Streams 3.28.1 `tumbling_window(5 min, grace 500 ms).reduce().final()`
  (bench/peers/quix_vwap.py), in its own venv `.venv-peers` (it needs confluent-kafka < 2.13;
  created here from bench/peers/requirements.txt when missing).
* **plain**: a hand-written confluent-kafka consume loop with `json.loads` and a dict of open
  windows (bench/peers/plain_vwap.py), in the project venv.

A contender's time runs from its process start to the moment its output holds every window the
workload closes (computed here from the records); events/s = records on the topic / that time.
The outputs are then compared: same (symbol, window) set, VWAP, volume and notional equal as
stored (Float64, every digit), trade counts equal.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil
from benchlib import Figure, add_json_option, emit

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "bench" / "peers"
PEERS_VENV = ROOT / ".venv-peers"
PEERS_REQUIREMENTS = PEERS / "requirements.txt"
START = datetime(2026, 11, 25, 14, 30, tzinfo=UTC)
TRADES_PER_SECOND = 207.0
WINDOW_US = 300 * 1_000_000
LATENESS_US = 500_000
CONTENDERS = ("project", "quix", "plain")
TARGETS = {"quix": 5.0, "plain": 0.8}  # project events/s at least this multiple of each


def peers_python() -> Path:
    """The Python of `.venv-peers`, creating the venv from the pinned requirements if missing."""
    python = PEERS_VENV / "bin" / "python"
    stamp = PEERS_VENV / ".requirements"
    wanted = PEERS_REQUIREMENTS.read_text()
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    print(f"creating {PEERS_VENV.relative_to(ROOT)} from {PEERS_REQUIREMENTS.relative_to(ROOT)}")
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--clear", str(PEERS_VENV)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "-r", str(PEERS_REQUIREMENTS)],
        check=True,
    )
    stamp.write_text(wanted)
    return python


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Workload:
    records: int
    trades: int
    windows: int  # closed windows with at least one trade


def start_broker(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    from confluent_kafka.admin import AdminClient

    from flowforge_pipeline.standins.broker import argv as broker_argv

    port = free_port()
    log = (workdir / "broker.log").open("wb")
    proc = subprocess.Popen(broker_argv(port), stdout=log, stderr=subprocess.STDOUT)
    bootstrap = f"127.0.0.1:{port}"
    for _ in range(200):
        try:
            AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=1)
            return proc, bootstrap
        except Exception:
            time.sleep(0.1)
    raise RuntimeError(f"broker on {bootstrap} did not answer")


def produce(bootstrap: str, n_trades: int) -> Workload:
    """Generate the workload once with the project's generator onto a 2-partition topic."""
    from flowforge_pipeline.contract.catalog import DLQ_TOPIC
    from flowforge_pipeline.generator.instruments import load_instruments
    from flowforge_pipeline.generator.producer import KafkaSink
    from flowforge_pipeline.generator.tape import Tape, to_us
    from flowforge_pipeline.settings import Settings
    from flowforge_pipeline.stores.kafka import ensure_topics

    settings = Settings(KAFKA_BOOTSTRAP_SERVERS=bootstrap, KAFKA_TOPIC_PARTITIONS=2)
    ensure_topics(settings, (DLQ_TOPIC,), 1)
    sink = KafkaSink(settings, 2)
    tape = Tape(load_instruments(), 42, TRADES_PER_SECOND, 1.0)
    start = to_us(START)
    end = start + int((n_trades / TRADES_PER_SECOND + 15) * 1_000_000)
    records = trades = 0
    # per symbol: newest event time; trade windows seen
    newest: dict[str, int] = {}
    windows: dict[str, set[int]] = {}
    for times, batch in tape.records(start, end):
        picked = [(r, int(t)) for r, t in zip(batch, times.tolist(), strict=True)
                  if r[0] == "trades"]
        for (_, key, _, value), t in picked:
            newest[key] = max(newest.get(key, 0), t)
            if '"type":"trade"' in value:
                trades += 1
                windows.setdefault(key, set()).add(t // WINDOW_US)
        records += len(picked)
        sink.write([r for r, _ in picked])
    sink.close()
    closed = sum(
        1 for key, ws in windows.items() for w in ws
        if (w + 1) * WINDOW_US <= newest[key] - LATENESS_US
    )
    return Workload(records, trades, closed)


def launch(
    name: str, bootstrap: str, out: Path, workdir: Path, project_src: Path | None = None
) -> subprocess.Popen[bytes]:
    log = (workdir / f"{name}.log").open("ab")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if name == "project":
        recovery = workdir / f"recovery-{out.stem}"
        recovery.mkdir()
        from bytewax.recovery import init_db_dir

        init_db_dir(recovery, 1)  # type: ignore[no-untyped-call]
        env.update({
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "PEER_VWAP_TOPIC": "trades",
            "PEER_VWAP_OUTPUT": str(out),
            "PYTHONPATH": str(PEERS) + (f":{project_src}" if project_src else ""),
        })
        argv = [sys.executable, "-m", "bytewax.run", "project_vwap:flow",
                "-r", str(recovery), "-s", "5", "-b", "0"]
    elif name == "quix":
        state = workdir / f"quix-state-{out.stem}"
        argv = [str(peers_python()), str(PEERS / "quix_vwap.py"), bootstrap, "trades",
                str(out), str(state)]
    else:
        argv = [sys.executable, str(PEERS / "plain_vwap.py"), bootstrap, "trades", str(out)]
    out.touch()
    return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                            cwd=workdir, start_new_session=True)


@dataclass
class Run:
    seconds: float | None  # process start to every closed window written; None: not all
    cpu_seconds: float  # CPU the contender's process used until then
    output: Path


def cpu_of(proc: psutil.Process) -> float:
    try:
        t = proc.cpu_times()
        return t.user + t.system
    except psutil.Error:
        return 0.0


def run_one(
    name: str, bootstrap: str, workload: Workload, workdir: Path, tag: str, timeout: float,
    project_src: Path | None = None,
) -> Run:
    """Start a contender, wait until its output holds every closed window, stop it."""
    out = workdir / f"{name}-{tag}.jsonl"
    t0 = time.monotonic()
    proc = launch(name, bootstrap, out, workdir, project_src)
    ps = psutil.Process(proc.pid)
    done_at: float | None = None
    cpu = 0.0
    try:
        while time.monotonic() - t0 < timeout:
            if proc.poll() is not None:
                print(f"  {name} exited with {proc.returncode}; see {workdir / (name + '.log')}")
                break
            with out.open("rb") as fh:
                lines = fh.read().count(b"\n")
            if lines >= workload.windows:
                done_at = time.monotonic()
                cpu = cpu_of(ps)
                break
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return Run(done_at - t0 if done_at is not None else None, cpu, out)


def load(path: Path) -> dict[tuple[str, int], tuple[float, float, float, int]]:
    rows: dict[tuple[str, int], tuple[float, float, float, int]] = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        rows[(r["symbol"], int(r["window_start"]))] = (
            r["vwap"], r["volume"], r["notional"], int(r["trade_count"])
        )
    return rows


def compare(outputs: dict[str, Path]) -> tuple[bool, list[str]]:
    """Identical VWAP rows across contenders; the differences found, a few of each kind."""
    loaded = {name: load(path) for name, path in outputs.items()}
    names = list(loaded)
    notes: list[str] = []
    base = loaded[names[0]]
    for other in names[1:]:
        rows = loaded[other]
        if set(rows) != set(base):
            notes.append(
                f"{other} vs {names[0]}: windows differ "
                f"({len(set(rows) - set(base))} extra, {len(set(base) - set(rows))} missing)"
            )
        diff = [k for k in set(rows) & set(base) if rows[k] != base[k]]
        if diff:
            k = sorted(diff)[0]
            notes.append(
                f"{other} vs {names[0]}: {len(diff)} windows differ, e.g. {k}: "
                f"{rows[k]} != {base[k]}"
            )
    return not notes, notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trades", type=int, default=500_000)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each contender")
    parser.add_argument("--only", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    parser.add_argument("--timeout", type=float, default=300.0, help="per contender run, s")
    parser.add_argument(
        "--baseline", type=Path, default=None, metavar="DIR",
        help="also run the project contender with the package in DIR/src (e.g. an older "
        "commit: git archive <commit> src | tar -x -C DIR), as contender 'baseline'",
    )
    parser.add_argument("--setup-only", action="store_true", help="create .venv-peers, exit")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    add_json_option(parser)
    args = parser.parse_args()
    if args.setup_only or "quix" in args.only:
        print(f"peers venv: {peers_python()}")
    if args.setup_only:
        return
    workdir = Path(tempfile.mkdtemp(prefix="ff-peer-vwap-"))
    broker, bootstrap = start_broker(workdir)
    try:
        t = time.monotonic()
        workload = produce(bootstrap, args.trades)
        print(
            f"workload: {workload.records} records ({workload.trades} trades) on a 2-partition "
            f"topic, {workload.windows} closed windows; produced in {time.monotonic() - t:.1f} s"
        )
        seconds: dict[str, list[float]] = {n: [] for n in args.only}
        cpu: dict[str, list[float]] = {n: [] for n in args.only}
        outputs: dict[str, Path] = {}
        failed: list[str] = []
        names = list(args.only)
        if args.baseline is not None:
            names.insert(0, "baseline")
            seconds["baseline"], cpu["baseline"] = [], []
        for i in range(args.repeat):
            for name in names:
                src = (args.baseline / "src").resolve() if name == "baseline" else None
                run = run_one("project" if src else name, bootstrap, workload, workdir,
                              f"{name}-{i}", args.timeout, src)
                if run.seconds is None:
                    failed.append(name)
                    print(f"  {name}: did not emit all {workload.windows} windows")
                    continue
                seconds[name].append(run.seconds)
                cpu[name].append(run.cpu_seconds)
                outputs.setdefault(name, run.output)
                print(f"  {name:8s} run {i + 1}: {run.seconds:6.2f} s  "
                      f"{workload.records / run.seconds:10,.0f} events/s  "
                      f"(CPU {run.cpu_seconds:.2f} s, load {os.getloadavg()[0]:.1f})")
        identical, notes = compare(outputs) if len(outputs) > 1 else (False, ["one output"])
        for note in notes:
            print(f"  DIFFERENCE {note}")
        best = {n: min(s) for n, s in seconds.items() if s}
        rate = {n: workload.records / s for n, s in best.items()}
        figures: list[Figure] = []
        print(f"events/s (best of {args.repeat}; median in brackets):")
        for name in names:
            if name in rate:
                med = workload.records / statistics.median(seconds[name])
                print(f"  {name:8s} {rate[name]:10,.0f}  ({med:,.0f})  {best[name]:.2f} s")
                figures.append(Figure(f"{name} events/s", round(rate[name]), "events/s"))
                figures.append(Figure(f"{name} seconds", round(best[name], 2), "s"))
                figures.append(Figure(f"{name} CPU seconds", round(min(cpu[name]), 2), "s"))
        for peer, target in TARGETS.items():
            if "project" in rate and peer in rate:
                ratio = rate["project"] / rate[peer]
                met = ratio >= target
                print(f"  project / {peer}: {ratio:.2f}x (target >= {target}x: "
                      f"{'met' if met else 'NOT met'})")
                figures.append(Figure(f"project / {peer}", round(ratio, 2), "x",
                                      f">= {target}", met))
        if "baseline" in rate and "project" in rate:
            speedup = rate["project"] / rate["baseline"]
            print(f"  project / baseline: {speedup:.2f}x")
            figures.append(Figure("project / baseline", round(speedup, 2), "x"))
        print(f"identical VWAPs across {', '.join(outputs)}: {identical}")
        figures.append(Figure("identical VWAPs", str(identical).lower(), "", "true", identical))
        emit(args.json, "peer_vwap", figures, extra={
            "records": workload.records, "trades": workload.trades,
            "windows": workload.windows, "repeat": args.repeat,
            "seconds": seconds, "cpu_seconds": cpu, "failed": failed, "differences": notes,
        })
    finally:
        broker.kill()
        broker.wait()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir}")


if __name__ == "__main__":
    main()

"""`make bench`: run every benchmark with `--json`, then write one report with charts.

Each benchmark of the plan below runs as its own process with the arguments given here
(chosen so the whole run fits in 20 minutes on a 2-core machine; each script's own defaults
measure longer) and `--json bench/results/<name>.json`. A script that fails or overruns its
time limit is reported as failed and the run carries on; the exit code is 1 if any failed.
Then `bench/results/REPORT.md` is written from every result file there, with PNG charts of
each series (lag over time, memory over time) and of the peer comparison, and with the latest
results of the benchmarks measured on their own (`make soak`, `bench/faults.py`), each saying
when it was measured.

Only one benchmark runs at a time on the machine: each script holds the shared lock
/tmp/flowforge-bench.lock while it runs (`--no-lock` to skip; `--lock-wait S` runs a script
without it after waiting S seconds, and the report says so).

Run: .venv/bin/python bench/report.py [--only NAME ...] [--all] [--report-only] [--list]
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
LOCK = Path("/tmp/flowforge-bench.lock")
BUDGET_SECONDS = 20 * 60


@dataclass(frozen=True)
class Bench:
    """One benchmark script of the plan and the arguments `make bench` gives it."""

    name: str
    args: tuple[str, ...]
    limit: float  # seconds before it is stopped and reported as failed
    what: str
    default: bool = True  # run by `make bench`; others with --only NAME or --all


PLAN: tuple[Bench, ...] = (
    Bench("generator_throughput",
          ("--realtime-seconds", "30", "--workers", "0"), 240,
          "generator backfill throughput and real-time rate accuracy"),
    Bench("clickhouse_http", (), 240,
          "embedded ClickHouse over HTTP versus in-process chdb"),
    Bench("flows_ceiling", ("--rates", "5000", "10000", "20000", "--seconds", "30"), 420,
          "end-to-end sustained ceiling of all six flows together"),
    Bench("freshness", ("--seconds", "310", "--warmup", "20"), 480,
          "freshness of every serving item at the default rates"),
    Bench("peer_vwap", ("--trades", "500000"), 420,
          "5-minute VWAP: this project's flow vs Quix Streams vs a plain confluent-kafka loop"),
    Bench("dbt_build", ("--no-incremental",), 300,
          "dbt build of one backfilled day"),
    # one whole trading day (5.3M records); --max-minutes bounds the drain so an overrun is
    # reported with each flow's progress instead of stopping the whole run
    Bench("backfill_day", ("--hours", "24", "--max-minutes", "9"), 720,
          "backfill of one trading day end to end: generator -> six flows -> ClickHouse -> "
          "dbt build"),
    Bench("flows_latency", ("--live-seconds", "0", "--backlog", "300000"), 420,
          "catch-up throughput of the flows over a backlog", default=False),
    Bench("live_views_latency", ("--seconds", "45"), 240,
          "event -> live-table row visible (also in freshness)", default=False),
    Bench("faults", (), 1500,
          "fault injection (its own run: bench/faults.py)", default=False),
    Bench("soak", (), 2400, "30-minute soak (its own run: make soak)", default=False),
)
#: Measured on their own (too long for `make bench`); the report shows their latest result.
SEPARATE = ("soak", "faults")


@dataclass
class Outcome:
    """How one script's run went."""

    bench: Bench
    status: str  # "ok", "failed (exit N)", "timed out", "no result file"
    seconds: float
    waited: float
    tail: list[str]
    fresh: bool = False  # the result file is from this run
    lock: str = ""  # whether it ran alone (held the shared lock)


def command_of(b: Bench) -> str:
    return " ".join([".venv/bin/python", f"bench/{b.name}.py", *map(shlex.quote, b.args)])


def take_lock(fh: Any, wait: float | None) -> bool:
    """Hold the shared lock; give up after `wait` seconds (None: wait as long as it takes)."""
    if wait is None:
        fcntl.flock(fh, fcntl.LOCK_EX)
        return True
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)


def run_one(b: Bench, lock: bool, lock_wait: float | None = None) -> Outcome:
    """Run one script with `--json`; failures become an Outcome, never an exception."""
    out = RESULTS / f"{b.name}.json"
    log = RESULTS / "logs" / f"{b.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    stale = out.with_suffix(".previous.json")
    if out.exists():
        out.replace(stale)  # a failed run must not leave an older result looking current
    argv = [sys.executable, str(BENCH / f"{b.name}.py"), *b.args, "--json", str(out)]
    waited = 0.0
    fh = LOCK.open("a") if lock else None
    try:
        locked = False
        if fh is not None:
            t = time.monotonic()
            locked = take_lock(fh, lock_wait)
            waited = time.monotonic() - t
        how = ("" if fh is None else f"lock held, waited {waited:.0f}s" if locked
               else f"WITHOUT the lock (another benchmark held it for {waited:.0f}s)")
        print(f"== {b.name}: {command_of(b)} ({how or 'no lock'})", flush=True)
        t0 = time.monotonic()
        with log.open("w") as lf:
            proc = subprocess.Popen(argv, cwd=ROOT, stdout=lf, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                code = proc.wait(b.limit)
                status = "ok" if code == 0 else f"failed (exit {code})"
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGINT)  # its finally blocks stop its private stack
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                status = f"timed out after {b.limit:.0f}s"
        seconds = time.monotonic() - t0
    finally:
        if fh is not None:
            fh.close()
    if status == "ok" and not out.exists():
        status = "no result file (does the script accept --json?)"
    if out.exists():
        stale.unlink(missing_ok=True)
    elif stale.exists():
        stale.replace(out)  # keep the earlier result; the report marks it as earlier
    fresh = out.exists() and out.stat().st_mtime >= time.time() - seconds - 5
    tail = log.read_text(errors="replace").splitlines()[-12:]
    print(f"   {status} in {seconds:.0f}s", flush=True)
    if status != "ok":
        print("   " + "\n   ".join(tail[-6:]), flush=True)
    return Outcome(b, status, seconds, waited, tail, fresh, how or "no lock")


# ---------------------------------------------------------------- report


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
        return doc
    except (OSError, ValueError):
        return None


def utc(stamp: Any) -> str:
    return str(stamp).replace("+00:00", "").replace("T", " ") + " UTC" if stamp else "?"


def fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.2f}".rstrip("0").rstrip(".") if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def machine_line(m: dict[str, Any] | None) -> str:
    if not m:
        return "unknown machine"
    load_avg = m.get("load_average_at_start")
    return (f"{m.get('cpu')}, {m.get('cores')} cores, {m.get('memory_gib')} GiB, {m.get('os')}, "
            f"Python {m.get('python')}" + (f"; load average at start {load_avg}" if load_avg
                                           else ""))


def charts(doc: dict[str, Any]) -> list[Path]:
    """PNG charts of one result: a line chart per series, bars for an events/s comparison."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: list[Path] = []
    name = doc.get("bench", "bench")
    for sname, s in (doc.get("series") or {}).items():
        points = s.get("points") or {}
        if not points:
            continue
        fig, ax = plt.subplots(figsize=(9, 3.6), dpi=80)
        colours = plt.get_cmap("tab20").colors  # type: ignore[attr-defined]
        for i, (label, pts) in enumerate(sorted(points.items())):
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, label=label, linewidth=1.2, color=colours[(2 * i) % 20
                                                                         + (i >= 10)])
        ax.set_xlabel(s.get("x_label", ""))
        ax.set_ylabel(s.get("y_label", ""))
        ax.set_title(f"{name}: {sname}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.tight_layout()
        stem = sname if sname.startswith(name) else f"{name}_{sname}"
        path = RESULTS / f"{stem}.png"
        fig.savefig(path)
        plt.close(fig)
        made.append(path)
    rates = [f for f in doc.get("figures", [])
             if f.get("unit") == "events/s" and str(f.get("name", "")).endswith(" events/s")
             and isinstance(f.get("value"), int | float)]
    if len(rates) >= 2:
        fig, ax = plt.subplots(figsize=(6, 3.2), dpi=80)
        labels = [str(f["name"]).removesuffix(" events/s") for f in rates]
        values = [float(f["value"]) for f in rates]
        bars = ax.bar(labels, values, color=["#2a7ab0", "#999999", "#d08c2a", "#5a9a5a"][
            :len(values)])
        ax.bar_label(bars, labels=[f"{v:,.0f}" for v in values], fontsize=8)
        ax.set_ylabel("events/s")
        ax.set_title(f"{name}: events/s")
        fig.tight_layout()
        path = RESULTS / f"{name}_events_per_s.png"
        fig.savefig(path)
        plt.close(fig)
        made.append(path)
    return made


def section(doc: dict[str, Any], title: str, note: str = "") -> list[str]:
    lines = [f"### {title}", ""]
    if note:
        lines += [note, ""]
    lines += [
        f"Measured {utc(doc.get('started'))}, took {fmt_value(doc.get('seconds'))} s, on "
        f"{machine_line(doc.get('machine'))}.",
        "",
        f"Reproduce: `{doc.get('command', '?')}`",
        "",
        "| figure | value | target | met |",
        "|---|---|---|---|",
    ]
    for f in doc.get("figures", []):
        met = {True: "yes", False: "**no**", None: ""}[f.get("met")]
        value = f"{fmt_value(f.get('value'))} {f.get('unit') or ''}".strip()
        name = str(f.get("name", "")).replace("|", "\\|")
        lines.append(f"| {name} | {value} | {f.get('target') or ''} | {met} |")
    lines.append("")
    for path in charts(doc):
        lines += [f"![{path.stem}]({path.name})", ""]
    return lines


def write_report(outcomes: list[Outcome], wall: float | None, partial: bool = False) -> Path:
    now = datetime.now(UTC).isoformat(timespec="seconds")
    by_name = {o.bench.name: o for o in outcomes}
    lines = ["# Benchmark report", "",
             f"Written {utc(now)} by `.venv/bin/python bench/report.py` (`make bench`)."]
    if wall is not None and partial:
        ran = ", ".join(o.bench.name for o in outcomes)
        lines.append(f"This run ({ran} only, `--only`) took {wall / 60:.1f} min; the other "
                     "figures are from the result files of earlier runs, each with its date.")
    elif wall is not None:
        budget = "within" if wall < BUDGET_SECONDS else "**over**"
        lines.append(f"This run took {wall / 60:.1f} min ({budget} the 20-minute budget).")
    lines += ["", "Each figure below names the machine it ran on and the command that reproduces "
              "it. The machine is shared and noisy: single wall-clock figures move between runs; "
              "same-run ratios are steadier.", ""]
    lines += ["## Runs", "", "| benchmark | what | this run | seconds | command |",
              "|---|---|---|---|---|"]
    for b in PLAN:
        if b.name in SEPARATE:
            continue
        o = by_name.get(b.name)
        doc = load(b.name)
        if o is not None:
            state = (o.status if o.status == "ok" else f"**{o.status}**") + f" ({o.lock})"
            secs = f"{o.seconds:.0f}"
        elif doc is not None:
            state, secs = f"not run (result of {utc(doc.get('started'))})", ""
        else:
            state, secs = "not run", ""
        lines.append(f"| {b.name} | {b.what} | {state} | {secs} | `{command_of(b)}` |")
    lines.append("")
    failed = [o for o in outcomes if o.status != "ok"]
    if failed:
        lines += ["## Failures", ""]
        for o in failed:
            lines += [f"**{o.bench.name}**: {o.status}. Last lines of "
                      f"`bench/results/logs/{o.bench.name}.log`:", "", "```",
                      *o.tail, "```", ""]
    lines += ["## Figures", ""]
    for b in PLAN:
        if b.name in SEPARATE:
            continue
        doc = load(b.name)
        if doc is None:
            continue
        o = by_name.get(b.name)
        note = ("" if o is not None and o.fresh else
                "From an earlier run: not run this time." if o is None else
                f"From an earlier run: this run {o.status}.")
        failure = (doc.get("extra") or {}).get("failure")
        if failure:
            note = (note + " " if note else "") + (
                f"This run did not complete ({failure}): the figures are what it measured "
                "up to the stop; a PROJECTION is labelled as one.")
        lines += section(doc, f"{b.name}: {b.what}", note)
    lines += ["## Measured on their own", ""]
    for name in SEPARATE:
        doc = load(name)
        b = next(x for x in PLAN if x.name == name)
        if doc is None:
            lines += [f"### {name}", "", f"No result yet: run `{command_of(b)} --json "
                      f"bench/results/{name}.json`" + (" (`make soak`)." if name == "soak"
                                                      else "."), ""]
            continue
        extra = doc.get("extra") or {}
        when = extra.get("measured_at") or doc.get("started")
        note = f"Latest result, measured {utc(when)} (not part of this `make bench` run)."
        if name == "soak":
            note += (f" Rates {extra.get('rates_per_second')} records/s, warm-up "
                     f"{extra.get('warmup_minutes')} min, {extra.get('minutes_sampled')} min "
                     f"sampled; Airflow {'on' if extra.get('airflow') else 'off'}. An error "
                     f"line is a log line matching `{extra.get('error_pattern')}`.")
            if extra.get("failure"):
                note += f" The soak stopped early: {extra['failure']}."
        lines += section(doc, f"{name}: {b.what}", note)
    path = RESULTS / "REPORT.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> int:
    names = [b.name for b in PLAN]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=names, metavar="NAME",
                        help=f"run only these ({', '.join(names)})")
    parser.add_argument("--all", action="store_true",
                        help="also run the benchmarks `make bench` leaves out (not soak/faults)")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing; rewrite REPORT.md from the result files")
    parser.add_argument("--no-lock", action="store_true", help="do not take the shared lock")
    parser.add_argument("--lock-wait", type=float, default=None, metavar="S",
                        help="run a script without the lock after waiting S seconds for it")
    parser.add_argument("--list", action="store_true", help="print the plan and exit")
    args = parser.parse_args()
    if args.list:
        for b in PLAN:
            flag = "" if b.default else "  (not in make bench)"
            print(f"{b.name:22s} {command_of(b)}{flag}")
        return 0
    if args.only:
        plan = [b for b in PLAN if b.name in args.only]
    elif args.all:
        plan = [b for b in PLAN if b.default or b.name not in SEPARATE]
    else:
        plan = [b for b in PLAN if b.default]
    if args.report_only:
        plan = []
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    outcomes = [run_one(b, lock=not args.no_lock, lock_wait=args.lock_wait) for b in plan]
    wall = time.monotonic() - started if plan else None
    path = write_report(outcomes, wall, partial=bool(args.only))
    failed = [o.bench.name for o in outcomes if o.status != "ok"]
    if wall is not None:
        print(f"bench: {len(plan) - len(failed)} of {len(plan)} ok in {wall / 60:.1f} min"
              + (f"; failed: {', '.join(failed)}" if failed else ""))
    print(f"report: {path.relative_to(ROOT)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

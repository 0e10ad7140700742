"""`flowforge-pipeline generate`: run the market-data generator from the command line.

`generate_argv` builds the same command line from Python values, so `up` passes its options
through without knowing how they are spelled.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

import click

from flowforge_pipeline.generator import parallel
from flowforge_pipeline.generator.anomalies import (
    GRADES,
    KINDS,
    MILDER_KINDS,
    AnomalyOptions,
    kinds_for,
)
from flowforge_pipeline.generator.instruments import InstrumentFileError, load_instruments
from flowforge_pipeline.generator.pacing import Counts, pump
from flowforge_pipeline.generator.producer import DeliveryError, open_sink
from flowforge_pipeline.generator.tape import HEARTBEAT_CHOICES, Tape, to_us
from flowforge_pipeline.settings import get_settings
from flowforge_pipeline.stores.kafka import BrokerUnavailable


def parse_time(value: str, name: str) -> datetime:
    """An ISO 8601 date or timestamp; naive values are taken as UTC."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.ClickException(
            f"invalid {name}: {value!r} is not an ISO 8601 date or time"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


class _OneLineCommand(click.Command):
    """Report bad options as one line naming the option, without the usage block."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            raise click.ClickException(exc.format_message()) from None


@click.command(cls=_OneLineCommand)
@click.option("--seed", type=int, default=None, help="Random seed [GENERATOR_SEED].")
@click.option(
    "--trades-per-second",
    type=float,
    default=None,
    help="Trades per second across the universe [GENERATOR_TRADES_PER_SECOND].",
)
@click.option(
    "--quotes-per-second",
    type=float,
    default=None,
    help="Quotes per second across the universe [GENERATOR_QUOTES_PER_SECOND].",
)
@click.option(
    "--speed",
    type=float,
    default=1.0,
    show_default=True,
    help="Event time runs this many times faster than the wall clock.",
)
@click.option(
    "--start",
    "start_text",
    default=None,
    help="Event time of the first record (ISO 8601 UTC); default: now.",
)
@click.option(
    "--duration",
    type=float,
    default=None,
    help="Stop after this many seconds of event time; default: run until stopped.",
)
@click.option(
    "--backfill",
    nargs=2,
    default=None,
    metavar="START END",
    help="Emit event times [START, END) as fast as possible, then exit.",
)
@click.option(
    "--heartbeat-seconds",
    type=click.Choice([str(c) for c in HEARTBEAT_CHOICES]),
    default="10",
    show_default=True,
    help="Event-time interval of heartbeats for instruments without trades.",
)
@click.option(
    "--anomalies/--no-anomalies",
    default=False,
    show_default=True,
    help="Inject labeled anomalies (labels go to the ground_truth topic only).",
)
@click.option(
    "--anomaly-rate",
    type=float,
    default=2.0,
    show_default=True,
    help="Expected anomalies per hour of event time across the universe.",
)
@click.option(
    "--anomaly-severity",
    type=click.Choice([*GRADES, "mixed", "milder"]),
    default="mixed",
    show_default=True,
    help="Severity of injected anomalies: low, medium, high (the severe grade; 'mixed' draws "
    "among them) or mild, moderate (below it; 'milder' draws among them).",
)
@click.option(
    "--anomaly-types",
    default=None,
    help="Comma-separated anomaly types to inject [default: every type the severity has: "
    f"{','.join(KINDS)}; below the severe grade {','.join(MILDER_KINDS)}].",
)
@click.option(
    "--output",
    default=None,
    metavar="PATH",
    help="Write JSON lines to PATH ('-' for stdout) instead of Kafka.",
)
@click.option(
    "--partitions",
    type=click.IntRange(1, 1024),
    default=None,
    help="Partitions of topics the generator creates [KAFKA_TOPIC_PARTITIONS].",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 1_000_000),
    default=1000,
    show_default=True,
    help="Records handed to the sink at a time.",
)
@click.option(
    "--workers",
    type=click.IntRange(0, 64),
    default=0,
    show_default=True,
    help="With --backfill: processes taking turns to compute and send blocks of minutes "
    "(0 or 1: this process alone).",
)
@click.option(
    "--instruments",
    "instruments_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Instrument reference CSV; default: the packaged instruments.csv.",
)
def generate(**opts: Any) -> None:
    """Generate trades, quotes and heartbeats (real time, accelerated or backfill)."""
    settings = get_settings()
    config = _resolve(
        opts,
        settings.generator_seed,
        settings.generator_trades_per_second,
        settings.generator_quotes_per_second,
    )
    counts = Counts()
    stop = threading.Event()

    def _terminate(_sig: int, _frame: FrameType | None) -> None:
        # Only ask: the pump stops between writes, so the count matches what was sent.
        stop.set()

    signal.signal(signal.SIGTERM, _terminate)
    try:
        sink = open_sink(opts["output"], settings, opts["partitions"] or None)
    except BrokerUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    stopped = False
    signal.signal(signal.SIGINT, _terminate)
    try:
        if config["speed"] is None and opts["workers"] > 1:
            parallel.backfill(
                config["tape"],
                config["start_us"],
                config["end_us"],
                partial(open_sink, opts["output"], settings, opts["partitions"], append=True),
                opts["workers"],
                opts["batch_size"],
                counts,
                stop,
            )
        else:
            pump(
                config["tape"].batches(config["start_us"], config["end_us"]),
                sink,
                config["start_us"],
                config["speed"],
                opts["batch_size"],
                counts,
                stop=stop,
            )
        stopped = stop.is_set()
    except KeyboardInterrupt:  # Ctrl-C before the handler was installed
        stopped = True
    except parallel.WorkerError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        try:
            sink.close()
        except DeliveryError as exc:
            raise click.ClickException(str(exc)) from None
    verb = "stopped" if stopped else "done"
    click.echo(f"generate {verb}: sent {counts.summary()}", err=True)


def _resolve(opts: dict[str, Any], seed: int, tps: float, qps: float) -> dict[str, Any]:
    """Validate option combinations and build the record batches."""
    seed = seed if opts["seed"] is None else opts["seed"]
    tps = tps if opts["trades_per_second"] is None else opts["trades_per_second"]
    qps = qps if opts["quotes_per_second"] is None else opts["quotes_per_second"]
    if seed < 0:
        raise click.ClickException("invalid --seed: must be >= 0")
    if tps <= 0:
        raise click.ClickException("invalid --trades-per-second: must be > 0")
    if qps <= 0:
        raise click.ClickException("invalid --quotes-per-second: must be > 0")
    if opts["speed"] <= 0:
        raise click.ClickException("invalid --speed: must be > 0")
    if opts["duration"] is not None and opts["duration"] <= 0:
        raise click.ClickException("invalid --duration: must be > 0")
    anomalies = None
    if opts["anomalies"]:
        severity = opts["anomaly_severity"]
        given = opts["anomaly_types"]
        kinds = (
            kinds_for(severity)
            if given is None
            else tuple(k.strip() for k in given.split(",") if k.strip())
        )
        unknown = sorted(set(kinds) - set(KINDS))
        if unknown or not kinds:
            raise click.ClickException(
                f"invalid --anomaly-types: unknown {','.join(unknown) or '(empty)'}; "
                f"choose from {','.join(KINDS)}"
            )
        if opts["anomaly_rate"] <= 0:
            raise click.ClickException("invalid --anomaly-rate: must be > 0")
        try:
            anomalies = AnomalyOptions(opts["anomaly_rate"], severity, kinds)
        except ValueError as exc:
            raise click.ClickException(f"invalid --anomaly-types: {exc}") from None
    speed: float | None = opts["speed"]
    end_us: int | None
    if opts["backfill"]:
        if opts["start_text"] or opts["duration"]:
            raise click.ClickException(
                "invalid --backfill: cannot be combined with --start or --duration"
            )
        start = parse_time(opts["backfill"][0], "--backfill START")
        end = parse_time(opts["backfill"][1], "--backfill END")
        if end <= start:
            raise click.ClickException("invalid --backfill: END must be after START")
        start_us, end_us, speed = to_us(start), to_us(end), None
    else:
        start = (
            parse_time(opts["start_text"], "--start") if opts["start_text"] else datetime.now(UTC)
        )
        start_us = to_us(start)
        end_us = None if opts["duration"] is None else start_us + int(opts["duration"] * 1e6)
    try:
        instruments = load_instruments(
            Path(opts["instruments_path"]) if opts["instruments_path"] else None
        )
    except (InstrumentFileError, OSError) as exc:
        raise click.ClickException(f"invalid --instruments: {exc}") from None
    tape = Tape(instruments, seed, tps, qps, int(opts["heartbeat_seconds"]), anomalies)
    return {"tape": tape, "start_us": start_us, "end_us": end_us, "speed": speed}


def generate_argv(
    *,
    seed: int | None = None,
    trades_per_second: float | None = None,
    quotes_per_second: float | None = None,
    backfill: tuple[datetime | str, datetime | str] | None = None,
    speed: float | None = None,
    start: datetime | str | None = None,
    duration: float | None = None,
    anomalies: bool = False,
    anomaly_rate: float | None = None,
    anomaly_severity: str | None = None,
    anomaly_types: Sequence[str] | None = None,
    heartbeat_seconds: int | None = None,
    output: str | None = None,
    partitions: int | None = None,
) -> list[str]:
    """Arguments after the program name that run `generate` with these options.

    `up` calls this with its own pass-through options (None means "the default") and runs
    `[sys.executable, "-m", "flowforge_pipeline.cli", *generate_argv(...)]`.
    """

    def stamp(value: datetime | str) -> str:
        if isinstance(value, datetime):
            if value.tzinfo is None:
                raise ValueError("backfill/start datetimes must be timezone-aware")
            return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
        return value

    argv = ["generate"]
    scalar: list[tuple[str, object]] = [
        ("--seed", seed),
        ("--trades-per-second", trades_per_second),
        ("--quotes-per-second", quotes_per_second),
        ("--speed", speed),
        ("--duration", duration),
        ("--heartbeat-seconds", heartbeat_seconds),
        ("--output", output),
        ("--partitions", partitions),
    ]
    if start is not None:
        argv += ["--start", stamp(start)]
    if backfill is not None:
        argv += ["--backfill", stamp(backfill[0]), stamp(backfill[1])]
    argv += [item for name, value in scalar if value is not None for item in (name, str(value))]
    if anomalies:
        argv.append("--anomalies")
        if anomaly_rate is not None:
            argv += ["--anomaly-rate", str(anomaly_rate)]
        if anomaly_severity is not None:
            argv += ["--anomaly-severity", anomaly_severity]
        if anomaly_types is not None:
            argv += ["--anomaly-types", ",".join(anomaly_types)]
    return argv

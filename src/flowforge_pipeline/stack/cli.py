"""`up`, `down`, `status` and `logs` commands."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from flowforge_pipeline.contract.freshness import all_freshness
from flowforge_pipeline.settings import get_settings
from flowforge_pipeline.stack import local, process
from flowforge_pipeline.stack.components import UpOptions
from flowforge_pipeline.stack.registry import component
from flowforge_pipeline.stores.errors import UNAVAILABLE


@click.command("up")
@click.option(
    "--backfill",
    nargs=2,
    metavar="START END",
    default=None,
    help="Generator backfills event times [START, END) (ISO 8601 UTC) instead of real time.",
)
@click.option("--seed", type=int, default=None, help="Generator seed [GENERATOR_SEED].")
@click.option(
    "--trades-per-second",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Generator trade rate [GENERATOR_TRADES_PER_SECOND].",
)
@click.option(
    "--quotes-per-second",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Generator quote rate [GENERATOR_QUOTES_PER_SECOND].",
)
@click.option(
    "--speed",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Generator real-time acceleration ×N.",
)
@click.option("--anomalies", is_flag=True, help="Generator injects labeled anomalies.")
@click.option("--no-generator", is_flag=True, help="Start the stack without the generator.")
def up_command(
    backfill: tuple[str, str] | None,
    seed: int | None,
    trades_per_second: float | None,
    quotes_per_second: float | None,
    speed: float | None,
    anomalies: bool,
    no_generator: bool,
) -> None:
    """Start the local stack in the background; returns when every component is healthy."""
    from flowforge_pipeline.generator.cli import generate_argv, parse_time

    settings = get_settings()
    window = None
    if backfill:
        window = (
            parse_time(backfill[0], "--backfill START"),
            parse_time(backfill[1], "--backfill END"),
        )
        if window[1] <= window[0]:
            raise click.BadParameter("END must be after START", param_hint="--backfill")
    gen_args = generate_argv(
        seed=seed,
        trades_per_second=trades_per_second,
        quotes_per_second=quotes_per_second,
        backfill=window,
        speed=speed,
        anomalies=anomalies,
    )
    options = UpOptions(generator_args=tuple(gen_args), generator=not no_generator)
    started = time.monotonic()
    try:
        local.up(settings, options, echo=click.echo)
    except local.AlreadyRunning as exc:
        click.echo(str(exc))
        return
    except (local.StackError, *UNAVAILABLE) as exc:  # type: ignore[misc]
        raise click.ClickException(str(exc)) from None
    click.echo(f"stack is up in {time.monotonic() - started:.1f}s; state in {settings.state_path}")
    click.echo("next: flowforge-pipeline status   |   flowforge-pipeline down")


@click.command("down")
def down_command() -> None:
    """Stop what `up` started (graceful, then forced); stored data is kept."""
    try:
        local.down(get_settings(), echo=click.echo)
    except local.StackError as exc:
        raise click.ClickException(str(exc)) from None


def _fmt_age(age: float | None) -> str:
    if age is None:
        return "-"
    age = max(age, 0.0)  # a write stamped by another clock may look a hair in the future
    if age < 120:
        return f"{age:.0f}s"
    if age < 7200:
        return f"{age / 60:.0f}m"
    return f"{age / 3600:.1f}h"


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status_command(as_json: bool) -> None:
    """Each component (pid, state, port, uptime) and each contract item's freshness.

    Exits 1 when a component is not healthy.
    """
    settings = get_settings()
    comps = local.component_status(settings)
    fresh = all_freshness(settings)
    healthy = all(c["healthy"] for c in comps)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "healthy": healthy,
                    "state_dir": str(settings.state_path),
                    "services": settings.service_urls(),
                    "components": comps,
                    "freshness": fresh,
                },
                indent=2,
            )
        )
    else:
        click.echo(f"{'COMPONENT':<16} {'STATE':<12} {'PID':>7} {'PORT':>6} {'UPTIME':>8}  URL")
        for c in comps:
            click.echo(
                f"{c['name']:<16} {c['state']:<12} {c['pid'] or '-':>7} {c['port'] or '-':>6} "
                f"{_fmt_age(c['uptime_seconds']):>8}  {c['url']}"
                + (f"  ({c['error']})" if c["error"] else "")
            )
        click.echo("")
        click.echo(f"{'STORE':<11} {'ITEM':<26} {'STATE':<12} {'AGE':>7} {'PROMISE':>8}")
        for f in fresh:
            click.echo(
                f"{f['store']:<11} {f['item']:<26} {f['state']:<12} "
                f"{_fmt_age(f['age_seconds']):>7} {_fmt_age(f['promise_seconds']):>8}"
            )
    if not healthy:
        sys.exit(1)


@click.command("logs")
@click.argument("name")
@click.option("-n", "--lines", type=click.IntRange(1, 100_000), default=50, show_default=True)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
def logs_command(name: str, lines: int, follow: bool) -> None:
    """Show the log of one component."""
    try:
        component(name)
    except KeyError as exc:
        raise click.BadParameter(exc.args[0], param_hint="NAME") from None
    path = process.log_path(get_settings().state_path, name)
    if not path.exists():
        raise click.ClickException(f"no log for {name} yet ({path})")
    for line in process.tail(path, lines):
        click.echo(line)
    if follow:
        _follow(path)


def _follow(path: Path) -> None:
    with path.open("rb") as fh:
        fh.seek(0, 2)
        while True:
            chunk = fh.read()
            if chunk:
                click.echo(chunk.decode(errors="replace"), nl=False)
            else:
                time.sleep(0.5)

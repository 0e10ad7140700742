"""`flowforge-pipeline anomaly evaluate --seed S --start T0 --end T1 [--json]`."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click

from flowforge_pipeline.anomaly.evaluate import evaluate
from flowforge_pipeline.generator.anomalies import GRADES
from flowforge_pipeline.generator.cli import parse_time


class _UtcTime(click.ParamType):  # type: ignore[type-arg]
    """An ISO 8601 time, read by the same parser as the generator's options."""

    name = "time"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return parse_time(str(value), "time")
        except click.ClickException as exc:
            self.fail(exc.message, param, ctx)


@click.group("anomaly")
def anomaly_group() -> None:
    """Anomaly detection: measure it against labeled injections."""


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


@anomaly_group.command("evaluate")
@click.option("--seed", type=int, required=True, help="Generator seed of the labeled run.")
@click.option("--start", "start", type=_UtcTime(), required=True, help="Event-time start (UTC).")
@click.option("--end", "end", type=_UtcTime(), required=True, help="Event-time end (UTC).")
@click.option("--rate", type=float, default=30.0, show_default=True,
              help="Injected anomalies per hour over the universe.")
@click.option("--clean-seed", type=int, default=None,
              help="Seed of the run without injections (default: --seed).")
@click.option("--severity", type=click.Choice(["mixed", "milder"]), default="mixed",
              show_default=True,
              help="Grades to inject: the severe one (low/medium/high) or the ones below it "
                   "(mild/moderate, for the kinds that have them).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def evaluate_command(seed: int, start: datetime, end: datetime, rate: float,
                     clean_seed: int | None, severity: str, as_json: bool) -> None:
    """Backfill labeled anomalies through the anomaly flow; print precision, recall, delay."""
    if end <= start:
        raise click.BadParameter("END must be after START", param_hint="--end")
    if rate <= 0:
        raise click.BadParameter("must be > 0", param_hint="--rate")
    result = evaluate(seed, start, end, rate_per_hour=rate, clean_seed=clean_seed,
                      severity=severity)
    if as_json:
        click.echo(json.dumps(result, indent=None, sort_keys=True))
        return
    click.echo(f"seed {seed}  {start.isoformat()} .. {end.isoformat()}  rate {rate}/h  "
               f"severity {severity}")
    grades = [g for g in GRADES
              if any(r["labels_by_severity"][g] for r in result["recall"].values())]
    click.echo("delay (s) from the label's start (= its first evidence in the tape; "
               "'check': how far the independently found first evidence lies after it)")
    click.echo(f"{'label type':<15}{'n':>5}{'recall':>8}{'med':>6}{'p95':>6}{'check':>7}"
               f"   recall {'/'.join(grades)}")
    for kind, r in result["recall"].items():
        sev = "/".join(_fmt(r["recall_by_severity"][g]) for g in grades)
        click.echo(f"{kind:<15}{r['labels']:>5}{_fmt(r['recall']):>8}"
                   f"{_fmt(r['median_delay_s'], '.1f'):>6}{_fmt(r['p95_delay_s'], '.1f'):>6}"
                   f"{_fmt(r['evidence_after_start_p95_s'], '.1f'):>7}   {sev}")
    clean = result["clean"]["false_alerts_per_instrument_day"]
    click.echo(f"{'alert type':<15}{'alerts':>7}{'prec.':>8}{'clean FA/inst-day':>20}")
    for kind, p in result["precision"].items():
        click.echo(f"{kind:<15}{p['alerts']:>7}{_fmt(p['precision']):>8}"
                   f"{_fmt(clean[kind], '.3f'):>20}")

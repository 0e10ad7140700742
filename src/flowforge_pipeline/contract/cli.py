"""`init` and `contract export|check` commands."""

from __future__ import annotations

import json
import sys

import click

from flowforge_pipeline.contract.apply import init_all
from flowforge_pipeline.contract.catalog import catalog_json
from flowforge_pipeline.contract.check import run_check
from flowforge_pipeline.settings import get_settings
from flowforge_pipeline.stores.errors import UNAVAILABLE


@click.command("init")
def init_command() -> None:
    """Create topics, pipeline-owned ClickHouse tables and live tables (idempotent)."""
    try:
        created = init_all(get_settings())
    except UNAVAILABLE as exc:
        raise click.ClickException(str(exc)) from None
    for item in created:
        click.echo(f"created {item}")
    click.echo(f"init: {len(created)} created" if created else "init: nothing to create")


@click.group("contract")
def contract() -> None:
    """The serving-layer contract FlowForge reads."""


@contract.command("export")
@click.option("--indent", type=click.IntRange(0, 8), default=2, show_default=True)
def export_command(indent: int) -> None:
    """Print the contract catalog as JSON (the schema catalog FlowForge reads)."""
    click.echo(json.dumps(catalog_json(), indent=indent or None))


@contract.command("check")
@click.option("--require-dbt", is_flag=True, help="A dbt mart not built yet is a difference.")
@click.option("--verbose", "-v", is_flag=True, help="Also print notes (items not built yet).")
def check_command(require_dbt: bool, verbose: bool) -> None:
    """Compare the running deployment with the catalog: one line per difference, exit 1."""
    report = run_check(get_settings(), require_dbt=require_dbt)
    if verbose:
        for note in report.notes:
            click.echo(f"note: {note}")
    for diff in report.differences:
        click.echo(diff)
    if not report.ok:
        click.echo(f"contract check: {len(report.differences)} difference(s)", err=True)
        sys.exit(1)
    notes = f", {len(report.notes)} note(s)" if report.notes else ""
    click.echo(f"contract check: {report.checked} items match the contract{notes}")

"""`flowforge-pipeline materialize apply [--dry-run]`."""

from __future__ import annotations

from pathlib import Path

import click

from flowforge_pipeline.live_views import materialize as mz
from flowforge_pipeline.settings import get_settings, mask_url


@click.group()
def materialize() -> None:
    """Live views on Materialize (production path)."""


@materialize.command("apply")
@click.option("--dry-run", is_flag=True, help="Print the statements instead of running them.")
@click.option(
    "--sql-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=mz.DEFAULT_SQL_DIR,
    show_default=True,
    help="Directory of the numbered .sql files.",
)
def apply_command(dry_run: bool, sql_dir: Path) -> None:
    """Create the Kafka connection, sources and live views on LIVE_VIEWS_URL."""
    settings = get_settings()
    try:
        if dry_run:
            for stmt in mz.statements(settings, sql_dir):
                click.echo(stmt + ";\n")
            return
        applied = mz.apply(settings, sql_dir)
    except mz.MaterializeError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"applied {len(applied)} statements at {mask_url(settings.postgres)}")

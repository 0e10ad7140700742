"""The `flowforge-pipeline` command line."""

from __future__ import annotations

import sys

import click

from flowforge_pipeline.anomaly.cli import anomaly_group
from flowforge_pipeline.contract.cli import contract, init_command
from flowforge_pipeline.dbt_runner import dbt_command
from flowforge_pipeline.generator.cli import generate
from flowforge_pipeline.live_views.cli import materialize
from flowforge_pipeline.settings import SettingsError
from flowforge_pipeline.stack.cli import down_command, logs_command, status_command, up_command
from flowforge_pipeline.standins.clickhouse_server.cli import clickhouse


@click.group()
@click.version_option(package_name="flowforge-pipeline")
def cli() -> None:
    """Streaming and batch pipeline that fills the FlowForge serving layer."""


for _command in (up_command, down_command, status_command, logs_command, init_command, contract):
    cli.add_command(_command)
cli.add_command(dbt_command)
cli.add_command(clickhouse)
cli.add_command(generate)
cli.add_command(materialize)
cli.add_command(anomaly_group)


def main() -> None:
    """Entry point: every expected failure ends as one line on stderr and exit 1."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.UsageError as exc:  # one line naming the argument, no usage block
        click.echo(f"Error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except SettingsError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()

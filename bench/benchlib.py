"""What every benchmark script shares: the `--json FILE` option and the machine it ran on.

Each script in `bench/` prints its figures for a reader and, given `--json FILE`, also writes
them as one JSON object that `bench/report.py` (the `make bench` report) collects:

    {"bench": "clickhouse_http", "command": ".venv/bin/python bench/clickhouse_http.py",
     "machine": {...}, "started": "...", "seconds": 12.3,
     "figures": [{"name": ..., "value": ..., "unit": ..., "target": ..., "met": ...}],
     "series": {"name": {"x_label": ..., "y_label": ..., "points": {"label": [[x, y], ...]}}}}

`series` holds what a chart plots (memory or lag over time, a rate sweep); it is optional.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

_STARTED = time.monotonic()
_STARTED_AT = datetime.now(UTC)


@dataclass(frozen=True)
class Figure:
    """One measured figure; `met` is None where the figure has no target."""

    name: str
    value: float | int | str
    unit: str = ""
    target: str | None = None
    met: bool | None = None


@dataclass
class Series:
    """Lines of one chart: label → [(x, y), ...]."""

    x_label: str
    y_label: str
    points: dict[str, list[tuple[float, float]]] = field(default_factory=dict)


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", metavar="FILE", type=Path, default=None,
        help="also write the figures as one JSON object to FILE (read by bench/report.py)",
    )


def machine() -> dict[str, Any]:
    """The machine a figure was measured on, as the report prints it."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = None
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory_gib = round(pages / 2**30, 1)
    except (ValueError, OSError):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": memory_gib,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def command() -> str:
    """How to rerun this script as it was run (without the --json option)."""
    argv = list(sys.argv)
    out: list[str] = []
    skip = False
    for arg in argv[1:]:
        if skip:
            skip = False
            continue
        if arg == "--json":
            skip = True
            continue
        if arg.startswith("--json="):
            continue
        out.append(arg)
    script = os.path.relpath(argv[0]) if argv and argv[0] else "?"
    return " ".join([".venv/bin/python", shlex.quote(script), *map(shlex.quote, out)])


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now."""
    from flowforge_pipeline.stack import local

    return local.free_ports(1)[0]


def free_block(n: int) -> int:
    """First of `n` consecutive TCP ports on 127.0.0.1 free now (flows take metrics port + i)."""
    from flowforge_pipeline.stack import local

    for _ in range(200):
        first = free_port()
        if first + n < 65535 and all(not local.port_in_use(first + i) for i in range(n)):
            return first
    raise RuntimeError(f"no {n} consecutive free ports")


def private_stack(prefix: str, **overrides: Any) -> tuple[Path, Any]:
    """A state directory and settings on free ports, with the local services started.

    The stand-ins (broker, ClickHouse server, PostgreSQL, Valkey) start through the same `up`
    code as the local stack, so a benchmark never touches `.flowforge/` or a running stack;
    stop them with `local.down(settings)`. `overrides` are further `Settings` arguments
    (e.g. `KAFKA_TOPIC_PARTITIONS`). A start that fails or is interrupted stops what it
    started and removes the state directory.
    """
    import shutil

    from flowforge_pipeline.flows.components import FLOW_NAMES
    from flowforge_pipeline.settings import Settings
    from flowforge_pipeline.stack import local

    state = Path(tempfile.mkdtemp(prefix=prefix))
    state.chmod(0o755)
    kafka, clickhouse, postgres, redis, airflow = local.free_ports(5)
    settings = Settings(**{
        "FLOWFORGE_STATE_DIR": str(state), "LOCAL_KAFKA_PORT": kafka,
        "LOCAL_CLICKHOUSE_PORT": clickhouse, "LOCAL_POSTGRES_PORT": postgres,
        "LOCAL_REDIS_PORT": redis, "LOCAL_AIRFLOW_PORT": airflow,
        "LOCAL_FLOW_METRICS_PORT": free_block(len(FLOW_NAMES)),
        **overrides,
    })
    try:
        local.up(settings, echo=lambda _: None, stages=("service",))
    except BaseException:
        local.down(settings, echo=lambda _: None)
        shutil.rmtree(state, ignore_errors=True)
        raise
    return state, settings


def stop_private_stack(settings: Any, procs: list[Any]) -> None:
    """Kill the processes a benchmark started beside a private stack, then stop the stack."""
    from flowforge_pipeline.stack import local

    for proc in procs:
        proc.kill()
        proc.wait()
    local.down(settings, echo=lambda _: None)


def emit(
    path: Path | None,
    bench: str,
    figures: list[Figure],
    series: dict[str, Series] | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write the figures of one run to `path` (no-op when the option was not given)."""
    if path is None:
        return
    doc: dict[str, Any] = {
        "bench": bench,
        "command": command(),
        "machine": _MACHINE,
        "started": _STARTED_AT.isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - _STARTED, 1),
        "figures": [asdict(f) for f in figures],
        "series": {name: asdict(s) for name, s in (series or {}).items()},
    }
    if extra:
        doc["extra"] = extra
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    tmp.replace(path)


#: Read once at import, before the benchmark loads the machine itself.
_MACHINE = machine()

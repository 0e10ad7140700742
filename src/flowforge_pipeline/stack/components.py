"""What a component of the local stack is: how to start it, how to tell it is healthy.

Later parts of the pipeline plug in by adding a `Component` to `registry.COMPONENTS`;
`up`, `down`, `status` and `logs` never need to change for that.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from flowforge_pipeline.settings import Settings


class Degraded(RuntimeError):
    """Raised by a `ready` check: the process runs but cannot do its work right now.

    The message names what it waits for, e.g. "retrying: clickhouse unreachable for 12 s";
    `status` shows the component as "retrying" with it.
    """


@dataclass(frozen=True)
class UpOptions:
    """Options of `up` that components may use (e.g. the generator's backfill range)."""

    generator_args: tuple[str, ...] = ()  # `generate ...` arguments; empty: the defaults
    generator: bool = True  # False: `up --no-generator`


@dataclass(frozen=True)
class Component:
    """One background process of the local stack.

    `stage="service"` components are stand-ins for a store and start before `init`;
    `stage="app"` components (generator, flows, Airflow) start after it.
    """

    name: str
    description: str
    stage: Literal["service", "app"]
    argv: Callable[[Settings, UpOptions], list[str]]
    ready: Callable[[Settings], None]  # raises when not (yet) healthy
    enabled: Callable[[Settings], bool] = lambda s: True
    port: Callable[[Settings], int] | None = None
    port_setting: str = ""
    url: Callable[[Settings], str] | None = None
    prepare: Callable[[Settings], None] | None = None
    after_ready: Callable[[Settings], None] | None = None
    run_as: Callable[[], tuple[int, int] | None] | None = None
    env: Callable[[Settings], dict[str, str]] = field(default=lambda s: {})
    wanted: Callable[[UpOptions], bool] = lambda o: True  # e.g. not with `--no-generator`
    may_finish: bool = False  # exit 0 means "done" (a backfill), not "crashed"
    stop_signal: int = signal.SIGTERM
    start_timeout: float = 60.0
    stop_timeout: float = 20.0

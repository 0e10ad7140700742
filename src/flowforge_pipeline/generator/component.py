"""The generator as a component of the local stack: `up` starts it after the flows.

In real time it runs until `down`; with `up --backfill START END` it exits 0 when the range is
produced, which `status` shows as "finished", not as a crash.
"""

from __future__ import annotations

import sys
import time

from flowforge_pipeline.settings import Settings
from flowforge_pipeline.stack import process
from flowforge_pipeline.stack.components import Component, UpOptions

#: A generator that survives this long after start has connected to the broker and is producing.
SETTLE_SECONDS = 1.5


def generator_argv(settings: Settings, options: UpOptions) -> list[str]:
    """`flowforge-pipeline generate` with the options `up` passed through."""
    args = options.generator_args or ("generate",)
    return [sys.executable, "-m", "flowforge_pipeline.cli", *args]


def generator_ready(settings: Settings) -> None:
    """Healthy once it has run for a moment (or finished a backfill: checked by the stack)."""
    rec = process.read_record(settings.state_path, "generator")
    if rec is None:
        raise RuntimeError("generator has no pid file")
    if time.time() - rec.create_time < SETTLE_SECONDS:
        raise RuntimeError("generator is starting")


GENERATOR_COMPONENT = Component(
    name="generator",
    description="synthetic trades and quotes into the broker (real time or backfill)",
    stage="app",
    argv=generator_argv,
    ready=generator_ready,
    wanted=lambda o: o.generator,
    may_finish=True,
    start_timeout=30,
)

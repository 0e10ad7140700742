"""`up`, `down`, `status` and `logs` of the local stack.

`up` starts every enabled component of the registry that is not running, runs `init`,
and returns once each is healthy. Each role whose URL is set is checked for reachability
instead of being started. `down` stops only what `up` started and keeps every data directory.
"""

from __future__ import annotations

import errno
import fcntl
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowforge_pipeline.contract.apply import init_all
from flowforge_pipeline.settings import LOCALHOST, Settings
from flowforge_pipeline.stack import process
from flowforge_pipeline.stack.components import Component, Degraded, UpOptions
from flowforge_pipeline.stack.registry import COMPONENTS


class StackError(RuntimeError):
    """`up`/`down` could not do what was asked; the message is one line saying why."""


@contextmanager
def _lock(state: Path) -> Iterator[None]:
    """Only one `up` or `down` at a time on one state directory."""
    state.mkdir(parents=True, exist_ok=True)
    with (state / "stack.lock").open("w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise StackError(
                f"another `up` or `down` is running on {state}; wait for it to finish"
            ) from None
        yield


def port_in_use(port: int) -> bool:
    """True if something already listens on 127.0.0.1:`port`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOCALHOST, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def free_ports(n: int) -> list[int]:
    """`n` different ports on 127.0.0.1 that nothing listens on now, for private stacks.

    Each is held until all are chosen, so the kernel cannot hand out the same port twice.
    """
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for sock in socks:
            sock.bind((LOCALHOST, 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def external_checks() -> dict[str, Callable[[Settings], None]]:
    """Reachability check per role, used when the role's URL is set."""
    from flowforge_pipeline.stores import clickhouse, kafka, postgres, redis

    def _ch(s: Settings) -> None:
        # A reachability check answers in seconds, even from something silent on the port.
        clickhouse.client(s, database="", send_receive_timeout=5).close()

    def _pg(s: Settings) -> None:
        postgres.connect(s).close()

    def _redis(s: Settings) -> None:
        redis.client(s).close()

    return {
        "broker": lambda s: (kafka.admin(s), None)[1],
        "clickhouse": _ch,
        "postgres": _pg,
        "valkey": _redis,
    }


@dataclass
class Started:
    """Result of `up` for one component."""

    name: str
    state: str  # "started", "running", "external"
    url: str


def enabled_components(settings: Settings) -> list[Component]:
    """Components this configuration runs locally, in start order."""
    return [c for c in COMPONENTS if c.enabled(settings)]


def _wait_ready(settings: Settings, comp: Component, rec: process.ProcessRecord) -> None:
    deadline = time.monotonic() + comp.start_timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if not process.is_alive(rec):
            process.exited_code(rec)  # reap our child so its exit file is written
            if comp.may_finish and process.finished_code(settings.state_path, comp.name) == 0:
                return  # a backfill can be done before the first health check
            process.forget(settings.state_path, comp.name)
            log = "\n    ".join(process.tail(Path(rec.log), 8))
            raise StackError(f"{comp.name} exited during start; last log lines:\n    {log}")
        try:
            comp.ready(settings)
            return
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
            last = exc
        time.sleep(0.2)
    process.stop(rec, comp.stop_signal, comp.stop_timeout)
    process.forget(settings.state_path, comp.name)
    raise StackError(
        f"{comp.name} not healthy after {comp.start_timeout:.0f}s ({last}); see {rec.log}"
    )


def _running_or_done(state: Path, comp: Component, rec: process.ProcessRecord) -> bool:
    """Alive, or a component that may finish and finished well (a completed backfill)."""
    if process.is_alive(rec):
        return True
    return comp.may_finish and process.finished_code(state, comp.name) == 0


def _check_port(settings: Settings, comp: Component) -> int | None:
    """The component's port, or StackError naming the port and its setting if it is taken."""
    port = comp.port(settings) if comp.port else None
    if port is not None and port_in_use(port):
        raise StackError(
            f"port {port} for {comp.name} is in use; set {comp.port_setting} to another port"
        )
    return port


def _launch(
    settings: Settings, comp: Component, options: UpOptions
) -> process.ProcessRecord | None:
    """Spawn `comp` unless it runs already; None when it does."""
    state = settings.state_path
    rec = process.read_record(state, comp.name)
    if rec and _running_or_done(state, comp, rec):
        return None
    process.skip(state, comp.name, False)
    if rec:
        process.forget(state, comp.name)  # stale pid file from a crash
    port = _check_port(settings, comp)
    if comp.prepare:
        comp.prepare(settings)
    user = comp.run_as() if comp.run_as else None
    rec = process.spawn(
        state,
        comp.name,
        comp.argv(settings, options),
        port=port,
        env={**settings.as_env(), **comp.env(settings)},
        may_finish=comp.may_finish,
        user=user,
    )
    return rec


def _start_stage(
    settings: Settings,
    comps: list[Component],
    options: UpOptions,
    echo: Callable[[str], None],
) -> list[Started]:
    """Launch every component of a stage at once, then wait for each to be healthy.

    Components of one stage do not depend on each other, so their start-up times overlap
    instead of adding up (Airflow alone takes tens of seconds).
    """
    launched = [(comp, _launch(settings, comp, options), time.monotonic()) for comp in comps]
    results = []
    for comp, rec, t0 in launched:
        url = comp.url(settings) if comp.url else ""
        if rec is None:
            results.append(Started(comp.name, "running", url))
        else:
            _wait_ready(settings, comp, rec)
            if comp.after_ready:
                comp.after_ready(settings)
            results.append(Started(comp.name, "started", url))
        took = f"{time.monotonic() - t0:4.1f}s" if rec else "     "
        echo(f"{comp.name:<16} {results[-1].state:<8} {took}  {url}")
    return results


def up(
    settings: Settings,
    options: UpOptions | None = None,
    echo: Callable[[str], None] = print,
    stages: tuple[str, ...] = ("service", "app"),
) -> list[Started]:
    """Start the stack; see the module docstring.

    `stages=("service",)` starts only the stand-ins and runs `init` (the test fixtures do).
    """
    options = options or UpOptions()
    state = settings.state_path
    with _lock(state):
        local = [c for c in enabled_components(settings) if c.stage in stages]
        for c in local:
            if not c.wanted(options):
                process.skip(state, c.name, True)
        local = [c for c in local if c.wanted(options)]
        alive = [
            c.name
            for c in local
            if (r := process.read_record(state, c.name)) is not None
            and _running_or_done(state, c, r)
        ]
        if local and len(alive) == len(local):
            raise AlreadyRunning(
                f"the stack is already running from {state} ({', '.join(alive)}); nothing changed"
            )
        results: list[Started] = []
        checks = external_checks()
        local_names = {c.name for c in local}
        for role, check in checks.items():
            if role not in local_names:
                check(settings)
                results.append(Started(role, "external", settings.service_urls()[_ROLE_URL[role]]))
                echo(f"{role:<16} external       {results[-1].url}")
        for comp in local:  # every port first, so a clash starts nothing
            rec = process.read_record(state, comp.name)
            if not (rec and process.is_alive(rec)):
                _check_port(settings, comp)
        services = [c for c in local if c.stage == "service"]
        results += _start_stage(settings, services, options, echo)
        created = init_all(settings)
        echo("init: " + (", ".join(created) if created else "nothing to create"))
        apps = [c for c in local if c.stage == "app"]
        results += _start_stage(settings, apps, options, echo)
        return results


class AlreadyRunning(StackError):
    """`up` found every component running and changed nothing."""


_ROLE_URL = {
    "broker": "kafka",
    "clickhouse": "clickhouse",
    "postgres": "postgres",
    "valkey": "redis",
}


def down(settings: Settings, echo: Callable[[str], None] = print) -> list[tuple[str, str]]:
    """Stop what `up` started, apps first, keeping every data directory."""
    state = settings.state_path
    order = {c.name: i for i, c in enumerate(COMPONENTS)}
    stopped: list[tuple[str, str]] = []
    with _lock(state):
        recs = sorted(process.records(state), key=lambda r: -order.get(r.name, len(order)))
        for rec in recs:
            comp = next((c for c in COMPONENTS if c.name == rec.name), None)
            sig = comp.stop_signal if comp else 15
            timeout = comp.stop_timeout if comp else 20.0
            how = process.stop(rec, sig, timeout)
            process.forget(state, rec.name)
            stopped.append((rec.name, how))
            echo(f"{rec.name:<16} {how}")
        for comp in COMPONENTS:
            process.skip(state, comp.name, False)
    if not stopped:
        echo("nothing was running")
    return stopped


def component_status(settings: Settings) -> list[dict[str, Any]]:
    """Each component: pid, state, port, uptime (local) or reachability (external)."""
    state = settings.state_path
    out: list[dict[str, Any]] = []
    now = time.time()
    local = {c.name for c in enabled_components(settings)}
    checks = external_checks()
    for comp in COMPONENTS:
        if comp.name not in local:
            if comp.name in checks:
                try:
                    checks[comp.name](settings)
                    health, error = "external", ""
                except Exception as exc:  # noqa: BLE001
                    health, error = "unreachable", str(exc)
                out.append(
                    {
                        "name": comp.name,
                        "state": health,
                        "healthy": health == "external",
                        "url": settings.service_urls()[_ROLE_URL[comp.name]],
                        "error": error,
                        "pid": None,
                        "port": None,
                        "uptime_seconds": None,
                    }
                )
            continue
        rec = process.read_record(state, comp.name)
        entry: dict[str, Any] = {
            "name": comp.name,
            "pid": rec.pid if rec else None,
            "port": comp.port(settings) if comp.port else None,
            "url": comp.url(settings) if comp.url else "",
            "uptime_seconds": None,
            "error": "",
        }
        code = process.finished_code(state, comp.name)
        if rec is None and process.skipped(state, comp.name):
            entry.update(state="not started", healthy=True, error="left out by an `up` option")
        elif rec is None:
            entry.update(state="stopped", healthy=False)
        elif not process.is_alive(rec) and comp.may_finish and code == 0:
            entry.update(state="finished", healthy=True)
        elif not process.is_alive(rec):
            why = f"exit code {code}" if code is not None else "exited"
            entry.update(state="dead", healthy=False, error=f"{why}; see {rec.log}")
        else:
            entry["uptime_seconds"] = round(now - rec.create_time, 1)
            try:
                comp.ready(settings)
                entry.update(state="running", healthy=True)
            except Degraded as exc:
                entry.update(state="retrying", healthy=False, error=str(exc).splitlines()[0])
            except Exception as exc:  # noqa: BLE001
                entry.update(state="unhealthy", healthy=False, error=str(exc).splitlines()[0])
        out.append(entry)
    return out

"""The flows as components of the local stack: `up` starts them, `status` shows them.

Each flow runs as its own `python -m bytewax.run` process with Bytewax recovery on (state and
Kafka offsets in `<state>/recovery/<flow>`), and with Bytewax's HTTP server answering
`/metrics` on its own port: `LOCAL_FLOW_METRICS_PORT` + the flow's index.
"""

from __future__ import annotations

import signal
import sys
import time
import urllib.request
from pathlib import Path

from flowforge_pipeline.flows.common import recovery_dir
from flowforge_pipeline.settings import LOCALHOST, Settings
from flowforge_pipeline.stack.components import Component, Degraded, UpOptions

#: Flow modules in start order; the index fixes each flow's metrics port.
FLOW_NAMES: tuple[str, ...] = (
    "raw_sink",
    "vwap",
    "volatility",
    "positions",
    "live_views",
    "anomaly",
)
#: How long Bytewax keeps superseded snapshots; 0: only the latest consistent one matters.
BACKUP_SECONDS = 0


def metrics_port(settings: Settings, flow: str) -> int:
    """The port a flow's `/metrics` answers on."""
    return settings.local_flow_metrics_port + FLOW_NAMES.index(flow)


def api_dir(settings: Settings, flow: str) -> Path:
    """Where Bytewax's HTTP server keeps the rendered dataflow of a flow."""
    return settings.state_path / "flows" / flow


def prepare_recovery(settings: Settings, flow: str) -> None:
    """Create the flow's recovery database (one partition) on first start."""
    from bytewax.recovery import init_db_dir

    api_dir(settings, flow).mkdir(parents=True, exist_ok=True)
    path = Path(recovery_dir(settings, flow))
    if not any(path.glob("part-*.sqlite3")):
        path.mkdir(parents=True, exist_ok=True)
        init_db_dir(path, 1)  # type: ignore[no-untyped-call]


def flow_argv(settings: Settings, flow: str) -> list[str]:
    """The command running one flow with recovery."""
    return [
        sys.executable,
        "-m",
        "bytewax.run",
        f"flowforge_pipeline.flows.{flow}:flow",
        "-r",
        recovery_dir(settings, flow),
        "-s",
        str(settings.flow_snapshot_seconds),
        "-b",
        str(BACKUP_SECONDS),
    ]


def stores_down(metrics_text: str) -> dict[str, float]:
    """Stores a flow reports unreachable in its /metrics, with the Unix time since when."""
    down: dict[str, float] = {}
    for line in metrics_text.splitlines():
        if line.startswith("flowforge_sink_store_down_since_seconds{"):
            labels, value = line.rsplit(" ", 1)
            since = float(value)
            if since > 0:
                store = labels.split('store="', 1)[1].split('"', 1)[0]
                down[store] = min(since, down.get(store, since))
    return down


def metrics_ready(settings: Settings, flow: str) -> None:
    """Healthy when the flow's metrics endpoint answers (the dataflow has been built).

    Raises `Degraded` naming each store the flow is waiting for while it retries writes.
    """
    url = f"http://{LOCALHOST}:{metrics_port(settings, flow)}/metrics"
    with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - local http URL
        if resp.status != 200:
            raise RuntimeError(f"{url} answered {resp.status}")
        text = resp.read().decode(errors="replace")
    down = stores_down(text)
    if down:
        now = time.time()
        what = ", ".join(f"{s} unreachable for {now - t:.0f} s" for s, t in sorted(down.items()))
        raise Degraded(f"retrying: {what}")


def _component(flow: str, description: str) -> Component:
    def argv(settings: Settings, _: UpOptions) -> list[str]:
        return flow_argv(settings, flow)

    def env(settings: Settings) -> dict[str, str]:
        return {
            **settings.as_env(),
            "BYTEWAX_DATAFLOW_API_ENABLED": "1",
            "BYTEWAX_DATAFLOW_API_PORT": str(metrics_port(settings, flow)),
            # Bytewax writes dataflow.json into this directory; by default into the cwd.
            "BYTEWAX_DATAFLOW_API_CACHE_PATH": str(api_dir(settings, flow)),
        }

    return Component(
        name=f"flow-{flow}",
        description=description,
        stage="app",
        argv=argv,
        ready=lambda s: metrics_ready(s, flow),
        port=lambda s: metrics_port(s, flow),
        port_setting="LOCAL_FLOW_METRICS_PORT",
        url=lambda s: f"http://{LOCALHOST}:{metrics_port(s, flow)}/metrics",
        prepare=lambda s: prepare_recovery(s, flow),
        env=env,
        stop_signal=signal.SIGINT,  # Bytewax stops at the next epoch boundary on SIGINT
        start_timeout=60,
        stop_timeout=30,
    )


FLOW_COMPONENTS: tuple[Component, ...] = (
    _component("raw_sink", "trades + quotes → raw_trades, raw_quotes (+ table_update broadcast)"),
    _component("vwap", "5-minute VWAP → vwap_5min + latest:vwap:*"),
    _component(
        "volatility", "rolling 1h/24h volatility → rolling_volatility + latest:volatility:*"
    ),
    _component("positions", "net positions → latest:position:*"),
    _component("live_views", "live_quotes, live_positions, live_pnl upserts (Postgres)"),
    _component("anomaly", "anomaly alerts → alerts topic + anomaly_alerts (+ broadcast)"),
)

from pathlib import Path

from bytewax.run import _create_arg_parser

from flowforge_pipeline.flows.components import (
    FLOW_COMPONENTS,
    metrics_port,
    prepare_recovery,
)
from flowforge_pipeline.settings import Settings
from flowforge_pipeline.stack.components import UpOptions
from flowforge_pipeline.stack.registry import COMPONENTS


def test_every_flow_is_registered_after_the_services() -> None:
    names = [c.name for c in COMPONENTS]
    flows = [c.name for c in FLOW_COMPONENTS]
    first = names.index(flows[0])
    assert names[first : first + len(flows)] == flows
    assert all(c.stage == "service" for c in COMPONENTS[:first])
    assert all(c.stage == "app" for c in FLOW_COMPONENTS)


def test_argv_is_accepted_by_bytewax_run_with_recovery(tmp_path: Path) -> None:
    settings = Settings(FLOWFORGE_STATE_DIR=str(tmp_path), FLOW_SNAPSHOT_SECONDS=7)
    for comp in FLOW_COMPONENTS:
        argv = comp.argv(settings, UpOptions())
        assert argv[1:3] == ["-m", "bytewax.run"]
        args = _create_arg_parser().parse_args(argv[3:])
        flow = comp.name.removeprefix("flow-")
        assert args.import_str == f"flowforge_pipeline.flows.{flow}:flow"
        assert Path(args.recovery_directory) == tmp_path.resolve() / "recovery" / flow
        assert args.snapshot_interval.total_seconds() == 7


def test_recovery_dir_is_created_once(tmp_path: Path) -> None:
    settings = Settings(FLOWFORGE_STATE_DIR=str(tmp_path))
    prepare_recovery(settings, "vwap")
    part = tmp_path / "recovery" / "vwap" / "part-0.sqlite3"
    assert part.exists()
    before = part.stat().st_mtime_ns
    prepare_recovery(settings, "vwap")
    assert part.stat().st_mtime_ns == before


def test_child_env_round_trips_settings_and_ports_differ(tmp_path: Path) -> None:
    settings = Settings(
        FLOWFORGE_STATE_DIR=str(tmp_path),
        LOCAL_REDIS_PORT=23456,
        CLICKHOUSE_PASSWORD="pw",
        LOCAL_FLOW_METRICS_PORT=30000,
    )
    again = Settings(**settings.as_env())
    assert again == settings
    ports = {metrics_port(settings, c.name.removeprefix("flow-")) for c in FLOW_COMPONENTS}
    assert ports == set(range(30000, 30000 + len(FLOW_COMPONENTS)))

"""Run the embedded ClickHouse server as its own process."""

from flowforge_pipeline.standins.clickhouse_server.cli import main

main()

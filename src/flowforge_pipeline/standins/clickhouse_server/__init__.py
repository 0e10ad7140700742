"""An embedded ClickHouse: one process owns a chdb database and serves the HTTP interface.

Start it in-process with `start_server(...)`, or as its own process with
`python -m flowforge_pipeline.standins.clickhouse_server --port P --data-dir D`
(the same as `flowforge-pipeline clickhouse serve`).
"""

from flowforge_pipeline.standins.clickhouse_server.server import (
    ClickHouseHTTPServer,
    DataDirInUse,
    start_server,
)

__all__ = ["ClickHouseHTTPServer", "DataDirInUse", "start_server"]

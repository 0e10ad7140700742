#!/bin/sh
# One-shot init of a deployment (the compose `init` service): topics, then the Materialize
# live views when LIVE_VIEWS_URL is Materialize (its sources read the topics, so they come
# first), then `flowforge-pipeline init` for the ClickHouse database and tables (and, on a
# plain PostgreSQL, the live tables; on Materialize it finds the views and creates nothing).
# Every step is idempotent: a second run creates nothing.
set -eu
python - <<'PY'
from flowforge_pipeline.contract.apply import init_kafka
from flowforge_pipeline.settings import get_settings

for line in init_kafka(get_settings()):
    print("created", line)
PY
if python - <<'PY'
import sys

import psycopg

from flowforge_pipeline.settings import get_settings

with psycopg.connect(get_settings().postgres, connect_timeout=10) as conn:
    try:
        conn.execute("SELECT mz_version()")
    except psycopg.Error:
        sys.exit(1)
PY
then
    flowforge-pipeline materialize apply
fi
exec flowforge-pipeline init

#!/bin/sh
# Run one flow with Bytewax recovery: flowforge-run-flow <flow> [bytewax.run options...]
# The recovery database (one partition) is created on the flow's volume on first start.
set -eu
flow="$1"
shift
recovery="${FLOWFORGE_STATE_DIR:-/var/lib/flowforge}/recovery/${flow}"
if [ ! -e "${recovery}/part-0.sqlite3" ]; then
    mkdir -p "${recovery}"
    python -m bytewax.recovery "${recovery}" 1
fi
exec python -m bytewax.run "flowforge_pipeline.flows.${flow}:flow" \
    -r "${recovery}" -s "${FLOW_SNAPSHOT_SECONDS:-5}" -b 0 "$@"

#!/usr/bin/env bash
# Start a simulated Queue Server on 127.0.0.1 for the closed-loop agent (docs/closed-loop.md):
#   1. redis-server on 127.0.0.1:$REDIS_PORT (no persistence; Debian: apt-get install redis-server)
#   2. start-re-manager with services/queueserver/startup (ophyd sim `det`, `motor`; plans
#      `count`, `scan`) and services/queueserver/user_group_permissions.yaml, control on
#      tcp://127.0.0.1:$QS_PORT; then opens its worker environment.
# A real beamline runs its own RE Manager and profile collection; this is for trying the agent.
# Logs go to RUN_DIR (default services/run). Ctrl-C / SIGTERM stops both.
#
# Usage: services/start_queueserver.sh   Environment: REDIS_PORT (6380), QS_PORT (60615), RUN_DIR
set -euo pipefail

HERE="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd -- "$HERE/.." && pwd)"
RUN_DIR="${RUN_DIR:-$ROOT/services/run}"
REDIS_PORT="${REDIS_PORT:-6380}"
QS_PORT="${QS_PORT:-60615}"
BIN="$ROOT/.venv/bin"
[[ -x "$BIN/start-re-manager" ]] || BIN="$(dirname "$(command -v start-re-manager)")"
PY="$BIN/python"
[[ -x "$PY" ]] || PY=python3

command -v redis-server >/dev/null || { echo "redis-server not found (apt-get install redis-server)" >&2; exit 1; }
mkdir -p "$RUN_DIR/queueserver"
PIDS=()
cleanup() {
    trap - INT TERM EXIT
    for pid in "${PIDS[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
    wait || true
}
trap cleanup INT TERM EXIT

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    >"$RUN_DIR/queueserver/redis.log" 2>&1 &
PIDS+=($!)
"$BIN/start-re-manager" \
    --startup-dir "$HERE/queueserver/startup" \
    --existing-plans-devices "$RUN_DIR/queueserver/existing_plans_and_devices.yaml" \
    --user-group-permissions "$HERE/queueserver/user_group_permissions.yaml" \
    --redis-addr "127.0.0.1:$REDIS_PORT" \
    --zmq-control-addr "tcp://127.0.0.1:$QS_PORT" \
    --zmq-info-addr "tcp://127.0.0.1:$((QS_PORT + 10))" \
    >"$RUN_DIR/queueserver/re-manager.log" 2>&1 &
PIDS+=($!)

"$PY" - "$QS_PORT" <<'PYEOF'
import sys
from bluesky_queueserver_api.zmq import REManagerAPI

rm = REManagerAPI(zmq_control_addr=f"tcp://127.0.0.1:{sys.argv[1]}", timeout_recv=10)
rm.wait_for_idle(timeout=60)
rm.environment_open()
rm.wait_for_idle(timeout=120)
print(f"queue server up on tcp://127.0.0.1:{sys.argv[1]}, environment open", flush=True)
PYEOF
echo "logs: $RUN_DIR/queueserver/; queue: qserver -a tcp://127.0.0.1:$QS_PORT queue get"
wait -n
echo "a queue-server process exited" >&2
exit 1

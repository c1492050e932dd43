#!/usr/bin/env bash
# Start a local beamline stack on 127.0.0.1 for motex-stream:
#   1. bluesky-0MQ-proxy   in tcp://127.0.0.1:5567  -> out tcp://127.0.0.1:5568
#   2. tiled serve catalog --temp on 127.0.0.1:8000 (only when MOTEX_TILED_API_KEY is set)
#   3. motex-stream serve --config CONFIG             (metrics on 127.0.0.1:9464 by default)
#
# Each step waits until the previous one listens on its port. PIDs and logs go to RUN_DIR.
# Ctrl-C (SIGINT) or SIGTERM stops every child this script started; if one child dies, the
# others are stopped too and the script exits non-zero.
#
# Usage: services/start_beamline_stack.sh [--config FILE] [--run-dir DIR] [--no-service]
# Environment: MOTEX_TILED_API_KEY (starts Tiled), PROXY_IN_PORT, PROXY_OUT_PORT, TILED_PORT,
#              METRICS_PORT (only waited for; the config decides the real port), WAIT_SECONDS.
set -euo pipefail

HERE="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd -- "$HERE/.." && pwd)"

CONFIG="$HERE/configs/keggin-zmq.toml"
RUN_DIR="${RUN_DIR:-$ROOT/services/run}"
START_SERVICE=1
HOST=127.0.0.1
PROXY_IN_PORT="${PROXY_IN_PORT:-5567}"
PROXY_OUT_PORT="${PROXY_OUT_PORT:-5568}"
TILED_PORT="${TILED_PORT:-8000}"
METRICS_PORT="${METRICS_PORT:-9464}"
WAIT_SECONDS="${WAIT_SECONDS:-60}"

usage() { sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --config) CONFIG="$2"; shift 2 ;;
        --config=*) CONFIG="${1#*=}"; shift ;;
        --run-dir) RUN_DIR="$2"; shift 2 ;;
        --run-dir=*) RUN_DIR="${1#*=}"; shift ;;
        --no-service) START_SERVICE=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done

# Prefer the project's virtual environment: ./.venv in the working directory, else the repo's.
BIN=""
for venv in "$PWD/.venv" "$ROOT/.venv"; do
    if [[ -x "$venv/bin/python" ]]; then BIN="$venv/bin/"; break; fi
done
PROXY_CMD="${BIN}bluesky-0MQ-proxy"
TILED_CMD="${BIN}tiled"
MOTEX_CMD="${BIN}motex-stream"
for cmd in "$PROXY_CMD" "$MOTEX_CMD"; do
    command -v "$cmd" >/dev/null 2>&1 || { echo "not found: $cmd" >&2; exit 1; }
done
if [[ ! -f "$CONFIG" ]]; then
    echo "config not found: $CONFIG" >&2
    exit 1
fi

mkdir -p "$RUN_DIR"
chmod 700 "$RUN_DIR"   # the logs may carry run uids and, from Tiled, request details
PIDS=()
NAMES=()

log() { printf '%s [stack] %s\n' "$(date '+%H:%M:%S')" "$*"; }

stop_all() {
    local status=${1:-0}
    trap - INT TERM EXIT
    # Stop in reverse order: the service first (it flushes its sinks), the proxy last.
    local i
    for (( i=${#PIDS[@]}-1; i>=0; i-- )); do
        if kill -0 "${PIDS[$i]}" 2>/dev/null; then
            log "stopping ${NAMES[$i]} (pid ${PIDS[$i]})"
            kill -TERM "${PIDS[$i]}" 2>/dev/null || true
        fi
    done
    for (( i=${#PIDS[@]}-1; i>=0; i-- )); do
        local waited=0
        while kill -0 "${PIDS[$i]}" 2>/dev/null && (( waited < 100 )); do
            sleep 0.1; waited=$((waited + 1))
        done
        if kill -0 "${PIDS[$i]}" 2>/dev/null; then
            log "${NAMES[$i]} did not stop in 10 s; killing pid ${PIDS[$i]}"
            kill -KILL "${PIDS[$i]}" 2>/dev/null || true
        fi
        rm -f "$RUN_DIR/${NAMES[$i]}.pid"
    done
    exit "$status"
}
trap 'stop_all 130' INT
trap 'stop_all 143' TERM
trap 'stop_all $?' EXIT

# start NAME CMD...: run CMD in the background, log to RUN_DIR/NAME.log, record its pid.
start() {
    local name="$1"; shift
    "$@" >"$RUN_DIR/$name.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    NAMES+=("$name")
    echo "$pid" >"$RUN_DIR/$name.pid"
    log "started $name (pid $pid, log $RUN_DIR/$name.log)"
}

# wait_port NAME PORT: wait until something accepts TCP connections on HOST:PORT.
wait_port() {
    local name="$1" port="$2" deadline=$((SECONDS + WAIT_SECONDS))
    local pid="${PIDS[${#PIDS[@]}-1]}"
    until (exec 3<>"/dev/tcp/$HOST/$port") 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "$name exited before listening on $HOST:$port; last log lines:"
            tail -n 20 "$RUN_DIR/$name.log" >&2 || true
            return 1
        fi
        if (( SECONDS >= deadline )); then
            log "$name is not listening on $HOST:$port after ${WAIT_SECONDS} s"
            return 1
        fi
        sleep 0.2
    done
    log "$name listening on $HOST:$port"
}

start proxy "$PROXY_CMD" \
    --in-address "tcp://$HOST:$PROXY_IN_PORT" --out-address "tcp://$HOST:$PROXY_OUT_PORT"
wait_port proxy "$PROXY_IN_PORT"
wait_port proxy "$PROXY_OUT_PORT"

if [[ -n "${MOTEX_TILED_API_KEY:-}" ]]; then
    command -v "$TILED_CMD" >/dev/null 2>&1 || { echo "not found: $TILED_CMD" >&2; exit 1; }
    if [[ ! "$MOTEX_TILED_API_KEY" =~ ^[A-Za-z0-9]+$ ]]; then
        echo "MOTEX_TILED_API_KEY must be alphanumeric (tiled refuses others); try: openssl rand -hex 32" >&2
        exit 2
    fi
    # The key is passed on the command line because `tiled serve` takes it there; anyone on this
    # host can read it from the process list, so use a throw-away key for this test server.
    start tiled "$TILED_CMD" serve catalog --temp --api-key "$MOTEX_TILED_API_KEY" \
        --host "$HOST" --port "$TILED_PORT"
    wait_port tiled "$TILED_PORT"
else
    log "MOTEX_TILED_API_KEY not set: not starting Tiled"
fi

if (( START_SERVICE )); then
    start motex-stream "$MOTEX_CMD" serve --config "$CONFIG"
    # Preparing a model can take minutes before /metrics opens; waiting is informational only.
    WAIT_SECONDS=$(( WAIT_SECONDS > 300 ? WAIT_SECONDS : 300 )) \
        wait_port motex-stream "$METRICS_PORT" || log "continuing; see $RUN_DIR/motex-stream.log"
fi

log "stack up; Ctrl-C stops it"
# Return as soon as any child exits; then stop the rest.
set +e
wait -n "${PIDS[@]}"
status=$?
set -e
log "a child exited (status $status); stopping the stack"
stop_all "$(( status == 0 ? 1 : status ))"

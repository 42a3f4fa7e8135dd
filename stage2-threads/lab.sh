#!/usr/bin/env bash
# Stage 2's lab, in one command: threads help requests that wait, not
# Python that computes.
#
#   stage2-threads/lab.sh            # 10 s per measurement (about 3 minutes)
#   DURATION=3s stage2-threads/lab.sh
#
# For 1, 2, 4 and 8 threads, loads stage2-threads (lab app, 32 keep-alive
# clients) on three routes, then gunicorn's gthread worker (1 worker x 4
# threads) on the same routes, and prints requests per second:
#
#   /io?ms=10   sleeps 10 ms without the GIL: should grow with the threads
#   /cpu?ms=1   1 ms of pure Python holding the GIL: should not
#   /           hello: the cost of the server itself
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
PORT=${PORT:-18700}
THREADS=(1 2 4 8)
ROUTES=("/io?ms=10" "/cpu?ms=1" "/")

# gunicorn is the comparison column: without it, the lab runs and says so.
if command -v gunicorn >/dev/null; then
    GUNICORN=1
else
    GUNICORN=""
    echo "gunicorn is not installed (pip install gunicorn): its column is skipped" >&2
fi

echo "building (release) ..." >&2
cargo build --release -q -p stage2-threads --bin stage2-threads
cargo build --release -q --bin loadgen
STAGE2=target/release/stage2-threads
LOADGEN=target/release/loadgen
LOG=$(mktemp)
pid=""

stop_server() {
    if [ -n "$pid" ]; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        pid=""
    fi
}
trap 'stop_server; rm -f "$LOG"' EXIT

# Starts "$@" in the background and waits for its "Listening at:" banner.
start_server() {
    PORT=$((PORT + 1))
    "$@" -b "127.0.0.1:$PORT" >/dev/null 2>"$LOG" &
    pid=$!
    for _ in $(seq 200); do
        grep -q "Listening at:" "$LOG" && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    echo "the server did not start: $*" >&2
    cat "$LOG" >&2
    exit 1
}

# Requests per second on one route (with the error count, if any).
measure() {
    "$LOADGEN" "http://127.0.0.1:$PORT$1" -c "$CONNS" -d "$DURATION" --json |
        python3 -c 'import json, sys
r = json.load(sys.stdin)
errors = " (%d errors)" % r["errors"] if r["errors"] else ""
print("%d%s" % (round(r["rps"]), errors))'
}

declare -A RPS
row() {
    local name=$1
    shift
    start_server "$@"
    for route in "${ROUTES[@]}"; do
        RPS[$name,$route]=$(measure "$route")
        echo "  $name $route: ${RPS[$name,$route]} req/s" >&2
    done
    stop_server
}

echo "measuring, $DURATION per route, $CONNS clients, $(nproc) CPUs ..." >&2
for n in "${THREADS[@]}"; do
    row "stage2 --threads $n" "$STAGE2" apps.lab:app --threads "$n"
done
if [ -n "$GUNICORN" ]; then
    row "gunicorn gthread 1x4" gunicorn --workers 1 --threads 4 --worker-class gthread apps.lab:app
fi

NAMES=()
for n in "${THREADS[@]}"; do NAMES+=("stage2 --threads $n"); done
[ -n "$GUNICORN" ] && NAMES+=("gunicorn gthread 1x4")
echo
printf '%-22s' "requests/s"
for route in "${ROUTES[@]}"; do printf '%14s' "$route"; done
echo
for name in "${NAMES[@]}"; do
    printf '%-22s' "$name"
    for route in "${ROUTES[@]}"; do printf '%14s' "${RPS[$name,$route]}"; done
    echo
done

# The figures the lab expects, checked.
num() { echo "${1%% *}"; }
io8=$(num "${RPS[stage2 --threads 8,/io?ms=10]}")
cpu1=$(num "${RPS[stage2 --threads 1,/cpu?ms=1]}")
hello4=$(num "${RPS[stage2 --threads 4,/]}")
gunicorn=0
[ -n "$GUNICORN" ] && gunicorn=$(num "${RPS[gunicorn gthread 1x4,/]}")
cpus=()
for n in "${THREADS[@]}"; do cpus+=("$(num "${RPS[stage2 --threads $n,/cpu?ms=1]}")"); done
echo
python3 - "$io8" "$cpu1" "$hello4" "$gunicorn" "${cpus[@]}" <<'EOF'
import sys
io8, cpu1, hello4, gunicorn, *cpus = map(float, sys.argv[1:])
def check(ok, text):
    print(("ok    " if ok else "MISSED") + "  " + text)
check(io8 >= 0.85 * 8 / 0.010,
      f"/io?ms=10, 8 threads: {io8:.0f} req/s, at least 85% of 8 / 10 ms = 680")
worst = max(abs(c - cpu1) / cpu1 for c in cpus) if cpu1 else 1
check(all(c <= cpu1 * 1.2 for c in cpus),
      f"/cpu?ms=1 stays flat: at most {worst:.0%} away from 1 thread ({cpu1:.0f} req/s), "
      "never 20% above it (the GIL)")
if gunicorn:
    check(hello4 >= 2 * gunicorn,
          f"hello, 4 threads: {hello4 / gunicorn:.1f}x gunicorn gthread 1x4 (at least 2x)")
else:
    print("skip    hello against gunicorn: gunicorn is not installed")
EOF

#!/bin/sh
# What an empty pre_request/post_request pair costs a sync worker: the CPU
# time its workers spend per request, with and without the hooks. CPU time,
# unlike requests per second, hardly depends on what else a busy machine is
# doing. Run from the workspace root, after
#   cargo build --release -p stage3-prefork -p loadgen
set -e
N=40000
printf '# no hooks\n' > /tmp/no_hooks.conf.py
printf 'def pre_request(worker, req):\n    pass\n\ndef post_request(worker, req, environ, resp):\n    pass\n' > /tmp/empty_hooks.conf.py
cpu_per_request() {
    target/release/stage3-prefork -c "$1" -w 2 -b 127.0.0.1:8765 2>/dev/null &
    master=$!
    sleep 1.5
    target/release/loadgen http://127.0.0.1:8765/ -c 8 -n $N > /dev/null
    ticks=0
    for worker in $(pgrep -P $master); do
        # utime and stime, fields 14 and 15 of /proc/PID/stat, in 1/100 s
        ticks=$((ticks + $(cut -d' ' -f14 /proc/$worker/stat) + $(cut -d' ' -f15 /proc/$worker/stat)))
    done
    kill $master
    wait $master || true
    echo "$((ticks * 10000 / N)) us"
}
for run in 1 2 3; do
    echo "run $run: without hooks $(cpu_per_request /tmp/no_hooks.conf.py), with empty hooks $(cpu_per_request /tmp/empty_hooks.conf.py) of CPU per request"
done

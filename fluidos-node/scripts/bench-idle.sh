#!/usr/bin/env bash
# Idle footprint of `fluidos-node run` (release build): RSS after start, peak RSS,
# and CPU used over an idle window, read from /proc/<pid>/{status,stat}.
#
#   cargo build --release -p fluidos-node
#   fluidos-node/scripts/bench-idle.sh [seconds=60] [binary=target/release/fluidos-node]
#
# The daemon runs with mDNS off, on loopback, with a fresh data directory; it is
# stopped with SIGTERM (by pid) at the end and must exit 0.
set -euo pipefail
secs=${1:-60}
bin=${2:-target/release/fluidos-node}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
hz=$(getconf CLK_TCK)

"$bin" --data-dir "$dir/d" init --mdns false --listen /ip4/127.0.0.1/tcp/0 --control 127.0.0.1:0 >/dev/null
RUST_LOG=warn "$bin" --data-dir "$dir/d" run 2>"$dir/log" &
pid=$!
for _ in $(seq 100); do [ -f "$dir/d/control.addr" ] && break; sleep 0.1; done
"$bin" --data-dir "$dir/d" status --json >/dev/null   # one request, as a user would
sleep 2                                               # let start-up settle

ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
kb() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$pid/status"; }
rss_start=$(kb VmRSS)
t0=$(ticks); s0=$(date +%s.%N)
sleep "$secs"
t1=$(ticks); s1=$(date +%s.%N)
rss_end=$(kb VmRSS); hwm=$(kb VmHWM); threads=$(awk '$1 == "Threads:" {print $2}' "/proc/$pid/status")
kill -TERM "$pid"
wait "$pid"; rc=$?

awk -v t="$((t1 - t0))" -v hz="$hz" -v a="$s0" -v b="$s1" -v r0="$rss_start" -v r1="$rss_end" \
    -v h="$hwm" -v th="$threads" -v rc="$rc" 'BEGIN {
  wall = b - a; cpu = t / hz;
  printf "idle window      %.1f s\n", wall;
  printf "idle CPU         %.3f s = %.3f %% of one core\n", cpu, 100 * cpu / wall;
  printf "RSS after start  %.1f MiB\n", r0 / 1024;
  printf "RSS at end       %.1f MiB\n", r1 / 1024;
  printf "peak RSS (HWM)   %.1f MiB\n", h / 1024;
  printf "threads          %d\n", th;
  printf "exit on SIGTERM  %d\n", rc;
}'

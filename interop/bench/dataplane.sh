#!/usr/bin/env bash
# Data-plane forwarding rate of a running chordphone node against the
# loopback ceiling (issue 9 §3).
#
#   1. A release build; one node (overlay "bench.dataplane", SIP off) whose
#      [dataplane] has WORKERS workers on 127.0.0.1.
#   2. ENTRIES forwarding entries, installed with `chordphone forward add`:
#      entry i joins 127.0.0.1:(A_BASE+i) and 127.0.0.1:(B_BASE+i).
#   3. loadgen (C, compiled here) binds those 2*ENTRIES sockets and sends
#      SIZE-byte datagrams (172: one RTP packet of 20 ms Opus) alternately
#      from A_i and B_i to the entry's data-plane socket, round-robin over
#      the entries, as fast as it can for SECONDS, counting what arrives.
#      The node's CPU time (utime+stime of all its threads, /proc/PID/stat)
#      over the run gives packets/s per core = received / CPU seconds.
#   4. The same load at LOSS_RATE datagrams/s: sent, received, lost.
#   5. minfwd (C: one socket, one thread, recvmmsg/sendmmsg, a port table)
#      under the same saturating load: its packets/s per core.
# Last line: dataplane_pps chordphone=X ceiling=Y ratio=X/Y   (per core)
#
# Usage: interop/bench/dataplane.sh      (environment overrides:
#   ENTRIES=1000 SECONDS_RUN=10 SIZE=172 LOSS_RATE=50000 LOSS_SECONDS=10
#   WORKERS=<CPUs> A_BASE=21000 B_BASE=23000 MIN_PORT=25000 DEBUG=0
#   PERF=FILE: perf record -g the node during the saturation run)
# A_BASE/B_BASE/MIN_PORT sit below Linux's ephemeral range (32768+).
# Every process started here is stopped by PID; files live in a mktemp dir.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ENTRIES=${ENTRIES:-1000}
SECONDS_RUN=${SECONDS_RUN:-10}
SIZE=${SIZE:-172}
LOSS_RATE=${LOSS_RATE:-50000}
LOSS_SECONDS=${LOSS_SECONDS:-10}
WORKERS=${WORKERS:-$(nproc)}
A_BASE=${A_BASE:-21000}
B_BASE=${B_BASE:-23000}
MIN_PORT=${MIN_PORT:-25000}
TICK=$(getconf CLK_TCK)

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

cd "$ROOT"
if [ "${DEBUG:-0}" = 1 ]; then
    cargo build --quiet
    BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug/chordphone
else
    cargo build --release --quiet
    BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/chordphone
fi
gcc -O2 -o "$WORK/loadgen" "$HERE/dataplane/loadgen.c" -lpthread
gcc -O2 -o "$WORK/minfwd" "$HERE/dataplane/minfwd.c"

# CPU seconds (all threads) of process $1 so far.
cpu_s() { sed 's/.*) //' "/proc/$1/stat" | awk -v t="$TICK" '{ printf "%.3f", ($12 + $13) / t }'; }
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<<"$2"; }

# 1. The node.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BIN" overlay init --name bench.dataplane --dir "$WORK/overlay" --bootstrap "127.0.0.1:$PORT" >/dev/null
"$BIN" enroll --overlay "$WORK/overlay" --out "$WORK/node" --user node0@bench.dataplane >/dev/null
cat >"$WORK/node/node.toml" <<EOF
listen = "127.0.0.1:$PORT"
log = "warn"
[sip]
udp = "off"
tcp = "off"
tls = "off"
node_tls = "off"
[dataplane]
workers = $WORKERS
address = "127.0.0.1"
EOF
RUST_LOG=warn "$BIN" node --data-dir "$WORK/node" 2>"$WORK/node.log" &
NODE=$!
PIDS+=("$NODE")
for _ in $(seq 100); do
    "$BIN" status --data-dir "$WORK/node" >/dev/null 2>&1 && break
    sleep 0.1
done
"$BIN" status --data-dir "$WORK/node" >/dev/null

# 2. The entries.
: >"$WORK/entries"
: >"$WORK/entries-min"
for i in $(seq 0 $((ENTRIES - 1))); do
    a=$((A_BASE + i)) b=$((B_BASE + i))
    out=$("$BIN" forward add --data-dir "$WORK/node" --from "127.0.0.1:$a" --to "127.0.0.1:$b")
    echo "$a $b ${out##*:}" >>"$WORK/entries"
    echo "$a $b $MIN_PORT" >>"$WORK/entries-min"
done
echo "installed $ENTRIES entries on $WORKERS workers: $(cut -d' ' -f3 "$WORK/entries" | sort -u | tr '\n' ' ')"

# The node's totals: "forwarded dropped unmatched".
totals() { "$BIN" forward list --json --data-dir "$WORK/node" | python3 -c 'import json,sys; t=json.load(sys.stdin)["totals"]; print(t["forwarded"], t["dropped"], t["unmatched"])'; }
# The kernel's UDP buffer overflows, host-wide (other programs count too):
# "RcvbufErrors SndbufErrors".
udp_errors() { awk '/^Udp:/ { if (h) { print $(h_r), $(h_s) } else { for (i = 1; i <= NF; i++) { if ($i == "RcvbufErrors") h_r = i; if ($i == "SndbufErrors") h_s = i } h = 1 } }' /proc/net/snmp; }
delta() { awk -v a="$1" -v b="$2" 'BEGIN { n = split(a, x, " "); split(b, y, " "); for (i = 1; i <= n; i++) printf "%s%d", (i > 1 ? " " : ""), y[i] - x[i] }'; }

# Runs loadgen against process $1 with entries file $2 at rate $3 for $4 s;
# prints "<loadgen line> cpu_s=C".
measure() {
    local c0 c1 line
    c0=$(cpu_s "$1")
    line=$("$WORK/loadgen" "$2" "$3" "$4" "$SIZE")
    c1=$(cpu_s "$1")
    echo "$line cpu_s=$(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.3f", b - a }')"
}
per_core() { awk -v r="$(field received "$1")" -v c="$(field cpu_s "$1")" 'BEGIN { printf "%.0f", (c > 0 ? r / c : 0) }'; }
wall() { awk -v r="$(field received "$1")" -v e="$(field elapsed_s "$1")" 'BEGIN { printf "%.0f", r / e }'; }

# 3. Saturation through the node.
t0=$(totals)
if [ -n "${PERF:-}" ]; then
    perf record -g -o "$PERF" -p "$NODE" -- sleep "$SECONDS_RUN" 2>/dev/null &
    PIDS+=("$!")
fi
node_run=$(measure "$NODE" "$WORK/entries" 0 "$SECONDS_RUN")
read -r fwd drop unm <<<"$(delta "$t0" "$(totals)")"
CP=$(per_core "$node_run")
echo "chordphone saturate: $node_run node_forwarded=$fwd node_dropped=$drop node_unmatched=$unm wall_pps=$(wall "$node_run") pps_per_core=$CP"

# 4. Loss at LOSS_RATE.
t0=$(totals)
u0=$(udp_errors)
loss_run=$(measure "$NODE" "$WORK/entries" "$LOSS_RATE" "$LOSS_SECONDS")
read -r fwd drop unm <<<"$(delta "$t0" "$(totals)")"
read -r rcvbuf sndbuf <<<"$(delta "$u0" "$(udp_errors)")"
sent=$(field sent "$loss_run")
failed=$(field send_failed "$loss_run")
recv=$(field received "$loss_run")
lost=$((sent - failed - recv))
echo "chordphone loss check at $LOSS_RATE/s: $loss_run node_forwarded=$fwd node_dropped=$drop kernel_rcvbuf_errors=$rcvbuf kernel_sndbuf_errors=$sndbuf lost=$lost ($([ "$lost" -eq 0 ] && [ "$failed" -eq 0 ] && echo PASS || echo FAIL))"
kill "$NODE"
wait "$NODE" 2>/dev/null || true

# 5. The ceiling: the minimal forwarder under the same load.
"$WORK/minfwd" "$MIN_PORT" "$WORK/entries-min" &
MIN=$!
PIDS+=("$MIN")
for _ in $(seq 50); do ss -Huln "sport = :$MIN_PORT" | grep -q . && break; sleep 0.1; done
min_run=$(measure "$MIN" "$WORK/entries-min" 0 "$SECONDS_RUN")
MP=$(per_core "$min_run")
echo "minfwd saturate: $min_run wall_pps=$(wall "$min_run") pps_per_core=$MP"
kill "$MIN"

echo "dataplane_pps chordphone=$CP ceiling=$MP ratio=$(awk -v a="$CP" -v b="$MP" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')"

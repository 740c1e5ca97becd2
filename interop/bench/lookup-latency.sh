#!/usr/bin/env bash
# Lookup latency through real chordphone peers on loopback (issue 9).
#
#   1. A release build; an overlay (update and ping interval 5 s, as in
#      interop/sip/lib.sh) and NODES enrolled peers on 127.0.0.1, SIP off,
#      each a `chordphone node` process.
#   2. Waits until every peer has joined and the ring is stable: each
#      peer's first three successors and predecessors are the reference
#      ring of the enrolled Node-IDs (as tests/support/cluster.rs checks).
#   3. Warms the links: WARM lookups from every peer, samples discarded.
#   4. From ASKERS peers, spread over the ring, one after the other:
#      LOOKUPS lookups each, back to back inside the node
#      (`chordphone lookup --repeat LOOKUPS --json PREFIX`): each sample is
#      timed by the node from issuing the RELOAD request (a Ping routed to
#      the resource, RFC 6940 §6.5.2) to its answer, so the CLI's start-up
#      and the control socket are not in it. Names are PREFIX0, PREFIX1, …
#      with a fresh prefix per run, so their Resource-IDs are spread
#      uniformly over the ring.
#   Prints one line per asker, then the totals, and last:
#     lookup_latency_us p50=X p99=Y max=Z mean=M hops_mean=H samples=N failed=F goal_p50<1000 met|missed
#
# Usage: interop/bench/lookup-latency.sh [options]
#   --nodes N     peers (10)            --lookups N  samples per asker (2000)
#   --askers N    asking peers (3)      --warm N     warm-up lookups per peer (200)
#   --link TYPE   TLS-TCP-FH-NO-ICE (default) or DTLS-UDP-SR-NO-ICE
#   --perf FILE   `perf record -g` every node during the measured lookups
#   --keep        keep the work directory (node logs)
# Environment: CHORDPHONE_BIN (skip the build), CARGO_TARGET_DIR, CP_NODE_LOG
# (node log filter, default warn). Every process started here is stopped
# by PID (interop/sip/lib.sh); files live in a mktemp directory.
# Exit status: 0 when every lookup succeeded (goal met or not), 1 otherwise.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

NODES=10 LOOKUPS=2000 ASKERS=3 WARM=200 LINK=TLS-TCP-FH-NO-ICE PERF_OUT=""
while [ $# -gt 0 ]; do
    case $1 in
        --nodes) NODES=$2; shift 2 ;;
        --lookups) LOOKUPS=$2; shift 2 ;;
        --askers) ASKERS=$2; shift 2 ;;
        --warm) WARM=$2; shift 2 ;;
        --link) LINK=$2; shift 2 ;;
        --perf) PERF_OUT=$2; shift 2 ;;
        --keep) export CP_KEEP=1; shift ;;
        -h | --help) sed -n '2,/^set -euo/{/^set -euo/!p}' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 1 ;;
    esac
done
[ "$NODES" -ge 2 ] && [ "$ASKERS" -ge 1 ] && [ "$ASKERS" -le "$NODES" ] ||
    { echo "need --nodes >= 2 and 1 <= --askers <= --nodes" >&2; exit 1; }

# shellcheck source=../sip/lib.sh
. "$ROOT/interop/sip/lib.sh"
cp_init
W=$CP_WORK
DOMAIN=bench.lookup

if [ -z "${CHORDPHONE_BIN:-}" ]; then
    cp_log "building (release)"
    (cd "$ROOT" && cargo build --release --quiet) >"$W/build.log" 2>&1 || { tail -20 "$W/build.log" >&2; cp_die "release build failed"; }
    cp "${CARGO_TARGET_DIR:-$ROOT/target}/release/chordphone" "$W/chordphone"
    CHORDPHONE_BIN=$W/chordphone
fi
BIN=$CHORDPHONE_BIN

# NODES ports free on 127.0.0.1 for both TCP and UDP right now.
read -r -a PORTS <<<"$(python3 - "$NODES" <<'PY'
import socket, sys
held, ports = [], []
while len(ports) < int(sys.argv[1]):
    t = socket.socket(); t.bind(("127.0.0.1", 0)); p = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", p))
    except OSError:
        t.close(); continue
    held += [t, u]; ports.append(p)
print(" ".join(map(str, ports)))
PY
)"

"$BIN" overlay init --name "$DOMAIN" --dir "$W/overlay" --bootstrap "127.0.0.1:${PORTS[0]}" \
    --update-interval 5 --ping-interval 5 --link "$LINK" >"$W/overlay-init.log" 2>&1 ||
    { cat "$W/overlay-init.log" >&2; cp_die "overlay init failed"; }
NODE_PIDS=()
for ((i = 0; i < NODES; i++)); do
    d="$W/node$i"
    "$BIN" enroll --overlay "$W/overlay" --out "$d" --user "node$i@$DOMAIN" >"$W/enroll-$i.log" 2>&1 ||
        { cat "$W/enroll-$i.log" >&2; cp_die "enroll node$i failed"; }
    cat >"$d/node.toml" <<EOF
listen = "127.0.0.1:${PORTS[$i]}"

[sip]
udp = "off"
tcp = "off"
tls = "off"
node_tls = "off"
EOF
done

start_node() {
    RUST_LOG=${CP_NODE_LOG:-warn} "$BIN" node --data-dir "$W/node$1" >"$W/node$1/node.log" 2>&1 &
    NODE_PIDS[$1]=$!
    cp_track "$!"
}
joined() {
    "$BIN" status --data-dir "$W/node$1" --json 2>/dev/null |
        python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin).get("joined") is True else 1)'
}
start_node 0
cp_wait_until 30 "node0 starts the ring" joined 0 || { tail -20 "$W/node0/node.log" >&2; cp_die "node0 did not start"; }
for ((i = 1; i < NODES; i++)); do start_node "$i"; done
for ((i = 0; i < NODES; i++)); do
    cp_wait_until 90 "node$i joined" joined "$i" || { tail -20 "$W/node$i/node.log" >&2; cp_die "node$i did not join"; }
done
cp_log "$NODES peers joined (pids ${NODE_PIDS[*]}); waiting for a stable ring"

# ring_ok: every peer's first min(3, N-1) successors and predecessors are
# the reference ring of all Node-IDs.
ring_ok() {
    local i
    for ((i = 0; i < NODES; i++)); do
        "$BIN" status --data-dir "$W/node$i" --json 2>/dev/null || echo '{}'
    done | python3 -c '
import json, sys
st = [json.loads(l) for l in sys.stdin if l.strip()]
ids = sorted(s.get("node_id", "") for s in st)
n, depth = len(ids), min(3, len(ids) - 1)
for s in st:
    if s.get("joined") is not True:
        sys.exit(1)
    p = ids.index(s["node_id"])
    succ = [ids[(p + k) % n] for k in range(1, depth + 1)]
    pred = [ids[(p - k) % n] for k in range(1, depth + 1)]
    if s.get("successors", [])[:depth] != succ or s.get("predecessors", [])[:depth] != pred:
        sys.exit(1)
'
}
t0=$SECONDS
cp_wait_until 120 "a stable ring" ring_ok || cp_die "the ring did not stabilise within 120 s"
cp_log "ring stable after $((SECONDS - t0)) s"

# series NODE PREFIX COUNT OUT: one lookup series through NODE, JSON in OUT.
series() {
    "$BIN" lookup --data-dir "$W/node$1" --repeat "$3" --json "$2" >"$4" ||
        cp_die "lookup series through node$1 failed"
}
RUN=$(date +%s%N)
cp_log "warming: $WARM lookups from each peer"
for ((i = 0; i < NODES; i++)); do series "$i" "warm-$RUN-$i-" "$WARM" "$W/warm-$i.json"; done

ASKING=()
for ((k = 0; k < ASKERS; k++)); do ASKING+=($((k * NODES / ASKERS))); done
PERF_PID=""
if [ -n "$PERF_OUT" ]; then
    perf record -g -F 999 -o "$PERF_OUT" -p "$(IFS=,; echo "${NODE_PIDS[*]}")" >"$W/perf.log" 2>&1 &
    PERF_PID=$!
    cp_track "$PERF_PID"
    cp_wait_until 10 "perf attached" grep -q . "$PERF_OUT" || true
fi
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for a in "${ASKING[@]}"; do
    cp_log "measuring: $LOOKUPS lookups from node$a"
    series "$a" "bench-$RUN-$a-" "$LOOKUPS" "$W/measure-$a.json"
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
if [ -n "$PERF_PID" ]; then
    kill -INT "$PERF_PID" 2>/dev/null || true
    cp_wait_until 30 "perf wrote $PERF_OUT" sh -c "! kill -0 $PERF_PID 2>/dev/null" || cp_stop_pid "$PERF_PID"
    cp_log "perf data in $PERF_OUT"
fi

echo "setup: nodes=$NODES link=$LINK askers=${ASKING[*]} lookups_per_asker=$LOOKUPS warm_per_peer=$WARM" \
    "cpus=$(nproc) loadavg_before=${LOAD_BEFORE// /,} loadavg_after=${LOAD_AFTER// /,}"
OK=0
python3 - "$W" "${ASKING[@]}" <<'PY' || OK=1
import json, sys
work, askers = sys.argv[1], sys.argv[2:]

def pct(s, p):
    # nearest rank
    return s[max(1, -(-len(s) * p // 100)) - 1] if s else 0

def summary(us, hops, failed):
    us = sorted(us)
    mean = sum(us) / len(us) if us else 0
    hm = sum(hops) / len(hops) if hops else 0
    return (f"p50={pct(us, 50)} p99={pct(us, 99)} max={us[-1] if us else 0} mean={mean:.0f} "
            f"hops_mean={hm:.2f} samples={len(us)} failed={failed}")

all_us, all_hops, failed = [], [], 0
for a in askers:
    r = json.load(open(f"{work}/measure-{a}.json"))
    print(f"node{a}: {summary(r['elapsed_us'], r['hops'], r['failed'])}"
          + (f" first_error={r['first_error']!r}" if r.get("first_error") else ""))
    all_us += r["elapsed_us"]; all_hops += r["hops"]; failed += r["failed"]
for h in sorted(set(all_hops)):
    sel = sorted(u for u, k in zip(all_us, all_hops) if k == h)
    print(f"  hops={h}: n={len(sel)} p50={pct(sel, 50)} p99={pct(sel, 99)}")
met = "met" if all_us and pct(sorted(all_us), 50) < 1000 else "missed"
print(f"lookup_latency_us {summary(all_us, all_hops, failed)} goal_p50<1000 {met}")
sys.exit(1 if failed else 0)
PY
for ((i = NODES - 1; i >= 0; i--)); do cp_stop_pid "${NODE_PIDS[$i]}"; done
exit "$OK"

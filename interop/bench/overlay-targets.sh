#!/usr/bin/env bash
# The overlay targets of docs/benchmarks.md, each a real `chordphone sim`
# run; prints one line per scenario with the figures the targets name.
# Usage: bash interop/bench/overlay-targets.sh [--with-100k]
set -euo pipefail
WITH_100K="${1:-}"
cd "$(dirname "$0")/../.."
cargo build --release --quiet
# A private copy, so a rebuild during the run cannot mix binaries.
BIN=$(mktemp -d)/chordphone
cp target/release/chordphone "$BIN"

run() {
    local name=$1; shift
    local json
    json=$($BIN sim --json "$@" | tail -1)
    python3 - "$name" "$json" "$*" <<'PY'
import json, math, sys
name, j, args = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
keys = ["nodes", "crypto", "lookup_success_rate", "hops_mean", "hops_p99", "fetch_success_rate",
        "records_lost_with_live_replica", "records_lost_all_replicas_dead", "ring_correct", "repair_s",
        "messages_per_node_per_s", "wall_s", "peak_rss_mb"]
fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)
print(f"{name}: " + " ".join(f"{k}={fmt(j.get(k))}" for k in keys))
print(f"  bound hops_mean <= 0.5*log2(N)+0.5 = {0.5*math.log2(j['nodes'])+0.5:.2f}; command: chordphone sim --json {args}")
PY
}

# The targets at N=1000 with the cheap signature stand-in, then the same
# scenarios with real Ed25519 certificates at N=300.
for cfg in "1000 fast" "300 real"; do
    set -- $cfg; n=$1; crypto=$2
    run "N=$n no churn" --nodes $n --duration 600 --stores 200 --lookups-per-s 20 --crypto $crypto
    run "N=$n churn 30 min median, 2 h" --nodes $n --duration 7200 --session-median 1800 --stores 200 --lookups-per-s 10 --crypto $crypto
    run "N=$n 50% killed" --nodes $n --duration 240 --kill-fraction 0.5 --kill-at 60 --stores 200 --lookups-per-s 20 --crypto $crypto
done
set --
run "N=10000 10 simulated min" --nodes 10000 --duration 600 --join-rate 100 --stores 1000 --lookups-per-s 20 --crypto fast
if [ "$WITH_100K" = "--with-100k" ]; then
    run "N=100000" --nodes 100000 --duration 60 --join-rate 500 --stores 1000 --lookups-per-s 20 --crypto fast
fi

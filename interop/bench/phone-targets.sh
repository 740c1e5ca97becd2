#!/usr/bin/env bash
# The simulator-with-phones targets of issue 9 (docs/benchmarks.md, "Phones
# in the simulator"): each a real `chordphone sim` run of the same Peer the
# daemon runs, with scripted SIP user agents. Prints one line per scenario
# with the figures the targets name, then whether two runs with the same
# seed gave byte-identical reports.
# Usage: bash interop/bench/phone-targets.sh [--with-1m]
#   --with-1m  also the largest run: 100,000 peers and 1,000,000 phones
set -euo pipefail
WITH_1M="${1:-}"
cd "$(dirname "$0")/../.."
cargo build --release --quiet
# A private copy, so a rebuild during the run cannot mix binaries.
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
BIN=$DIR/chordphone
cp target/release/chordphone "$BIN"

run() {
    local name=$1; shift
    "$BIN" sim --json "$@" | tail -1 > "$DIR/last.json"
    python3 - "$name" "$DIR/last.json" "$*" <<'PY'
import json, sys
name, path, args = sys.argv[1], sys.argv[2], sys.argv[3]
j = json.load(open(path))
keys = ["nodes", "phones", "crypto", "registrations", "registration_success_rate", "phones_rehomed", "calls",
        "call_success_rate", "calls_failed_node_lost", "calls_to_rehomed", "calls_to_rehomed_failed", "call_setup_ms_p50", "call_setup_ms_p99", "call_recovery_s",
        "sip_messages", "messages_delivered_rate", "registrations_lost", "ring_correct", "repair_s", "wall_s",
        "peak_rss_mb"]
fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)
print(f"{name}: " + " ".join(f"{k}={fmt(j.get(k))}" for k in keys))
print(f"  failures={j.get('failures')}; command: chordphone sim --json {args}")
PY
}

PHONES="--phones 20000 --calls-per-s 50 --messages-per-s 50"
run "N=1000, 20,000 phones, no churn" --nodes 1000 $PHONES --duration 120 --quiesce 30
run "N=1000, 20,000 phones, 50% killed at 60 s" --nodes 1000 $PHONES --duration 120 --quiesce 30 --kill-fraction 0.5 --kill-at 60

# Determinism: the same options twice must give the same report (wall_s
# and peak_rss_mb excluded: they are the machine's, not the simulation's).
same=( --nodes 1000 $PHONES --duration 60 --quiesce 10 --crypto fast )
for i in 1 2; do
    "$BIN" sim --json "${same[@]}" | tail -1 | python3 -c \
        'import json,sys; j=json.load(sys.stdin); j.pop("wall_s"); j.pop("peak_rss_mb"); print(json.dumps(j, sort_keys=True))' \
        > "$DIR/same$i.json"
done
if cmp -s "$DIR/same1.json" "$DIR/same2.json"; then
    echo "same seed, same report: yes ($(sha256sum < "$DIR/same1.json" | cut -c1-16))"
else
    echo "same seed, same report: NO"; exit 1
fi

if [ "$WITH_1M" = "--with-1m" ]; then
    run "N=100000, 1,000,000 phones" --nodes 100000 --join-rate 500 --phones 1000000 --calls-per-s 200 \
        --messages-per-s 200 --duration 60 --quiesce 10 --crypto fast
fi

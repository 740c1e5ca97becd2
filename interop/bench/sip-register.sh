#!/usr/bin/env bash
# SIP edge throughput, chordphone against Kamailio, with the same sipp load.
#
#   REGISTER: register_auth.xml (REGISTER -> 401 -> REGISTER with MD5 digest
#             -> 200) for USERS distinct users, offered at RATE per RATE_PERIOD ms.
#   INVITE:   uac_call.xml -> proxy -> uas_answer.xml (INVITE, [407 + auth],
#             100/180/200, ACK, BYE, 200; no hold time), CALLS calls at CALL_RATE/s.
#             The sipp UAS registers as user "uas"; callers are the USERS.
#
#   (a) chordphone: a 3-node overlay on loopback (interop/sip/lib.sh); users
#       are added on node A with `chordphone user add`; sipp registers at A;
#       for INVITE the UAS registers at node B (--uas-node) and the UAC sends
#       to A, so every call crosses the overlay (A looks up the AOR, forwards
#       to B over node-to-node SIP).
#   (b) Kamailio 5.6 (interop/bench/kamailio/kamailio.cfg: usrloc in memory,
#       auth with a fixed password), one process, on 127.0.0.1:$KAM_PORT.
#
# Output: one line per run (sipp_stats.py: successful, failed, elapsed_s,
# per_s), then
#   invite_per_s chordphone=X kamailio=Y ratio=X/Y
#   register_per_s chordphone=X kamailio=Y ratio=X/Y      (always the last line)
# per_s = successful transactions / (sipp's last final answer - its start).
# When the offered rate is below a server's capacity, per_s is the offered
# rate: raise --rate until per_s stops following it.
#
# Usage: interop/bench/sip-register.sh [options]
#   --users N          (10000)      --rate R          (20000) --rate-period MS (1000)
#   --calls N          (5000)       --call-rate R     (5000)
#   --limit N          max concurrent sipp calls (200): with an offered rate above
#                      capacity, this closed loop keeps the server saturated without
#                      unbounded queues, so per_s is the capacity
#   --kam-workers N    Kamailio UDP worker processes (default: number of CPUs)
#   --uas-node A|B|C   where the INVITE target registers on the chordphone side (B)
#   --only kamailio|chordphone
#   --debug            use target/debug/chordphone (default: a release build)
# Exit status: 0 when both sides ran and every transaction succeeded; 2 when
# the chordphone side was skipped (no `chordphone user add`, build failure);
# 1 otherwise.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SIP="$ROOT/interop/sip"

USERS=10000 RATE=20000 RATE_PERIOD=1000 CALLS=5000 CALL_RATE=5000 LIMIT=200
KAM_WORKERS_OPT=$(nproc) UAS_NODE=B ONLY="" PROFILE=release
while [ $# -gt 0 ]; do
    case $1 in
        --users) USERS=$2; shift 2 ;;
        --rate) RATE=$2; shift 2 ;;
        --rate-period) RATE_PERIOD=$2; shift 2 ;;
        --calls) CALLS=$2; shift 2 ;;
        --call-rate) CALL_RATE=$2; shift 2 ;;
        --limit) LIMIT=$2; shift 2 ;;
        --kam-workers) KAM_WORKERS_OPT=$2; shift 2 ;;
        --uas-node) UAS_NODE=$2; shift 2 ;;
        --only) ONLY=$2; shift 2 ;;
        --debug) PROFILE=debug; shift ;;
        -h | --help) sed -n '2,/^set -euo/{/^set -euo/!p}' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 1 ;;
    esac
done

# shellcheck source=../sip/lib.sh
. "$SIP/lib.sh"
cp_init
command -v sipp >/dev/null || cp_die "sipp is not installed (apt-get install sip-tester)"
W=$CP_WORK
python3 "$SIP/sipp/gen-users.py" "$USERS" >"$W/users.csv"
printf 'SEQUENTIAL\nuas;secret;\n' >"$W/uas.csv"
ALL_OK=1

# run_sipp NAME SIPP_ARGS...: sipp with common options; prints its stats
# line and leaves it in LINE.
run_sipp() {
    local name=$1; shift
    sipp "$@" -i 127.0.0.1 -key domain "$CP_DOMAIN" -nostdin -timeout 300s -recv_timeout 10000 \
        -max_recv_loops 10000 -max_sched_loops 10000 -buff_size 4194304 \
        -trace_err -error_file "$W/$name.errors" >"$W/$name.log" 2>&1 || true
    if LINE=$(python3 "$SIP/sipp_stats.py" "$W/$name.log" --require-success); then
        LINE="$name: $LINE"
    else
        LINE="$name: ${LINE:-no statistics, see $W/$name.log} (FAILURES: see $W/$name.log)"
        ALL_OK=0
    fi
    echo "$LINE"
}

per_s() { sed -n 's/.* per_s=\([0-9.]*\).*/\1/p' <<<"$1"; }

# bench SERVER_HOSTPORT UAS_REGISTRAR_HOSTPORT LABEL: REGISTER then INVITE runs.
bench() {
    local server=$1 uas_reg=$2 label=$3 uas_port=$((KAM_PORT + 300)) reg inv
    run_sipp "register-$label" "$server" -sf "$SIP/sipp/register_auth.xml" -inf "$W/users.csv" \
        -key registrar "$server" -key expires 3600 -m "$USERS" -r "$RATE" -rp "$RATE_PERIOD" -l "$LIMIT"
    reg=$(per_s "$LINE")
    # The UAS registers (its Contact is 127.0.0.1:uas_port), then answers.
    run_sipp "uas-register-$label" "$uas_reg" -sf "$SIP/sipp/register_auth.xml" -inf "$W/uas.csv" \
        -key registrar "$uas_reg" -key expires 3600 -p "$uas_port" -m 1
    sipp -sf "$SIP/sipp/uas_answer.xml" -i 127.0.0.1 -p "$uas_port" -nostdin -m "$CALLS" -timeout 300s \
        -max_recv_loops 10000 -max_sched_loops 10000 -buff_size 4194304 >"$W/uas-$label.log" 2>&1 &
    local uas_pid=$!
    cp_track "$uas_pid"
    cp_wait_until 10 "sipp uas listening on $uas_port" sh -c "ss -lun | grep -q '127.0.0.1:$uas_port '"
    run_sipp "invite-$label" "$server" -sf "$SIP/sipp/uac_call.xml" -inf "$W/users.csv" -s uas -d 0 \
        -m "$CALLS" -r "$CALL_RATE" -l "$LIMIT" -default_behaviors all,-abortunexp
    inv=$(per_s "$LINE")
    cp_wait_until 15 "sipp uas done" sh -c "! kill -0 $uas_pid 2>/dev/null" || cp_stop_pid "$uas_pid"
    eval "${label}_REG=\${reg:-0} ${label}_INV=\${inv:-0}"
}

chordphone_REG=skipped chordphone_INV=skipped kamailio_REG=skipped kamailio_INV=skipped
CP_SKIPPED=0

# ------------------------------------------------------------- (a) chordphone
if [ "$ONLY" != kamailio ]; then
    bin=""
    if [ -n "${CHORDPHONE_BIN:-}" ]; then
        bin=$CHORDPHONE_BIN
    elif [ "$PROFILE" = release ]; then
        if (cd "$ROOT" && cargo build --release --quiet) >"$W/build.log" 2>&1; then
            bin="$W/chordphone" && cp "${CARGO_TARGET_DIR:-$ROOT/target}/release/chordphone" "$bin"
        else
            tail -20 "$W/build.log" >&2
            cp_log "chordphone: release build failed: skipping the chordphone side"
        fi
    else
        (cd "$ROOT" && cargo build --quiet) >"$W/build.log" 2>&1 && bin="$W/chordphone" &&
            cp "${CARGO_TARGET_DIR:-$ROOT/target}/debug/chordphone" "$bin" ||
            cp_log "chordphone: build failed: skipping the chordphone side"
    fi
    if [ -n "$bin" ]; then
        export CHORDPHONE_BIN=$bin
        if ! cp_has_user_add; then
            cp_log "chordphone: this build has no 'chordphone user add' command, so no SIP account can be"
            cp_log "created for the REGISTER load: skipping the chordphone side"
            bin=""
        fi
    fi
    if [ -z "$bin" ]; then
        CP_SKIPPED=1
    else
        cp_overlay_start A B C
        cp_log "chordphone: adding $USERS users on node A (+ uas on node $UAS_NODE)"
        t0=$SECONDS
        tail -n +2 "$W/users.csv" | cut -d';' -f1,2 | tr ';' ' ' |
            xargs -P "$(nproc)" -n 2 sh -c '"$0" user add "$1@'"$CP_DOMAIN"'" --password "$2" --overlay "'"$CP_OVERLAY_DIR"'" --data-dir "'"$(cp_node_dir A)"'" >/dev/null || echo "user add $1 failed" >&2' "$bin"
        cp_user_add "$UAS_NODE" "uas@$CP_DOMAIN" secret
        n=$("$bin" user list --data-dir "$(cp_node_dir A)" | wc -l)
        cp_log "chordphone: node A has $n SIP accounts (added in $((SECONDS - t0)) s)"
        [ "$n" -ge "$USERS" ] || cp_die "only $n of $USERS users were added"
        cp_wait_until 10 "node A SIP edge answers" cp_sip_ready A || cp_die "node A's SIP edge does not answer"
        cp_wait_until 10 "node $UAS_NODE SIP edge answers" cp_sip_ready "$UAS_NODE" ||
            cp_die "node $UAS_NODE's SIP edge does not answer"
        bench "127.0.0.1:$CP_SIP_PORT_A" "127.0.0.1:$(cp_sip_port "$UAS_NODE")" chordphone
        for n in A B C; do cp_node_stop "$n"; done
    fi
fi

# --------------------------------------------------------------- (b) Kamailio
if [ "$ONLY" != chordphone ]; then
    kam_start "$KAM_PORT" "$KAM_WORKERS_OPT"
    bench "127.0.0.1:$KAM_PORT" "127.0.0.1:$KAM_PORT" kamailio
    kam_stop
fi

ratio() {
    python3 -c 'import sys
try:
    x, y = float(sys.argv[1]), float(sys.argv[2]); print(f"{x / y:.3f}" if y > 0 else "n/a")
except ValueError:
    print("n/a")' "$1" "$2"
}
echo "load: users=$USERS rate=$RATE/${RATE_PERIOD}ms calls=$CALLS call_rate=$CALL_RATE/s limit=$LIMIT" \
    "kamailio_workers=$KAM_WORKERS_OPT cpus=$(nproc) chordphone=${CHORDPHONE_BIN:-none}"
echo "invite_per_s chordphone=$chordphone_INV kamailio=$kamailio_INV ratio=$(ratio "$chordphone_INV" "$kamailio_INV")"
echo "register_per_s chordphone=$chordphone_REG kamailio=$kamailio_REG ratio=$(ratio "$chordphone_REG" "$kamailio_REG")"
if [ "$CP_SKIPPED" = 1 ] && [ "$ONLY" != kamailio ]; then exit 2; fi
[ "$ALL_OK" = 1 ] || exit 1

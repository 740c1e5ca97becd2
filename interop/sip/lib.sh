# shellcheck shell=bash
# Helpers for the SIP interop scripts: source it, do not run it.
#
#   . interop/sip/lib.sh
#   cp_init                      # work dir + EXIT trap that stops what we started
#   cp_overlay_start             # 3-node chordphone overlay A,B,C on loopback, all joined
#   cp_user_add A alice@chordphone.test secret
#   kam_start                    # Kamailio on 127.0.0.1:5070 (interop/bench/kamailio)
#
# Everything started here is recorded by PID and stopped by PID on exit
# (SIGTERM, then SIGKILL after 5 s). Synchronisation is by polling a
# condition with a deadline (cp_wait_until), never by a bare sleep.
#
# Environment (all optional):
#   CHORDPHONE_BIN    the binary (default: target/debug/chordphone, built if missing)
#   CP_WORK           work directory (default: a new mktemp -d); kept when CP_KEEP=1
#   CP_DOMAIN         SIP domain and realm (default chordphone.test)
#   CP_SIP_PORT_A/B/C SIP (UDP and TCP) ports of nodes A, B, C (15060, 15062, 15064)
#   CP_RELOAD_PORT_A/B/C overlay link ports (16084, 16086, 16088)
#   CP_NODE_TLS_PORT_A/B/C node-to-node SIP over TLS (17060, 17062, 17064)
#   CP_MD5_FIRST      1 (default): offer the MD5 challenge first ([sip] md5_first),
#                     for sipp, which only does MD5 digest
#   CP_MD5_ONLY       1: offer only MD5 ([sip] md5_only), for baresip 1.0, which
#                     refuses a 401 that also carries a SHA-256 challenge (default 0)
#   CP_JOIN_TIMEOUT   seconds to wait for all nodes to join (default 60)
#   CP_NODE_LOG       node log filter (default info)
#   KAM_PORT          Kamailio's port (default 5070); KAM_WORKERS (default 4)

CP_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CP_SIP_DIR="$CP_ROOT/interop/sip"
CP_DOMAIN=${CP_DOMAIN:-chordphone.test}
CP_SIP_PORT_A=${CP_SIP_PORT_A:-15060}
CP_SIP_PORT_B=${CP_SIP_PORT_B:-15062}
CP_SIP_PORT_C=${CP_SIP_PORT_C:-15064}
CP_RELOAD_PORT_A=${CP_RELOAD_PORT_A:-16084}
CP_RELOAD_PORT_B=${CP_RELOAD_PORT_B:-16086}
CP_RELOAD_PORT_C=${CP_RELOAD_PORT_C:-16088}
CP_NODE_TLS_PORT_A=${CP_NODE_TLS_PORT_A:-17060}
CP_NODE_TLS_PORT_B=${CP_NODE_TLS_PORT_B:-17062}
CP_NODE_TLS_PORT_C=${CP_NODE_TLS_PORT_C:-17064}
CP_MD5_FIRST=${CP_MD5_FIRST:-1}
CP_MD5_ONLY=${CP_MD5_ONLY:-0}
CP_JOIN_TIMEOUT=${CP_JOIN_TIMEOUT:-60}
CP_NODE_LOG=${CP_NODE_LOG:-info}
KAM_PORT=${KAM_PORT:-5070}
KAM_WORKERS=${KAM_WORKERS:-4}
CP_PIDS=()
CP_EXIT_HOOKS=()

cp_log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
cp_die() { cp_log "FAIL: $*"; exit 1; }

# cp_init: create the work dir and install the cleanup trap. Idempotent.
cp_init() {
    if [ -z "${CP_WORK:-}" ]; then
        CP_WORK=$(mktemp -d /tmp/chordphone-sip.XXXXXX)
    fi
    mkdir -p "$CP_WORK"
    export CP_WORK
    trap cp_cleanup EXIT
    trap 'exit 130' INT TERM
}

# cp_on_exit COMMAND...: run COMMAND on exit, before the tracked PIDs are
# stopped (newest hook first). For drivers that stop their own processes.
cp_on_exit() { CP_EXIT_HOOKS+=("$*"); }

# cp_track PID: stop PID on exit.
cp_track() { CP_PIDS+=("$1"); }

# cp_stop_pid PID: SIGTERM, wait up to 5 s, then SIGKILL. Only PIDs we started.
cp_stop_pid() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

cp_cleanup() {
    local rc=$? i
    for ((i = ${#CP_EXIT_HOOKS[@]} - 1; i >= 0; i--)); do
        eval "${CP_EXIT_HOOKS[$i]}" || true
    done
    CP_EXIT_HOOKS=()
    # Newest first: phones before the servers they registered with.
    for ((i = ${#CP_PIDS[@]} - 1; i >= 0; i--)); do
        cp_stop_pid "${CP_PIDS[$i]}"
    done
    CP_PIDS=()
    if [ -n "${CP_WORK:-}" ] && [ -d "$CP_WORK" ]; then
        if [ "${CP_KEEP:-0}" = 1 ] || [ "$rc" != 0 ]; then
            cp_log "work directory kept: $CP_WORK"
        else
            rm -rf "$CP_WORK"
        fi
    fi
    return "$rc"
}

# cp_wait_for TIMEOUT_S COMMAND...: like cp_wait_until, silently.
cp_wait_for() {
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}

# cp_alive PIDFILE: the process named in PIDFILE runs.
cp_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# cp_play_file DIR [WAV]: the absolute path of WAV, a phone's sound source;
# without WAV, DIR/silence.wav (60 s of 8 kHz silence, written here). Fails
# when WAV does not exist.
cp_play_file() {
    local dir=$1 play=${2:-}
    if [ -z "$play" ]; then
        play="$dir/silence.wav"
        python3 -c 'import sys,wave
w=wave.open(sys.argv[1],"wb"); w.setnchannels(1); w.setsampwidth(2); w.setframerate(8000)
w.writeframes(b"\0\0"*8000*60); w.close()' "$play"
    fi
    [ -f "$play" ] || return 1
    echo "$(cd "$(dirname "$play")" && pwd)/$(basename "$play")"
}

# cp_stop_pidfiles DIR NAME...: stop (cp_stop_pid) the processes recorded in
# DIR/NAME.pid, in order, and remove the pid files.
cp_stop_pidfiles() {
    local dir=$1 p
    shift
    for p in "$@"; do
        [ -f "$dir/$p.pid" ] || continue
        cp_stop_pid "$(cat "$dir/$p.pid")"
        rm -f "$dir/$p.pid"
    done
}

# cp_wait_until TIMEOUT_S DESCRIPTION COMMAND...: poll COMMAND every 0.1 s
# until it succeeds; fail (return 1, with a message) at the deadline.
cp_wait_until() {
    local timeout=$1 what=$2
    shift 2
    local deadline=$((SECONDS + timeout))
    while ! "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            cp_log "timed out after ${timeout}s waiting for: $what"
            return 1
        fi
        sleep 0.1
    done
}

# cp_bin: the chordphone binary (builds target/debug/chordphone if needed).
cp_bin() {
    if [ -n "${CHORDPHONE_BIN:-}" ]; then
        echo "$CHORDPHONE_BIN"
        return
    fi
    if [ ! -x "$CP_ROOT/target/debug/chordphone" ]; then
        (cd "$CP_ROOT" && cargo build --quiet) >&2 || cp_die "cargo build failed"
    fi
    echo "$CP_ROOT/target/debug/chordphone"
}

# sip_options HOST:PORT [TIMEOUT]: one OPTIONS over UDP; succeeds on any SIP answer.
sip_options() {
    python3 - "$1" "${2:-1}" <<'PY'
import socket, sys, random
host, port = sys.argv[1].rsplit(":", 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
s.settimeout(float(sys.argv[2]))
lp = s.getsockname()[1]
b = "z9hG4bK%08x" % random.getrandbits(32)
msg = (f"OPTIONS sip:{host}:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{lp};branch={b};rport\r\n"
       f"Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag={b}\r\nTo: <sip:{host}:{port}>\r\n"
       f"Call-ID: {b}@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
s.sendto(msg.encode(), (host, int(port)))
try:
    d = s.recv(65535).decode(errors="replace")
except OSError:
    sys.exit(1)
print(d.split("\r\n", 1)[0])
sys.exit(0 if d.startswith("SIP/2.0 ") else 1)
PY
}

# ---------------------------------------------------------------- chordphone

# cp_node_dir NAME -> $CP_WORK/nodes/NAME
cp_node_dir() { echo "$CP_WORK/nodes/$1"; }
cp_sip_port() { local v="CP_SIP_PORT_$1"; echo "${!v}"; }
cp_reload_port() { local v="CP_RELOAD_PORT_$1"; echo "${!v}"; }
cp_node_tls_port() { local v="CP_NODE_TLS_PORT_$1"; echo "${!v}"; }

# cp_node_joined NAME: status --json says joined.
cp_node_joined() {
    "$(cp_bin)" status --data-dir "$(cp_node_dir "$1")" --json 2>/dev/null |
        python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin).get("joined") is True else 1)'
}

# cp_node_start NAME: start an enrolled node in the background.
cp_node_start() {
    local name=$1 dir pid
    dir=$(cp_node_dir "$name")
    "$(cp_bin)" node --data-dir "$dir" >"$dir/node.log" 2>&1 &
    pid=$!
    cp_track "$pid"
    echo "$pid" >"$dir/node.pid"
    cp_log "node $name started (pid $pid, sip 127.0.0.1:$(cp_sip_port "$name"), overlay 127.0.0.1:$(cp_reload_port "$name"))"
}

# cp_node_stop NAME
cp_node_stop() { cp_stop_pid "$(cat "$(cp_node_dir "$1")/node.pid")"; }

# cp_overlay_start [NODES...]: overlay init, enroll and start nodes (default
# A B C; the first is the bootstrap peer), then wait until all have joined.
cp_overlay_start() {
    local nodes=("$@") bin ov n dir
    [ ${#nodes[@]} -gt 0 ] || nodes=(A B C)
    cp_init
    bin=$(cp_bin)
    ov="$CP_WORK/overlay"
    CP_OVERLAY_DIR=$ov
    export CP_OVERLAY_DIR
    if [ ! -f "$ov/overlay.xml" ]; then
        "$bin" overlay init --name "$CP_DOMAIN" --dir "$ov" \
            --bootstrap "127.0.0.1:$(cp_reload_port "${nodes[0]}")" \
            --update-interval 5 --ping-interval 5 >"$CP_WORK/overlay-init.log" 2>&1 ||
            { cat "$CP_WORK/overlay-init.log" >&2; cp_die "overlay init failed"; }
    fi
    for n in "${nodes[@]}"; do
        dir=$(cp_node_dir "$n")
        if [ ! -f "$dir/node.db" ]; then
            mkdir -p "$(dirname "$dir")"
            "$bin" enroll --overlay "$ov" --out "$dir" --user "node$(echo "$n" | tr 'A-Z' 'a-z')@$CP_DOMAIN" \
                >"$CP_WORK/enroll-$n.log" 2>&1 || { cat "$CP_WORK/enroll-$n.log" >&2; cp_die "enroll $n failed"; }
        fi
        cat >"$dir/node.toml" <<EOF
listen = "127.0.0.1:$(cp_reload_port "$n")"
log = "$CP_NODE_LOG"

[sip]
udp = "127.0.0.1:$(cp_sip_port "$n")"
tcp = "127.0.0.1:$(cp_sip_port "$n")"
tls = "off"
node_tls = "127.0.0.1:$(cp_node_tls_port "$n")"
domain = "$CP_DOMAIN"
realm = "$CP_DOMAIN"
md5_first = $([ "$CP_MD5_FIRST" = 1 ] && echo true || echo false)
md5_only = $([ "$CP_MD5_ONLY" = 1 ] && echo true || echo false)
EOF
    done
    # The bootstrap peer first, so the others find it listening.
    cp_node_start "${nodes[0]}"
    cp_wait_until 20 "node ${nodes[0]} answers status" \
        "$bin" status --data-dir "$(cp_node_dir "${nodes[0]}")" --json ||
        { tail -20 "$(cp_node_dir "${nodes[0]}")/node.log" >&2; cp_die "node ${nodes[0]} did not start"; }
    for n in "${nodes[@]:1}"; do cp_node_start "$n"; done
    for n in "${nodes[@]}"; do
        if ! cp_wait_until "$CP_JOIN_TIMEOUT" "node $n joined" cp_node_joined "$n"; then
            tail -20 "$(cp_node_dir "$n")/node.log" >&2
            cp_die "node $n did not join within ${CP_JOIN_TIMEOUT}s"
        fi
    done
    cp_log "overlay up: ${nodes[*]} joined"
}

# cp_has_user_add: does this build have `chordphone user add`?
cp_has_user_add() { "$(cp_bin)" user add --help >/dev/null 2>&1; }

# cp_user_add NODE AOR PASSWORD: add a SIP account on NODE (running or not).
cp_user_add() {
    local node=$1 aor=$2 pw=$3
    if ! cp_has_user_add; then
        cp_log "this chordphone has no 'user add' command: cannot create SIP accounts"
        return 3
    fi
    "$(cp_bin)" user add "$aor" --password "$pw" --overlay "$CP_OVERLAY_DIR" \
        --data-dir "$(cp_node_dir "$node")" >/dev/null
}

# cp_sip_ready NODE: the node's SIP edge answers OPTIONS on UDP.
cp_sip_ready() { sip_options "127.0.0.1:$(cp_sip_port "$1")"; }

# ------------------------------------------------------------------ Kamailio

# kam_start [PORT] [WORKERS]: Kamailio (interop/bench/kamailio) in the
# background; waits until it answers OPTIONS. Sets KAM_PID.
kam_start() {
    local port=${1:-$KAM_PORT} workers=${2:-$KAM_WORKERS}
    cp_init
    command -v kamailio >/dev/null || cp_die "kamailio is not installed (apt-get install kamailio)"
    mkdir -p "$CP_WORK/kamailio"
    KAM_RUNDIR="$CP_WORK/kamailio" KAM_DOMAIN="$CP_DOMAIN" \
        bash "$CP_ROOT/interop/bench/kamailio/run.sh" "127.0.0.1:$port" "$workers" \
        >"$CP_WORK/kamailio/kamailio.log" 2>&1 &
    KAM_PID=$!
    cp_track "$KAM_PID"
    if ! cp_wait_until 20 "kamailio answers on 127.0.0.1:$port" sip_options "127.0.0.1:$port"; then
        tail -20 "$CP_WORK/kamailio/kamailio.log" >&2
        cp_die "kamailio did not start"
    fi
    cp_log "kamailio up on 127.0.0.1:$port (pid $KAM_PID, $workers workers)"
}

kam_stop() { [ -n "${KAM_PID:-}" ] && cp_stop_pid "$KAM_PID"; KAM_PID=; }

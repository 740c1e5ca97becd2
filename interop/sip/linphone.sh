#!/usr/bin/env bash
# Drive linphonec (Debian 12: linphone-cli 5.1) as a test phone.
#
#   linphone.sh start DIR AOR PASSWORD PROXY --port BASE [options]
#       AOR       sip:carol@chordphone.test
#       PROXY     HOST:PORT of the registrar / outbound proxy (e.g. 127.0.0.1:5070)
#       --port BASE   SIP on BASE (UDP, or TCP with --transport tcp), RTP on BASE+10
#       --play WAV    what the phone sends in a call (file mode: "soundcard use files"
#                     + "play WAV"); default: silence
#       --record WAV  where received call audio is written (default DIR/received.wav)
#       --codec pcmu|pcma|opus   the only codec enabled (default pcmu)
#       --answer auto|manual     (default auto: linphonec -a)
#       --transport udp|tcp      (default udp)
#   linphone.sh wait-registered DIR [TIMEOUT]  polls "status register"
#   linphone.sh cmd DIR 'call sip:alice@chordphone.test'   any linphonec command
#       (call URI | answer | terminate | chat URI TEXT | calls | status register ...)
#   linphone.sh wait-log DIR REGEX [TIMEOUT]   until linphonec's output matches, e.g.
#       "Call [0-9]+ with .* connected"  "Media streams established"
#       "Call [0-9]+ with .* ended"      "Message received from sip:x: text"
#   linphone.sh count DIR REGEX               how many output lines match
#   linphone.sh wait-count DIR REGEX N [TIMEOUT]
#   linphone.sh set-record DIR WAV            record the next call into WAV instead
#   linphone.sh recorded DIR                  the WAV received audio was recorded to
#   linphone.sh stop DIR                      "quit", then SIGTERM/SIGKILL by PID
#
# Files in DIR: linphonerc, home/ (HOME for linphonec: its database),
# linphonec.log (console output), stdin.fifo (held open by a sleeping
# writer, so linphonec never reads EOF), *.pid.
#
# The proxy is both reg_proxy and reg_route, so calls and MESSAGEs to any
# domain go through it (without reg_route linphone resolves the domain in DNS).
set -euo pipefail

die() { echo "linphone.sh: $*" >&2; exit 1; }

# shellcheck source=lib.sh
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

codec_sections() { # ENABLED_MIME
    local i=0 spec mime rate ch
    for spec in PCMU/8000/1 PCMA/8000/1 opus/48000/2 speex/8000/1 speex/16000/1 G722/8000/1; do
        IFS=/ read -r mime rate ch <<<"$spec"
        printf '[audio_codec_%d]\nmime=%s\nrate=%s\nchannels=%s\nenabled=%d\n\n' \
            "$i" "$mime" "$rate" "$ch" "$([ "$mime" = "$1" ] && echo 1 || echo 0)"
        i=$((i + 1))
    done
}

start() {
    local dir=$1 aor=$2 pw=$3 proxy=$4; shift 4
    local base="" play="" record="" codec=pcmu answer=auto transport=udp
    while [ $# -gt 0 ]; do
        case $1 in
            --port) base=$2; shift 2 ;;
            --play) play=$2; shift 2 ;;
            --record) record=$2; shift 2 ;;
            --codec) codec=$2; shift 2 ;;
            --answer) answer=$2; shift 2 ;;
            --transport) transport=$2; shift 2 ;;
            *) die "unknown option $1" ;;
        esac
    done
    [ -n "$base" ] || die "--port BASE is required"
    command -v linphonec >/dev/null || die "linphonec is not installed (apt-get install linphone-cli)"
    mkdir -p "$dir/home/.local/share/linphone" "$dir/home/.config/linphone"
    dir=$(cd "$dir" && pwd)
    [ -n "$record" ] || record="$dir/received.wav"
    case $record in /*) ;; *) record="$PWD/$record" ;; esac
    local wav
    wav=$(cp_play_file "$dir" "$play") || die "no such WAV: $play"
    play=$wav
    local mime user udp_port tcp_port
    case $codec in
        pcmu) mime=PCMU ;;
        pcma) mime=PCMA ;;
        opus) mime=opus ;;
        *) die "unknown codec $codec" ;;
    esac
    user=${aor#sip:}; user=${user%%@*}
    if [ "$transport" = tcp ]; then udp_port=0; tcp_port=$base; else udp_port=$base; tcp_port=0; fi
    cat >"$dir/linphonerc" <<EOF
[sip]
sip_port=$udp_port
sip_tcp_port=$tcp_port
sip_tls_port=0
default_proxy=0
register_only_when_network_is_up=0
use_ipv6=0
inc_timeout=60
guess_hostname=1

[rtp]
audio_rtp_port=$((base + 10))
video_rtp_port=$((base + 12))
audio_jitt_comp=60
nortp_timeout=30

[sound]
echocancellation=0
agc=0
noisegate=0

[video]
enabled=0
automatically_initiate=0
automatically_accept=0

[misc]
max_calls=4
enable_lime=0

[proxy_0]
reg_proxy=<sip:$proxy;transport=$transport>
reg_route=<sip:$proxy;transport=$transport;lr>
reg_identity=$aor
reg_expires=600
reg_sendregister=1
publish=0
dial_escape_plus=0

[auth_info_0]
username=$user
passwd=$pw

$(codec_sections "$mime")
EOF
    rm -f "$dir/stdin.fifo"
    mkfifo "$dir/stdin.fifo"
    sleep 2147483647 >"$dir/stdin.fifo" &
    echo $! >"$dir/holder.pid"
    local args=(-c "$dir/linphonerc")
    [ "$answer" = auto ] && args+=(-a)
    HOME="$dir/home" linphonec "${args[@]}" <"$dir/stdin.fifo" >"$dir/linphonec.log" 2>&1 &
    echo $! >"$dir/linphonec.pid"
    echo "$record" >"$dir/record.path"
    cp_wait_for 15 grep -q 'linphonec>' "$dir/linphonec.log" ||
        { tail -20 "$dir/linphonec.log" >&2; die "linphonec did not come up"; }
    # File mode: send PLAY, record what arrives into RECORD (linphonec "help soundcard").
    cmd "$dir" "soundcard use files"
    cmd "$dir" "play $play"
    cmd "$dir" "record $record"
    cp_wait_for 5 grep -q 'Using wav files instead of soundcard' "$dir/linphonec.log" ||
        die "linphonec did not switch to file mode"
}

cmd() {
    local dir=$1; shift
    cp_alive "$dir/linphonec.pid" || die "linphonec for $dir is not running"
    printf '%s\n' "$*" >"$dir/stdin.fifo"
}

count() { grep -Ec -- "$2" "$1/linphonec.log" || true; }

has_count() { [ "$(count "$1" "$2")" -ge "$3" ]; }

wait_count() {
    local dir=$1 re=$2 n=$3 t=${4:-20}
    cp_wait_for "$t" has_count "$dir" "$re" "$n" || die "$dir: fewer than $n lines matching /$re/ within ${t}s"
}

wait_log() { wait_count "$1" "$2" 1 "${3:-20}"; }

registered_now() {
    local before
    before=$(count "$1" 'registered, identity=')
    cmd "$1" "status register"
    cp_wait_for 1 has_count "$1" 'registered, identity=' $((before + 1))
}

wait_registered() {
    local dir=$1 t=${2:-20}
    cp_wait_for "$t" registered_now "$dir" ||
        { tail -5 "$dir/linphonec.log" >&2; die "$dir: not registered within ${t}s"; }
}

set_record() {
    local f=$2
    case $f in /*) ;; *) f="$PWD/$f" ;; esac
    cmd "$1" "record $f"
    echo "$f" >"$1/record.path"
}

recorded() {
    local f
    f=$(cat "$1/record.path")
    [ -s "$f" ] || die "$1: nothing recorded in $f"
    echo "$f"
}

stop() {
    local dir=$1 pid i
    if cp_alive "$dir/linphonec.pid"; then
        printf 'quit\n' >"$dir/stdin.fifo" 2>/dev/null || true
        pid=$(cat "$dir/linphonec.pid")
        for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    cp_stop_pidfiles "$dir" linphonec holder
}

[ $# -ge 1 ] || { sed -n '2,33p' "$0"; exit 2; }
op=$1; shift
case $op in
    start) start "$@" ;;
    cmd) cmd "$@" ;;
    count) count "$@" ;;
    wait-log) wait_log "$@" ;;
    wait-count) wait_count "$@" ;;
    wait-registered) wait_registered "$@" ;;
    set-record) set_record "$@" ;;
    recorded) recorded "$@" ;;
    stop) stop "$@" ;;
    *) die "unknown command $op" ;;
esac

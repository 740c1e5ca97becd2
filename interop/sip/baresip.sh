#!/usr/bin/env bash
# Drive a headless baresip (Debian 12: baresip 1.0.0) as a test phone.
#
#   baresip.sh start DIR AOR PASSWORD PROXY --port BASE [options]
#       AOR       sip:alice@chordphone.test
#       PROXY     HOST:PORT of the registrar / outbound proxy (e.g. 127.0.0.1:5070)
#       --port BASE   SIP on 127.0.0.1:BASE, (TLS on BASE+1: baresip's own), ctrl_tcp on BASE+5, RTP BASE+10..BASE+49
#       --play WAV    audio source (aufile; any rate, mono or stereo 16-bit PCM;
#                     baresip resamples to the codec); default: 60 s of silence.
#                     NOTE: baresip 1.0 hangs the call up when the file ends.
#       --codec pcmu|pcma|opus   the only codec offered/accepted (default pcmu)
#       --answer auto|manual     (default auto: ;answermode=auto)
#       --contact URI            peer for "message" (baresip 1.0 messages the current contact)
#       --transport udp|tcp      towards the proxy (default udp)
#       --regint S               re-registration interval (default 600)
#     Prints nothing; returns when baresip's ctrl_tcp is connected.
#   baresip.sh wait-registered DIR [TIMEOUT]   until a 200 OK to REGISTER is logged
#   baresip.sh cmd DIR 'dial sip:bob@chordphone.test'   any menu command
#       (dial URI | accept | hangup | message TEXT | reginfo | listcalls | quit ...)
#   baresip.sh count DIR EVENT                 how many EVENTs so far (ctrl_tcp types:
#       CALL_INCOMING CALL_RINGING CALL_ESTABLISHED CALL_CLOSED REGISTER_OK ...)
#   baresip.sh wait-event DIR EVENT [N] [TIMEOUT]   until at least N (default 1) EVENTs
#   baresip.sh wait-log DIR REGEX [TIMEOUT]    until baresip's output matches (e.g. a
#       received MESSAGE prints: sip:alice@chordphone.test: "text")
#   baresip.sh recorded DIR                    path of the newest received-audio WAV
#       (the sndfile module's *-dec.wav; *-enc.wav is what was sent)
#   baresip.sh stop DIR                        stop everything started for DIR, by PID
#
# Files in DIR: config accounts contacts, baresip.log (console output),
# events.jsonl (ctrl_tcp events and command responses), rec/ (WAV dumps),
# *.pid. Control: commands go through one persistent ctrl_tcp connection
# (baresip_ctl.py --serve, fed by DIR/ctl.fifo); stdin is a FIFO held open
# so the stdio UI prints received messages without reading EOF.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)

die() { echo "baresip.sh: $*" >&2; exit 1; }

# shellcheck source=lib.sh
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

start() {
    local dir=$1 aor=$2 pw=$3 proxy=$4; shift 4
    local base="" play="" codec=pcmu answer=auto contact="" transport=udp regint=600
    while [ $# -gt 0 ]; do
        case $1 in
            --port) base=$2; shift 2 ;;
            --play) play=$2; shift 2 ;;
            --codec) codec=$2; shift 2 ;;
            --answer) answer=$2; shift 2 ;;
            --contact) contact=$2; shift 2 ;;
            --transport) transport=$2; shift 2 ;;
            --regint) regint=$2; shift 2 ;;
            *) die "unknown option $1" ;;
        esac
    done
    [ -n "$base" ] || die "--port BASE is required"
    command -v baresip >/dev/null || die "baresip is not installed (apt-get install baresip)"
    mkdir -p "$dir/rec"
    dir=$(cd "$dir" && pwd)
    local wav
    wav=$(cp_play_file "$dir" "$play") || die "no such WAV: $play"
    play=$wav
    # aufile insists that the file's rate and channels equal the source's;
    # declaring the source format as the file's lets baresip resample
    # between the file and whatever codec is negotiated.
    local wav_rate wav_ch codecs
    read -r wav_rate wav_ch < <(python3 -c 'import sys,wave
w=wave.open(sys.argv[1]); print(w.getframerate(), w.getnchannels())' "$play") || die "cannot read WAV $play"
    case $codec in
        pcmu) codecs=PCMU ;;
        pcma) codecs=PCMA ;;
        opus) codecs=opus/48000/2 ;;
        *) die "unknown codec $codec" ;;
    esac
    cat >"$dir/config" <<EOF
poll_method		epoll
sip_listen		127.0.0.1:$base
call_local_timeout	120
call_max_calls		4
audio_player		alsa,null
audio_source		aufile,$play
audio_alert		alsa,null
audio_level		no
ausrc_format		s16
ausrc_srate		$wav_rate
ausrc_channels		$wav_ch
auplay_format		s16
auenc_format		s16
audec_format		s16
rtp_ports		$((base + 10))-$((base + 49))
jitter_buffer_delay	5-10
rtp_stats		no
net_interface		127.0.0.1
module_path		/usr/lib/baresip/modules
module			stdio.so
module			g711.so
module			opus.so
module			sndfile.so
module			aufile.so
module			alsa.so
module_tmp		account.so
module_app		contact.so
module_app		menu.so
module_app		ctrl_tcp.so
ctrl_tcp_listen		127.0.0.1:$((base + 5))
snd_path		$dir/rec
opus_bitrate		32000
EOF
    # The account: outbound proxy = the node (loose routing), digest password,
    # registration interval, answer mode and the single codec.
    echo "<$aor>;auth_pass=$pw;outbound=\"sip:$proxy;transport=$transport\";regint=$regint;answermode=$answer;audio_codecs=$codecs" \
        >"$dir/accounts"
    : >"$dir/contacts"
    [ -z "$contact" ] || echo "\"peer\" <$contact>" >"$dir/contacts"
    : >"$dir/events.jsonl"
    rm -f "$dir/stdin.fifo" "$dir/ctl.fifo"
    mkfifo "$dir/stdin.fifo" "$dir/ctl.fifo"
    # Hold the stdin FIFO open for writing so baresip never reads EOF.
    sleep 2147483647 >"$dir/stdin.fifo" &
    echo $! >"$dir/holder.pid"
    baresip -4 -f "$dir" <"$dir/stdin.fifo" >"$dir/baresip.log" 2>&1 &
    echo $! >"$dir/baresip.pid"
    python3 "$HERE/baresip_ctl.py" "$((base + 5))" --serve "$dir/ctl.fifo" "$dir/events.jsonl" \
        >"$dir/ctl.log" 2>&1 &
    echo $! >"$dir/ctl.pid"
    if ! cp_wait_for 15 grep -q '"ctl": "connected"' "$dir/events.jsonl"; then
        tail -20 "$dir/baresip.log" >&2
        die "baresip did not come up (ctrl_tcp 127.0.0.1:$((base + 5)))"
    fi
}

cmd() {
    local dir=$1; shift
    cp_alive "$dir/ctl.pid" || die "no control connection for $dir"
    printf '%s\n' "$*" >"$dir/ctl.fifo"
}

count() { grep -c "\"type\": \"$2\"" "$1/events.jsonl" || true; }

has_events() { [ "$(count "$1" "$2")" -ge "$3" ]; }

wait_event() {
    local dir=$1 ev=$2 n=${3:-1} t=${4:-20}
    cp_wait_for "$t" has_events "$dir" "$ev" "$n" || die "$dir: no $n x $ev within ${t}s"
}

log_matches() { tr '\r' '\n' <"$1/baresip.log" | grep -Eq -- "$2"; }

wait_log() {
    local dir=$1 re=$2 t=${3:-20}
    cp_wait_for "$t" log_matches "$dir" "$re" || die "$dir: output never matched /$re/ within ${t}s"
}

wait_registered() {
    local dir=$1 t=${2:-20}
    cp_wait_for "$t" log_matches "$dir" '\{[0-9]+/(UDP|TCP|TLS)/v4\} 200 OK' ||
        { tail -5 "$dir/baresip.log" >&2; die "$dir: not registered within ${t}s"; }
}

recorded() {
    local f
    f=$(ls -t "$1"/rec/*-dec.wav 2>/dev/null | head -1)
    [ -n "$f" ] || die "$1: no recording"
    echo "$f"
}

stop() { cp_stop_pidfiles "$1" ctl baresip holder; }

[ $# -ge 2 ] || { sed -n '2,35p' "$0"; exit 2; }
op=$1; shift
case $op in
    start) start "$@" ;;
    cmd) cmd "$@" ;;
    count) count "$@" ;;
    wait-event) wait_event "$@" ;;
    wait-log) wait_log "$@" ;;
    wait-registered) wait_registered "$@" ;;
    recorded) recorded "$@" ;;
    stop) stop "$@" ;;
    *) die "unknown command $op" ;;
esac

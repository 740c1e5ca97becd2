#!/usr/bin/env bash
# Prove the SIP interop harness against Kamailio, independently of chordphone.
#
# Starts Kamailio (interop/bench/kamailio: in-memory registrar + proxy,
# digest auth, password "secret") on 127.0.0.1:$KAM_PORT (default 5070) and:
#   1. sipp: register_auth.xml with 1000 users, uac_call.xml -> uas_answer.xml
#      (100 calls, proxy-authenticated INVITE), malformed.xml
#   2. baresip alice (PCMU) calls linphonec carol: both register, audio
#      both ways, each recording compared with what the other side sent (wavcmp)
#      and, as a control, with the wrong signal (must fail)
#   3. linphonec carol calls baresip alice: same checks
#   4. MESSAGE baresip -> linphonec and linphonec -> baresip
#   5. baresip bob calls baresip dave with Opus: audio both ways
#   6. MESSAGE baresip -> baresip both ways
# Exit status 0 when everything passed; the last line is a summary.
# Usage: interop/sip/run-kamailio-selfcheck.sh   (CP_KEEP=1 keeps the work dir)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"
cp_init
for tool in kamailio baresip linphonec sipp python3; do
    command -v "$tool" >/dev/null || cp_die "$tool is not installed"
done

W=$CP_WORK
P=127.0.0.1:$KAM_PORT
D=$CP_DOMAIN
BS="$HERE/baresip.sh"
LP="$HERE/linphone.sh"
PASSED=()
FAILED=()
ok() { PASSED+=("$1"); cp_log "PASS $1"; }
bad() { FAILED+=("$1"); cp_log "FAIL $1"; }
check() { # NAME CMD...: record pass/fail, keep going
    local name=$1; shift
    if "$@"; then ok "$name"; else bad "$name"; fi
}
# wavcmp that must fail (the control: a recording is not the other signal).
wav_differs() { ! python3 "$HERE/wavcmp.py" "$@" >/dev/null; }
wav_same() { python3 "$HERE/wavcmp.py" "$@" | tee -a "$W/wavcmp.log"; }

kam_start "$KAM_PORT"

# The phone drivers stop their own processes (by the PIDs they recorded).
stop_phones() {
    local d
    for d in "$W"/alice "$W"/bob "$W"/dave; do [ ! -d "$d" ] || "$BS" stop "$d"; done
    [ ! -d "$W/carol" ] || "$LP" stop "$W/carol"
}
cp_on_exit stop_phones

# ------------------------------------------------------------------ 1. sipp
cp_log "sipp: REGISTER with digest auth, 1000 users"
python3 "$HERE/sipp/gen-users.py" 1000 >"$W/users.csv"
SIPP_COMMON=(-i 127.0.0.1 -key domain "$D" -nostdin -timeout 60s -timeout_error)
sipp_ok() { # LOG -> successful == total and failed == 0
    python3 "$HERE/sipp_stats.py" "$1" --require-success
}
sipp "$P" -sf "$HERE/sipp/register_auth.xml" -inf "$W/users.csv" "${SIPP_COMMON[@]}" \
    -key registrar "$P" -key expires 3600 -m 1000 -r 500 -trace_stat -stf "$W/register.csv" \
    >"$W/sipp-register.log" 2>&1 || true
check "sipp register_auth 1000 users" sipp_ok "$W/sipp-register.log"

cp_log "sipp: 100 calls uac -> proxy -> uas"
printf 'SEQUENTIAL\nuas;secret;\n' >"$W/uas.csv"
UAS_PORT=$((KAM_PORT + 200))
sipp "$P" -sf "$HERE/sipp/register_auth.xml" -inf "$W/uas.csv" "${SIPP_COMMON[@]}" -key registrar "$P" \
    -key expires 3600 -p "$UAS_PORT" -m 1 >"$W/sipp-uas-register.log" 2>&1 || true
check "sipp uas registers" sipp_ok "$W/sipp-uas-register.log"
sipp -sf "$HERE/sipp/uas_answer.xml" -i 127.0.0.1 -p "$UAS_PORT" -nostdin -m 100 -timeout 60s \
    >"$W/sipp-uas.log" 2>&1 &
UAS_PID=$!
cp_track "$UAS_PID"
cp_wait_until 5 "sipp uas listening" sh -c "ss -lun | grep -q ':$UAS_PORT '"
sipp "$P" -sf "$HERE/sipp/uac_call.xml" -inf "$W/users.csv" "${SIPP_COMMON[@]}" -s uas -d 100 \
    -m 100 -r 50 -default_behaviors all,-abortunexp >"$W/sipp-uac.log" 2>&1 || true
check "sipp uac 100 calls through the proxy" sipp_ok "$W/sipp-uac.log"
cp_wait_until 10 "sipp uas finished" sh -c "! kill -0 $UAS_PID 2>/dev/null" || cp_stop_pid "$UAS_PID"

cp_log "sipp: malformed requests, then OPTIONS"
sipp "$P" -sf "$HERE/sipp/malformed.xml" "${SIPP_COMMON[@]}" -m 1 -recv_timeout 5000 \
    >"$W/sipp-malformed.log" 2>&1 || true
check "sipp malformed -> 400, then OPTIONS answered" sipp_ok "$W/sipp-malformed.log"

# ------------------------------------------------------------- test signals
# Distinct signals per phone (mkwav --variant), with silence around them:
# the lead covers call setup, the tail keeps the line open until the peer's
# signal is through (baresip 1.0 hangs up when its file ends).
python3 "$HERE/mkwav.py" "$W/alice.wav" --variant 1 --lead-silence 1 --tail-silence 1.5
python3 "$HERE/mkwav.py" "$W/carol.wav" --variant 2 --lead-silence 0.5 --tail-silence 4
python3 "$HERE/mkwav.py" "$W/bob.wav" --variant 3 --lead-silence 1 --tail-silence 1.5 --rate 48000
python3 "$HERE/mkwav.py" "$W/dave.wav" --variant 4 --lead-silence 0.5 --tail-silence 4 --rate 48000

# ------------------------------------------------- 2-4. baresip <-> linphonec
"$LP" start "$W/carol" "sip:carol@$D" secret "$P" --port 27000 --play "$W/carol.wav" --record "$W/carol-rx1.wav"
"$BS" start "$W/alice" "sip:alice@$D" secret "$P" --port 27100 --play "$W/alice.wav" --contact "sip:carol@$D"
check "linphonec registers" "$LP" wait-registered "$W/carol" 20
check "baresip registers" "$BS" wait-registered "$W/alice" 20

cp_log "call baresip alice -> linphonec carol (PCMU)"
"$BS" cmd "$W/alice" "dial sip:carol@$D"
check "call alice->carol established (baresip)" "$BS" wait-event "$W/alice" CALL_ESTABLISHED 1 15
check "call alice->carol media (linphonec)" "$LP" wait-log "$W/carol" "Media streams established" 15
check "call alice->carol closed by alice" "$BS" wait-event "$W/alice" CALL_CLOSED 1 30
check "call alice->carol ended at carol" "$LP" wait-log "$W/carol" "Call [0-9]+ with .* ended" 10
A_RX1=$("$BS" recorded "$W/alice" || true)
check "audio alice->carol (wavcmp)" wav_same "$W/alice.wav" "$W/carol-rx1.wav"
check "audio carol->alice (wavcmp)" wav_same "$W/carol.wav" "$A_RX1"
check "control: carol's recording is not carol's own signal" wav_differs "$W/carol.wav" "$W/carol-rx1.wav"
check "control: alice's recording is not alice's own signal" wav_differs "$W/alice.wav" "$A_RX1"

cp_log "call linphonec carol -> baresip alice (PCMU)"
"$LP" set-record "$W/carol" "$W/carol-rx2.wav"
n_est=$("$BS" count "$W/alice" CALL_ESTABLISHED)
n_closed=$("$BS" count "$W/alice" CALL_CLOSED)
"$LP" cmd "$W/carol" "call sip:alice@$D"
check "call carol->alice established (baresip)" "$BS" wait-event "$W/alice" CALL_ESTABLISHED $((n_est + 1)) 15
check "call carol->alice closed" "$BS" wait-event "$W/alice" CALL_CLOSED $((n_closed + 1)) 30
check "call carol->alice ended at carol" "$LP" wait-count "$W/carol" "Call [0-9]+ with .* ended" 2 10
A_RX2=$("$BS" recorded "$W/alice" || true)
[ "$A_RX2" != "$A_RX1" ] || A_RX2=/nonexistent
check "audio carol->alice, 2nd call (wavcmp)" wav_same "$W/carol.wav" "$A_RX2"
check "audio alice->carol, 2nd call (wavcmp)" wav_same "$W/alice.wav" "$W/carol-rx2.wav"

cp_log "MESSAGE baresip <-> linphonec"
"$BS" cmd "$W/alice" "message hello carol, alice here"
check "MESSAGE baresip->linphonec" "$LP" wait-log "$W/carol" "Message received from sip:alice@$D: hello carol, alice here" 10
"$LP" cmd "$W/carol" "chat sip:alice@$D hello alice, carol here"
check "MESSAGE linphonec->baresip" "$BS" wait-log "$W/alice" "sip:carol@$D: \"hello alice, carol here\"" 10

# ------------------------------------------------ 5-6. baresip <-> baresip
"$BS" start "$W/bob" "sip:bob@$D" secret "$P" --port 27200 --play "$W/bob.wav" --codec opus --contact "sip:dave@$D"
"$BS" start "$W/dave" "sip:dave@$D" secret "$P" --port 27300 --play "$W/dave.wav" --codec opus --contact "sip:bob@$D"
check "baresip bob registers" "$BS" wait-registered "$W/bob" 20
check "baresip dave registers" "$BS" wait-registered "$W/dave" 20
cp_log "call baresip bob -> baresip dave (Opus)"
"$BS" cmd "$W/bob" "dial sip:dave@$D"
check "call bob->dave established" "$BS" wait-event "$W/bob" CALL_ESTABLISHED 1 15
check "call bob->dave incoming at dave" "$BS" wait-event "$W/dave" CALL_ESTABLISHED 1 15
check "call bob->dave closed at dave" "$BS" wait-event "$W/dave" CALL_CLOSED 1 30
check "call bob->dave opus negotiated" grep -q "Set audio encoder: opus" "$W/bob/baresip.log"
check "audio bob->dave opus (wavcmp)" wav_same "$W/bob.wav" "$("$BS" recorded "$W/dave" || true)"
check "audio dave->bob opus (wavcmp)" wav_same "$W/dave.wav" "$("$BS" recorded "$W/bob" || true)"
"$BS" cmd "$W/bob" "message hi dave, bob here"
check "MESSAGE baresip->baresip (bob->dave)" "$BS" wait-log "$W/dave" "sip:bob@$D: \"hi dave, bob here\"" 10
"$BS" cmd "$W/dave" "message hi bob, dave here"
check "MESSAGE baresip->baresip (dave->bob)" "$BS" wait-log "$W/bob" "sip:dave@$D: \"hi bob, dave here\"" 10

echo
echo "wavcmp results:"
cat "$W/wavcmp.log" 2>/dev/null || true
echo
if [ ${#FAILED[@]} -eq 0 ]; then
    echo "kamailio selfcheck: PASS (${#PASSED[@]} checks)"
    exit 0
fi
printf '  failed: %s\n' "${FAILED[@]}"
echo "kamailio selfcheck: FAIL (${#FAILED[@]} of $((${#PASSED[@]} + ${#FAILED[@]})) checks failed)"
exit 1

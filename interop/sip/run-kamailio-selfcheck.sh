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
# shellcheck source=phones.sh
. "$HERE/phones.sh"
P_ALICE=$P P_BOB=$P P_CAROL=$P P_DAVE=$P

kam_start "$KAM_PORT"

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

phone_checks
phone_summary "kamailio selfcheck"

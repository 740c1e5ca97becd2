# shellcheck shell=bash
# The phone checks shared by run-kamailio-selfcheck.sh and
# run-chordphone-selfcheck.sh: source it after lib.sh, then call
# phone_checks. Needs: W (work dir), D (SIP domain), HERE, and the proxy
# each phone registers with: P_ALICE, P_BOB (baresip), P_CAROL (linphonec),
# P_DAVE (baresip). All accounts use the password "secret".
#
#   - baresip alice (PCMU) calls linphonec carol, then carol calls alice:
#     audio both ways, each recording compared with what the other side
#     sent (wavcmp) and, as a control, with its own signal (must differ)
#   - MESSAGE baresip -> linphonec and linphonec -> baresip
#   - baresip bob calls baresip dave with Opus: audio both ways
#   - MESSAGE baresip -> baresip both ways
# Results go through check/ok/bad into PASSED and FAILED.

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

# The phone drivers stop their own processes (by the PIDs they recorded).
stop_phones() {
    local d
    for d in "$W"/alice "$W"/bob "$W"/dave; do [ ! -d "$d" ] || "$BS" stop "$d"; done
    [ ! -d "$W/carol" ] || "$LP" stop "$W/carol"
}

# phone_summary NAME: print the wavcmp figures and the verdict; exit status.
phone_summary() {
    echo
    echo "wavcmp results:"
    cat "$W/wavcmp.log" 2>/dev/null || true
    echo
    if [ ${#FAILED[@]} -eq 0 ]; then
        echo "$1: PASS (${#PASSED[@]} checks)"
        return 0
    fi
    printf '  failed: %s\n' "${FAILED[@]}"
    echo "$1: FAIL (${#FAILED[@]} of $((${#PASSED[@]} + ${#FAILED[@]})) checks failed)"
    return 1
}

phone_checks() {
    # ------------------------------------------------------------- test signals
    # Distinct signals per phone (mkwav --variant), with silence around them:
    # the lead covers call setup, the tail keeps the line open until the peer's
    # signal is through (baresip 1.0 hangs up when its file ends).
    python3 "$HERE/mkwav.py" "$W/alice.wav" --variant 1 --lead-silence 1 --tail-silence 1.5
    python3 "$HERE/mkwav.py" "$W/carol.wav" --variant 2 --lead-silence 0.5 --tail-silence 4
    python3 "$HERE/mkwav.py" "$W/bob.wav" --variant 3 --lead-silence 1 --tail-silence 1.5 --rate 48000
    python3 "$HERE/mkwav.py" "$W/dave.wav" --variant 4 --lead-silence 0.5 --tail-silence 4 --rate 48000

    # ------------------------------------------------- 2-4. baresip <-> linphonec
    "$LP" start "$W/carol" "sip:carol@$D" secret "$P_CAROL" --port 27000 --play "$W/carol.wav" --record "$W/carol-rx1.wav"
    "$BS" start "$W/alice" "sip:alice@$D" secret "$P_ALICE" --port 27100 --play "$W/alice.wav" --contact "sip:carol@$D"
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
    "$BS" start "$W/bob" "sip:bob@$D" secret "$P_BOB" --port 27200 --play "$W/bob.wav" --codec opus --contact "sip:dave@$D"
    "$BS" start "$W/dave" "sip:dave@$D" secret "$P_DAVE" --port 27300 --play "$W/dave.wav" --codec opus --contact "sip:bob@$D"
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
}

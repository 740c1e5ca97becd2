#!/usr/bin/env bash
# Real phones on a chordphone overlay (issue 5's interop test).
#
# Starts a 3-node overlay on loopback (lib.sh cp_overlay_start: A is the
# bootstrap peer; SIP on 127.0.0.1:15060/15062/15064), adds the accounts
# (alice and bob on node A, carol and dave on node C, password "secret"),
# and runs the phone checks of phones.sh across the nodes:
#   - baresip alice (on A, PCMU) calls linphonec carol (on C), then carol
#     calls alice: audio both ways, compared with what the other side sent
#   - MESSAGE baresip -> linphonec and back
#   - baresip bob (A) calls baresip dave (C) with Opus; MESSAGE both ways
# then checks in the nodes' own counters that the calls really crossed the
# overlay (requests forwarded node to node) and that the registrations
# are stored in the overlay (`chordphone fetch` through node B, which
# serves no phone).
# Exit status 0 when everything passed; the last line is a summary.
# Usage: interop/sip/run-chordphone-selfcheck.sh   (CP_KEEP=1 keeps the work dir)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# baresip 1.0 refuses a 401 that offers SHA-256 next to MD5.
export CP_MD5_ONLY=${CP_MD5_ONLY:-1}
# shellcheck source=lib.sh
. "$HERE/lib.sh"
cp_init
for tool in baresip linphonec python3; do
    command -v "$tool" >/dev/null || cp_die "$tool is not installed"
done

W=$CP_WORK
D=$CP_DOMAIN
# shellcheck source=phones.sh
. "$HERE/phones.sh"
P_ALICE=127.0.0.1:$CP_SIP_PORT_A
P_BOB=127.0.0.1:$CP_SIP_PORT_A
P_CAROL=127.0.0.1:$CP_SIP_PORT_C
P_DAVE=127.0.0.1:$CP_SIP_PORT_C

cp_overlay_start A B C
cp_on_exit stop_phones
for n in A C; do
    check "node $n SIP edge answers OPTIONS" cp_wait_until 10 "node $n SIP" cp_sip_ready "$n"
done
cp_user_add A "alice@$D" secret
cp_user_add A "bob@$D" secret
cp_user_add C "carol@$D" secret
cp_user_add C "dave@$D" secret

# metric NODE NAME: the SIP edge counter NAME from the node's status --json.
node_id() {
    "$(cp_bin)" status --data-dir "$(cp_node_dir "$1")" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["node_id"])'
}
metric() {
    "$(cp_bin)" status --data-dir "$(cp_node_dir "$1")" --json |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["sip"]["counters"][sys.argv[1]])' "$2"
}
fwd_a0=$(metric A requests_forwarded_node)
fwd_c0=$(metric C requests_forwarded_node)

phone_checks

# The phones' requests crossed the overlay: each node sent requests to the other.
check "node A forwarded requests to other nodes" test "$(metric A requests_forwarded_node)" -gt "$fwd_a0"
check "node C forwarded requests to other nodes" test "$(metric C requests_forwarded_node)" -gt "$fwd_c0"
# The registrations are in the overlay: node B (no phones) fetches them, and
# each names the node its phone registered with.
for ua in alice:A carol:C; do
    u=${ua%:*} n=${ua#*:}
    check "registration of $u fetched through node B names node $n" sh -c \
        "'$(cp_bin)' fetch --data-dir '$(cp_node_dir B)' --kind sip-registration '$u@$D' | grep -q '^node $(node_id "$n") '"
done

phone_summary "chordphone selfcheck"

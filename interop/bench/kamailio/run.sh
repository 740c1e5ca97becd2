#!/usr/bin/env bash
# Run Debian's Kamailio in the foreground with kamailio.cfg (in-memory
# registrar + proxy, digest password "secret" for every user).
# Usage: run.sh [ADDR:PORT] [WORKERS] [extra kamailio args...]
#   ADDR:PORT  default 127.0.0.1:5070 (UDP and TCP)
#   WORKERS    UDP and TCP worker processes, default 4
# Environment: KAM_DOMAIN (default chordphone.test), KAM_RUNDIR (default a
# fresh temp dir), KAM_NO_PROXY_AUTH=1 to not challenge INVITE/MESSAGE.
# Stop it with SIGTERM to the PID this script execs into.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ADDR=${1:-127.0.0.1:5070}
WORKERS=${2:-4}
shift $(( $# > 2 ? 2 : $# ))
DOMAIN=${KAM_DOMAIN:-chordphone.test}
RUNDIR=${KAM_RUNDIR:-$(mktemp -d /tmp/kamailio.XXXXXX)}
mkdir -p "$RUNDIR"
args=(-f "$HERE/kamailio.cfg" -DD -E -Y "$RUNDIR" -w "$RUNDIR" -m 256 -M 32
      -A "LISTEN_UDP=udp:$ADDR" -A "LISTEN_TCP=tcp:$ADDR" -A "SIP_DOMAIN=$DOMAIN"
      -A "WORKERS=$WORKERS")
[ "${KAM_NO_PROXY_AUTH:-0}" = 1 ] && args+=(-A NO_PROXY_AUTH)
# Kamailio refuses to run as root only when told to; as root it keeps root
# (no -u/-g needed on a test box), as a user it runs as that user.
kamailio "${args[@]}" -c >/dev/null 2>"$RUNDIR/check.log" || { cat "$RUNDIR/check.log" >&2; exit 1; }
exec kamailio "${args[@]}" "$@"

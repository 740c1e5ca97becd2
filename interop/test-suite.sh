#!/usr/bin/env bash
# The whole chordphone test suite, as a newcomer runs it on a fresh Debian 12
# machine and as CI runs it (.ci/run calls this script).
#
# It installs what it needs when missing (Debian packages, cargo tools),
# then runs: format check, clippy (warnings are errors), every Rust test
# (unit, property, integration, tshark dissector proof), the real-phone
# interop run (baresip, linphonec), and each fuzz target for FUZZ_SECONDS
# (default 60).
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
log() { printf '\n== %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "need root (or sudo) to run: $*" >&2; exit 1; fi
}

log "system packages"
# build: cmake/libclang/libssl for crypto and media crates; tshark: the
# independent RELOAD dissector the wire tests decode our packets with;
# sip-tester (sipp): the SIP load/scenario tool tests/sip_overlay.rs drives;
# baresip and linphone-cli: the real phones of interop/sip.
PKGS=(build-essential pkg-config cmake libclang-dev libssl-dev tshark sip-tester baresip linphone-cli)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ "${1:-}" = "--deps-only" ]; then
    command -v cargo >/dev/null || { echo "cargo not found: install Rust 1.85 or newer" >&2; exit 1; }
    exit 0
fi

if ! command -v cargo >/dev/null; then
    echo "cargo not found: install Rust 1.85 or newer (https://rustup.rs) and rerun" >&2
    exit 1
fi
if ! command -v cargo-fuzz >/dev/null; then
    log "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

log "format"
cargo fmt --all -- --check

log "clippy"
cargo clippy --all-targets --locked -- -D warnings

log "tests"
cargo test --locked --all-targets 2>&1 | tee /tmp/chordphone-test.log
grep -q "test result" /tmp/chordphone-test.log

log "interop: baresip and linphonec on a 3-node chordphone overlay"
# Calls and MESSAGEs across nodes, audio compared both ways (interop/sip).
interop/sip/run-chordphone-selfcheck.sh

log "fuzz (${FUZZ_SECONDS}s per target)"
# cargo-fuzz needs nightly-only compiler flags; RUSTC_BOOTSTRAP lets the
# stable toolchain accept them (the sanitizer runtime ships with stable).
export RUSTC_BOOTSTRAP=1
fuzz_failed=0
for target in $(cargo fuzz list); do
    mkdir -p "fuzz/corpus/$target"
    if cargo fuzz run "$target" -- -max_total_time="$FUZZ_SECONDS" -max_len=8192 >"/tmp/fuzz-$target.log" 2>&1; then
        echo "fuzz $target: $(grep -E '^Done [0-9]+ runs' "/tmp/fuzz-$target.log" | tail -1)"
    else
        echo "fuzz $target: FAILED"; tail -40 "/tmp/fuzz-$target.log"; fuzz_failed=1
    fi
done
[ "$fuzz_failed" = 0 ]

log "all passed"

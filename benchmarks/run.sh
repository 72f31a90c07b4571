#!/usr/bin/env bash
# Runs the benchmarks beside the machine's ceiling and ends with ONE table of figures and ratios.
#
#   benchmarks/run.sh            the package-benchmark suites, then the table
#   benchmarks/run.sh --quick    the table only
#
# The ceiling is `openssl speed rsa2048`'s sign/s: signing is the RSA private-key operation, the
# same one decryption does, so nothing that decrypts RSA-2048 on this machine can beat it.
# bench-report runs `openssl speed -elapsed -seconds 1 rsa2048` and `… -multi $(nproc) rsa2048` itself
# (-elapsed: per second of wall-clock time, like our figures, not of openssl's own CPU time),
# in 1-second slices taking turns with our figures ($SECONDS_PER slices of each per round), in
# $ROUNDS rounds (speed drifts on shared and virtual machines; a ratio is only fair between
# figures that saw the same drift), and prints medians.
# Environment: SECONDS_PER (5), ROUNDS (3), PAYMENTS (5000 per round, for the pipeline).
set -euo pipefail
cd "$(dirname "$0")"

# The pipeline's stores on a disk, not on a tmpfs /tmp (see lib.sh); TMPDIR set is kept.
if [ -z "${TMPDIR:-}" ]; then
    export TMPDIR="$PWD/.build/tmp"
    mkdir -p "$TMPDIR"
fi
echo "== machine: nproc $(nproc); $(lscpu | grep 'Model name' | sed 's/  */ /g'); $(openssl version)"
build_log=$(mktemp)
if ! swift build -c release > "$build_log" 2>&1; then cat "$build_log" >&2; echo "the release build failed" >&2; exit 1; fi
tail -1 "$build_log"
rm -f "$build_log"
# swift-crypto is any 3.12.3..<5.0.0 (Package.resolved is not kept): the version this run compares with.
echo "== swift-crypto $(awk '/swift-crypto/ { found = 1 } found && /"version"/ { gsub(/[",]/, "", $3); print $3; exit }' Package.resolved 2>/dev/null)"

if [ "${1:-}" != "--quick" ]; then
    echo "== package-benchmark suites: Decrypt, Pipeline, SwiftCrypto"
    swift package --disable-sandbox benchmark
fi

echo "== bench-report"
.build/release/bench-report --rounds "${ROUNDS:-3}" --seconds "${SECONDS_PER:-5}" --payments "${PAYMENTS:-5000}"

#!/usr/bin/env bash
# Context switches and CPU the worker spends per makePayment, closed loop against open loop: why a
# moderate, evenly spaced load costs more per payment than a saturating one (each idle thread that
# is woken up costs a switch, and on a VM an interrupt to another vCPU).
#
#   SCRATCH=$PWD/../.build ./switches.sh      (after e2e.sh has built the release binaries there)
#
# Environment: SCRATCH (benchmarks/.build-e2e), COUNT (12000), RATE (900), RATE_SECONDS (12).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SCRATCH=${SCRATCH:-$ROOT/benchmarks/.build-e2e}
BIN=$(swift build --package-path "$ROOT" --scratch-path "$SCRATCH" -c release --show-bin-path)
WORK=$(mktemp -d)
export PSP_ADMIN_TOKEN=$(openssl rand -hex 24)
cd "$ROOT"
"$BIN/psp-worker" serve --port 0 --store "sqlite:$WORK/s.sqlite" --queue-capacity 4096 >"$WORK/worker.log" 2>&1 &
WORKER_PID=$!
trap 'kill -TERM $WORKER_PID 2>/dev/null; wait $WORKER_PID 2>/dev/null; rm -rf "$WORK"' EXIT
source "$ROOT/benchmarks/lib.sh"
PORT=$(logged_port "$WORK/worker.log" "$WORKER_PID")
switches() { cat /proc/"$WORKER_PID"/task/*/status | awk '/ctxt_switches/ { s += $2 } END { print s }'; }
ticks() { awk '{ print $14 + $15 }' /proc/"$WORKER_PID"/stat; }
HZ=$(getconf CLK_TCK)
printf "%-48s %10s %18s %18s\n" "run" "answered" "switches/payment" "worker CPU µs/pay"
for run in "--count ${COUNT:-12000} --concurrency 64" "--rate ${RATE:-900} --duration ${RATE_SECONDS:-12} --concurrency 128"; do
    # shellcheck disable=SC2086
    "$BIN/vipps-sim" --url "http://127.0.0.1:$PORT" --quiet $run --json "$WORK/r.json" 2>"$WORK/sim.err" >/dev/null &
    SIM=$!
    until grep -q registered "$WORK/sim.err" 2>/dev/null; do sleep 0.05; done
    s0=$(switches); t0=$(ticks)
    wait $SIM
    s1=$(switches); t1=$(ticks)
    n=$(awk '$1 == "\"answered\"" { gsub(/,/, "", $3); print $3 }' "$WORK/r.json")
    awk -v run="$run" -v n="$n" -v s="$((s1 - s0))" -v t="$((t1 - t0))" -v hz="$HZ" \
        'BEGIN { printf "%-48s %10d %18.1f %18.0f\n", run, n, s / n, t * 1000000 / hz / n }'
done

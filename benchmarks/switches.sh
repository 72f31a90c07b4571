#!/usr/bin/env bash
# Where a payment's CPU goes, thread by thread, closed loop against open loop: why a moderate,
# evenly spaced load costs more per payment than a saturating one. For each thread of psp-worker
# and vipps-sim: how often per payment it slept (voluntary switches: each sleep is a wake-up later),
# how often it was preempted (involuntary: the two RSA loops, when the writer or the generator wakes
# on their cores), and its CPU per payment.
#
#   SCRATCH=$PWD/../.build ./switches.sh      (builds psp-worker and vipps-sim in release there first)
#
# Environment (defaults): SCRATCH (benchmarks/.build-e2e), RATE (1500), RUN_SECONDS (14), WINDOW (8:
# the seconds measured, from 1 s after registration), CONCURRENCY (64, closed loop), WORKER_IA32CAP.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SCRATCH=${SCRATCH:-$ROOT/benchmarks/.build-e2e}
source "$ROOT/benchmarks/lib.sh"
build_release psp-worker vipps-sim
WORK=$(mktemp -d)
export PSP_ADMIN_TOKEN=$(openssl rand -hex 24)
RUN_SECONDS=${RUN_SECONDS:-14}; WINDOW=${WINDOW:-8}
cd "$ROOT"
env ${WORKER_IA32CAP:+OPENSSL_ia32cap=$WORKER_IA32CAP} "$BIN/psp-worker" serve --private-key "$ROOT/keys-example/psp-private-key.pem" --acquirer simulator --port 0 --store "sqlite:$WORK/s.sqlite" \
    --queue-capacity 4096 >"$WORK/worker.log" 2>&1 &
WORKER_PID=$!
SIM=""  # the vipps-sim running in the background (which ignores the terminal's ^C), stopped here too
trap 'if [ -n "$SIM" ]; then kill -TERM $SIM 2>/dev/null; fi; kill -TERM $WORKER_PID 2>/dev/null; wait $WORKER_PID 2>/dev/null; rm -rf "$WORK"' EXIT
PORT=$(logged_port "$WORK/worker.log" "$WORKER_PID")
# One line per thread: process, thread name, voluntary and involuntary switches, CPU ticks.
threads() {
    for pid in "$@"; do
        for task in /proc/"$pid"/task/*; do
            printf "%s %s %s %s\n" "$(cat /proc/"$pid"/comm)" "$(tr ' ' _ <"$task"/comm)" \
                "$(awk '/^voluntary_ctxt/ { v = $2 } /^nonvoluntary_ctxt/ { n = $2 } END { print v, n }' "$task"/status)" \
                "$(awk '{ print $14 + $15 }' "$task"/stat)"
        done
    done
}
HZ=$(getconf CLK_TCK)
for run in "--duration $RUN_SECONDS --concurrency ${CONCURRENCY:-64}" "--rate ${RATE:-1500} --duration $RUN_SECONDS --concurrency 128"; do
    # shellcheck disable=SC2086
    "$BIN/vipps-sim" --url "http://127.0.0.1:$PORT" --quiet $run --json "$WORK/r.json" 2>"$WORK/sim.err" >/dev/null &
    SIM=$!
    until grep -q registered "$WORK/sim.err" 2>/dev/null; do
        kill -0 "$SIM" 2>/dev/null || { echo "vipps-sim stopped before registering:" >&2; cat "$WORK/sim.err" >&2; exit 2; }
        sleep 0.05
    done
    sleep 1
    threads "$WORKER_PID" "$SIM" >"$WORK/before"
    sleep "$WINDOW"
    threads "$WORKER_PID" "$SIM" >"$WORK/after"
    wait $SIM || echo "warning: vipps-sim reported mismatches or lost answers (its report: $WORK/r.json)" >&2
    SIM=""
    rate=$(awk '$1 == "\"throughput\"" { gsub(/,/, "", $3); print $3 }' "$WORK/r.json")
    printf "== vipps-sim %s: %.1f payments/s; per payment over %s s\n" "$run" "$rate" "$WINDOW"
    printf "  %-11s %-18s %8s %12s %8s\n" "process" "thread" "sleeps" "preempted" "CPU µs"
    # Threads of one name are summed; threads that did nothing (or came and went) are left out.
    awk -v n="$(awk -v r="$rate" -v w="$WINDOW" 'BEGIN { print r * w }')" -v hz="$HZ" '
        FNR == NR { v0[$1 " " $2] += $3; n0[$1 " " $2] += $4; t0[$1 " " $2] += $5; next }
        { v1[$1 " " $2] += $3; n1[$1 " " $2] += $4; t1[$1 " " $2] += $5 }
        END {
            for (k in v1) {
                dv = v1[k] - v0[k]; dn = n1[k] - n0[k]; dt = t1[k] - t0[k]
                if (dt <= 0 && dv / n < 0.005 && dn / n < 0.005) continue
                split(k, name, " ")
                printf "  %-11s %-18s %8.2f %12.2f %8.0f\n", name[1], name[2], dv / n, dn / n, dt * 1e6 / hz / n
            }
        }' "$WORK/before" "$WORK/after" | sort
done

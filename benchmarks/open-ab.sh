#!/usr/bin/env bash
# Two psp-worker binaries, taking turns under the same open loop: which one spends less CPU per
# payment, and what each does to the latency and to group commit.
#
#   benchmarks/open-ab.sh A-binary B-binary [rate, default 5000] [seconds, default 20] [pairs, default 5]
#
# Make the binaries with `swift build -c release --product psp-worker` on each version of the
# sources and copy `.build/release/psp-worker` away. Each run starts a worker on a fresh store,
# drives it with vipps-sim's open loop (the default mix) and stops it. The order alternates (A B,
# B A, …), because this VM's speed drifts from minute to minute; compare the pairs, not the sides.
# Per run: the worker's CPU per answer and the cores' idle share over the timed part, writes per
# group commit, p50 and p99 (ms), mismatches. Environment: SCRATCH (the build folder for vipps-sim,
# as in e2e.sh).
set -euo pipefail
usage() { echo "usage: $0 A-binary B-binary [rate] [seconds] [pairs]" >&2; exit 2; }
[ $# -ge 2 ] || usage
A=$1; B=$2; RATE=${3:-5000}; SECONDS_PER=${4:-20}; PAIRS=${5:-5}
[ -x "$A" ] && [ -x "$B" ] || usage
# Absolute, as each run starts its worker after `cd "$ROOT"` (a relative path would then miss).
A=$(realpath "$A"); B=$(realpath "$B")
command -v curl >/dev/null || { echo "curl is needed (apt-get install -y curl)" >&2; exit 2; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SCRATCH=${SCRATCH:-$ROOT/benchmarks/.build-e2e}
source "$ROOT/benchmarks/lib.sh"
build_release vipps-sim >/dev/null
export PSP_ADMIN_TOKEN=$(openssl rand -hex 24)
WORK=$(mktemp -d)
WORKER_PID=
SIM_PID=
trap 'kill $SIM_PID $WORKER_PID 2>/dev/null || true; rm -rf "$WORK"' EXIT

metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m { print $2; found = 1 } END { if (!found) print 0 }'; }
json() { awk -v k="\"$2\"" '$1 == k && match($0, /^ */) && RLENGTH <= 4 { gsub(/,/, "", $3); print $3; exit }' "$1"; }
worker_ticks() { awk '{ print $14 + $15 }' "/proc/$WORKER_PID/stat"; }
cpu_times() { awk '$1 == "cpu" { t = 0; for (i = 2; i <= 9; i++) t += $i; print t, $5 + $6 }' /proc/stat; }

run() {  # SIDE BINARY
    rm -rf "$WORK/run"; mkdir "$WORK/run"
    (cd "$ROOT" && exec "$2" serve --private-key keys-example/psp-private-key.pem --acquirer simulator --port 0 \
        --store "sqlite:$WORK/run/store.sqlite" >"$WORK/run/worker.log" 2>&1) &
    WORKER_PID=$!
    local port; port=$(logged_port "$WORK/run/worker.log" "$WORKER_PID")
    (cd "$ROOT" && exec "$BIN/vipps-sim" --url "http://127.0.0.1:$port" --quiet --rate "$RATE" --duration "$SECONDS_PER" \
        --concurrency 128 --json "$WORK/run/sim.json" >"$WORK/run/sim.out" 2>"$WORK/run/sim.err") &
    local sim=$!
    SIM_PID=$sim
    until grep -q "registered" "$WORK/run/sim.err" 2>/dev/null || ! kill -0 "$sim" 2>/dev/null; do sleep 0.05; done
    local c0 w0 t0 s0 c1 w1 t1 s1 status=0
    c0=$(metric "$port" psp_store_commits_total); w0=$(metric "$port" psp_store_writes_total)
    t0=$(worker_ticks); s0=$(cpu_times)
    # Counted to the end of the timed run, not of vipps-sim (its read-back of some payments follows).
    until grep -q "timed run done" "$WORK/run/sim.err" 2>/dev/null || ! kill -0 "$sim" 2>/dev/null; do sleep 0.05; done
    t1=$(worker_ticks); s1=$(cpu_times)
    c1=$(metric "$port" psp_store_commits_total); w1=$(metric "$port" psp_store_writes_total)
    wait "$sim" || status=$?
    SIM_PID=
    kill "$WORKER_PID"; wait "$WORKER_PID" 2>/dev/null || true; WORKER_PID=
    [ "$status" -eq 0 ] || { echo "$1: vipps-sim failed (status $status):" >&2; cat "$WORK/run/sim.err" "$WORK/run/sim.out" >&2; exit 1; }
    awk -v side="$1" -v hz="$(getconf CLK_TCK)" -v n="$(json "$WORK/run/sim.json" answered)" \
        -v t="$t0 $t1" -v s="$s0 $s1" -v c="$c0 $c1" -v w="$w0 $w1" \
        -v p50="$(json "$WORK/run/sim.json" p50)" -v p99="$(json "$WORK/run/sim.json" p99)" \
        -v mm="$(json "$WORK/run/sim.json" mismatches)" 'BEGIN {
        split(t, T, " "); split(s, S, " "); split(c, C, " "); split(w, W, " ")
        printf "%s  worker_us %.1f  idle %.1f %%  writes_per_commit %.1f  p50 %s  p99 %s  mismatches %s\n", side,
            (T[2] - T[1]) * 1e6 / hz / n, (S[4] - S[2]) * 100 / (S[3] - S[1]), (W[2] - W[1]) / (C[2] - C[1]), p50, p99, mm }'
}

for i in $(seq 1 "$PAIRS"); do
    if [ $((i % 2)) -eq 1 ]; then run A "$A"; run B "$B"; else run B "$B"; run A "$A"; fi
done

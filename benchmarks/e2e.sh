#!/usr/bin/env bash
# HTTP end to end: starts `psp-worker serve` (fresh SQLite store in a temp folder, a random admin
# token, any free port), drives it with `vipps-sim` on the same machine, prints throughput and
# latency next to the `openssl speed rsa2048 -multi <cores>` ceiling, and stops the worker with
# SIGTERM. Exit status 1 if any answer was not what its test card must get.
#
#   benchmarks/e2e.sh                  closed loop (20,000 mixed payments, 64 in flight on 2 cores), then an
#                                      open loop at 80% of the peak it found, for the p99
#   SOAK_SECONDS=300 benchmarks/e2e.sh also a 5-minute open-loop run, sampling the worker's RSS and the WAL,
#                                      with latency per 30 s and the store writer's stalls
#
# Environment (defaults): COUNT (10,000 per core), CONCURRENCY (32 per core), OPEN_CONNECTIONS (64 per
# core), CLIENT_THREADS (vipps-sim's; 1, or one per 4 cores from 8 cores), MIX (approved=90,51=5,05=3,
# bad-cryptogram=1,wrong-token=1), WORKERS (unset: the worker's default, one per core or event loop,
# whichever is more; workers only decrypt, the waiting on the store and the acquirer runs in tasks of its own), RATE_SHARE (0.8; several, e.g. "0.5 0.6 0.7 0.8",
# give one open-loop run each: latency against load), RATE_SECONDS (30), SOAK_SECONDS (0),
# WORKER_ARGS (more `psp-worker serve` options, e.g. "--group-commit-window-ms 0"), WORKER_IA32CAP
# (unset; an OPENSSL_ia32cap value for the worker alone, as benchmarks/rsa-code-path.sh recommends:
# the ceiling stays openssl as installed, and openssl speed on the worker's path is printed beside it),
# SCRATCH (benchmarks/.build-e2e: the build folder; point it at an existing release build to reuse it),
# WORKER_BIN (unset; another psp-worker binary to drive instead of the build's, e.g. one built from
# an earlier commit in a worktree, for side-by-side runs of two versions).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SCRATCH=${SCRATCH:-$ROOT/benchmarks/.build-e2e}
CORES=$(nproc)
# Sized by the cores, so that on a larger machine the closed loop still measures the worker, not
# vipps-sim or too few requests in flight: 10,000 payments, 32 in flight and 64 open-loop
# connections per core, a vipps-sim client thread per 4 cores (20,000, 64, 128 and 1 on 2 cores).
COUNT=${COUNT:-$((10000 * CORES))}
CONCURRENCY=${CONCURRENCY:-$((32 * CORES))}
OPEN_CONNECTIONS=${OPEN_CONNECTIONS:-$((64 * CORES))}
CLIENT_THREADS=${CLIENT_THREADS:-$(( CORES >= 8 ? CORES / 4 : 1 ))}
MIX=${MIX:-approved=90,51=5,05=3,bad-cryptogram=1,wrong-token=1}
WORKERS=${WORKERS:-}
RATE_SHARE=${RATE_SHARE:-0.8}
RATE_SECONDS=${RATE_SECONDS:-30}
SOAK_SECONDS=${SOAK_SECONDS:-0}
# The soak samples the worker's RSS with ps.
if [ "$SOAK_SECONDS" -gt 0 ]; then command -v ps >/dev/null || { echo "ps is needed for the soak: apt-get install -y procps"; exit 2; }; fi
unset OPENSSL_ia32cap  # the worker gets only WORKER_IA32CAP

echo "== build (release, $SCRATCH)"
source "$ROOT/benchmarks/lib.sh"
build_release psp-worker vipps-sim

if [ -n "${WORKER_BIN:-}" ]; then
    WORKER_BIN=$(realpath "$WORKER_BIN")
    echo "== driving $WORKER_BIN instead of the build's psp-worker (vipps-sim is still the build's)"
fi
WORK=$(mktemp -d)
warn_if_not_durable "$WORK"
export PSP_ADMIN_TOKEN=$(openssl rand -hex 24)
WORKER_PID=""
stop_worker() {
    if [ -n "$WORKER_PID" ] && kill -0 "$WORKER_PID" 2>/dev/null; then
        kill -TERM "$WORKER_PID"
        wait "$WORKER_PID" || true
    fi
    WORKER_PID=""
}
# A vipps-sim in the background ignores the terminal's ^C (bash starts background jobs so): stopped here.
SIM_PID=""
stop_sim() { if [ -n "$SIM_PID" ]; then kill -TERM "$SIM_PID" 2>/dev/null || true; fi; }
trap 'stop_sim; stop_worker; rm -rf "$WORK"' EXIT

echo "== machine: nproc $CORES; $(lscpu | grep 'Model name' | sed 's/  */ /g'); $(openssl version)"
echo "== ceiling: openssl speed -elapsed -seconds 5 -multi $CORES rsa2048 (sign/s = private-key operations per second of wall-clock time)"
CEILING=$(number "$(signs_per_second 5)" "the ceiling")
echo "ceiling: $CEILING sign/s on $CORES cores"
if [ -n "${WORKER_IA32CAP:-}" ]; then
    SAME_PATH=$(number "$(signs_per_second 5 "$WORKER_IA32CAP")" "the same-path ceiling")
    echo "on the worker's RSA code path (OPENSSL_ia32cap=$WORKER_IA32CAP): $SAME_PATH sign/s, ×$(awk -v a="$SAME_PATH" -v b="$CEILING" 'BEGIN { printf "%.3f", a / b }') of the ceiling"
fi

echo "== start psp-worker (workers ${WORKERS:-default}, store $WORK/e2e.sqlite)"
# The connections vipps-sim may open (two per duplicate in flight) past the worker's default limit
# of 1,024 (a connection past it is closed unread: a transport error here), on many cores.
MOST_CONNECTIONS=$(( 2 * (CONCURRENCY > OPEN_CONNECTIONS ? CONCURRENCY : OPEN_CONNECTIONS) + 64 ))
CONNECTION_LIMIT=""
if [ "$MOST_CONNECTIONS" -gt 1024 ]; then CONNECTION_LIMIT="--max-connections $MOST_CONNECTIONS"; fi
# shellcheck disable=SC2086
(cd "$ROOT" && exec env ${WORKER_IA32CAP:+OPENSSL_ia32cap=$WORKER_IA32CAP} "${WORKER_BIN:-$BIN/psp-worker}" serve --private-key "$ROOT/keys-example/psp-private-key.pem" --acquirer simulator --port 0 --store "sqlite:$WORK/e2e.sqlite" ${WORKERS:+--workers "$WORKERS"} \
    --queue-capacity 4096 --acquirer-timeout 2 $CONNECTION_LIMIT ${WORKER_ARGS:-} >"$WORK/worker.log" 2>&1) &
WORKER_PID=$!
PORT=$(logged_port "$WORK/worker.log" "$WORKER_PID") || { echo "psp-worker did not start"; exit 2; }
URL="http://127.0.0.1:$PORT"
echo "listening on $URL (pid $WORKER_PID)"

# A figure of vipps-sim's --json report: top level, or in latencyMs (indented 4; the intervals' own
# latencies are indented deeper, and sendLagMs comes after latencyMs).
field() { awk -v k="\"$2\"" '$1 == k && match($0, /^ */) && RLENGTH <= 4 { gsub(/,/, "", $3); print $3; exit }' "$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
FAILED=0
# Where the cores' time went during a run's timed part (after vipps-sim has registered its
# payments): steal, the vCPUs' time the hypervisor gave to someone else (latency tails on a VM
# follow it: a stolen 20 ms is 20 ms on every payment in flight); idle, what was left over (near
# zero: the run was at the machine's capacity, however low the worker's share looks); and the
# worker's own CPU per answer (in an open loop every request wakes both sides on its own, so it
# costs more than in a closed loop, where one wake-up serves many).
CLK_TCK=$(getconf CLK_TCK)
cpu_times() { awk '$1 == "cpu" { t = 0; for (i = 2; i <= 9; i++) t += $i; print t, $9, $5 + $6 }' /proc/stat; }
share() { awk -v a="$1" -v b="$2" -v f="$3" 'BEGIN { split(a, x, " "); split(b, y, " "); d = y[1] - x[1]; printf "%.1f", (d > 0 ? (y[f] - x[f]) * 100 / d : 0) }'; }
worker_ticks() { awk '{ print $14 + $15 }' "/proc/$WORKER_PID/stat"; }
wait_registered() {  # ERR PID: until vipps-sim (PID, stderr in ERR) has registered its payments, or exited
    until grep -q "registered" "$1" 2>/dev/null || ! kill -0 "$2" 2>/dev/null; do sleep 0.05; done
}
wait_driven() {  # ERR PID: until vipps-sim's timed run is over (its read-back of some payments follows), or it exited
    until grep -q "timed run done" "$1" 2>/dev/null || ! kill -0 "$2" 2>/dev/null; do sleep 0.05; done
}
account() {  # NAME CPU_TIMES WORKER_TICKS CPU_TIMES_AFTER WORKER_TICKS_AFTER: the steal, idle and worker CPU of NAME's timed run
    share "$2" "$4" 2 >"$WORK/$1.steal"
    share "$2" "$4" 3 >"$WORK/$1.idle"
    awk -v t0="$3" -v t1="$5" -v hz="$CLK_TCK" -v n="$(field "$WORK/$1.json" answered)" \
        'BEGIN { if (n > 0) printf "%d", (t1 - t0) * 1e6 / hz / n; else printf "-" }' >"$WORK/$1.worker"
}
timed_sim() {  # NAME ARGS...: a run whose steal, idle and worker CPU are kept beside its report
    local name=$1; shift
    (cd "$ROOT" && exec "$BIN/vipps-sim" --url "$URL" --quiet --client-threads "$CLIENT_THREADS" "$@" --json "$WORK/$name.json" 2>"$WORK/$name.err") &
    local pid=$!
    SIM_PID=$pid
    wait_registered "$WORK/$name.err" "$pid"
    local before ticks after after_ticks
    before=$(cpu_times); ticks=$(worker_ticks)
    wait_driven "$WORK/$name.err" "$pid"
    after=$(cpu_times); after_ticks=$(worker_ticks)
    wait "$pid" || FAILED=1
    SIM_PID=""
    account "$name" "$before" "$ticks" "$after" "$after_ticks"
    cat "$WORK/$name.err" >&2
}

echo "== closed loop: $COUNT payments, $CONCURRENCY in flight, mix $MIX"
timed_sim closed --count "$COUNT" --concurrency "$CONCURRENCY" --mix "$MIX"
PEAK=$(field "$WORK/closed.json" throughput)
# The ceiling again right after the closed loop: the peak's ratio is to the mean of the two, as
# this VM's speed drifts by 10-20 % within minutes.
AFTER=$(number "$(signs_per_second 5)" "the ceiling")
echo "ceiling after the closed loop: $AFTER sign/s (before: $CEILING)"
CEILING=$(awk -v a="$CEILING" -v b="$AFTER" 'BEGIN { printf "%.1f", (a + b) / 2 }')
if [ -n "${SAME_PATH:-}" ]; then
    AFTER=$(number "$(signs_per_second 5 "$WORKER_IA32CAP")" "the same-path ceiling")
    SAME_PATH=$(awk -v a="$SAME_PATH" -v b="$AFTER" 'BEGIN { printf "%.1f", (a + b) / 2 }')
fi
SHARES=($RATE_SHARE)
for share in "${SHARES[@]}"; do
    RATE=$(awk -v p="$PEAK" -v s="$share" 'BEGIN { printf "%d", p * s }')
    echo "== open loop: $RATE/s ($share of the peak) for $RATE_SECONDS s"
    timed_sim "open-$share" --rate "$RATE" --duration "$RATE_SECONDS" --concurrency "$OPEN_CONNECTIONS" --mix "$MIX"
done
# The soak and the summary's target line use the last share.
LAST_SHARE=${SHARES[${#SHARES[@]}-1]}
cp "$WORK/open-$LAST_SHARE.json" "$WORK/open.json"

if [ "$SOAK_SECONDS" -gt 0 ]; then
    echo "== soak: $RATE/s for $SOAK_SECONDS s; worker RSS and WAL size sampled every 15 s once the timed run starts"
    stalls() { { curl -s --max-time 5 "$URL/metrics" || true; } | awk '/^psp_store_(commits|writes|slow_commits|slow_wal_restarts)_total/ { print $1, $2 }' | sort; }
    STALLS_BEFORE=$(stalls)
    (cd "$ROOT" && exec "$BIN/vipps-sim" --url "$URL" --quiet --client-threads "$CLIENT_THREADS" --rate "$RATE" --duration "$SOAK_SECONDS" --concurrency "$OPEN_CONNECTIONS" \
        --mix "$MIX" --interval 30 --json "$WORK/soak.json" >"$WORK/soak.out" 2>"$WORK/soak.err") &
    SIM_PID=$!
    wait_registered "$WORK/soak.err" "$SIM_PID"
    SOAK_CPU=$(cpu_times); SOAK_TICKS=$(worker_ticks)
    : >"$WORK/rss"
    driven() { grep -q "timed run done" "$WORK/soak.err" 2>/dev/null || ! kill -0 "$SIM_PID" 2>/dev/null; }
    while ! driven; do
        echo "$(date +%s.%N) $(ps -o rss= -p "$WORKER_PID") $(stat -c %s "$WORK/e2e.sqlite-wal" 2>/dev/null || echo 0) $(worker_ticks) $(cpu_times)" >>"$WORK/rss"
        # In short steps, so that the soak's accounting ends when its timed run does.
        for _ in $(seq 30); do driven || sleep 0.5; done
    done
    SOAK_CPU_AFTER=$(cpu_times); SOAK_TICKS_AFTER=$(worker_ticks)
    echo "$(date +%s.%N) $(ps -o rss= -p "$WORKER_PID") $(stat -c %s "$WORK/e2e.sqlite-wal" 2>/dev/null || echo 0) $SOAK_TICKS_AFTER $SOAK_CPU_AFTER" >>"$WORK/rss"
    wait "$SIM_PID" || FAILED=1
    SIM_PID=""
    account soak "$SOAK_CPU" "$SOAK_TICKS" "$SOAK_CPU_AFTER" "$SOAK_TICKS_AFTER"
    cat "$WORK/soak.err" "$WORK/soak.out"
    echo "worker RSS and the store's WAL over the soak, every 15 s (the WAL starts again past 16 MiB), and over each"
    echo "step the worker's CPU per payment at the soak's rate and the share of the cores idle (a slower VM or a"
    echo "worker doing more per payment shows as more CPU, and less idle, at the same rate):"
    awk -v rate="$RATE" -v hz="$(getconf CLK_TCK)" 'NR == 1 { t0 = $1 }
        { cpu = ""; idle = ""
          if (NR > 1 && $1 > t) { cpu = sprintf("  worker %4.0f µs", ($4 - w) * 1e6 / hz / (($1 - t) * rate))
                                  if ($5 > c) idle = sprintf("  idle %4.1f %%", ($7 - i) * 100 / ($5 - c)) }
          printf "  %4d s  RSS %s KiB  WAL %.1f MiB%s%s\n", $1 - t0, $2, $3 / 1048576, cpu, idle
          t = $1; w = $4; c = $5; i = $7 }' "$WORK/rss"
    echo "the store's group commits during the soak, and the writer's stalls (commits, and the checkpoints it runs so that the WAL can restart, that took at least so long):"
    join <(echo "$STALLS_BEFORE") <(stalls) | awk '{ printf "  %-62s %d\n", $1, $3 - $2 }'
fi

stop_worker
echo "== summary (psp-worker and vipps-sim sharing the same $CORES cores)"
printf "%-30s %10s %8s %8s %8s %10s %9s %8s %7s %7s\n" "run" "per s" "p50 ms" "p99 ms" "max ms" "mismatches" "worker µs" "gen µs" "steal %" "idle %"
for run in closed "${SHARES[@]/#/open-}" soak; do
    [ -f "$WORK/$run.json" ] || continue
    label="$run loop"
    case "$run" in open-*) label="open loop at ${run#open-} of peak" ;; esac
    printf "%-30s %10s %8s %8s %8s %10s %9s %8s %7s %7s\n" "$label" \
        "$(field "$WORK/$run.json" throughput | cut -c1-8)" "$(field "$WORK/$run.json" p50)" \
        "$(field "$WORK/$run.json" p99)" "$(field "$WORK/$run.json" max)" "$(field "$WORK/$run.json" mismatches)" \
        "$(cat "$WORK/$run.worker" 2>/dev/null || echo -)" \
        "$(field "$WORK/$run.json" generatorCPUMicrosecondsPerAnswer | cut -d. -f1)" "$(cat "$WORK/$run.steal" 2>/dev/null || echo -)" \
        "$(cat "$WORK/$run.idle" 2>/dev/null || echo -)"
done
echo "(worker µs and gen µs: psp-worker's and vipps-sim's CPU per answer; steal %: vCPU time the hypervisor took;"
echo " idle %: what neither used. All over the timed part of each run, after registration.)"
echo "ceiling, openssl speed rsa2048 -multi $CORES: $CEILING sign/s (mean of just before and just after the closed loop)"
echo "closed-loop peak / ceiling: $(ratio "$PEAK" "$CEILING")   (target ≥ 0.60)"
# Some answers need no RSA: the 401s (wrong tokens), the 72s (confirmed NO, TIMEOUT, CANCEL) and the
# second answer of each duplicate (from the stored outcome, or joined to the first in flight). The
# peak counting only the answers that did.
NO_RSA=$({ grep -oE '"(401 FAIL 71|200 FAIL 72|duplicate|duplicate-in-flight)" : [0-9]+' "$WORK/closed.json" || true; } \
    | awk '{ n += $NF } END { print n + 0 }')
if [ "$NO_RSA" -gt 0 ]; then
    DECRYPTING=$(awk -v p="$PEAK" -v w="$NO_RSA" -v n="$(field "$WORK/closed.json" answered)" 'BEGIN { printf "%.1f", p * (n - w) / n }')
    echo "  … counting only the answers that decrypted (not the $NO_RSA that needed no RSA: 401s, 72s, duplicates' second answers): $(ratio "$DECRYPTING" "$CEILING")"
fi
[ -n "${SAME_PATH:-}" ] && echo "closed-loop peak / openssl speed on the worker's path: $(ratio "$PEAK" "$SAME_PATH")"
echo "open loop at $LAST_SHARE of peak: p99 $(field "$WORK/open.json" p99) ms   (target < 20 ms)," \
    "with $(cat "$WORK/open-$LAST_SHARE.idle") % of the cores idle (under ~10 %: the open loop is at the machine's capacity)"
exit $FAILED

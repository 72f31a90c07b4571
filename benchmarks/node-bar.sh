#!/usr/bin/env bash
# The guide's end-to-end bar, measured here side by side: the same prepared makePayment requests,
# driven by wrk on the same cores, against (1) a stateless Node endpoint (node-bar/server.js: cluster
# of one process per core, node:crypto, decrypt + parse + answer, no store, no token check) and (2)
# psp-worker serve (token check, store read, durable SQLite attempt + outcome, simulator acquirer).
# Each round registers its payments, waits until they are on disk and the worker is idle (the
# checkpoints of a registration burst would otherwise take cores from the runs), then runs both.
# Rounds take turns with `openssl speed -multi <cores> rsa2048`, and each figure is reported as a
# share of the ceiling measured next to it. Beside each figure, the server's CPU time (all its
# threads and processes, user + system) per request: the work each does for one payment, which the
# shares alone hide (both servers share the cores with wrk).
#
#   SCRATCH=$PWD/../.build ./node-bar.sh      (after a release build there; else it builds)
#
# Environment (defaults): ROUNDS (2; the servers take turns going first, so keep it even), SECONDS_PER_RUN (10), CONNECTIONS (32 per core), WRK_THREADS (1;
# one per 4 cores from 8 cores),
# SCRATCH (benchmarks/.build-e2e), WORKER_ARGS (more `psp-worker serve` options, e.g.
# "--group-commit-window-ms 5"); WORKER_IA32CAP and NODE_IA32CAP (unset): an OPENSSL_ia32cap value
# for that server alone (both libcrypto and Node's OpenSSL read it; rsa-code-path.sh measures
# which path is faster here). The ceiling is always `openssl speed` as installed, with no OPENSSL_ia32cap.
# Needs node, wrk and pgrep (apt-get install -y nodejs wrk procps).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
HERE="$ROOT/benchmarks"
SCRATCH=${SCRATCH:-$ROOT/benchmarks/.build-e2e}
ROUNDS=${ROUNDS:-2}
RUN_SECONDS=${SECONDS_PER_RUN:-10}
CORES=$(nproc)
# Sized by the cores (64 connections and 1 wrk thread on 2 cores), so that on a larger machine
# wrk still saturates the servers rather than measuring itself.
CONNECTIONS=${CONNECTIONS:-$((32 * CORES))}
export WRK_THREADS=${WRK_THREADS:-$(( CORES >= 8 ? CORES / 4 : 1 ))}
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk"; exit 2; }
command -v node >/dev/null || { echo "node is needed: apt-get install -y nodejs"; exit 2; }
# Node's cluster workers are found with pgrep: without it their CPU would be silently left out.
command -v pgrep >/dev/null || { echo "pgrep is needed: apt-get install -y procps"; exit 2; }

source "$HERE/lib.sh"
build_release psp-worker vipps-sim

WORK=$(mktemp -d)
warn_if_not_durable "$WORK"
export PSP_ADMIN_TOKEN=$(openssl rand -hex 24)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$WORK"' EXIT

# Each server gets only the OPENSSL_ia32cap its variable above names.
unset OPENSSL_ia32cap
ceiling() { signs_per_second 3; }

cd "$ROOT"
# wrk's connections past the worker's default limit of 1,024 (closed unread past it), on many cores.
CONNECTION_LIMIT=""
if [ "$CONNECTIONS" -gt 960 ]; then CONNECTION_LIMIT="--max-connections $((CONNECTIONS + 64))"; fi
# shellcheck disable=SC2086
env ${WORKER_IA32CAP:+OPENSSL_ia32cap=$WORKER_IA32CAP} "$BIN/psp-worker" serve --private-key "$ROOT/keys-example/psp-private-key.pem" --acquirer simulator --port 0 --store "sqlite:$WORK/bar.sqlite" --queue-capacity 4096 $CONNECTION_LIMIT ${WORKER_ARGS:-} >"$WORK/worker.log" 2>&1 &
PIDS+=($!)
WORKER_PORT=$(logged_port "$WORK/worker.log" "${PIDS[0]}")
# Port 0: the kernel picks a free one and Node's primary logs it (the worker's port + 1 may be taken).
env ${NODE_IA32CAP:+OPENSSL_ia32cap=$NODE_IA32CAP} node "$HERE/node-bar/server.js" keys-example/psp-private-key.pem 0 >"$WORK/node.log" 2>&1 &
PIDS+=($!)
NODE_PORT=$(logged_port "$WORK/node.log" "${PIDS[1]}")

echo "machine: nproc $CORES; $(lscpu | grep 'Model name' | sed 's/  */ /g'); $(openssl version); node $(node --version); $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2)"
echo "psp-worker options: ${WORKER_ARGS:-(defaults)}"
echo "OPENSSL_ia32cap: psp-worker ${WORKER_IA32CAP:-(unset)}, node ${NODE_IA32CAP:-(unset)}, ceiling (unset)"
echo "wrk -t$WRK_THREADS -c$CONNECTIONS -d${RUN_SECONDS}s, every request a distinct approved payment; $ROUNDS rounds"
printf "%-6s %-34s %10s %10s %9s %9s %9s %7s %11s\n" round endpoint "ceiling" "req/s" "share" "p50 ms" "p99 ms" "not ok" "CPU µs/req"
# CPU time (user + system, clock ticks) of a server: the process and its children (Node's cluster).
cpu_ticks() {
    local total=0 pid
    for pid in "$1" $(pgrep -P "$1" || true); do
        total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)))
    done
    echo "$total"
}
TICKS_PER_SECOND=$(getconf CLK_TCK)
settle() { # PID: until the process used under 2 % of a core over a second (at most 30 s)
    local before after
    for _ in $(seq 30); do
        before=$(cpu_ticks "$1"); sleep 1; after=$(cpu_ticks "$1")
        [ $((after - before)) -lt $((TICKS_PER_SECOND / 50 + 1)) ] && return 0
    done
    # Measure anyway (under set -e a failure here would end the script without a word).
    echo "warning: process $1 still busy after 30 s; the round starts anyway" >&2
    return 0
}
wrk_run() { # url requests-file server-pid -> WRK line, then the server's CPU µs per request
    local before after line
    before=$(cpu_ticks "$3")
    line=$(REQUESTS="$2" wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"${RUN_SECONDS}s" --timeout 10s -s "$HERE/node-bar/makepayment.lua" "$1" | grep '^WRK') \
        || { echo "wrk gave no result for $1" >&2; return 1; }
    after=$(cpu_ticks "$3")
    echo "$line" | awk -v t=$((after - before)) -v hz="$TICKS_PER_SECOND" '{ printf "%s cpu_us %.1f\n", $0, t * 1e6 / hz / ($3 > 0 ? $3 : 1) }'
}
NOT_OK=()   # "round, server: count" for each run with answers other than OK
for round in $(seq 1 "$ROUNDS"); do
    C1=$(number "$(ceiling)" "the ceiling")
    COUNT=$(awk -v c="$C1" -v s="$RUN_SECONDS" 'BEGIN { printf "%d", c * s * 1.3 + 1000 }')
    "$BIN/vipps-sim" --url "http://127.0.0.1:$WORKER_PORT" --quiet --count "$COUNT" --mix approved=100 \
        --export-requests "$WORK/requests.tsv" >/dev/null 2>"$WORK/export.err" || { cat "$WORK/export.err"; exit 2; }
    # The registrations leave work behind (the worker's checkpoints of them, the kernel's writeback),
    # which would take cores from whichever server runs first (measured: +17 µs of worker CPU per
    # request in the 10 s after registering 120,000 payments, none 12 s later): both runs start
    # once the disk has the pages and the worker is idle.
    sync
    settle "${PIDS[0]}"
    # The two take turns going first, round by round, so that a drift of the VM's speed within a
    # round (10-20 % from minute to minute here) does not always fall on the same server.
    if [ $((round % 2)) -eq 1 ]; then
        NODE=$(wrk_run "http://127.0.0.1:$NODE_PORT/makePayment" "$WORK/requests.tsv" "${PIDS[1]}") || exit 2
        OURS=$(wrk_run "http://127.0.0.1:$WORKER_PORT/makePayment" "$WORK/requests.tsv" "${PIDS[0]}") || exit 2
    else
        OURS=$(wrk_run "http://127.0.0.1:$WORKER_PORT/makePayment" "$WORK/requests.tsv" "${PIDS[0]}") || exit 2
        NODE=$(wrk_run "http://127.0.0.1:$NODE_PORT/makePayment" "$WORK/requests.tsv" "${PIDS[1]}") || exit 2
    fi
    C2=$(number "$(ceiling)" "the ceiling")
    for pair in "node (stateless, cluster)|$NODE" "psp-worker (token, SQLite, acquirer)|$OURS"; do
        name=${pair%%|*}; line=${pair#*|}
        echo "$line" | awk -v r="$round" -v n="$name" -v c1="$C1" -v c2="$C2" '{
            c = (c1 + c2) / 2; rate = $3 / $5
            printf "%-6s %-34s %10.1f %10.1f %9.3f %9.2f %9.2f %7d %11.1f%s\n", r, n, c, rate, rate / c, $7, $11, $15, $21, ($17 > 0 ? "  (file ran out: " $17 " repeats)" : "")
        }'
        # Field 15 is makepayment.lua's not_ok (socket errors included; field 19 is those alone).
        bad=$(awk '{ print $15 + 0 " (" $19 + 0 " socket errors)" }' <<<"$line")
        [ "${bad%% *}" -eq 0 ] || NOT_OK+=("round $round, $name: $bad")
    done
done
# After the table, so its figures still show: a share of answers that were not all OK means nothing.
if [ ${#NOT_OK[@]} -gt 0 ]; then
    echo "FAIL: answers other than 200 \"status\":\"OK\" (or wrk socket errors), so the figures above do not count:" >&2
    printf '  %s\n' "${NOT_OK[@]}" >&2
    exit 1
fi

#!/usr/bin/env bash
# End to end through a real acquirer protocol with faults: acquirer-sim (dropped replies, delay,
# jitter, cards that never answer), psp-worker serve --acquirer iso8583://… (or http://…), and
# vipps-sim. Passes only if vipps-sim saw zero mismatches, acquirer-sim's journal shows no RRN
# authorized twice or reversed twice, and every unknown outcome (each FAIL 85 but those the worker
# counts as never sent) was reversed exactly once: reversals counted by acquirer-sim == those 85s.
#
#   benchmarks/e2e-acquirer.sh                    ISO 8583
#   ACQUIRER=http benchmarks/e2e-acquirer.sh      HTTP JSON
#   ACQUIRER=simulator benchmarks/e2e-acquirer.sh the in-process simulator (no journal checks)
#
# Environment (defaults): ACQUIRER (iso8583), COUNT (20000), CONCURRENCY (64), DROP_EVERY (97),
# DELAY_MS (2), JITTER_MS (3), MIX (approved=88,51=4,05=3,timeout=2,bad-cryptogram=1,wrong-token=1,no=1),
# SCRATCH (the build folder; default .build of the repository), ACQUIRER_SIM_ARGS (more acquirer-sim
# options, e.g. "--late-replies": every 0110 held until its reversal, then sent after the 0410).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SCRATCH=${SCRATCH:-$ROOT/.build}
ACQUIRER=${ACQUIRER:-iso8583}
COUNT=${COUNT:-20000}
CONCURRENCY=${CONCURRENCY:-64}
DROP_EVERY=${DROP_EVERY:-97}
DELAY_MS=${DELAY_MS:-2}
JITTER_MS=${JITTER_MS:-3}
MIX=${MIX:-approved=88,51=4,05=3,timeout=2,bad-cryptogram=1,wrong-token=1,no=1}
# The check below counts one reversal per payment answered 85; a duplicate's repeat (and each copy
# of a duplicate-in-flight whose reply was dropped) is a second 85 for one reversal, a 91 is answered
# 85 with nothing to reverse, and a 10 or a code the worker does not map is reversed but answered 82,
# so none may be in the mix: its codes are those the worker answers 85 and reverses (68, and 99 as
# `timeout`), approves (00, 08, 11), or refuses without a reversal (README.md, "Response codes").
# (Spaces removed: vipps-sim trims them around each kind.)
IFS=, read -ra KINDS <<<"${MIX// /}"
for kind in "${KINDS[@]}"; do
    case "${kind%%=*}" in
    duplicate|duplicate-in-flight)
        echo "MIX must not contain $kind here (one reversal per 85 is what is checked)"; exit 2 ;;
    [0-9][0-9])
        case " 00 08 11 68 99 01 02 03 04 05 06 07 12 13 14 15 20 22 30 31 33 34 41 43 46 51 54 56 57 58 59 61 62 63 65 78 92 93 94 96 " in
        *" ${kind%%=*} "*) ;;
        *) echo "MIX must not contain code ${kind%%=*} here: it is not answered 85 with one reversal, nor refused without one"; exit 2 ;;
        esac ;;
    esac
done
# The journal checks read JSON with Python, and the worker's metrics come through curl (both checked
# now, not after the run).
command -v python3 >/dev/null || { echo "python3 is needed: apt-get install -y python3"; exit 2; }
command -v curl >/dev/null || { echo "curl is needed (apt-get install -y curl)" >&2; exit 2; }

source "$ROOT/benchmarks/lib.sh"
build_release psp-worker vipps-sim acquirer-sim
WORK=$(mktemp -d)
export PSP_ADMIN_TOKEN=$(openssl rand -hex 24)
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

"$BIN/acquirer-sim" --iso-port 0 --http-port 0 --drop-every "$DROP_EVERY" --delay-ms "$DELAY_MS" --jitter-ms "$JITTER_MS" \
    --journal "$WORK/journal.json" ${ACQUIRER_SIM_ARGS:-} >"$WORK/acquirer.log" 2>&1 &
PIDS+=($!)
ISO_PORT=$(logged_port "$WORK/acquirer.log" "" 's/.*ISO 8583 listening on [0-9.]*:\([0-9]*\).*/\1/p')
HTTP_PORT=$(logged_port "$WORK/acquirer.log" "" 's/.*HTTP JSON listening on [0-9.]*:\([0-9]*\).*/\1/p')
case "$ACQUIRER" in
    iso8583) URL="iso8583://127.0.0.1:$ISO_PORT"; FAULTS="--acquirer-faults" ;;
    http) URL="http://127.0.0.1:$HTTP_PORT"; FAULTS="--acquirer-faults" ;;
    simulator) URL="simulator"; FAULTS="" ;;
    *) echo "ACQUIRER must be iso8583, http or simulator"; exit 2 ;;
esac
echo "== acquirer-sim: drop every $DROP_EVERY, delay ${DELAY_MS}+${JITTER_MS} ms; worker --acquirer $URL"

(cd "$ROOT" && exec "$BIN/psp-worker" serve --private-key "$ROOT/keys-example/psp-private-key.pem" --port 0 --store "sqlite:$WORK/store.sqlite" --acquirer "$URL" \
    --acquirer-timeout 1 --queue-capacity 4096 >"$WORK/worker.log" 2>&1) &
PIDS+=($!)
PORT=$(logged_port "$WORK/worker.log")

set +e
(cd "$ROOT" && "$BIN/vipps-sim" --url "http://127.0.0.1:$PORT" --count "$COUNT" --concurrency "$CONCURRENCY" \
    --mix "$MIX" $FAULTS --quiet --json "$WORK/report.json")
SIM_STATUS=$?
set -e

ANSWERED_85=$(python3 -c "import json; print(json.load(open('$WORK/report.json'))['outcomes'].get('200 FAIL 85', 0))")
if [ "$ACQUIRER" = simulator ]; then exit $SIM_STATUS; fi
# An 85 with nothing sent (too late to send, or the adapter knew it never left: the connection
# backing off after a silent spell) has nothing to reverse: the worker counts those.
METRICS=$(curl -s --max-time 5 "http://127.0.0.1:$PORT/metrics" || echo "metrics unreadable" >&2)
NOT_SENT=$(awk '$1 == "psp_authorizations_not_sent_total" { print $2 }' <<<"$METRICS")
NOT_SENT=${NOT_SENT:-0}
echo "== worker: $(awk '$1 == "psp_acquirer_late_replies_total" { print $2 }' <<<"$METRICS") late replies to authorizations given up on"
UNKNOWN=$((ANSWERED_85 - NOT_SENT))
# Reversals are sent right after the answer; give the last ones a moment to be acknowledged.
for _ in $(seq 1 100); do
    REVERSED=$(python3 -c "import json; print(json.load(open('$WORK/journal.json'))['totalReversals'])" 2>/dev/null || echo 0)
    [ "$REVERSED" -ge "$UNKNOWN" ] && break
    sleep 0.2
done
sleep 1.2   # the journal is rewritten every second
python3 - "$WORK/journal.json" "$UNKNOWN" "$SIM_STATUS" "$NOT_SENT" <<'PY'
import json, sys
journal = json.load(open(sys.argv[1])); unknown = int(sys.argv[2]); sim = int(sys.argv[3]); not_sent = int(sys.argv[4])
print(f"== acquirer-sim journal: {journal['totalAuthorizations']} authorizations, {journal['droppedReplies']} replies dropped, "
      f"{journal['totalReversals']} reversals (+{journal['reversalRepeats']} repeats)")
print(f"   unknown outcomes answered 85: {unknown} (and {not_sent} answered 85 with nothing sent); reversed: {journal['totalReversals']}")
print(f"   RRNs authorized twice: {len(journal['authorizedTwice'])}; reversed twice: {len(journal['reversedTwice'])}")
# acquirer-sim counts a reversal of an RRN it never authorized too (answering 25): equal totals alone
# would pass a worker that reversed under the wrong RRN. Both are objects keyed by RRN.
never_authorized = set(journal['reversals']) - set(journal['authorizations'])
print(f"   reversed RRNs never authorized: {len(never_authorized)}")
other_stan = journal.get('repeatsWithAnotherSTAN', 0)
print(f"   0401 repeats with a STAN other than their 0400's: {other_stan}")
ok = (sim == 0 and not journal['authorizedTwice'] and not journal['reversedTwice'] and journal['totalReversals'] == unknown
      and not never_authorized and other_stan == 0)
print("PASS" if ok else "FAIL")
sys.exit(0 if ok else 1)
PY

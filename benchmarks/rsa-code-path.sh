#!/usr/bin/env bash
# Which of libcrypto's RSA code paths is fastest on this CPU: `openssl speed rsa2048` as installed,
# and with OPENSSL_ia32cap hiding ADX (bit 19 of CPUID leaf 7 EBX), which makes OpenSSL take its
# RSAZ-AVX2 path for the 1024-bit CRT halves instead of the MULX/ADX Montgomery code. Both are
# OpenSSL's own constant-time code; which is faster depends on the CPU (on the AMD EPYC of
# benchmarks/README.md, RSAZ-AVX2 signs 10-28 % faster). Runs take turns, ROUNDS (3) of SECONDS_PER (2)
# each, and medians are printed with the line to put in the worker's environment.
#
#   benchmarks/rsa-code-path.sh
set -euo pipefail
ROUNDS=${ROUNDS:-3}
SECONDS_PER=${SECONDS_PER:-2}
unset OPENSSL_ia32cap
CANDIDATES=("" ":~0x80000")
grep -qw avx2 /proc/cpuinfo || { echo "no AVX2 on this CPU: OpenSSL's default path is the only one; leave OPENSSL_ia32cap unset"; exit 0; }

speed() { # OPENSSL_ia32cap value ("" for none) -> private-key operations per second on one core
    env ${1:+OPENSSL_ia32cap=$1} openssl speed -elapsed -seconds "$SECONDS_PER" -mr rsa2048 2>/dev/null | awk -F: '/^\+F2:/ { v = $4 } END { if (v > 0) print (v < 1 ? 1 / v : v) }'
}
RESULTS=()
for _ in $(seq 1 "$ROUNDS"); do
    for i in "${!CANDIDATES[@]}"; do RESULTS[i]+="$(speed "${CANDIDATES[i]}") "; done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "$(lscpu | grep 'Model name' | sed 's/  */ /g'); $(openssl version)"
BEST="" BEST_RATE=0 DEFAULT_RATE=0
for i in "${!CANDIDATES[@]}"; do
    c=${CANDIDATES[i]}
    rate=$(echo "${RESULTS[i]}" | median)
    [ -z "$c" ] && DEFAULT_RATE=$rate
    printf "%-28s %8.1f sign/s per core   (%s)\n" "OPENSSL_ia32cap=${c:-(unset)}" "$rate" "${RESULTS[i]% }"
    if awk -v a="$rate" -v b="$BEST_RATE" 'BEGIN { exit !(a > b) }'; then BEST=$c BEST_RATE=$rate; fi
done
if [ -n "$BEST" ] && awk -v a="$BEST_RATE" -v b="$DEFAULT_RATE" 'BEGIN { exit !(a > b * 1.03) }'; then
    echo "faster by $(awk -v a="$BEST_RATE" -v b="$DEFAULT_RATE" 'BEGIN { printf "%.0f", (a / b - 1) * 100 }') %: run psp-worker with"
    echo "  OPENSSL_ia32cap='$BEST'"
else
    echo "no path is more than 3 % faster than OpenSSL's default here: leave OPENSSL_ia32cap unset"
fi

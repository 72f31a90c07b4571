#!/usr/bin/env bash
# Two builds of pipeline-cpu, taking turns: which one spends less CPU per makePayment.
#
#   ./cpu-ab.sh A-binary B-binary [pairs, default 10] [pipeline-cpu options…]
#
# Make the binaries with `swift build -c release --product pipeline-cpu` on each version of the
# sources and copy `.build/release/pipeline-cpu` away. On this VM a payment's CPU outside RSA
# drifts by half from minute to minute (two modes, ~240 and ~260 µs a payment here), more than
# most changes move it; runs that take turns see the same drift, so the median of the paired
# differences (B − A) is the figure to read, not either side's own.
set -euo pipefail
a=${1:?A binary}; b=${2:?B binary}; pairs=${3:-10}; shift 2; [ $# -gt 0 ] && shift
out=$(mktemp)
for i in $(seq 1 "$pairs"); do
    for side in A B; do
        bin=$a; [ $side = B ] && bin=$b
        line=$("$bin" --payments 10000 "$@")
        echo "$i $side $line" | tee -a "$out"
    done
done
# Medians of each side and of the paired differences: CPU µs, writer µs, busy share.
awk '
function median(arr, n,   i, j, t) { for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (arr[j] < arr[i]) { t = arr[i]; arr[i] = arr[j]; arr[j] = t }
    return n % 2 ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2 }
{ for (k = 3; k < NF; k += 2) v[$2, $1, $k] = $(k + 1); n = $1 }
END {
    split("cpu_us writer_us busy per_s", keys, " ")
    printf "%-10s %10s %10s %12s\n", "median", "A", "B", "B - A (paired)"
    for (x = 1; x <= 4; x++) { key = keys[x]
        for (i = 1; i <= n; i++) { ma[i] = v["A", i, key]; mb[i] = v["B", i, key]; d[i] = v["B", i, key] - v["A", i, key] }
        printf "%-10s %10.3f %10.3f %12.3f\n", key, median(ma, n), median(mb, n), median(d, n) }
}' "$out"
rm -f "$out"

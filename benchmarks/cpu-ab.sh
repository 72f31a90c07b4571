#!/usr/bin/env bash
# Two builds of pipeline-cpu, taking turns: which one spends less CPU per makePayment.
#
#   ./cpu-ab.sh A-binary B-binary [pairs, default 10] [pipeline-cpu options…]
#
# Make the binaries with `swift build -c release --product pipeline-cpu` on each version of the
# sources and copy `.build/release/pipeline-cpu` away. On this VM a payment's CPU outside RSA
# drifts by half from minute to minute (two modes, ~240 and ~260 µs a payment here), more than
# most changes move it; runs that take turns see the same drift, so the median of the paired
# differences (B − A) is the figure to read, not either side's own. The order alternates (A B,
# B A, …) so that whatever favours the second run of a pair falls on both sides.
set -euo pipefail
usage() { echo "usage: $0 A-binary B-binary [pairs] [pipeline-cpu options…]" >&2; exit 2; }
[ $# -ge 2 ] || usage
a=$1; b=$2; shift 2
pairs=10
if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then pairs=$1; shift; fi
[ "$pairs" -ge 1 ] || usage
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for i in $(seq 1 "$pairs"); do
    order="A B"; [ $((i % 2)) -eq 0 ] && order="B A"
    for side in $order; do
        bin=$a; [ "$side" = B ] && bin=$b
        line=$("$bin" --payments 10000 "$@") || { echo "pair $i: $side failed: $line" >&2; exit 1; }
        echo "$i $side $line" | tee -a "$out"
    done
done
# Medians of each side and of the paired differences: CPU µs, writer µs, busy share, payments/s.
awk '
function median(arr, n,   i, j, t) { for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (arr[j] < arr[i]) { t = arr[i]; arr[i] = arr[j]; arr[j] = t }
    return n % 2 ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2 }
{ for (k = 3; k < NF; k += 2) v[$2, $1, $k] = $(k + 1); if ($1 > n) n = $1 }
END {
    if (n < 1) exit 1
    split("cpu_us writer_us busy per_s", keys, " ")
    printf "%-10s %10s %10s %12s\n", "median", "A", "B", "B - A (paired)"
    for (x = 1; x <= 4; x++) { key = keys[x]
        for (i = 1; i <= n; i++) { ma[i] = v["A", i, key]; mb[i] = v["B", i, key]; d[i] = v["B", i, key] - v["A", i, key] }
        printf "%-10s %10.3f %10.3f %12.3f\n", key, median(ma, n), median(mb, n), median(d, n) }
}' "$out"

# Shared by the benchmark scripts (sourced after ROOT and SCRATCH are set).

# Stores and scratch files on a disk: /tmp is tmpfs on some distributions (Debian 13), where an
# fsync reaches no disk and a store's figures are not a durable store's. TMPDIR set is kept.
if [ -z "${TMPDIR:-}" ]; then
    export TMPDIR="$ROOT/benchmarks/.build/tmp"
    mkdir -p "$TMPDIR"
fi

# build_release PRODUCT...: release builds of the repository's products in $SCRATCH; sets BIN.
# The last line of each build is shown; the whole log if it fails.
build_release() {
    local product log
    log=$(mktemp)
    for product in "$@"; do
        if ! swift build --package-path "$ROOT" --scratch-path "$SCRATCH" -c release --product "$product" > "$log" 2>&1; then
            cat "$log" >&2
            rm -f "$log"
            echo "the release build of $product failed" >&2
            return 1
        fi
        tail -1 "$log"
    done
    rm -f "$log"
    BIN=$(swift build --package-path "$ROOT" --scratch-path "$SCRATCH" -c release --show-bin-path)
}

# logged_port LOG [PID] [SED]: the port a server wrote to LOG, by default from its
# "listening on 127.0.0.1:PORT" line (SED: another sed expression printing the port). Waits up to
# 10 s; fails with the log on stderr if the port never shows or PID exits first.
logged_port() {
    local log=$1 pid=${2:-} expression=${3:-'s/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p'} port
    for _ in $(seq 1 100); do
        port=$(sed -n "$expression" "$log" | head -1)
        if [ -n "$port" ]; then echo "$port"; return 0; fi
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then break; fi
        sleep 0.1
    done
    echo "did not start:" >&2
    cat "$log" >&2
    return 1
}

# signs_per_second SECONDS [IA32CAP]: `openssl speed -multi <cores> rsa2048`'s sign/s, the ceiling;
# with IA32CAP, on that OPENSSL_ia32cap's RSA code path instead of openssl as installed.
signs_per_second() {
    # -elapsed: per second of wall-clock time, as every figure of ours is (by default openssl counts
    # per second of its own CPU time, leaving out what other processes or the hypervisor took).
    # -mr: "+F2:<index>:<bits>:<sign/s>:<verify/s>[:<encrypt/s>:<decrypt/s>]" in OpenSSL 3.0 and
    # 3.2+ alike (the human table changed its columns in 3.2); with -multi the last one is the sum.
    # OpenSSL 1.1.1 puts seconds per sign there instead: under 1, so it is turned round.
    env -u OPENSSL_ia32cap ${2:+OPENSSL_ia32cap=$2} openssl speed -elapsed -seconds "$1" -multi "$(nproc)" -mr rsa2048 2>/dev/null \
        | awk -F: '/^\+F2:/ { v = $4 } END { if (v > 0) printf "%.1f\n", (v < 1 ? 1 / v : v) }'
}

# number VALUE WHAT: VALUE if it is a number, else a clear stop (not a ratio divided by nothing).
number() {
    [[ "$1" =~ ^[0-9]+(\.[0-9]+)?$ ]] && awk -v v="$1" 'BEGIN { exit !(v > 0) }' || { echo "could not read $2 (got \"$1\")" >&2; exit 2; }
    echo "$1"
}

# warn_if_not_durable DIR: a warning when DIR is on tmpfs or ramfs, where an fsync reaches no disk
# and a store's figures are not those of a durable store (/tmp is tmpfs on some distributions).
warn_if_not_durable() {
    local fs; fs=$(stat -f -c %T "$1" 2>/dev/null || echo unknown)
    case "$fs" in tmpfs|ramfs) echo "WARNING: $1 is on $fs: the store's fsyncs reach no disk; set TMPDIR to a directory on a disk" >&2 ;; esac
}

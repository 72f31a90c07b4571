#!/usr/bin/env bash
# Installs what a fresh Debian/Ubuntu machine with Swift 6.2+ lacks to build and test psp-worker:
# OpenSSL 3's headers (the system library we link), pkg-config, the openssl command (tests make
# throw-away keys with it) and curl. SQLite is built from Sources/CSQLite, not taken from the system.
set -euo pipefail
missing=()
pkg-config --version >/dev/null 2>&1 || missing+=(pkg-config)
pkg-config --exists openssl 2>/dev/null || missing+=(libssl-dev)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
    # sudo drops the environment, so the setting goes through env; without a terminal, -n fails
    # at once where sudo would wait for a password nobody types (a CI runner).
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || { echo "setup: missing ${missing[*]}; install them as root (apt-get install -y ${missing[*]}), or run this as root" >&2; exit 1; }
        if [ -t 0 ]; then SUDO="sudo"; else SUDO="sudo -n"; fi
    fi
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi
# The shim uses OpenSSL 3's EVP API (an OpenSSL 1.1 would fail deep in the build).
pkg-config --atleast-version=3.0 openssl || { echo "setup: OpenSSL 3.0 or later is needed, found $(pkg-config --modversion openssl)" >&2; exit 1; }
echo "setup: OpenSSL $(pkg-config --modversion openssl)"

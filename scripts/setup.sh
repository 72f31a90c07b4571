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
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update
    $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi
echo "setup: OpenSSL $(pkg-config --modversion openssl)"

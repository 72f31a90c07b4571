#!/usr/bin/env bash
# Makes the TEST key pair in this folder with the openssl command line, then sample cardData with
# Python's `cryptography` (an implementation independent of ours). For tests only: never use these
# keys for real card data. Run from this folder: ./make-keys.sh
set -euo pipefail
cd "$(dirname "$0")"
umask 077
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out psp-private-key.pem
openssl pkey -in psp-private-key.pem -traditional -out psp-private-key-pkcs1.pem
printf 'test-passphrase-not-secret\n' > passphrase.txt
openssl pkcs8 -topk8 -v2 aes-256-cbc -v2prf hmacWithSHA256 -in psp-private-key.pem \
    -passout file:passphrase.txt -out psp-private-key-encrypted.pem
umask 022
openssl pkey -in psp-private-key.pem -pubout -out psp-public-key.pem
python3 make-sample-card-data.py

"""Interoperability fixtures for CardCryptoTests, made with Python's `cryptography` (the library
Vipps's own documentation uses to check decryption), independent of our OpenSSL shim.

Writes interop-cases.json: cryptograms for psp-public-key.pem (a copy of keys-example's test key)
that must decrypt, and cryptograms that must all fail as "unable to decrypt" (92).
Run from this folder: python3 make-interop-fixtures.py"""
import base64
import json
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

with open("psp-public-key.pem", "rb") as f:
    key = serialization.load_pem_public_key(f.read())
other_2048 = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
other_3072 = rsa.generate_private_key(public_exponent=65537, key_size=3072).public_key()

def oaep(md=hashes.SHA256(), mgf=hashes.SHA256(), label=None):
    return padding.OAEP(mgf=padding.MGF1(algorithm=mgf), algorithm=md, label=label)

def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()

good_texts = [
    "4925000000004444,3012,3854ba014e184e0d8ba259253f4advfa",
    "4000000000000002 , 2912 , s",
    "4000000000000000006,3101,abcdefghijklmnopqrstuvwxyz012345",
    "5555555555554444,2701,mastercard-session",
]
cases = []
for text in good_texts:
    cases.append({"name": "oaep-sha256 " + text[:4], "cardData": b64(key.encrypt(text.encode(), oaep())),
                  "valid": True, "plaintext": text})

plain = b"4925000000004444,3012,3854ba014e184e0d8ba259253f4advfa"
good = key.encrypt(plain, oaep())
tampered = bytearray(good); tampered[100] ^= 0x01
cases += [
    {"name": "pkcs1-v1.5", "cardData": b64(key.encrypt(plain, padding.PKCS1v15()))},
    {"name": "oaep-sha1", "cardData": b64(key.encrypt(plain, oaep(hashes.SHA1(), hashes.SHA1())))},
    {"name": "oaep-sha256-mgf1-sha1", "cardData": b64(key.encrypt(plain, oaep(hashes.SHA256(), hashes.SHA1())))},
    {"name": "oaep-sha1-mgf1-sha256", "cardData": b64(key.encrypt(plain, oaep(hashes.SHA1(), hashes.SHA256())))},
    {"name": "oaep-sha512", "cardData": b64(key.encrypt(plain, oaep(hashes.SHA512(), hashes.SHA512())))},
    {"name": "oaep-sha256-with-label", "cardData": b64(key.encrypt(plain, oaep(label=b"vipps")))},
    {"name": "another-2048-bit-key", "cardData": b64(other_2048.encrypt(plain, oaep()))},
    {"name": "another-3072-bit-key", "cardData": b64(other_3072.encrypt(plain, oaep()))},
    {"name": "tampered", "cardData": b64(bytes(tampered))},
    {"name": "truncated", "cardData": b64(good[:-1])},
    {"name": "extra-byte", "cardData": b64(good + b"\x00")},
    {"name": "url-safe-alphabet", "cardData": base64.urlsafe_b64encode(good).decode().replace("=", "")},
    {"name": "line-breaks", "cardData": b64(good)[:64] + "\n" + b64(good)[64:]},
    {"name": "no-padding", "cardData": b64(good).rstrip("=")},
    {"name": "empty", "cardData": ""},
    {"name": "not-base64", "cardData": "!" * 344},
    {"name": "all-zero-cryptogram", "cardData": b64(bytes(256))},
    {"name": "cryptogram-above-modulus", "cardData": b64(b"\xff" * 256)},
]
for case in cases:
    case.setdefault("valid", False)
with open("interop-cases.json", "w") as f:
    json.dump({"source": "python cryptography, see make-interop-fixtures.py", "cases": cases}, f, indent=1)
print(len(cases), "cases")

"""Sample cardData for keys-example/psp-public-key.pem, made with Python's `cryptography`
(RSA-OAEP, SHA-256, MGF1-SHA-256, no label): what Vipps sends to makePaymentUrl.
Writes sample-card-data.txt (plaintext lines) and sample-card-data.b64 (one cardData per line).
The cards are simulator test cards: 4000000000000RRC answers ISO 8583 response code RR."""
import base64
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

with open("psp-public-key.pem", "rb") as f:
    public_key = serialization.load_pem_public_key(f.read())

def luhn_complete(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return body + str((10 - total % 10) % 10)

plaintexts = [
    luhn_complete("400000000000000") + ",3012,3854ba014e184e0d8ba259253f4advfa",
    luhn_complete("400000000000051") + ",3012,session-insufficient-funds",
    luhn_complete("492500000000444") + " , 2912 , 3854ba014e184e0d8ba259253f4adv",
]
oaep = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
with open("sample-card-data.txt", "w") as plain, open("sample-card-data.b64", "w") as b64:
    for text in plaintexts:
        plain.write(text + "\n")
        b64.write(base64.b64encode(public_key.encrypt(text.encode(), oaep)).decode() + "\n")

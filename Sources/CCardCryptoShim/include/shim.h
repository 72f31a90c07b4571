// The only C this project writes. It exists because OpenSSL 3 exposes what we need through macros,
// variadic calls and OSSL_PARAM arrays that Swift cannot import cleanly, and because no OpenSSL
// reason text may cross into Swift: every function answers 0/1 (or NULL) and clears the error queue.
#ifndef CCARDCRYPTO_SHIM_H
#define CCARDCRYPTO_SHIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// A loaded RSA key (EVP_PKEY). Private or public.
typedef struct ccs_key ccs_key;
/// A context prepared once for RSA-OAEP(SHA-256, MGF1-SHA-256, empty label) decryption, with its own
/// copy of the key (OpenSSL 3.0 takes a write lock for blinding on a shared RSA key).
typedef struct ccs_decryptor ccs_decryptor;
/// A context prepared once for RSA-OAEP(SHA-256, MGF1-SHA-256, empty label) encryption.
typedef struct ccs_encryptor ccs_encryptor;

/// Why a private key could not be loaded. No OpenSSL text, only a kind.
enum {
    CCS_KEY_OK = 0,
    CCS_KEY_UNREADABLE = 1,          // not a PEM private key we understand
    CCS_KEY_NEEDS_PASSPHRASE = 2,    // encrypted, and no passphrase was given
    CCS_KEY_BAD_PASSPHRASE = 3,      // encrypted, and the passphrase did not open it
    CCS_KEY_NOT_RSA = 4,             // a key, but not an RSA encryption key
    CCS_KEY_TOO_SHORT = 5,           // RSA, but under 2048 bits
    CCS_KEY_WEAK_EXPONENT = 6,       // RSA, but its public exponent is even, under 65537 or over 2^256
    CCS_KEY_INCONSISTENT = 7,        // an RSA private key whose parts do not agree (n, e, d, p, q, CRT): damaged or altered
    CCS_KEY_TOO_LONG = 8,            // RSA, but over 8192 bits (the most a decryptor takes)
};

/// Parses a PEM private key: PKCS#8, PKCS#1 or passphrase-encrypted PKCS#8.
/// `passphrase` may be NULL. Returns NULL and sets *reason on failure.
ccs_key *ccs_private_key_from_pem(const void *pem, size_t pem_len,
                                  const void *passphrase, size_t passphrase_len,
                                  int *reason);
/// Parses a PEM public key: SubjectPublicKeyInfo ("PUBLIC KEY") or PKCS#1 ("RSA PUBLIC KEY").
/// Returns NULL and sets *reason on failure.
ccs_key *ccs_public_key_from_pem(const void *pem, size_t pem_len, int *reason);
/// A new RSA key pair of `bits` bits. NULL on failure.
ccs_key *ccs_generate_rsa_key(unsigned int bits);
void ccs_key_free(ccs_key *key);
/// Size of the modulus in bytes (256 for RSA-2048).
size_t ccs_key_modulus_bytes(const ccs_key *key);
size_t ccs_key_bits(const ccs_key *key);

/// Writes the private key as unencrypted PKCS#8 PEM into a new buffer (*out, *out_len), which the
/// caller releases with ccs_free_secret. 1 on success.
int ccs_key_private_pkcs8_pem(const ccs_key *key, uint8_t **out, size_t *out_len);
/// Writes the public key as SubjectPublicKeyInfo PEM into a new buffer released with ccs_free. 1 on success.
int ccs_key_public_spki_pem(const ccs_key *key, uint8_t **out, size_t *out_len);
/// SHA-256 of the DER SubjectPublicKeyInfo, into out[32]: a key's fingerprint for logs. 1 on success.
int ccs_key_public_fingerprint(const ccs_key *key, uint8_t out[32]);

ccs_decryptor *ccs_decryptor_new(const ccs_key *private_key);
void ccs_decryptor_free(ccs_decryptor *d);
/// Decrypts `in` (exactly the modulus length) into `out` (at least the modulus length).
/// 1 and *out_len on success; 0 on any failure, with nothing that says which check failed.
int ccs_decryptor_decrypt(ccs_decryptor *d, const uint8_t *in, size_t in_len,
                          uint8_t *out, size_t out_cap, size_t *out_len);

ccs_encryptor *ccs_encryptor_new(const ccs_key *key);
void ccs_encryptor_free(ccs_encryptor *e);
/// Encrypts `in` into `out` (at least the modulus length). 1 and *out_len on success.
int ccs_encryptor_encrypt(ccs_encryptor *e, const uint8_t *in, size_t in_len,
                          uint8_t *out, size_t out_cap, size_t *out_len);

/// Turns core dumps off for this process (RLIMIT_CORE 0, and not dumpable, which also covers a
/// core_pattern pipe and keeps other processes of the same user from reading its memory).
/// 1 on success.
int ccs_disable_core_dumps(void);

/// OPENSSL_cleanse, which is a macro-free function but keeps secrets' wiping in one place.
void ccs_cleanse(void *p, size_t len);

/// 1 when every buffer OpenSSL frees is wiped first (installed before main; Linux only).
int ccs_openssl_frees_are_wiped(void);

/// Wipes and frees a buffer this shim returned.
void ccs_free_secret(void *p, size_t len);
void ccs_free(void *p);
/// SHA-256 of `in` into out[32]. 1 on success.
int ccs_sha256(const void *in, size_t in_len, uint8_t out[32]);
/// Constant-time comparison of two equal-length buffers: 1 when equal.
int ccs_constant_time_equal(const void *a, const void *b, size_t len);
/// Cryptographically secure random bytes. 1 on success.
int ccs_random_bytes(void *out, size_t len);
/// OpenSSL's version text, for `--version` and logs.
const char *ccs_openssl_version(void);

#ifdef __cplusplus
}
#endif
#endif

// Two calls OpenSSL 3 marks deprecated, with no replacement that does the same: PKCS#1 "RSA PUBLIC
// KEY" files are read through the 1.1 API, and decryption checks OAEP with
// RSA_padding_check_PKCS1_OAEP_mgf1 (see ccs_decryptor_decrypt). An OpenSSL built `no-deprecated`
// does not have them.
#define OPENSSL_SUPPRESS_DEPRECATED
#include "shim.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#ifdef __linux__
#include <malloc.h>
#include <sys/prctl.h>
#endif
#include <sys/resource.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

// OpenSSL frees buffers that held secrets without wiping them: the PEM decoder's clear DER of the
// private key (and, for an encrypted key, the decrypted one), OAEP's encoded message on encryption.
// So every buffer OpenSSL frees or moves is wiped first (Linux: glibc knows each block's size).
// Installed before main, as OpenSSL refuses once it has allocated anything; the cost is a few
// kilobytes of zeroing per RSA operation, against its ~0.2-1 ms.
#ifdef __linux__
static void *cleansing_malloc(size_t num, const char *file, int line) {
    (void)file; (void)line;
    return num == 0 ? NULL : malloc(num);
}

static void cleansing_free(void *p, const char *file, int line) {
    (void)file; (void)line;
    if (p == NULL) return;
    OPENSSL_cleanse(p, malloc_usable_size(p));
    free(p);
}

// realloc may move the block and free the old one unwiped: done by hand instead.
static void *cleansing_realloc(void *p, size_t num, const char *file, int line) {
    if (p == NULL) return cleansing_malloc(num, file, line);
    if (num == 0) { cleansing_free(p, file, line); return NULL; }
    size_t old = malloc_usable_size(p);
    if (num <= old) return p;
    void *moved = malloc(num);
    if (moved == NULL) return NULL;
    memcpy(moved, p, old);
    cleansing_free(p, file, line);
    return moved;
}

static int cleansing_installed;
__attribute__((constructor)) static void install_cleansing_allocator(void) {
    cleansing_installed = CRYPTO_set_mem_functions(cleansing_malloc, cleansing_realloc, cleansing_free);
}
#else
static int cleansing_installed;
#endif

int ccs_openssl_frees_are_wiped(void) { return cleansing_installed; }

// The PEM decoder keeps the passphrase in a buffer on the stack (and the key passes through
// others, as through the checks after it): wiped once the load and its checks return, over more
// stack than their calls take.
__attribute__((noinline)) static void wipe_stack_below(void) {
    volatile unsigned char scratch[32 * 1024];
    OPENSSL_cleanse((void *)scratch, sizeof scratch);
}

struct ccs_key { EVP_PKEY *pkey; };
struct ccs_decryptor { EVP_PKEY *pkey; EVP_PKEY_CTX *ctx; EVP_MD *sha256; size_t modulus_bytes; };

// The largest modulus a decryptor takes (RSA-8192), for the encoded message on the stack.
#define CCS_MAX_MODULUS_BYTES 1024
struct ccs_encryptor { EVP_PKEY *pkey; EVP_PKEY_CTX *ctx; size_t modulus_bytes; };

// The one padding this project speaks: OAEP, SHA-256 for the label hash and for MGF1, empty label.
// The digests are fetched once, when a context is prepared, never per call.
static int set_oaep_sha256(EVP_PKEY_CTX *ctx) {
    int pad = RSA_PKCS1_OAEP_PADDING;
    OSSL_PARAM params[4];
    params[0] = OSSL_PARAM_construct_int(OSSL_ASYM_CIPHER_PARAM_PAD_MODE, &pad);
    params[1] = OSSL_PARAM_construct_utf8_string(OSSL_ASYM_CIPHER_PARAM_OAEP_DIGEST, (char *)"SHA256", 0);
    params[2] = OSSL_PARAM_construct_utf8_string(OSSL_ASYM_CIPHER_PARAM_MGF1_DIGEST, (char *)"SHA256", 0);
    params[3] = OSSL_PARAM_construct_end();
    return EVP_PKEY_CTX_set_params(ctx, params) == 1;
}

typedef struct {
    const void *passphrase;
    size_t passphrase_len;
    int asked;
} passphrase_request;

static int passphrase_callback(char *buf, int size, int rwflag, void *u) {
    (void)rwflag;
    passphrase_request *req = (passphrase_request *)u;
    req->asked = 1;
    if (req->passphrase == NULL || size <= 0 || req->passphrase_len > (size_t)size) return -1;
    memcpy(buf, req->passphrase, req->passphrase_len);
    return (int)req->passphrase_len;
}

// FIPS 186-5's bounds on the public exponent: odd, 2^16 < e < 2^256.
static int exponent_is_sound(EVP_PKEY *pkey) {
    BIGNUM *e = NULL;
    if (EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_E, &e) != 1) return 0;
    int bits = BN_num_bits(e);
    int sound = BN_is_odd(e) && bits > 16 && bits <= 256;
    BN_free(e);
    return sound;
}

// A private key's parts must agree (OpenSSL's RSA keypair check: n = p·q, e·d ≡ 1, the CRT values,
// p and q prime). Parsing checks none of it. A key that fails is a damaged or altered file: OpenSSL
// redoes each CRT result that does not check out with d alone (several times slower), and with a
// wrong d as well every decryption fails. Run once per load (~30 ms), never per decryption.
static int private_key_is_consistent(EVP_PKEY *pkey) {
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    int consistent = ctx != NULL && EVP_PKEY_pairwise_check(ctx) == 1;
    EVP_PKEY_CTX_free(ctx);
    return consistent;
}

static int check_rsa_encryption_key(EVP_PKEY *pkey, int is_private) {
    if (EVP_PKEY_get_base_id(pkey) != EVP_PKEY_RSA) return CCS_KEY_NOT_RSA;
    if (EVP_PKEY_get_bits(pkey) < 2048) return CCS_KEY_TOO_SHORT;
    if (EVP_PKEY_get_size(pkey) > CCS_MAX_MODULUS_BYTES) return CCS_KEY_TOO_LONG;
    if (!exponent_is_sound(pkey)) return CCS_KEY_WEAK_EXPONENT;
    if (is_private && !private_key_is_consistent(pkey)) return CCS_KEY_INCONSISTENT;
    return CCS_KEY_OK;
}

static ccs_key *wrap_key(EVP_PKEY *pkey, int is_private, int *reason) {
    int check = check_rsa_encryption_key(pkey, is_private);
    ERR_clear_error();
    if (check != CCS_KEY_OK) {
        EVP_PKEY_free(pkey);
        *reason = check;
        return NULL;
    }
    ccs_key *key = OPENSSL_zalloc(sizeof(ccs_key));
    if (key == NULL) { EVP_PKEY_free(pkey); *reason = CCS_KEY_UNREADABLE; return NULL; }
    key->pkey = pkey;
    *reason = CCS_KEY_OK;
    return key;
}

ccs_key *ccs_private_key_from_pem(const void *pem, size_t pem_len,
                                  const void *passphrase, size_t passphrase_len, int *reason) {
    *reason = CCS_KEY_UNREADABLE;
    if (pem_len > INT32_MAX) return NULL;
    BIO *bio = BIO_new_mem_buf(pem, (int)pem_len);
    if (bio == NULL) { ERR_clear_error(); return NULL; }
    passphrase_request req = { passphrase, passphrase_len, 0 };
    EVP_PKEY *pkey = PEM_read_bio_PrivateKey_ex(bio, NULL, passphrase_callback, &req, NULL, NULL);
    BIO_free(bio);
    ERR_clear_error();
    ccs_key *key = NULL;
    if (pkey == NULL) {
        if (req.asked) *reason = passphrase == NULL ? CCS_KEY_NEEDS_PASSPHRASE : CCS_KEY_BAD_PASSPHRASE;
    } else {
        key = wrap_key(pkey, 1, reason);  // its checks compute with the private parts on the stack too
    }
    wipe_stack_below();
    return key;
}

ccs_key *ccs_public_key_from_pem(const void *pem, size_t pem_len, int *reason) {
    *reason = CCS_KEY_UNREADABLE;
    if (pem_len > INT32_MAX) return NULL;
    BIO *bio = BIO_new_mem_buf(pem, (int)pem_len);
    if (bio == NULL) { ERR_clear_error(); return NULL; }
    // A callback that gives no passphrase: with none, OpenSSL would prompt on the terminal for an
    // encrypted private key given as the public key (and read stdin, the card lines of `encrypt`).
    passphrase_request none = { NULL, 0, 0 };
    EVP_PKEY *pkey = PEM_read_bio_PUBKEY_ex(bio, NULL, passphrase_callback, &none, NULL, NULL);
    if (pkey == NULL) {
        // PKCS#1 "RSA PUBLIC KEY": rewind and read it with the 1.1 API (the one use of it).
        (void)BIO_reset(bio);
        ERR_clear_error();
        RSA *rsa = PEM_read_bio_RSAPublicKey(bio, NULL, passphrase_callback, &none);
        if (rsa != NULL) {
            pkey = EVP_PKEY_new();
            if (pkey == NULL || EVP_PKEY_assign_RSA(pkey, rsa) != 1) {
                EVP_PKEY_free(pkey);
                RSA_free(rsa);
                pkey = NULL;
            }
        }
    }
    BIO_free(bio);
    ERR_clear_error();
    if (pkey == NULL) return NULL;
    return wrap_key(pkey, 0, reason);
}

ccs_key *ccs_generate_rsa_key(unsigned int bits) {
    EVP_PKEY *pkey = EVP_RSA_gen(bits);
    ERR_clear_error();
    if (pkey == NULL) return NULL;
    int reason;
    return wrap_key(pkey, 1, &reason);
}

void ccs_key_free(ccs_key *key) {
    if (key == NULL) return;
    EVP_PKEY_free(key->pkey);
    OPENSSL_free(key);
}

size_t ccs_key_modulus_bytes(const ccs_key *key) { return (size_t)EVP_PKEY_get_size(key->pkey); }
size_t ccs_key_bits(const ccs_key *key) { return (size_t)EVP_PKEY_get_bits(key->pkey); }

static int bio_to_buffer(BIO *bio, uint8_t **out, size_t *out_len) {
    char *data = NULL;
    long len = BIO_get_mem_data(bio, &data);
    if (len <= 0) return 0;
    uint8_t *copy = OPENSSL_malloc((size_t)len);
    if (copy == NULL) return 0;
    memcpy(copy, data, (size_t)len);
    *out = copy;
    *out_len = (size_t)len;
    return 1;
}

int ccs_key_private_pkcs8_pem(const ccs_key *key, uint8_t **out, size_t *out_len) {
    BIO *bio = BIO_new(BIO_s_secmem());
    if (bio == NULL) { ERR_clear_error(); return 0; }
    int ok = PEM_write_bio_PKCS8PrivateKey(bio, key->pkey, NULL, NULL, 0, NULL, NULL) == 1
        && bio_to_buffer(bio, out, out_len);
    BIO_free(bio);  // a secmem BIO wipes what it held
    ERR_clear_error();
    return ok;
}

int ccs_key_public_spki_pem(const ccs_key *key, uint8_t **out, size_t *out_len) {
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio == NULL) { ERR_clear_error(); return 0; }
    int ok = PEM_write_bio_PUBKEY(bio, key->pkey) == 1 && bio_to_buffer(bio, out, out_len);
    BIO_free(bio);
    ERR_clear_error();
    return ok;
}

int ccs_key_public_fingerprint(const ccs_key *key, uint8_t out[32]) {
    unsigned char *der = NULL;
    int len = i2d_PUBKEY(key->pkey, &der);
    if (len <= 0) { ERR_clear_error(); return 0; }
    int ok = ccs_sha256(der, (size_t)len, out);
    OPENSSL_free(der);
    return ok;
}

ccs_decryptor *ccs_decryptor_new(const ccs_key *private_key) {
    ccs_decryptor *d = OPENSSL_zalloc(sizeof(ccs_decryptor));
    if (d == NULL) goto fail;
    d->pkey = EVP_PKEY_dup(private_key->pkey);
    if (d->pkey == NULL) goto fail;
    d->ctx = EVP_PKEY_CTX_new_from_pkey(NULL, d->pkey, NULL);
    if (d->ctx == NULL) goto fail;
    // The RSA operation without padding, and OpenSSL's own OAEP check after it (see decrypt).
    if (EVP_PKEY_decrypt_init(d->ctx) != 1 || EVP_PKEY_CTX_set_rsa_padding(d->ctx, RSA_NO_PADDING) != 1) goto fail;
    d->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (d->sha256 == NULL) goto fail;
    d->modulus_bytes = (size_t)EVP_PKEY_get_size(d->pkey);
    if (d->modulus_bytes == 0 || d->modulus_bytes > CCS_MAX_MODULUS_BYTES) goto fail;
    ERR_clear_error();
    return d;
fail:
    ERR_clear_error();
    ccs_decryptor_free(d);
    return NULL;
}

void ccs_decryptor_free(ccs_decryptor *d) {
    if (d == NULL) return;
    EVP_PKEY_CTX_free(d->ctx);
    EVP_MD_free(d->sha256);
    EVP_PKEY_free(d->pkey);
    OPENSSL_free(d);
}

// Two steps where OpenSSL's OAEP decryption takes one: with OAEP padding set, OpenSSL 3.0 puts
// the RSA result (the encoded message, from which the plaintext follows by public operations) in
// a heap buffer it frees without wiping. Here the result goes to our stack and is wiped; the check
// is the one OpenSSL runs itself (constant time, one error whatever failed).
int ccs_decryptor_decrypt(ccs_decryptor *d, const uint8_t *in, size_t in_len,
                          uint8_t *out, size_t out_cap, size_t *out_len) {
    // Framing is checked before the RSA operation: the sender knows its own framing.
    if (in_len != d->modulus_bytes || out_cap < d->modulus_bytes || out_cap > INT32_MAX) return 0;
    unsigned char em[CCS_MAX_MODULUS_BYTES];
    size_t em_len = sizeof em;
    int len = -1;
    if (EVP_PKEY_decrypt(d->ctx, em, &em_len, in, in_len) == 1 && em_len == d->modulus_bytes) {
        len = RSA_padding_check_PKCS1_OAEP_mgf1(out, (int)out_cap, em, (int)em_len, (int)em_len, NULL, 0, d->sha256, d->sha256);
    }
    OPENSSL_cleanse(em, sizeof em);
    if (len < 0) {
        // We clear OpenSSL's error and answer 0, so nothing after the RSA operation says which check failed.
        ERR_clear_error();
        OPENSSL_cleanse(out, out_cap);
        return 0;
    }
    *out_len = (size_t)len;
    return 1;
}

ccs_encryptor *ccs_encryptor_new(const ccs_key *key) {
    ccs_encryptor *e = OPENSSL_zalloc(sizeof(ccs_encryptor));
    if (e == NULL) goto fail;
    e->pkey = EVP_PKEY_dup(key->pkey);
    if (e->pkey == NULL) goto fail;
    e->ctx = EVP_PKEY_CTX_new_from_pkey(NULL, e->pkey, NULL);
    if (e->ctx == NULL) goto fail;
    if (EVP_PKEY_encrypt_init(e->ctx) != 1 || !set_oaep_sha256(e->ctx)) goto fail;
    e->modulus_bytes = (size_t)EVP_PKEY_get_size(e->pkey);
    ERR_clear_error();
    return e;
fail:
    ERR_clear_error();
    ccs_encryptor_free(e);
    return NULL;
}

void ccs_encryptor_free(ccs_encryptor *e) {
    if (e == NULL) return;
    EVP_PKEY_CTX_free(e->ctx);
    EVP_PKEY_free(e->pkey);
    OPENSSL_free(e);
}

int ccs_encryptor_encrypt(ccs_encryptor *e, const uint8_t *in, size_t in_len,
                          uint8_t *out, size_t out_cap, size_t *out_len) {
    if (out_cap < e->modulus_bytes) return 0;
    size_t len = out_cap;
    if (EVP_PKEY_encrypt(e->ctx, out, &len, in, in_len) != 1) { ERR_clear_error(); return 0; }
    *out_len = len;
    return 1;
}

int ccs_disable_core_dumps(void) {
    struct rlimit none = { 0, 0 };
    if (setrlimit(RLIMIT_CORE, &none) != 0) return 0;
#ifdef __linux__
    return prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0 && prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0;
#else
    return 1;
#endif
}

void ccs_cleanse(void *p, size_t len) { if (p != NULL && len > 0) OPENSSL_cleanse(p, len); }
void ccs_free_secret(void *p, size_t len) { if (p != NULL) OPENSSL_clear_free(p, len); }
void ccs_free(void *p) { OPENSSL_free(p); }

// SHA-256 fetched once: `EVP_sha256()` is looked up again by name at each digest (one allocation
// more per token checked). Falls back to it if the fetch failed.
static EVP_MD *fetched_sha256;
static pthread_once_t fetch_sha256_once = PTHREAD_ONCE_INIT;
static void fetch_sha256(void) { fetched_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL); }

int ccs_sha256(const void *in, size_t in_len, uint8_t out[32]) {
    pthread_once(&fetch_sha256_once, fetch_sha256);
    unsigned int len = 0;
    int ok = EVP_Digest(in, in_len, out, &len, fetched_sha256 ? fetched_sha256 : EVP_sha256(), NULL) == 1 && len == 32;
    ERR_clear_error();
    return ok;
}

int ccs_constant_time_equal(const void *a, const void *b, size_t len) {
    return CRYPTO_memcmp(a, b, len) == 0;
}

int ccs_random_bytes(void *out, size_t len) {
    if (len > INT32_MAX) return 0;
    int ok = RAND_bytes(out, (int)len) == 1;
    ERR_clear_error();
    return ok;
}

const char *ccs_openssl_version(void) { return OpenSSL_version(OPENSSL_VERSION); }

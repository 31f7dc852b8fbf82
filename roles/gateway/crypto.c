/* SHA-256, HMAC-SHA-256 and constant-time comparison through OpenSSL; we never hand-roll primitives. */
#include "crypto.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>

static void
to_hex(const unsigned char *md, unsigned mdlen, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (unsigned i = 0; i < mdlen; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[2 * mdlen] = '\0';
}

void
crypto_sha256_hex(const void *data, size_t len, char *out)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32) {
        abort(); /* only fails on out-of-memory or a broken library */
    }
    to_hex(md, mdlen, out);
}

void
crypto_hmac_sha256_hex(const void *key, size_t keylen, const void *data, size_t len, char *out)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (HMAC(EVP_sha256(), key, (int)keylen, data, len, md, &mdlen) == NULL || mdlen != 32) {
        abort(); /* only fails on out-of-memory or a broken library */
    }
    to_hex(md, mdlen, out);
}

bool
crypto_equal(const void *a, const void *b, size_t len)
{
    return CRYPTO_memcmp(a, b, len) == 0;
}

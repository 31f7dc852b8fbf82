/* OpenSSL adapter: SHA-256, HMAC-SHA-256 and constant-time comparison. Token randomness is util_random_bytes. */
#ifndef CHANCED_GATEWAY_CRYPTO_H
#define CHANCED_GATEWAY_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>

#define CRYPTO_SHA256_HEX 65 /* 64 hex digits and a NUL */

/* Writes the lowercase hex SHA-256 of data into out (CRYPTO_SHA256_HEX bytes). */
void crypto_sha256_hex(const void *data, size_t len, char *out);
/* Writes the lowercase hex HMAC-SHA-256 of data under key into out (CRYPTO_SHA256_HEX bytes). */
void crypto_hmac_sha256_hex(const void *key, size_t keylen, const void *data, size_t len,
                            char *out);
/* Compares two equal-length buffers in time independent of their contents. */
bool crypto_equal(const void *a, const void *b, size_t len);

#endif

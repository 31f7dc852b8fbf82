/* Claim ids with a tag (claimid.h). */
#include "claimid.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "util.h"

#define HALF (CLAIMID_LEN / 2)

static void
tag_of(const char *secret, size_t secretlen, const char *nonce, int64_t user_id, char *tag)
{
    char msg[HALF + 32], mac[CRYPTO_SHA256_HEX];
    int n = snprintf(msg, sizeof(msg), "%.*s:%" PRId64, HALF, nonce, user_id);
    crypto_hmac_sha256_hex(secret, secretlen, msg, (size_t)n, mac);
    memcpy(tag, mac, HALF);
}

void
claimid_make(const char *secret, size_t secretlen, int64_t user_id, const char *key, char *out)
{
    char digest[CRYPTO_SHA256_HEX];
    if (key) {
        /* Domain-separated from anything else hashed with the same inputs. */
        char *material = xasprintf("chanced-claim-nonce:%" PRId64 ":%s", user_id, key);
        crypto_sha256_hex(material, strlen(material), digest);
        free(material);
    } else {
        util_random_hex(digest, HALF / 2);
    }
    memcpy(out, digest, HALF);
    tag_of(secret, secretlen, out, user_id, out + HALF);
    out[CLAIMID_LEN] = '\0';
}

bool
claimid_verify(const char *secret, size_t secretlen, const char *claim_id, int64_t user_id)
{
    if (strlen(claim_id) != CLAIMID_LEN || strspn(claim_id, "0123456789abcdef") != CLAIMID_LEN) {
        return false;
    }
    char tag[HALF];
    tag_of(secret, secretlen, claim_id, user_id, tag);
    return crypto_equal(tag, claim_id + HALF, HALF);
}

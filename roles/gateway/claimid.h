/*
 * Claim ids the gateway can recognise as its own. chance assigns codes under any claim id it is
 * sent, and the reconciler credits what chance's assignment log says; a peer that can reach
 * chance (a compromised internal host) could otherwise assign codes under made-up claim ids and
 * have them credited. So a claim id is
 *     nonce (32 hex) || tag (32 hex),   tag = HMAC-SHA-256(claim_secret, nonce ":" user_id)[:16]
 * where the nonce is derived from the user and the Idempotency-Key (a retry is the same claim)
 * or random. The secret is shared by the gateways and never sent to chance; the reconciler
 * credits only assignments whose tag verifies for the user they name.
 *
 * Pure: no I/O, no globals (unit-tested, fuzzed).
 */
#ifndef CHANCED_GATEWAY_CLAIMID_H
#define CHANCED_GATEWAY_CLAIMID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CLAIMID_LEN 64 /* hex digits */

/* The claim id for (user, Idempotency-Key); key NULL makes a fresh random one. out: 65 bytes. */
void claimid_make(const char *secret, size_t secretlen, int64_t user_id, const char *key,
                  char *out);
/* True if claim_id is one claimid_make could have made for user_id under this secret. */
bool claimid_verify(const char *secret, size_t secretlen, const char *claim_id, int64_t user_id);

#endif

/*
 * What becomes of a code chance assigned to a claim. PostgreSQL is the record of who owns a
 * code and of how many codes a user holds per category; Redis can forget its last writes (a
 * crash with appendfsync everysec, a failover to a lagging replica) and then hand a paid code
 * to a second claim or let a user past the limit. So a code is credited only if the ledger
 * agrees; otherwise:
 *   - the code belongs to another claim in the ledger: Redis is repaired from the ledger
 *     (chance.reassign) and this claim draws again under the same claim id;
 *   - this claim id was credited with another code: Redis is repaired, the answer is the
 *     ledger's (or, in another category, the new code goes back: a reused Idempotency-Key);
 *   - this claim id has a pending or failed record in another category (a reused key): the
 *     code goes back, that record stays;
 *   - the user is at the limit in the ledger: the code goes back (chance.release, keeping
 *     chance's count at the ledger's) and the claim fails with user_limit_reached.
 * No outcome of this is a 500. Used by the request path and by the reconciler; it blocks
 * (PostgreSQL, synchronous RPC), so never call it on the loop thread.
 */
#ifndef CHANCED_GATEWAY_SETTLE_H
#define CHANCED_GATEWAY_SETTLE_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "claims.h"
#include "pg.h"

struct gw;

/* A code as chance assigned it, checked. */
struct assignment {
    char code[CLAIM_CODE_MAX + 1];
    int64_t category;
    int64_t reward;
    int64_t per_user_limit; /* the category's, when chance said (else 1) */
    bool replay;            /* chance had answered this claim id before */
};

enum settle_result {
    SETTLE_CREDITED,   /* credited now; out->row */
    SETTLE_REPLAYED,   /* credited before; out->row */
    SETTLE_REFUSED,    /* ends without a code: out->reason (recorded as a failed claim) */
    SETTLE_KEY_REUSED, /* the claim id is another category's; the new code went back */
    SETTLE_UNKNOWN,    /* not settled now (PostgreSQL or chance failed): stays pending, the
                        * reconciler finishes it; out->err says why */
    SETTLE_ORPHAN,     /* the user does not exist here */
};

struct settle_out {
    struct credit_row row;
    char reason[40];     /* for SETTLE_REFUSED: chance's error code, or user_limit_reached */
    struct pg_error err; /* for SETTLE_UNKNOWN */
};

/* Who claims; strings borrowed. */
struct claimant {
    const char *claim_id;
    int64_t user_id;
    const char *username;
    const char *source; /* "request" or "reconciler" */
};

/*
 * Parses chance's answer to chance.claim for claim_id; -1 if it is not a well-formed
 * assignment of that claim (we trust no peer's shapes).
 */
int settle_parse(const cJSON *reply, const char *claim_id, struct assignment *a);
/*
 * Makes Redis say what the ledger says: row's code is assigned to row's claim, with the
 * owner's details (chance.reassign; whoever holds it in Redis loses it). 0 when done.
 */
int settle_repair(struct gw *gw, const struct credit_row *row);
/* Settles assignment a (updated when the claim draws again). */
enum settle_result settle_assignment(struct gw *gw, struct pg_conn *c, const struct claimant *who,
                                     struct assignment *a, struct settle_out *out);

#endif

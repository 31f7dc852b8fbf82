/*
 * Crediting claims: the one-statement, one-commit credit used by both the request path and the
 * reconciler, and the pending/failed records of claims whose outcome is not a credit.
 * Exactly-once rests on the ledger's UNIQUE(claim_id) and UNIQUE(code): whoever commits first
 * credits; everyone else finds the existing row and answers with it.
 */
#ifndef CHANCED_GATEWAY_CLAIMS_H
#define CHANCED_GATEWAY_CLAIMS_H

#include <stdbool.h>
#include <stdint.h>

#include "util.h"

struct gw;
struct pg_conn;
struct pg_error;

#define CLAIM_ID_MAX 64   /* chance's limit on claim ids */
#define CLAIM_CODE_MAX 64 /* longest code we store */

/* What to credit; strings borrowed. */
struct credit {
    const char *claim_id; /* as sent to chance */
    int64_t user_id;      /* wallet owner */
    const char *username; /* for the audit event */
    const char *code;     /* the assigned code, canonical form from chance */
    int64_t category;     /* its category */
    int64_t reward;       /* Toman, > 0 */
    const char *source;   /* "request" or "reconciler" */
};

/* The ledger row that answers a claim. */
struct credit_row {
    char claim_id[CLAIM_ID_MAX + 1];
    char code[CLAIM_CODE_MAX + 1];
    int64_t user_id;
    int64_t category;
    int64_t reward;
    int64_t balance; /* balance right after this credit */
};

enum credit_result {
    CREDIT_NEW,      /* credited now; row filled */
    CREDIT_EXISTING, /* was credited before (same claim and code); row filled */
    CREDIT_MISMATCH, /* the claim or the code is in the ledger with other details (logged) */
    CREDIT_ORPHAN,   /* the user does not exist here */
    CREDIT_FAILED,   /* PostgreSQL failed; err filled */
};

/* Credits in one statement (claim row, wallet, ledger row, audit event) on c. */
int claims_credit(struct gw *gw, struct pg_conn *c, const struct credit *in, struct credit_row *row,
                  struct pg_error *err);
/* What PostgreSQL knows of a claim id. */
struct claim_record {
    bool found;            /* a claims row exists */
    int64_t category;      /* its category */
    char status[16];       /* pending, credited or failed */
    bool credited;         /* a ledger row exists; row is filled */
    struct credit_row row; /* the ledger row, when credited */
};

/* Reads the claim and its ledger row, if any. -1 on a PostgreSQL failure (err filled). */
int claims_lookup(struct pg_conn *c, const char *claim_id, struct claim_record *out,
                  struct pg_error *err) MUSTCHECK;
/*
 * Gives back a code chance assigned under a claim id that was already credited with another
 * code (a reused Idempotency-Key racing itself). Synchronous RPC; logs the outcome.
 */
void claims_release(struct gw *gw, const char *claim_id, int64_t category, const char *reason);
/* Records a claim whose outcome is unknown (no-op if the claim already has a row). */
int claims_mark_pending(struct pg_conn *c, const char *claim_id, int64_t user_id, int64_t category,
                        struct pg_error *err) MUSTCHECK;
/*
 * Records a claim chance refused (reason = its error code) with its claim.failed audit event,
 * in one transaction. A pending row becomes failed; a credited one is left alone.
 */
int claims_mark_failed(struct gw *gw, struct pg_conn *c, const char *claim_id, int64_t user_id,
                       const char *username, int64_t category, const char *reason,
                       struct pg_error *err) MUSTCHECK;

#endif

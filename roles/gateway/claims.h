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
    const char *claim_id;   /* as sent to chance */
    int64_t user_id;        /* wallet owner */
    const char *username;   /* for the audit event */
    const char *code;       /* the assigned code, canonical form from chance */
    int64_t category;       /* its category */
    int64_t reward;         /* Toman, > 0 */
    int64_t per_user_limit; /* the category's limit, as chance reported it (>= 1) */
    const char *source;     /* "request" or "reconciler" */
};

/* The ledger row that answers a claim (or that owns the code, for CREDIT_MISMATCH). */
struct credit_row {
    char claim_id[CLAIM_ID_MAX + 1];
    char code[CLAIM_CODE_MAX + 1];
    int64_t user_id;
    char username[65]; /* the owner's, for repairs */
    int64_t category;
    int64_t reward;
    int64_t balance;     /* balance right after this credit */
    int64_t credited_at; /* epoch ms */
};

enum credit_result {
    CREDIT_NEW,        /* credited now; row filled */
    CREDIT_EXISTING,   /* was credited before (same claim and code); row filled */
    CREDIT_MISMATCH,   /* the claim or the code is in the ledger with other details; row filled
                        * with the ledger's row (logged) */
    CREDIT_OVER_LIMIT, /* the user already holds per_user_limit codes of the category; *held
                        * is how many */
    CREDIT_ORPHAN,     /* the user does not exist here */
    CREDIT_KEY_REUSED, /* the claim id has a record in another category (a reused key) */
    CREDIT_FAILED,     /* PostgreSQL failed; err filled */
};

/*
 * Credits in one statement (per-user count, claim row, wallet, ledger row, audit event) on c.
 * held receives the user's count in the category for CREDIT_OVER_LIMIT.
 */
enum credit_result claims_credit(struct gw *gw, struct pg_conn *c, const struct credit *in,
                                 struct credit_row *row, int64_t *held, struct pg_error *err);
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
 * Gives back `code` if chance still has it assigned to claim_id (a claim id already credited
 * with another code, or a claim over the user's limit). user_count >= 0 keeps the user's count
 * in chance at least that high (what the ledger says the user holds); -1 leaves it. Synchronous
 * RPC; logs the outcome. Returns 0 when the code is no longer assigned to the claim afterwards
 * (released now or before), -1 when chance could not say.
 */
int claims_release(struct gw *gw, const char *claim_id, const char *code, int64_t category,
                   int64_t user_count, const char *reason);
/* Records a claim whose outcome is unknown (no-op if the claim already has a row). */
int claims_mark_pending(struct pg_conn *c, const char *claim_id, int64_t user_id, int64_t category,
                        struct pg_error *err) MUSTCHECK;
/*
 * Records a claim chance refused (reason = its error code) with its claim.failed audit event,
 * in one transaction. A pending row becomes failed; a credited or failed one is left alone and
 * no event is written (so two settlers write one event).
 */
int claims_mark_failed(struct gw *gw, struct pg_conn *c, const char *claim_id, int64_t user_id,
                       const char *username, int64_t category, const char *reason,
                       struct pg_error *err) MUSTCHECK;

#endif

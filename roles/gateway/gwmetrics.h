/*
 * The gateway's metric names over the process-wide registry (include/metrics.h): counters by
 * enum for the hot paths, per-route HTTP counts and latencies, and gauges refreshed on render.
 */
#ifndef CHANCED_GATEWAY_GWMETRICS_H
#define CHANCED_GATEWAY_GWMETRICS_H

#include <stddef.h>
#include <stdint.h>

struct gw;
struct metrics;

enum gw_counter {
    M_CLAIM_CREDITED,     /* claim answered 201, credit written by the request */
    M_CLAIM_REPLAYED,     /* claim answered from an earlier credit */
    M_CLAIM_PENDING,      /* claim answered 202: outcome unknown */
    M_CLAIM_REFUSED,      /* chance refused the claim (exhausted, limit, ...) */
    M_CLAIM_UNAVAILABLE,  /* chance could not be reached or failed */
    M_RECONCILE_CREDITED, /* credits written by the reconciler */
    M_RECONCILE_ORPHAN,   /* assignments that cannot be credited here */
    M_PENDING_SETTLED,    /* pending claims driven to a final state */
    M_OUTBOX_DELIVERED,   /* audit events acknowledged by the logger */
    M_OUTBOX_REJECTED,    /* audit events the logger refused as malformed */
    M_LOGIN_OK,           /* successful logins */
    M_LOGIN_FAILED,       /* wrong password or unknown user */
    M_RATE_LIMITED,       /* requests answered 429 */
    M_REDIS_REPAIRED,     /* codes Redis had handed to a second claim, given back to the owner */
    M_OVER_LIMIT,         /* codes given back because the ledger says the user is at the limit */
    M_FORGED_CLAIM,       /* assignments under claim ids no gateway issued (never credited) */
    M_OUTBOX_CONFLICT,    /* audit events whose id another event already holds in the store */
    M_LOGIN_BUSY,         /* logins answered 503: hashing slots or slowed-login places full */
    M_LOGIN_SLOWED,       /* logins delayed by the per-username cap */
    M_COUNTER_COUNT,
};

/* Declares the gateway's metrics and registers the gauge hook. Loop thread, at start. */
void gwmetrics_init(struct gw *gw);
/* Unregisters the gauge hook. */
void gwmetrics_cleanup(struct gw *gw);
/* Adds n to a counter. Any thread. */
void gwmetrics_count(struct metrics *m, enum gw_counter counter, double n);
/* Records one HTTP response: route label ("unmatched" if NULL), status, duration. */
void gwmetrics_http(struct metrics *m, const char *route, int status, int64_t usec);

#endif

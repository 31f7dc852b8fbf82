/*
 * The outbox relay: delivers audit events committed to the outbox table to the logger with
 * log.append, and deletes them (or, with a retention, marks them delivered) only after the logger
 * acknowledged them (at-least-once; the logger makes redelivery a no-op through the deterministic
 * _id "gw:<ns>:<outbox id>", ns being random per database).
 */
#ifndef CHANCED_GATEWAY_OUTBOX_H
#define CHANCED_GATEWAY_OUTBOX_H

#include <stdbool.h>

/*
 * Parked events (the logger refused them, or another event holds their id) are never deleted at
 * delivery: they are kept for operators this long, or outbox_retention_s if that is longer.
 */
#define OUTBOX_PARKED_KEEP_S (7 * 86400)

struct metrics;
struct outbox;
struct pg_pool;
struct rpc_client;

/* What the relay needs; everything borrowed for the outbox's life. */
struct outbox_opts {
    struct pg_pool *pg;        /* where the outbox table lives */
    struct rpc_client *logger; /* log.append goes here */
    struct metrics *metrics;   /* delivered/rejected counters */
    int *pg_up;                /* atomic flag: set after each PostgreSQL use (readiness) */
    int batch;                 /* events per log.append (outbox_batch) */
    int retention_s;           /* keep delivered events this long; 0: delete at delivery */
    int acquire_timeout_ms;    /* wait for a pooled connection */
    int logger_timeout_ms;     /* deadline of log.append */
    int lease_ttl_ms;          /* the housekeeping lease (one gateway prunes) */
};

struct outbox *outbox_new(const struct outbox_opts *opts);
void outbox_free(struct outbox *ob);
/* One relay pass (a bgtask function; arg is the outbox). True if more events are waiting. */
bool outbox_relay_pass(void *arg);
/* A pass now, however recently delivery failed (the final flush at shutdown, after the relay's
 * task stopped). True if more events are waiting. */
bool outbox_flush_pass(struct outbox *ob);
/* Undelivered events at the last count (for the backlog gauge). Any thread. */
long long outbox_backlog(const struct outbox *ob);

#endif

/*
 * Leases in PostgreSQL: work that must run on one gateway at a time (the reconciler, the
 * outbox housekeeping) holds a named lease, a row in `leases` with a holder and an expiry,
 * taken or renewed by one statement. No session state, so it works behind a transaction
 * pooler; the database's clock is the only clock. A holder that dies is replaced within the
 * TTL. Safety never rests on it (settling, credits and delivery are idempotent); it keeps N
 * gateways from doing the same work N times.
 *
 * A lease belongs to one thread (its background task).
 */
#ifndef CHANCED_GATEWAY_LEASE_H
#define CHANCED_GATEWAY_LEASE_H

#include <stdbool.h>

struct lease;
struct metrics;
struct pg_conn;

/* A lease called name (static string), held for ttl_ms after each renewal. */
struct lease *lease_new(const char *name, int ttl_ms, struct metrics *metrics);
void lease_free(struct lease *l);
/* Takes or renews the lease on c; true while this process holds it. Logs changes of hands. */
bool lease_hold(struct lease *l, struct pg_conn *c);
/* Gives the lease up (at shutdown) so another gateway takes over at once. */
void lease_drop(struct lease *l, struct pg_conn *c);

#endif

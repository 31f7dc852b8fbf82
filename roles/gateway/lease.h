/*
 * Leases in PostgreSQL: work that must run on one gateway at a time (the reconciler, the
 * outbox housekeeping) holds a named lease, a row in `leases` with a holder and an expiry,
 * taken or renewed by one statement. No session state, so it works behind a transaction
 * pooler; the database's clock decides who holds it, and a holder counts its own hold from
 * before each renewal was sent (its monotonic clock), so it stops acting as the holder no later
 * than the row expires. A holder that dies is replaced within the TTL. Safety never rests on it (settling, credits and delivery are idempotent); it keeps N
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
/*
 * For long passes, between steps: true while the lease is still ours. Renews it once a third
 * of the TTL has gone since the last renewal; once the TTL has run out since then (the pass
 * was blocked), it is ours again only if the database says so. A holder is held only until
 * the TTL after its last renewal was sent, so a stalled holder never overlaps a new one.
 */
bool lease_keep(struct lease *l, struct pg_conn *c);
/* Gives the lease up (at shutdown) so another gateway takes over at once. */
void lease_drop(struct lease *l, struct pg_conn *c);

#endif

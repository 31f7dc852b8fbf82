/*
 * Versioned schema migrations of the gateway's PostgreSQL database, embedded in the binary and
 * applied in order under an advisory lock (so several gateways starting at once are safe).
 */
#ifndef CHANCED_GATEWAY_MIGRATE_H
#define CHANCED_GATEWAY_MIGRATE_H

#include "util.h"

struct pg_pool;

/*
 * Applies every migration newer than the database's version. Returns 0 (logging what it did),
 * -1 if PostgreSQL is unreachable or a migration failed (logged; the failed one is rolled back),
 * -2 if the database is newer than this binary.
 */
int migrate_apply(struct pg_pool *pool) MUSTCHECK;
/* The newest version this binary knows. */
int migrate_latest(void);

#endif

/*
 * The reconciler: drives every assignment chance recorded to exactly one credit, and every
 * stale pending claim to a final state. It reads each category's assignment log
 * (chance.assignments) after a cursor kept in PostgreSQL, credits what the ledger lacks through
 * the same statement as the request path, and re-drives pending claims with their claim id
 * (chance.claim is idempotent). Runs as a bgtask: blocking calls, never on the loop thread.
 */
#ifndef CHANCED_GATEWAY_RECONCILE_H
#define CHANCED_GATEWAY_RECONCILE_H

#include <stdbool.h>

struct gw;
struct reconciler;

struct reconciler *reconciler_new(struct gw *gw);
void reconciler_free(struct reconciler *rec);
/* One pass (a bgtask function; arg is the reconciler). */
bool reconcile_pass(void *arg);

#endif

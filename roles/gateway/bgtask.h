/*
 * A background thread that runs one function periodically, or at once when kicked. The gateway's
 * outbox relay and reconciler use it: they block on PostgreSQL and on synchronous RPC, so they may
 * not run on the loop thread.
 */
#ifndef CHANCED_GATEWAY_BGTASK_H
#define CHANCED_GATEWAY_BGTASK_H

#include <stdbool.h>

struct bgtask;

/* One pass of work; returns true if more is waiting (run again without sleeping). */
typedef bool (*bgtask_fn)(void *arg);

/*
 * Starts a thread named name running fn every interval_ms, and linger_ms after a kick (so that
 * kicks arriving meanwhile share one pass). Never NULL (aborts if no thread).
 */
struct bgtask *bgtask_start(const char *name, int interval_ms, int linger_ms, bgtask_fn fn,
                            void *arg);
/* Wakes the thread for an immediate pass. Any thread. NULL is a no-op. */
void bgtask_kick(struct bgtask *t);
/* True once a stop was asked: long passes check it to end early. */
bool bgtask_stopping(struct bgtask *t);
/* Asks the thread to stop, waits for its current pass, joins, frees. NULL is a no-op. */
void bgtask_stop(struct bgtask *t);

#endif

/*
 * A small pool of threads for blocking work (MongoDB calls) submitted from the role's loop:
 * each job runs on a worker thread, then its completion runs back on the loop through
 * loop_post, the only way these threads touch the loop.
 *
 * Ownership: the logger owns the pool; a job's arg belongs to the job until done(arg) runs.
 */
#ifndef CHANCED_LOGGER_WORKERS_H
#define CHANCED_LOGGER_WORKERS_H

#include <stddef.h>

#include "loop.h"

struct logger_workers;

/* Runs on a worker thread; may block. */
typedef void (*logger_work_fn)(void *arg);

/* Starts n threads; aborts if a thread cannot be created (startup only). */
struct logger_workers *logger_workers_new(struct loop *loop, int n);
/*
 * Queues work(arg) for a worker; done(arg) then runs on the loop thread and must free arg.
 * Loop thread only.
 */
void logger_workers_submit(struct logger_workers *w, logger_work_fn work, loop_fn done, void *arg);
/* Jobs submitted whose done has not run yet. Loop thread only. */
size_t logger_workers_busy(const struct logger_workers *w);
/* Stops and joins the threads. Call only when busy is 0. NULL is a no-op. */
void logger_workers_free(struct logger_workers *w);

#endif

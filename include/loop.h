/*
 * The event loop: one libevent event_base per role thread, plus a notify channel through which
 * other threads (HTTP workers, database threads) hand work to the loop. This channel is the
 * only place threads touch a loop.
 *
 * Ownership: daemon (main) -> loop -> listeners, conns, timers of the role running on it.
 */
#ifndef CHANCED_LOOP_H
#define CHANCED_LOOP_H

#include <event2/event.h>
#include <stdbool.h>

#include "util.h"

struct loop;

typedef void (*loop_fn)(void *arg);
typedef void (*loop_signal_fn)(int signo, void *arg);

/* Creates a loop with its own event_base and notify channel; NULL on failure (logged). */
struct loop *loop_new(void);
/* Frees the loop; jobs still queued are dropped. Call after loop_run returned. */
void loop_free(struct loop *loop);
struct event_base *loop_base(struct loop *loop);

/* Runs until loop_exit; returns 0, or -1 if libevent failed. */
int loop_run(struct loop *loop) MUSTCHECK;
/* Asks the loop to return after the current iteration. Thread-safe. */
void loop_exit(struct loop *loop);

/* Queues fn(arg) to run on the loop's thread. Thread-safe; never blocks for long. */
void loop_post(struct loop *loop, loop_fn fn, void *arg);
/* Runs fn(arg) on the loop thread after the current callback chain (deferred frees). */
void loop_defer(struct loop *loop, loop_fn fn, void *arg);

/* Routes SIGINT, SIGTERM and SIGHUP to fn on this loop's thread; SIGPIPE is ignored. */
int loop_catch_signals(struct loop *loop, loop_signal_fn fn, void *arg) MUSTCHECK;

/* A repeating (or one-shot) timer; returns a new event (free with event_free). */
struct event *loop_timer(struct loop *loop, int ms, bool repeat, event_callback_fn fn, void *arg);

#endif

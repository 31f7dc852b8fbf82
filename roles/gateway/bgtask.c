/* Periodic worker threads with a kick condition and a cooperative stop. */
#include "bgtask.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "log.h"
#include "util.h"

struct bgtask {
    const char *name; /* borrowed, static */
    int interval_ms;  /* sleep between idle passes */
    int linger_ms;    /* wait after a kick before the pass */
    bgtask_fn fn;     /* the work */
    void *arg;        /* its argument */
    pthread_t thread;
    pthread_mutex_t lock; /* guards kicked and stop */
    pthread_cond_t cond;  /* signalled by kick and stop */
    bool kicked;          /* run again without waiting */
    bool stop;            /* leave the loop */
};

/* Waits on the condition until the deadline ms from now, or until stop (and kick, if asked). */
static void
wait_locked(struct bgtask *t, int ms, bool until_kick)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    while (!t->stop && !(until_kick && t->kicked) &&
           pthread_cond_timedwait(&t->cond, &t->lock, &until) == 0) {
    }
}

static void *
run(void *arg)
{
    struct bgtask *t = arg;
    log_set_role("gateway");
    for (;;) {
        bool more = t->fn(t->arg);
        pthread_mutex_lock(&t->lock);
        if (!more && !t->kicked && !t->stop) {
            wait_locked(t, t->interval_ms, true);
        }
        if (!more && t->kicked && t->linger_ms > 0) {
            wait_locked(t, t->linger_ms, false); /* let more kicks join this pass */
        }
        t->kicked = false;
        bool stop = t->stop;
        pthread_mutex_unlock(&t->lock);
        if (stop) {
            break;
        }
    }
    log_debug("bgtask_stopped", "task=%s", t->name);
    return NULL;
}

struct bgtask *
bgtask_start(const char *name, int interval_ms, int linger_ms, bgtask_fn fn, void *arg)
{
    struct bgtask *t = xcalloc(1, sizeof(*t));
    t->name = name;
    t->interval_ms = interval_ms;
    t->linger_ms = linger_ms;
    t->fn = fn;
    t->arg = arg;
    pthread_mutex_init(&t->lock, NULL);
    pthread_cond_init(&t->cond, NULL);
    if (pthread_create(&t->thread, NULL, run, t) != 0) {
        log_error("thread_failed", "task=%s", name);
        abort();
    }
    return t;
}

void
bgtask_kick(struct bgtask *t)
{
    if (t == NULL) {
        return;
    }
    pthread_mutex_lock(&t->lock);
    t->kicked = true;
    pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->lock);
}

bool
bgtask_stopping(struct bgtask *t)
{
    pthread_mutex_lock(&t->lock);
    bool stop = t->stop;
    pthread_mutex_unlock(&t->lock);
    return stop;
}

void
bgtask_stop(struct bgtask *t)
{
    if (t == NULL) {
        return;
    }
    pthread_mutex_lock(&t->lock);
    t->stop = true;
    pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->lock);
    pthread_join(t->thread, NULL);
    pthread_cond_destroy(&t->cond);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

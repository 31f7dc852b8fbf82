/* libevent base per thread, cross-thread job queue over an eventfd, deferred callbacks. */
#include "loop.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "log.h"

struct job {
    loop_fn fn;       /* what to run */
    void *arg;        /* passed to fn */
    struct job *next; /* queue link */
};

struct sig {
    struct event *ev;  /* the evsignal */
    loop_signal_fn fn; /* callback */
    void *arg;         /* its argument */
};

struct loop {
    struct event_base *base; /* owned */
    int efd;                 /* eventfd of the notify channel */
    struct event *notify_ev; /* read side of efd */
    pthread_mutex_t lock;    /* guards head/tail */
    struct job *head, *tail; /* jobs posted from other threads */
    struct sig sigs[3];      /* SIGINT, SIGTERM, SIGHUP when caught */
};

static void on_notify(evutil_socket_t fd, short what, void *arg);
static void on_signal(evutil_socket_t fd, short what, void *arg);
static void on_deferred(evutil_socket_t fd, short what, void *arg);

struct loop *
loop_new(void)
{
    struct loop *loop = xcalloc(1, sizeof(*loop));
    loop->base = event_base_new();
    if (loop->base == NULL) {
        log_error("loop_failed", "reason=event_base_new");
        free(loop);
        return NULL;
    }
    loop->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (loop->efd < 0) {
        log_error("loop_failed", "reason=eventfd errno=%s", strerror(errno));
        event_base_free(loop->base);
        free(loop);
        return NULL;
    }
    pthread_mutex_init(&loop->lock, NULL);
    loop->notify_ev = event_new(loop->base, loop->efd, EV_READ | EV_PERSIST, on_notify, loop);
    event_add(loop->notify_ev, NULL);
    return loop;
}

void
loop_free(struct loop *loop)
{
    if (loop == NULL) {
        return;
    }
    for (size_t i = 0; i < ARRAY_SIZE(loop->sigs); i++) {
        if (loop->sigs[i].ev) {
            event_free(loop->sigs[i].ev);
        }
    }
    /* Let deferred frees (closed conns) and posted jobs run once more, then release the rest. */
    event_base_loop(loop->base, EVLOOP_NONBLOCK);
    event_free(loop->notify_ev);
    /* Run what is left so posted objects are released, not leaked. */
    on_notify(loop->efd, EV_READ, loop);
    close(loop->efd);
    pthread_mutex_destroy(&loop->lock);
    event_base_free(loop->base);
    free(loop);
}

struct event_base *
loop_base(struct loop *loop)
{
    return loop->base;
}

int
loop_run(struct loop *loop)
{
    return event_base_dispatch(loop->base) < 0 ? -1 : 0;
}

static void
do_exit(void *arg)
{
    struct loop *loop = arg;
    event_base_loopexit(loop->base, NULL);
}

void
loop_exit(struct loop *loop)
{
    loop_post(loop, do_exit, loop);
}

void
loop_post(struct loop *loop, loop_fn fn, void *arg)
{
    struct job *j = xmalloc(sizeof(*j));
    j->fn = fn;
    j->arg = arg;
    j->next = NULL;
    pthread_mutex_lock(&loop->lock);
    if (loop->tail) {
        loop->tail->next = j;
    } else {
        loop->head = j;
    }
    loop->tail = j;
    pthread_mutex_unlock(&loop->lock);
    uint64_t one = 1;
    while (write(loop->efd, &one, sizeof(one)) < 0 && errno == EINTR) {
    }
}

static void
on_notify(evutil_socket_t fd, short what, void *arg)
{
    struct loop *loop = arg;
    uint64_t n;
    UNUSED(what);
    while (read(fd, &n, sizeof(n)) < 0 && errno == EINTR) {
    }
    pthread_mutex_lock(&loop->lock);
    struct job *j = loop->head;
    loop->head = loop->tail = NULL;
    pthread_mutex_unlock(&loop->lock);
    while (j) {
        struct job *next = j->next;
        j->fn(j->arg);
        free(j);
        j = next;
    }
}

struct deferred {
    loop_fn fn; /* what to run */
    void *arg;  /* its argument */
};

static void
on_deferred(evutil_socket_t fd, short what, void *arg)
{
    struct deferred *d = arg;
    UNUSED(fd);
    UNUSED(what);
    d->fn(d->arg);
    free(d);
}

void
loop_defer(struct loop *loop, loop_fn fn, void *arg)
{
    struct deferred *d = xmalloc(sizeof(*d));
    d->fn = fn;
    d->arg = arg;
    struct timeval zero = {0, 0};
    if (event_base_once(loop->base, -1, EV_TIMEOUT, on_deferred, d, &zero) != 0) {
        abort();
    }
}

static void
on_signal(evutil_socket_t fd, short what, void *arg)
{
    struct sig *s = arg;
    UNUSED(what);
    s->fn((int)fd, s->arg);
}

int
loop_catch_signals(struct loop *loop, loop_signal_fn fn, void *arg)
{
    static const int signos[] = {SIGINT, SIGTERM, SIGHUP};
    signal(SIGPIPE, SIG_IGN);
    for (size_t i = 0; i < ARRAY_SIZE(signos); i++) {
        struct sig *s = &loop->sigs[i];
        s->fn = fn;
        s->arg = arg;
        s->ev = evsignal_new(loop->base, signos[i], on_signal, s);
        if (s->ev == NULL || event_add(s->ev, NULL) != 0) {
            log_error("signal_setup_failed", "signo=%d", signos[i]);
            return -1;
        }
    }
    return 0;
}

struct event *
loop_timer(struct loop *loop, int ms, bool repeat, event_callback_fn fn, void *arg)
{
    struct event *ev = event_new(loop->base, -1, repeat ? EV_PERSIST : 0, fn, arg);
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_add(ev, &tv);
    return ev;
}

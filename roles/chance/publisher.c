/* The chance role's audit publisher thread (publisher.h). */
#include "publisher.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backoff.h"
#include "log.h"
#include "loop.h"
#include "rabbit.h"
#include "rmq_conf.h"
#include "util.h"

#define CONFIRM_TIMEOUT_MS 10000 /* a message not confirmed by then: the link is dropped */
#define CONNECT_TIMEOUT_MS 10000
#define IDLE_WAIT_MS 500   /* with nothing to publish, service the link this often */
#define REPORT_MAX 256     /* confirms read from the adapter per call */
#define WINDOW_BATCHES 4   /* messages in flight (published, not settled): this many batches */
#define STOP_GRACE_MS 3000 /* publisher_free waits this long before interrupting */

struct publisher {
    struct loop *loop;          /* borrowed; results are posted to it */
    const struct rmq_conf *rmq; /* borrowed */
    size_t window;              /* messages in flight (published, not settled) at most */
    publisher_done_fn done;     /* called on the loop */
    void *arg;
    pthread_t thread;
    pthread_mutex_t lock;         /* guards queue, stop and link (for the interrupt) */
    pthread_cond_t cond;          /* signalled by submit and stop */
    int wake[2];                  /* pipe: submit and stop wake the thread waiting on the broker */
    struct pub_item *head, *tail; /* waiting to be published */
    struct pub_item *out, *out_tail; /* thread-owned: published, not settled, in publish order */
    size_t nout;                     /* thread-owned: how many */
    bool stop;
    int exited;                   /* atomic: the thread returned */
    int connected;                /* atomic */
    unsigned long long published; /* atomic */
    struct chance_amqp *link;     /* thread-owned; NULL while down */
    unsigned next_url;            /* thread-owned */
    struct backoff bo;            /* thread-owned */
    int rounds_out;               /* atomic: rounds posted to the loop, not yet delivered */
    bool orphaned;                /* loop thread: freed while rounds were still posted */
};

/* Items travelling back to the loop. */
struct round {
    struct publisher *p;
    struct pub_item *items;
};

void
pub_items_free(struct pub_item *items)
{
    while (items) {
        struct pub_item *next = items->next;
        free(items->body);
        free(items->entries);
        free(items);
        items = next;
    }
}

static void
publisher_destroy(struct publisher *p)
{
    pub_items_free(p->head);
    close(p->wake[0]);
    close(p->wake[1]);
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

/* On the loop thread. After publisher_free only the items are released: the relay is gone. */
static void
deliver(void *arg)
{
    struct round *rd = arg;
    struct publisher *p = rd->p;
    int left = __atomic_sub_fetch(&p->rounds_out, 1, __ATOMIC_ACQ_REL);
    if (p->orphaned) {
        pub_items_free(rd->items);
        if (left == 0) {
            publisher_destroy(p);
        }
    } else {
        p->done(rd->items, p->arg);
    }
    free(rd);
}

static void
post_back(struct publisher *p, struct pub_item *items)
{
    if (items == NULL) {
        return;
    }
    struct round *rd = xmalloc(sizeof(*rd));
    rd->p = p;
    rd->items = items;
    __atomic_add_fetch(&p->rounds_out, 1, __ATOMIC_ACQ_REL);
    loop_post(p->loop, deliver, rd);
}

static void
set_link(struct publisher *p, struct chance_amqp *link)
{
    pthread_mutex_lock(&p->lock);
    struct chance_amqp *old = p->link;
    p->link = link;
    pthread_mutex_unlock(&p->lock);
    chance_amqp_close(old);
    __atomic_store_n(&p->connected, link != NULL, __ATOMIC_RELAXED);
}

/* Sleeps ms unless a stop is requested first. */
static void
nap(struct publisher *p, int ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&p->lock);
    while (!p->stop && pthread_cond_timedwait(&p->cond, &p->lock, &until) == 0) {
    }
    pthread_mutex_unlock(&p->lock);
}

/* Wakes the thread from chance_amqp_wait; a full pipe already does. */
static void
wake(struct publisher *p)
{
    ssize_t rc = write(p->wake[1], "w", 1);
    UNUSED(rc);
}

static void
drain_wake(struct publisher *p)
{
    char buf[64];
    while (read(p->wake[0], buf, sizeof(buf)) > 0) {
    }
}

/* Takes up to max items off the queue without waiting; *more says whether some are left. */
static struct pub_item *
take(struct publisher *p, size_t max, bool *more)
{
    pthread_mutex_lock(&p->lock);
    struct pub_item *first = p->head, *last = NULL;
    size_t n = 0;
    for (struct pub_item *it = p->head; it && n < max; it = it->next) {
        last = it;
        n++;
    }
    if (last) {
        p->head = last->next;
        if (p->head == NULL) {
            p->tail = NULL;
        }
        last->next = NULL;
    }
    *more = p->head != NULL;
    pthread_mutex_unlock(&p->lock);
    return last ? first : NULL;
}

static int
ensure_link(struct publisher *p)
{
    if (p->link) {
        return 0;
    }
    char err[512];
    struct chance_amqp *a =
        chance_amqp_open(p->rmq, CONNECT_TIMEOUT_MS, &p->next_url, err, sizeof(err));
    if (a == NULL) {
        backoff_fail(&p->bo, "relay_amqp_unavailable", err);
        return -1;
    }
    set_link(p, a);
    backoff_reset(&p->bo);
    log_info("relay_connected", "broker=%s queue=%s window=%zu", chance_amqp_peer(a),
             p->rmq->amqp_queue, p->window);
    return 0;
}

/* The link is gone: every message not reported yet goes back unconfirmed (published again). */
static void
fail_link(struct publisher *p, const char *why)
{
    backoff_fail(&p->bo, "relay_amqp_failed", why);
    set_link(p, NULL);
    for (struct pub_item *it = p->out; it; it = it->next) {
        it->confirmed = false;
    }
    post_back(p, p->out);
    p->out = p->out_tail = NULL;
    p->nout = 0;
}

/* Publishes what is queued, as far as the window allows; true if more is waiting. */
static bool
publish_queued(struct publisher *p)
{
    bool more = false;
    if (p->nout >= p->window) {
        return false; /* the window is full: confirms make room */
    }
    struct pub_item *items = take(p, p->window - p->nout, &more);
    for (struct pub_item *it = items; it; it = items) {
        char err[256];
        items = it->next;
        it->next = NULL;
        it->confirmed = false;
        if (p->out_tail) {
            p->out_tail->next = it;
        } else {
            p->out = it;
        }
        p->out_tail = it;
        p->nout++;
        if (chance_amqp_publish(p->link, it->body, it->len, it->msgid, err, sizeof(err)) != 0) {
            p->out_tail->next = items; /* not published: back with the rest, unconfirmed */
            fail_link(p, err);
            return false;
        }
    }
    return more;
}

/* Hands the settled messages at the head of the window back to the loop, in one list. */
static void
report_settled(struct publisher *p)
{
    bool ok[REPORT_MAX];
    struct pub_item *done = NULL, **tail = &done;
    size_t n = 0, confirmed = 0, k;
    while ((k = chance_amqp_settled(p->link, ok, REPORT_MAX)) > 0) {
        for (size_t i = 0; i < k; i++) {
            struct pub_item *it = p->out;
            p->out = it->next;
            it->next = NULL;
            it->confirmed = ok[i];
            confirmed += ok[i];
            *tail = it;
            tail = &it->next;
        }
        p->nout -= k;
        n += k;
    }
    if (p->out == NULL) {
        p->out_tail = NULL;
    }
    if (n == 0) {
        return;
    }
    __atomic_add_fetch(&p->published, (unsigned long long)confirmed, __ATOMIC_RELAXED);
    log_debug("relay_confirmed", "messages=%zu confirmed=%zu in_flight=%zu", n, confirmed, p->nout);
    post_back(p, done);
}

/*
 * Publishes as soon as messages are queued and reads confirms as they come, so a message never
 * waits for the confirms of earlier ones (at most window are in flight). On a stop, the messages
 * in flight are still waited for (bounded by the confirm timeout and publisher_free's grace).
 */
static void *
run(void *arg)
{
    struct publisher *p = arg;
    log_set_role("chance");
    for (;;) {
        pthread_mutex_lock(&p->lock);
        bool stop = p->stop;
        pthread_mutex_unlock(&p->lock);
        if (stop && (p->link == NULL || p->nout == 0)) {
            break;
        }
        if (ensure_link(p) != 0) {
            nap(p, backoff_next(&p->bo));
            continue;
        }
        bool more = !stop && publish_queued(p);
        if (p->link == NULL) {
            continue;
        }
        int64_t oldest = 0, now = time_mono_ms();
        int wait = more ? 0 : IDLE_WAIT_MS;
        if (chance_amqp_unsettled(p->link, &oldest) > 0 &&
            oldest + CONFIRM_TIMEOUT_MS - now < wait) {
            wait = oldest + CONFIRM_TIMEOUT_MS - now < 0 ? 0
                                                         : (int)(oldest + CONFIRM_TIMEOUT_MS - now);
        }
        char err[256];
        if (chance_amqp_wait(p->link, wait, p->wake[0], err, sizeof(err)) != 0) {
            fail_link(p, err);
            continue;
        }
        drain_wake(p);
        report_settled(p);
        size_t left = chance_amqp_unsettled(p->link, &oldest);
        if (left > 0 && time_mono_ms() - oldest >= CONFIRM_TIMEOUT_MS) {
            snprintf(err, sizeof(err), "%zu messages not confirmed within %d ms", left,
                     CONFIRM_TIMEOUT_MS);
            fail_link(p, err);
        }
    }
    set_link(p, NULL);
    post_back(p, p->out); /* unconfirmed: their entries stay in Redis */
    p->out = p->out_tail = NULL;
    p->nout = 0;
    __atomic_store_n(&p->exited, 1, __ATOMIC_RELEASE);
    return NULL;
}

struct publisher *
publisher_new(struct loop *loop, const struct rmq_conf *rmq, int batch, publisher_done_fn done,
              void *arg)
{
    struct publisher *p = xcalloc(1, sizeof(*p));
    p->loop = loop;
    p->rmq = rmq;
    p->window = (size_t)(batch > 0 ? batch : 1) * WINDOW_BATCHES;
    p->done = done;
    p->arg = arg;
    backoff_init(&p->bo, 100, 5000);
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    if (pipe(p->wake) != 0 || fcntl(p->wake[0], F_SETFL, O_NONBLOCK) != 0 ||
        fcntl(p->wake[1], F_SETFL, O_NONBLOCK) != 0 ||
        fcntl(p->wake[0], F_SETFD, FD_CLOEXEC) != 0 ||
        fcntl(p->wake[1], F_SETFD, FD_CLOEXEC) != 0) {
        log_error("pipe_failed", "what=relay_publisher");
        abort();
    }
    if (pthread_create(&p->thread, NULL, run, p) != 0) {
        log_error("thread_failed", "what=relay_publisher");
        abort();
    }
    return p;
}

void
publisher_free(struct publisher *p)
{
    if (p == NULL) {
        return;
    }
    pthread_mutex_lock(&p->lock);
    p->stop = true;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    wake(p);
    /* The messages in flight are confirmed (bounded by the confirm timeout); a socket stuck on a stalled
     * broker is shut down after a grace period so the join cannot hang. */
    int64_t deadline = time_mono_ms() + STOP_GRACE_MS;
    while (!__atomic_load_n(&p->exited, __ATOMIC_ACQUIRE) && time_mono_ms() < deadline) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (!__atomic_load_n(&p->exited, __ATOMIC_ACQUIRE)) {
        pthread_mutex_lock(&p->lock);
        if (p->link) {
            chance_amqp_interrupt(p->link);
        }
        pthread_mutex_unlock(&p->lock);
    }
    pthread_join(p->thread, NULL);
    log_info("relay_stopped", "published=%llu", publisher_published(p));
    if (__atomic_load_n(&p->rounds_out, __ATOMIC_ACQUIRE) > 0) {
        p->orphaned = true; /* the last posted round frees it */
        return;
    }
    publisher_destroy(p);
}

void
publisher_submit(struct publisher *p, struct pub_item *items)
{
    if (items == NULL) {
        return;
    }
    struct pub_item *last = items;
    while (last->next) {
        last = last->next;
    }
    pthread_mutex_lock(&p->lock);
    if (p->tail) {
        p->tail->next = items;
    } else {
        p->head = items;
    }
    bool was_empty = p->head == items;
    p->tail = last;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->lock);
    if (was_empty) {
        wake(p); /* a non-empty queue is taken on the thread's next turn anyway */
    }
}

bool
publisher_connected(const struct publisher *p)
{
    return __atomic_load_n(&p->connected, __ATOMIC_RELAXED) != 0;
}

unsigned long long
publisher_published(const struct publisher *p)
{
    return __atomic_load_n(&p->published, __ATOMIC_RELAXED);
}

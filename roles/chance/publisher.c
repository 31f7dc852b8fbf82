/* The chance role's audit publisher thread (publisher.h). */
#include "publisher.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backoff.h"
#include "log.h"
#include "loop.h"
#include "rabbit.h"
#include "rmq_conf.h"
#include "util.h"

#define CONFIRM_TIMEOUT_MS 10000 /* a round not confirmed by then is published again */
#define CONNECT_TIMEOUT_MS 10000
#define IDLE_WAIT_MS 500   /* with nothing to publish, service the link this often */
#define STOP_GRACE_MS 3000 /* publisher_free waits this long before interrupting */

struct publisher {
    struct loop *loop;          /* borrowed; results are posted to it */
    const struct rmq_conf *rmq; /* borrowed */
    int batch;                  /* messages per confirm round */
    publisher_done_fn done;     /* called on the loop */
    void *arg;
    pthread_t thread;
    pthread_mutex_t lock;         /* guards queue, stop and link (for the interrupt) */
    pthread_cond_t cond;          /* signalled by submit and stop */
    struct pub_item *head, *tail; /* waiting to be published */
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
        free(items);
        items = next;
    }
}

static void
publisher_destroy(struct publisher *p)
{
    pub_items_free(p->head);
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

/* Takes up to batch items off the queue, waiting up to IDLE_WAIT_MS for the first. */
static struct pub_item *
take(struct publisher *p, size_t *n)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += (long)IDLE_WAIT_MS * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&p->lock);
    while (p->head == NULL && !p->stop && pthread_cond_timedwait(&p->cond, &p->lock, &until) == 0) {
    }
    struct pub_item *first = p->head, *last = NULL;
    *n = 0;
    for (struct pub_item *it = p->head; it && *n < (size_t)p->batch; it = it->next) {
        last = it;
        (*n)++;
    }
    if (last) {
        p->head = last->next;
        if (p->head == NULL) {
            p->tail = NULL;
        }
        last->next = NULL;
    }
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
    log_info("relay_connected", "broker=%s queue=%s batch=%d", chance_amqp_peer(a),
             p->rmq->amqp_queue, p->batch);
    return 0;
}

/* Publishes one round and waits for its confirms; every item is marked and handed back. */
static void
publish_round(struct publisher *p, struct pub_item *items, size_t n)
{
    char err[256] = "";
    bool *ok = xcalloc(n, sizeof(bool));
    size_t sent = 0;
    bool failed = false;
    for (struct pub_item *it = items; it; it = it->next) {
        if (chance_amqp_publish(p->link, it->body, it->len, it->msgid, err, sizeof(err)) != 0) {
            failed = true;
            break;
        }
        sent++;
    }
    char why[256] = "";
    if (chance_amqp_confirm(p->link, CONFIRM_TIMEOUT_MS, ok, why, sizeof(why)) != 0 && !failed) {
        snprintf(err, sizeof(err), "%s", why);
        failed = true;
    }
    size_t i = 0, confirmed = 0;
    for (struct pub_item *it = items; it; it = it->next, i++) {
        it->confirmed = i < sent && ok[i];
        confirmed += it->confirmed;
    }
    free(ok);
    __atomic_add_fetch(&p->published, (unsigned long long)confirmed, __ATOMIC_RELAXED);
    if (failed) {
        backoff_fail(&p->bo, "relay_amqp_failed", err);
        set_link(p, NULL);
    }
    log_debug("relay_round", "messages=%zu confirmed=%zu", n, confirmed);
    post_back(p, items);
}

static void *
run(void *arg)
{
    struct publisher *p = arg;
    log_set_role("chance");
    for (;;) {
        pthread_mutex_lock(&p->lock);
        bool stop = p->stop;
        pthread_mutex_unlock(&p->lock);
        if (stop) {
            break;
        }
        if (ensure_link(p) != 0) {
            nap(p, backoff_next(&p->bo));
            continue;
        }
        size_t n;
        struct pub_item *items = take(p, &n);
        if (items) {
            publish_round(p, items, n);
            continue;
        }
        /* Nothing to publish: still read the link for heartbeats and a close from the broker. */
        bool none;
        char err[256];
        if (chance_amqp_confirm(p->link, 0, &none, err, sizeof(err)) != 0) {
            backoff_fail(&p->bo, "relay_amqp_failed", err);
            set_link(p, NULL);
        }
    }
    set_link(p, NULL);
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
    p->batch = batch > 0 ? batch : 1;
    p->done = done;
    p->arg = arg;
    backoff_init(&p->bo, 100, 5000);
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
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
    /* The round in hand finishes (bounded by the confirm timeout); a socket stuck on a stalled
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
    p->tail = last;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->lock);
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

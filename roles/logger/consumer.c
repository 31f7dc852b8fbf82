/* The audit queue consumer thread: RabbitMQ -> validate -> MongoDB (journaled) -> ack. */
#include "consumer.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rabbit.h"
#include "event.h"
#include "backoff.h"
#include "failpoint.h"
#include "log.h"
#include "logger_conf.h"
#include "rmq_conf.h"
#include "mongo.h"
#include "util.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define IDLE_WAIT_MS 200 /* how long an empty batch waits for a first delivery */

/* One delivery of the current round, parsed when it arrives. */
struct item {
    struct logger_amqp_msg msg; /* owned */
    struct logger_message m;    /* owned: its valid canonical events (1..1000, or none) */
    char *why;                  /* owned: why it goes to the dead-letter queue, or NULL */
    bool unusable;              /* nothing to store: dead-letter it before the insert */
    bool settled;               /* rejected already: no ack */
};

/* Where an event of the round's insert came from: its delivery and its place in the message. */
struct slot {
    size_t item, ev;
};

struct logger_consumer {
    const struct logger_conf *conf; /* borrowed */
    const struct rmq_conf *rmq;     /* borrowed */
    unsigned next_url;              /* thread-owned: the amqp_url entry to try first */
    struct logger_mongo *store;     /* borrowed */
    struct loop *loop;              /* borrowed; only loop_post is used from the thread */
    loop_fn on_ready, on_exit;      /* posted to the loop */
    void *arg;                      /* their argument */
    pthread_t thread;
    int stop;                        /* atomic: set by logger_consumer_stop */
    pthread_mutex_t link_lock;       /* guards link against logger_consumer_free's interrupt */
    struct logger_amqp *link;        /* thread-owned connection, NULL while disconnected */
    struct item *items;              /* thread-owned: this round's deliveries, then the next's */
    size_t n, cap;                   /* items used / allocated (cap = prefetch) */
    size_t round;                    /* items[0, round) are the round being inserted */
    size_t held;                     /* valid events in the items */
    const cJSON **evs;               /* thread-owned: the round's events for the insert */
    struct slot *slots;              /* where each of evs came from */
    unsigned char *outcome;          /* logger_insert_outcome of each of evs */
    size_t evs_cap;                  /* allocated length of evs, slots and outcome */
    struct backoff bo;               /* retry pacing and throttled failure logs */
    int64_t paused_at;               /* monotonic ms when the store stopped answering, or 0 */
    struct logger_consumer_stats st; /* counters, updated with atomics */
};

#define BUMP(c, field, n) __atomic_add_fetch(&(c)->st.field, (n), __ATOMIC_RELAXED)
#define SET(c, field, v) __atomic_store_n(&(c)->st.field, (v), __ATOMIC_RELAXED)

static bool
stopping(struct logger_consumer *c)
{
    return __atomic_load_n(&c->stop, __ATOMIC_ACQUIRE) != 0;
}

/* Sleeps ms, waking early when a stop is requested. */
static void
nap(struct logger_consumer *c, int ms)
{
    while (ms > 0 && !stopping(c)) {
        int step = ms < 50 ? ms : 50;
        struct timespec ts = {0, (long)step * 1000000L};
        nanosleep(&ts, NULL);
        ms -= step;
    }
}

static void
backoff(struct logger_consumer *c)
{
    nap(c, backoff_next(&c->bo));
}

/* Logs a failure once, and again only if it changes or persists (the backoff helper's rule). */
static void
log_failure(struct logger_consumer *c, const char *event, const char *why)
{
    (void)backoff_fail(&c->bo, event, why);
}

static int
ensure_store(struct logger_consumer *c)
{
    char err[256];
    int rc = logger_mongo_ensure(c->store, c->conf->retention_days, err, sizeof(err));
    if (rc != LOGGER_MONGO_OK) {
        SET(c, store_up, false);
        log_failure(c, "store_unavailable", err);
        return -1;
    }
    SET(c, store_up, true);
    backoff_reset(&c->bo);
    log_info("store_ready", "ns=%s retention_days=%lld", logger_mongo_namespace(c->store),
             c->conf->retention_days);
    return 0;
}

static int
open_link(struct logger_consumer *c)
{
    char err[256];
    struct logger_amqp_opts o = {
        .rmq = c->rmq,
        .next_url = &c->next_url,
        .prefetch = (int)c->conf->amqp_prefetch,
        .max_body = (size_t)c->conf->max_event_bytes,
        .timeout_ms = 10000,
    };
    struct logger_amqp *a = logger_amqp_open(&o, err, sizeof(err));
    if (a == NULL || logger_amqp_consume(a, err, sizeof(err)) != 0) {
        logger_amqp_close(a);
        log_failure(c, "amqp_unavailable", err);
        return -1;
    }
    pthread_mutex_lock(&c->link_lock);
    c->link = a;
    pthread_mutex_unlock(&c->link_lock);
    SET(c, amqp_up, true);
    BUMP(c, reconnects, 1);
    backoff_reset(&c->bo);
    log_info("amqp_consuming", "queue=%s prefetch=%lld batch=%lld", c->rmq->amqp_queue,
             c->conf->amqp_prefetch, c->conf->insert_batch);
    /* Ready means both ends work: the store answered (checked first) and we consume. */
    loop_post(c->loop, c->on_ready, c->arg);
    return 0;
}

static void
clear_items(struct logger_consumer *c)
{
    for (size_t i = 0; i < c->n; i++) {
        logger_amqp_msg_cleanup(&c->items[i].msg);
        logger_message_cleanup(&c->items[i].m);
        free(c->items[i].why);
    }
    memset(c->items, 0, c->n * sizeof(*c->items));
    c->n = 0;
    c->round = 0;
    c->held = 0;
}

/* Forgets the settled round; the deliveries read ahead meanwhile move to the front. */
static void
retire_round(struct logger_consumer *c)
{
    for (size_t i = 0; i < c->round; i++) {
        c->held -= c->items[i].m.n;
        logger_amqp_msg_cleanup(&c->items[i].msg);
        logger_message_cleanup(&c->items[i].m);
        free(c->items[i].why);
    }
    size_t rest = c->n - c->round;
    memmove(c->items, c->items + c->round, rest * sizeof(*c->items));
    memset(c->items + rest, 0, c->round * sizeof(*c->items));
    c->n = rest;
    c->round = 0;
}

/* Unacknowledged deliveries go back to the queue when the connection closes. */
static void
drop_link(struct logger_consumer *c, const char *why)
{
    pthread_mutex_lock(&c->link_lock);
    struct logger_amqp *a = c->link;
    c->link = NULL;
    pthread_mutex_unlock(&c->link_lock);
    if (a != NULL && stopping(c)) {
        log_info("amqp_link_closed", "reason=\"%s\" unacked=%zu", why, c->n);
    } else if (a != NULL) {
        log_warn("amqp_link_closed", "reason=\"%s\" unacked=%zu", why, c->n);
    }
    logger_amqp_close(a);
    SET(c, amqp_up, false);
    clear_items(c);
}

/*
 * Validates a delivery as it arrives, so the round knows how many events it holds. A batch with
 * invalid events keeps its valid ones and a reason: it is dead-lettered after they are stored.
 */
static void
parse_item(struct logger_consumer *c, struct item *it)
{
    char why[256];
    enum logger_message_status st = LOGGER_MESSAGE_BAD;
    if (it->msg.oversize) {
        snprintf(why, sizeof(why), "larger than max_event_bytes (%lld)", c->conf->max_event_bytes);
        it->m = (struct logger_message){0};
    } else {
        st = logger_message_parse(it->msg.body, it->msg.len, &it->m, why, sizeof(why));
    }
    it->unusable = st == LOGGER_MESSAGE_BAD;
    it->why = st == LOGGER_MESSAGE_OK ? NULL : xstrdup(why);
    c->held += it->m.n;
    BUMP(c, events_received, it->m.count);
}

/*
 * Adds deliveries until want of them or want_events valid events are held, or none is ready;
 * the first may wait first_wait_ms. A message is taken whole, so one batch may pass want_events.
 */
static int
collect(struct logger_consumer *c, int first_wait_ms, size_t want, size_t want_events, char *err,
        size_t errlen)
{
    int wait = first_wait_ms;
    while (c->n < want && c->held < want_events && c->n < c->cap) {
        struct logger_amqp_msg msg;
        int rc = logger_amqp_next(c->link, wait, &msg, err, errlen);
        if (rc < 0) {
            return -1;
        }
        if (rc == 0) {
            break;
        }
        struct item *it = &c->items[c->n++];
        *it = (struct item){.msg = msg};
        parse_item(c, it);
        BUMP(c, received, 1);
        wait = 0;
    }
    return 0;
}

static int
dead_letter(struct logger_consumer *c, struct item *it, const char *why, char *err, size_t errlen)
{
    /* The body is not logged: it may hold codes and user data. */
    log_warn("message_dead_lettered", "reason=\"%s\" bytes=%zu redelivered=%d queue=%s", why,
             it->msg.len, it->msg.redelivered, c->rmq->amqp_queue);
    it->settled = true;
    BUMP(c, dead_lettered, 1);
    if (logger_amqp_reject(c->link, it->msg.tag) != 0) {
        snprintf(err, errlen, "reject failed: connection lost");
        return -1;
    }
    return 0;
}

/* The deliveries with nothing to store go to the dead-letter queue now. */
static int
screen(struct logger_consumer *c, char *err, size_t errlen)
{
    for (size_t i = 0; i < c->n; i++) {
        struct item *it = &c->items[i];
        if (it->unusable && !it->settled && dead_letter(c, it, it->why, err, errlen) != 0) {
            return -1;
        }
    }
    return 0;
}

/* Lines up the valid events of the unsettled deliveries for one insert. */
static size_t
gather(struct logger_consumer *c)
{
    if (c->held > c->evs_cap) {
        c->evs_cap = c->held;
        c->evs = xrealloc(c->evs, c->evs_cap * sizeof(*c->evs));
        c->slots = xrealloc(c->slots, c->evs_cap * sizeof(*c->slots));
        c->outcome = xrealloc(c->outcome, c->evs_cap);
    }
    size_t k = 0;
    for (size_t i = 0; i < c->round; i++) {
        const struct item *it = &c->items[i];
        for (size_t e = 0; !it->settled && e < it->m.n; e++) {
            c->evs[k] = it->m.events[e];
            c->slots[k++] = (struct slot){i, e};
        }
    }
    return k;
}

/* The first insert of a round, run on a thread of its own while the consumer reads ahead. */
struct insert_job {
    struct logger_consumer *c;
    size_t k;
    int rc;
    int done; /* atomic */
    char why[256];
};

static void *
insert_main(void *arg)
{
    struct insert_job *j = arg;
    j->rc =
        logger_mongo_insert(j->c->store, j->c->evs, j->k, j->c->outcome, j->why, sizeof(j->why));
    __atomic_store_n(&j->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

/*
 * While the round's insert runs, takes (and parses) the next round's deliveries that are already
 * here, up to insert_batch of them or of their events: the store writes one round while the
 * consumer reads and validates the next, where it used to wait for the store and the store for
 * it. It never waits for a delivery. Nothing read ahead is acknowledged before its own round is
 * stored.
 */
static int
read_ahead(struct logger_consumer *c, size_t round_held, const struct insert_job *j, char *err,
           size_t errlen)
{
    size_t batch = (size_t)c->conf->insert_batch;
    while (!__atomic_load_n(&j->done, __ATOMIC_ACQUIRE) && !stopping(c) &&
           c->n - c->round < batch && c->held - round_held < batch && c->n < c->cap) {
        struct logger_amqp_msg msg;
        int rc = logger_amqp_next(c->link, 0, &msg, err, errlen);
        if (rc <= 0) {
            return rc;
        }
        struct item *it = &c->items[c->n++];
        *it = (struct item){.msg = msg};
        parse_item(c, it);
        BUMP(c, received, 1);
    }
    return 0;
}

/* Inserts until MongoDB answers, holding the deliveries (and servicing the link) meanwhile. */
static int
insert_held(struct logger_consumer *c, size_t *k, char *err, size_t errlen)
{
    backoff_reset(&c->bo);
    *k = gather(c);
    if (*k == 0) {
        return 0;
    }
    struct insert_job job = {.c = c, .k = *k};
    /* A full round means a backlog: read ahead then. A round the queue could not fill (a
     * trickle of events) is inserted here, without a thread. */
    size_t batch = (size_t)c->conf->insert_batch, round_held = c->held; /* all held is the round */
    pthread_t t;
    if ((c->round >= batch || round_held >= batch) &&
        pthread_create(&t, NULL, insert_main, &job) == 0) {
        int rc = read_ahead(c, round_held, &job, err, errlen);
        pthread_join(t, NULL);
        if (rc != 0) {
            return -1; /* the link is gone: every delivery held here comes again */
        }
    } else {
        insert_main(&job);
    }
    if (job.rc == LOGGER_MONGO_OK) {
        return 0;
    }
    /* MongoDB did not answer: the round waits it out, and what was read ahead or arrives
     * meanwhile joins it. */
    for (int rc = job.rc; rc != LOGGER_MONGO_OK;) {
        BUMP(c, store_errors, 1);
        SET(c, store_up, false);
        if (c->paused_at == 0) {
            c->paused_at = time_mono_ms();
            SET(c, paused, true);
            log_warn("consumer_paused", "reason=\"%s\" held=%zu", job.why, *k);
        }
        if (stopping(c)) {
            snprintf(err, errlen, "stopping while MongoDB is unavailable: %.180s", job.why);
            return -1;
        }
        /* Waiting on the link keeps heartbeats going; the prefetch window caps what arrives. */
        int wait_ms = backoff_next(&c->bo);
        int64_t until = time_mono_ms() + wait_ms;
        for (int64_t left = wait_ms; left > 0 && !stopping(c); left = until - time_mono_ms()) {
            if (c->n >= c->cap) { /* the broker sends no more: nothing to read but beats */
                nap(c, (int)left);
                break;
            }
            if (collect(c, (int)left, c->cap, SIZE_MAX, err, errlen) != 0) {
                return -1;
            }
        }
        if (screen(c, err, errlen) != 0) {
            return -1;
        }
        c->round = c->n;
        *k = gather(c);
        if (*k == 0) {
            return 0;
        }
        rc = logger_mongo_insert(c->store, c->evs, *k, c->outcome, job.why, sizeof(job.why));
    }
    return 0;
}

/*
 * Dead-letters the messages that hold an invalid event or one MongoDB would not take (their
 * other events are stored by now), then acknowledges the rest of the round.
 */
static int
settle(struct logger_consumer *c, size_t k, char *err, size_t errlen)
{
    uint64_t max_tag = 0;
    for (size_t j = 0; j < k; j++) {
        struct item *it = &c->items[c->slots[j].item];
        unsigned char o = c->outcome[j];
        if (o == LOGGER_INSERT_REFUSED || o == LOGGER_INSERT_CONFLICT) {
            /* A conflict: another event holds this _id; keep this one for inspection. */
            const char *why = o == LOGGER_INSERT_REFUSED
                                  ? "MongoDB refused the document"
                                  : "another event with different content holds this _id";
            if (it->why == NULL && it->m.batch) {
                char buf[256];
                snprintf(buf, sizeof(buf), "events[%zu]: %s", c->slots[j].ev, why);
                it->why = xstrdup(buf);
            } else if (it->why == NULL) {
                it->why = xstrdup(why);
            }
        } else {
            BUMP(c, stored, o == LOGGER_INSERT_STORED);
            BUMP(c, duplicates, o == LOGGER_INSERT_DUPLICATE);
        }
    }
    for (size_t i = 0; i < c->round; i++) {
        struct item *it = &c->items[i];
        if (it->why != NULL && !it->settled && dead_letter(c, it, it->why, err, errlen) != 0) {
            return -1;
        }
    }
    for (size_t i = 0; i < c->round; i++) {
        if (!c->items[i].settled && c->items[i].msg.tag > max_tag) {
            max_tag = c->items[i].msg.tag;
        }
    }
    if (k > 0 && c->conf->test_ack_delay_ms > 0) {
        log_info("consumer_ack_delayed", "events=%zu delay_ms=%lld", k, c->conf->test_ack_delay_ms);
        struct timespec ts = {(time_t)(c->conf->test_ack_delay_ms / 1000),
                              (long)(c->conf->test_ack_delay_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    failpoint("logger_after_insert_before_ack");
    /* Every delivery up to max_tag belongs to this round and is stored or already rejected
     * (those read ahead came later: their tags are higher). */
    if (max_tag > 0 && logger_amqp_ack(c->link, max_tag, true) != 0) {
        snprintf(err, errlen, "ack failed: connection lost");
        return -1;
    }
    return 0;
}

/* One round: screen, insert (waiting out a MongoDB outage), settle, forget. */
static int
process(struct logger_consumer *c, char *err, size_t errlen)
{
    size_t k = 0;
    c->round = c->n;
    if (screen(c, err, errlen) != 0 || insert_held(c, &k, err, errlen) != 0) {
        return -1;
    }
    if (c->paused_at != 0) {
        log_info("consumer_resumed", "paused_ms=%lld", (long long)(time_mono_ms() - c->paused_at));
        c->paused_at = 0;
        SET(c, paused, false);
    }
    if (k > 0) {
        SET(c, store_up, true);
        BUMP(c, batches, 1);
    }
    if (settle(c, k, err, errlen) != 0) {
        return -1;
    }
    retire_round(c);
    return 0;
}

/* Graceful end: no new deliveries, store and acknowledge those already here, close. */
static void
finish(struct logger_consumer *c)
{
    char err[256];
    if (c->link == NULL) {
        return;
    }
    if (logger_amqp_cancel(c->link, err, sizeof(err)) != 0 ||
        collect(c, 0, c->cap, SIZE_MAX, err, sizeof(err)) != 0) {
        drop_link(c, err);
        return;
    }
    while (c->n > 0) { /* a round, then whatever was read ahead while it was stored */
        if (process(c, err, sizeof(err)) != 0) {
            drop_link(c, err);
            return;
        }
    }
    drop_link(c, "stopping");
}

static void *
consumer_main(void *arg)
{
    struct logger_consumer *c = arg;
    bool ready = false;
    char err[256];
    log_set_role("logger");
    backoff_reset(&c->bo);
    while (!stopping(c)) {
        /* Consume only once the store answers: a delivery we cannot store would sit unacked. */
        if (!ready) {
            if (ensure_store(c) != 0) {
                backoff(c);
                continue;
            }
            ready = true;
            backoff_reset(&c->bo);
        }
        if (c->link == NULL) {
            if (open_link(c) != 0) {
                backoff(c);
                continue;
            }
            backoff_reset(&c->bo);
        }
        /* A round ends at insert_batch deliveries or events, whichever comes first. */
        size_t batch = (size_t)c->conf->insert_batch;
        if (collect(c, c->n > 0 ? 0 : IDLE_WAIT_MS, batch, batch, err, sizeof(err)) != 0 ||
            (c->n > 0 && process(c, err, sizeof(err)) != 0)) {
            drop_link(c, err);
        }
    }
    finish(c);
    loop_post(c->loop, c->on_exit, c->arg);
    return NULL;
}

struct logger_consumer *
logger_consumer_new(const struct logger_conf *conf, const struct rmq_conf *rmq,
                    struct logger_mongo *store, struct loop *loop, loop_fn on_ready,
                    loop_fn on_exit, void *arg)
{
    struct logger_consumer *c = xcalloc(1, sizeof(*c));
    backoff_init(&c->bo, BACKOFF_MIN_MS, BACKOFF_MAX_MS);
    c->conf = conf;
    c->rmq = rmq;
    c->store = store;
    c->loop = loop;
    c->on_ready = on_ready;
    c->on_exit = on_exit;
    c->arg = arg;
    c->cap = (size_t)conf->amqp_prefetch;
    c->items = xcalloc(c->cap, sizeof(*c->items));
    pthread_mutex_init(&c->link_lock, NULL);
    if (pthread_create(&c->thread, NULL, consumer_main, c) != 0) {
        log_error("thread_failed", "what=logger_consumer");
        pthread_mutex_destroy(&c->link_lock);
        free(c->items);
        free(c);
        return NULL;
    }
    return c;
}

void
logger_consumer_stop(struct logger_consumer *c)
{
    __atomic_store_n(&c->stop, 1, __ATOMIC_RELEASE);
}

void
logger_consumer_free(struct logger_consumer *c)
{
    if (c == NULL) {
        return;
    }
    logger_consumer_stop(c);
    /* A forced shutdown may find the thread blocked writing to a stalled broker. */
    pthread_mutex_lock(&c->link_lock);
    if (c->link != NULL) {
        logger_amqp_interrupt(c->link);
    }
    pthread_mutex_unlock(&c->link_lock);
    pthread_join(c->thread, NULL);
    clear_items(c);
    free(c->items);
    free(c->evs);
    free(c->slots);
    free(c->outcome);
    pthread_mutex_destroy(&c->link_lock);
    free(c);
}

void
logger_consumer_stats(const struct logger_consumer *c, struct logger_consumer_stats *out)
{
    out->received = __atomic_load_n(&c->st.received, __ATOMIC_RELAXED);
    out->events_received = __atomic_load_n(&c->st.events_received, __ATOMIC_RELAXED);
    out->stored = __atomic_load_n(&c->st.stored, __ATOMIC_RELAXED);
    out->duplicates = __atomic_load_n(&c->st.duplicates, __ATOMIC_RELAXED);
    out->dead_lettered = __atomic_load_n(&c->st.dead_lettered, __ATOMIC_RELAXED);
    out->batches = __atomic_load_n(&c->st.batches, __ATOMIC_RELAXED);
    out->store_errors = __atomic_load_n(&c->st.store_errors, __ATOMIC_RELAXED);
    out->reconnects = __atomic_load_n(&c->st.reconnects, __ATOMIC_RELAXED);
    out->amqp_up = __atomic_load_n(&c->st.amqp_up, __ATOMIC_RELAXED);
    out->store_up = __atomic_load_n(&c->st.store_up, __ATOMIC_RELAXED);
    out->paused = __atomic_load_n(&c->st.paused, __ATOMIC_RELAXED);
}

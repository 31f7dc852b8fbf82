/*
 * The logger role: stores audit events in MongoDB (from the RabbitMQ consumer and from
 * log.append) and answers reports (log.query, log.stats) over the NestJS TCP transport.
 * MongoDB work runs on worker threads; replies are sent from the loop when a job is done.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "consumer.h"
#include "core_conf.h"
#include "event.h"
#include "health.h"
#include "json.h"
#include "log.h"
#include "logger_conf.h"
#include "loop.h"
#include "metrics.h"
#include "mongo.h"
#include "query.h"
#include "rmq_conf.h"
#include "role.h"
#include "rpc_server.h"
#include "workers.h"

#define APPEND_MAX 500   /* events per log.append */
#define DRAIN_POLL_MS 20 /* how often a stopping role checks for in-flight work */

struct logger {
    struct role_ctx *ctx;             /* borrowed from main */
    struct loop *loop;                /* borrowed */
    const struct logger_conf *conf;   /* borrowed, frozen */
    const struct core_conf *core;     /* borrowed, frozen */
    const struct rmq_conf *rmq;       /* borrowed, frozen */
    struct logger_mongo *store;       /* owned */
    struct logger_workers *workers;   /* owned */
    struct logger_consumer *consumer; /* owned */
    struct rpc_server *rpc;           /* owned */
    struct health *health;            /* owned */
    struct metrics *metrics;          /* borrowed process-wide registry */
    struct event *drain_timer;        /* owned while stopping */
    bool ready;                       /* the store answered once: indexes exist */
    bool stopping;                    /* stop requested */
    bool consumer_exited;             /* the consumer thread has finished */
    uint64_t append_stored;           /* events stored through log.append */
};

/* A report or append in flight on a worker thread. */
struct job {
    struct logger *lg;             /* borrowed */
    struct rpc_call *call;         /* finished by the done callback */
    int kind;                      /* JOB_* */
    cJSON **events;                /* append: owned canonical events */
    unsigned char *outcome;        /* append: per event */
    size_t n;                      /* append: number of events */
    struct logger_query query;     /* query */
    struct logger_stats_req stats; /* stats */
    cJSON *result;                 /* query/stats: owned reply */
    int status;                    /* a logger_mongo_status */
    char err[256];                 /* why, when status is not OK */
};

enum { JOB_APPEND, JOB_QUERY, JOB_STATS };

static void job_done(void *arg);

/* ---- jobs ---- */

static void
job_work(void *arg)
{
    struct job *j = arg;
    switch (j->kind) {
    case JOB_APPEND:
        j->status = logger_mongo_insert(j->lg->store, (const cJSON *const *)j->events, j->n,
                                        j->outcome, j->err, sizeof(j->err));
        break;
    case JOB_QUERY:
        j->status = logger_mongo_find(j->lg->store, &j->query, &j->result, j->err, sizeof(j->err));
        break;
    case JOB_STATS:
        j->status = logger_mongo_stats(j->lg->store, &j->stats, &j->result, j->err, sizeof(j->err));
        break;
    }
}

static void
job_free(struct job *j)
{
    for (size_t i = 0; i < j->n; i++) {
        cJSON_Delete(j->events[i]);
    }
    free(j->events);
    free(j->outcome);
    cJSON_Delete(j->result);
    free(j);
}

static void
reply_append(struct job *j)
{
    size_t stored = 0, dups = 0, refused = SIZE_MAX;
    cJSON *conflicts = cJSON_CreateArray();
    for (size_t i = 0; i < j->n; i++) {
        stored += j->outcome[i] == LOGGER_INSERT_STORED;
        dups += j->outcome[i] == LOGGER_INSERT_DUPLICATE;
        if (j->outcome[i] == LOGGER_INSERT_CONFLICT) {
            const cJSON *id = cJSON_GetObjectItem(j->events[i], "_id");
            log_error("event_id_conflict", "id=%.60s reason=\"another event holds this id\"",
                      cJSON_GetStringValue(id));
            cJSON_AddItemToArray(conflicts, cJSON_Duplicate(id, 1));
        }
        if (j->outcome[i] == LOGGER_INSERT_REFUSED && refused == SIZE_MAX) {
            refused = i;
        }
    }
    j->lg->append_stored += stored;
    metrics_add(j->lg->metrics, "chanced_logger_events_stored_total", "source=\"rpc\"",
                (double)stored);
    metrics_add(j->lg->metrics, "chanced_logger_events_duplicate_total", "source=\"rpc\"",
                (double)dups);
    metrics_add(j->lg->metrics, "chanced_logger_events_conflict_total", "source=\"rpc\"",
                (double)cJSON_GetArraySize(conflicts));
    if (refused != SIZE_MAX) {
        /* Validated events should never be refused: this is our failure, not the caller's. */
        cJSON_Delete(conflicts);
        log_error("append_refused", "index=%zu reason=\"%s\"", refused, j->err);
        rpc_reply_error(j->call, "internal",
                        "the store refused event %zu (%s); the others "
                        "were stored",
                        refused, j->err);
        return;
    }
    cJSON *r = cJSON_CreateObject();
    cJSON_AddNumberToObject(r, "stored", (double)stored);
    cJSON_AddNumberToObject(r, "duplicates", (double)dups);
    cJSON_AddItemToObject(r, "conflicts", conflicts);
    rpc_reply(j->call, r);
}

static void
job_done(void *arg)
{
    struct job *j = arg;
    if (j->status == LOGGER_MONGO_UNAVAILABLE) {
        log_warn("store_unavailable", "cmd=%s reason=\"%s\"", rpc_call_cmd(j->call), j->err);
        rpc_reply_error(j->call, "unavailable",
                        "MongoDB is unavailable; nothing was changed, "
                        "retry later");
    } else if (j->status == LOGGER_MONGO_FAILED) {
        log_error("store_failed", "cmd=%s reason=\"%s\"", rpc_call_cmd(j->call), j->err);
        rpc_reply_error(j->call, "internal", "the store failed: %s", j->err);
    } else if (j->kind == JOB_APPEND) {
        reply_append(j);
    } else {
        rpc_reply(j->call, j->result);
        j->result = NULL;
    }
    job_free(j);
}

static struct job *
job_new(struct logger *lg, struct rpc_call *call, int kind)
{
    struct job *j = xcalloc(1, sizeof(*j));
    j->lg = lg;
    j->call = call;
    j->kind = kind;
    return j;
}

/* ---- handlers ---- */

static void
on_append(struct rpc_call *call, const cJSON *data, void *arg)
{
    static const char *const fields[] = {"events", NULL};
    struct logger *lg = arg;
    char err[256];
    if (json_check_fields(data, fields, err, sizeof(err)) != 0) {
        rpc_reply_error(call, "bad_request", "%s", err);
        return;
    }
    const cJSON *events = cJSON_GetObjectItemCaseSensitive(data, "events");
    int n = cJSON_IsArray(events) ? cJSON_GetArraySize(events) : 0;
    if (n < 1 || n > APPEND_MAX) {
        rpc_reply_error(call, "bad_request", "field 'events' must be an array of 1 to %d events",
                        APPEND_MAX);
        return;
    }
    struct job *j = job_new(lg, call, JOB_APPEND);
    j->events = xcalloc((size_t)n, sizeof(*j->events));
    j->outcome = xcalloc((size_t)n, 1);
    for (const cJSON *e = events->child; e; e = e->next) {
        /* Check every event before storing any: a bad one means nothing is stored. */
        if ((j->events[j->n] = logger_event_normalise(e, err, sizeof(err))) == NULL) {
            rpc_reply_error(call, "bad_request", "events[%zu]: %s", j->n, err);
            job_free(j);
            return;
        }
        const char *id = cJSON_GetStringValue(cJSON_GetObjectItem(j->events[j->n], "_id"));
        if (strncmp(id, LOGGER_GATEWAY_ID_PREFIX, strlen(LOGGER_GATEWAY_ID_PREFIX)) != 0) {
            rpc_reply_error(call, "bad_request",
                            "events[%zu]: field '_id' must start with '%s' (log.append is the "
                            "gateways' namespace)",
                            j->n, LOGGER_GATEWAY_ID_PREFIX);
            j->n++; /* job_free frees it with the others */
            job_free(j);
            return;
        }
        j->n++;
    }
    logger_workers_submit(lg->workers, job_work, job_done, j);
}

static void
on_query(struct rpc_call *call, const cJSON *data, void *arg)
{
    struct logger *lg = arg;
    struct job *j = job_new(lg, call, JOB_QUERY);
    if (logger_query_parse(data, &j->query, j->err, sizeof(j->err)) != 0) {
        rpc_reply_error(call, "bad_request", "%s", j->err);
        job_free(j);
        return;
    }
    logger_workers_submit(lg->workers, job_work, job_done, j);
}

static void
on_stats(struct rpc_call *call, const cJSON *data, void *arg)
{
    struct logger *lg = arg;
    struct job *j = job_new(lg, call, JOB_STATS);
    if (logger_stats_parse(data, &j->stats, j->err, sizeof(j->err)) != 0) {
        rpc_reply_error(call, "bad_request", "%s", j->err);
        job_free(j);
        return;
    }
    logger_workers_submit(lg->workers, job_work, job_done, j);
}

static const struct rpc_route routes[] = {
    {"log.append", on_append},
    {"log.query", on_query},
    {"log.stats", on_stats},
};

/* ---- health and metrics ---- */

static bool
is_ready(void *arg, char *why, size_t whylen)
{
    struct logger *lg = arg;
    struct logger_consumer_stats st;
    logger_consumer_stats(lg->consumer, &st);
    const char *reason = lg->stopping   ? "draining"
                         : !lg->ready   ? "mongodb and rabbitmq not reached yet"
                         : !st.store_up ? "mongodb unreachable"
                         : !st.amqp_up  ? "rabbitmq unreachable"
                                        : NULL;
    snprintf(why, whylen, "%s", reason ? reason : "");
    return reason == NULL;
}

/* The consumer counts with atomics on its thread; copy them into the registry when scraped. */
static void
collect_metrics(struct metrics *m, void *arg)
{
    struct logger *lg = arg;
    struct logger_consumer_stats st;
    logger_consumer_stats(lg->consumer, &st);
    metrics_set(m, "chanced_logger_messages_received_total", "", (double)st.received);
    metrics_set(m, "chanced_logger_events_received_total", "", (double)st.events_received);
    metrics_set(m, "chanced_logger_events_stored_total", "source=\"amqp\"", (double)st.stored);
    metrics_set(m, "chanced_logger_events_duplicate_total", "source=\"amqp\"",
                (double)st.duplicates);
    metrics_set(m, "chanced_logger_dead_lettered_total", "", (double)st.dead_lettered);
    metrics_set(m, "chanced_logger_insert_batches_total", "", (double)st.batches);
    metrics_set(m, "chanced_logger_store_errors_total", "", (double)st.store_errors);
    metrics_set(m, "chanced_logger_amqp_connects_total", "", (double)st.reconnects);
    metrics_set(m, "chanced_logger_consumer_paused", "", st.paused);
    metrics_set(m, "chanced_dependency_up", "role=\"logger\",dependency=\"mongodb\"", st.store_up);
    metrics_set(m, "chanced_dependency_up", "role=\"logger\",dependency=\"rabbitmq\"", st.amqp_up);
}

static void
describe_metrics(struct metrics *m)
{
    metrics_describe(m, "chanced_dependency_up", METRICS_GAUGE,
                     "1 while the role reaches the dependency.");
    metrics_describe(m, "chanced_logger_messages_received_total", METRICS_COUNTER,
                     "Audit messages taken from RabbitMQ (log.event or log.events).");
    metrics_describe(m, "chanced_logger_events_received_total", METRICS_COUNTER,
                     "Audit events carried by the messages taken from RabbitMQ (a log.events "
                     "message up to 1000; an unparseable message none).");
    metrics_describe(m, "chanced_logger_events_stored_total", METRICS_COUNTER,
                     "Audit events inserted into MongoDB, by source (amqp, rpc).");
    metrics_describe(m, "chanced_logger_events_duplicate_total", METRICS_COUNTER,
                     "Audit events that were already stored (redeliveries); acknowledged.");
    metrics_describe(m, "chanced_logger_events_conflict_total", METRICS_COUNTER,
                     "log.append events whose _id a different event already holds.");
    metrics_describe(
        m, "chanced_logger_dead_lettered_total", METRICS_COUNTER,
        "Messages rejected to the dead-letter queue (unparseable, or holding an invalid "
        "or refused event).");
    metrics_describe(m, "chanced_logger_insert_batches_total", METRICS_COUNTER,
                     "Insert round trips from the queue consumer that succeeded.");
    metrics_describe(m, "chanced_logger_store_errors_total", METRICS_COUNTER,
                     "Insert attempts from the queue consumer that failed and were retried.");
    metrics_describe(m, "chanced_logger_amqp_connects_total", METRICS_COUNTER,
                     "RabbitMQ connections opened by the consumer.");
    metrics_describe(m, "chanced_logger_consumer_paused", METRICS_GAUGE,
                     "1 while the consumer holds a batch until MongoDB answers again.");
}

/* ---- lifecycle ---- */

static void
on_consumer_ready(void *arg)
{
    struct logger *lg = arg;
    if (!lg->ready) {
        lg->ready = true;
        role_ready(lg->ctx);
        role_status(lg->ctx, "serving");
    }
}

static void
on_consumer_exit(void *arg)
{
    struct logger *lg = arg;
    lg->consumer_exited = true;
}

static void
on_drain(evutil_socket_t fd, short what, void *arg)
{
    struct logger *lg = arg;
    UNUSED(fd);
    UNUSED(what);
    if (lg->consumer_exited && logger_workers_busy(lg->workers) == 0 &&
        rpc_server_inflight(lg->rpc) == 0) {
        event_free(lg->drain_timer);
        lg->drain_timer = NULL;
        log_info("logger_drained", "append_stored=%llu", (unsigned long long)lg->append_stored);
        role_done(lg->ctx);
    }
}

static void
logger_free(void *state)
{
    struct logger *lg = state;
    if (lg == NULL) {
        return;
    }
    if (lg->drain_timer) {
        event_free(lg->drain_timer);
    }
    rpc_server_free(lg->rpc);
    health_free(lg->health);
    if (lg->consumer) {
        metrics_off_collect(lg->metrics, collect_metrics, lg);
    }
    logger_consumer_free(lg->consumer);
    logger_workers_free(lg->workers);
    logger_mongo_free(lg->store);
    free(lg);
}

static void *
logger_start(struct role_ctx *ctx)
{
    char err[512];
    struct logger *lg = xcalloc(1, sizeof(*lg));
    lg->ctx = ctx;
    lg->loop = role_loop(ctx);
    lg->conf = conf_module_data(role_conf(ctx), "logger");
    lg->core = conf_module_data(role_conf(ctx), "core");
    lg->rmq = conf_module_data(role_conf(ctx), "rmq");
    lg->metrics = role_metrics(ctx);
    describe_metrics(lg->metrics);
    lg->store = logger_mongo_new(lg->conf->mongo_url, (int)lg->conf->mongo_timeout_ms,
                                 (int)lg->conf->store_workers + 2, (int)lg->conf->store_workers,
                                 err, sizeof(err));
    if (lg->store == NULL) {
        log_error("logger_start_failed", "reason=\"%s\"", err);
        goto fail;
    }
    lg->workers = logger_workers_new(lg->loop, (int)lg->conf->store_workers);
    struct rpc_server_opts opts = {
        .listen = lg->conf->logger_listen,
        .metrics = lg->metrics,
        .role = "logger",
        .loopback_only = role_all(ctx),
    };
    rpc_server_opts_from_core(&opts, lg->core); /* frame limits, per-peer caps, rpc_tls_* */
    lg->rpc = rpc_server_new(lg->loop, &opts, routes, ARRAY_SIZE(routes), lg, err, sizeof(err));
    if (lg->rpc == NULL) {
        log_error("logger_start_failed", "reason=\"%s\"", err);
        goto fail;
    }
    /* Each role serves its own health port, --role=all included (logger_health_listen). */
    lg->health = health_new(lg->loop, lg->conf->logger_health_listen, lg->metrics, is_ready, lg,
                            err, sizeof(err));
    if (lg->health == NULL) {
        log_error("logger_start_failed", "reason=\"%s\"", err);
        goto fail;
    }
    lg->consumer = logger_consumer_new(lg->conf, lg->rmq, lg->store, lg->loop, on_consumer_ready,
                                       on_consumer_exit, lg);
    if (lg->consumer == NULL) {
        goto fail;
    }
    metrics_on_collect(lg->metrics, collect_metrics, lg);
    log_info("logger_started", "listen=%s health=%s store=%s queue=%s", lg->conf->logger_listen,
             lg->conf->logger_health_listen, logger_mongo_namespace(lg->store),
             lg->rmq->amqp_queue);
    return lg;
fail:
    logger_free(lg);
    return NULL;
}

static void
logger_stop(void *state)
{
    struct logger *lg = state;
    lg->stopping = true;
    rpc_server_stop_accepting(lg->rpc);
    logger_consumer_stop(lg->consumer);
    lg->drain_timer = loop_timer(lg->loop, DRAIN_POLL_MS, true, on_drain, lg);
}

const struct role role_logger = {
    .name = "logger",
    .conf = &logger_conf_module,
    .start = logger_start,
    .stop = logger_stop,
    .free = logger_free,
    .command = NULL,
    .command_help = NULL,
    .health_key = "logger_health_listen",
    .rpc_listen_key = "logger_listen",
};

/*
 * Helpers for the logger figures of test/bench/bench.py (`make bench` builds build/logger_tool
 * with the system's libmongoc and librabbitmq):
 *
 *   logger_tool store   MONGO_URL N BATCH [WRITERS]   insert N audit-shaped documents into
 *                                            the URL's database directly (insert_many of BATCH,
 *                                            unordered, journaled, the logger's indexes) from
 *                                            WRITERS threads (default 1; the logger has
 *                                            store_workers, 4): the store's own bulk-insert
 *                                            rate, printed as "docs_per_s=<x>"
 *   logger_tool publish AMQP_URL QUEUE N     declare the logger's queue (quorum, dead-lettered
 *                                            to QUEUE.dlx: the logger's own arguments, so its
 *                                            declaration matches) and fill it with N events,
 *                                            persistent, confirmed in rounds of 1000
 *   logger_tool drain   AMQP_URL QUEUE N     consume N messages as the logger does (prefetch
 *                                            2000, ack every 500) without storing them: the
 *                                            broker's own delivery rate for that queue
 */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <mongoc/mongoc.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The document the logger writes for one code.assigned event, derived fields included. */
static bson_t *
make_doc(long i, long long ts)
{
    char id[64], code[16], user[16], msg[160];
    snprintf(id, sizeof(id), "code.assigned:c%ld:bench-%ld", 1 + i % 10, i);
    snprintf(code, sizeof(code), "BENCH%07ld", i % 10000000);
    snprintf(user, sizeof(user), "u%ld", i % 1000);
    snprintf(msg, sizeof(msg),
             "user user%ld received code BENCH0\xe2\x80\xa6 (category %ld, "
             "12,345 Toman)",
             i % 1000, 1 + i % 10);
    return BCON_NEW("_id", BCON_UTF8(id), "ts", BCON_INT64(ts), "_at", BCON_DATE_TIME(ts),
                    "service", BCON_UTF8("chance"), "type", BCON_UTF8("code.assigned"), "actor",
                    "{", "id", BCON_UTF8(user), "username", BCON_UTF8(user), "role",
                    BCON_UTF8("user"), "}", "subject", "{", "category", BCON_INT64(1 + i % 10),
                    "code", BCON_UTF8(code), "user_id", BCON_UTF8(user), "username",
                    BCON_UTF8(user), "claim_id", BCON_UTF8(id), "}", "data", "{", "reward",
                    BCON_INT64(12345), "}", "message", BCON_UTF8(msg), "_users", "[",
                    BCON_UTF8(user), "]", "_cats", "[", BCON_INT64(1 + i % 10), "]");
}

struct store_job {
    mongoc_client_pool_t *pool;
    const char *dbname;
    long n, batch;
    long next; /* atomic: first document of the next batch to insert */
    int failed;
};

/* One of the store's writers: takes batches until none is left. */
static void *
store_worker(void *arg)
{
    struct store_job *job = arg;
    bson_error_t e;
    mongoc_client_t *client = mongoc_client_pool_pop(job->pool);
    mongoc_collection_t *coll = mongoc_client_get_collection(client, job->dbname, "events");
    mongoc_write_concern_t *wc = mongoc_write_concern_new();
    mongoc_write_concern_set_journal(wc, true);
    bson_t opts = BSON_INITIALIZER;
    BSON_APPEND_BOOL(&opts, "ordered", false);
    mongoc_write_concern_append(wc, &opts);
    bson_t **docs = calloc((size_t)job->batch, sizeof(*docs));
    long long ts = 1767225600000LL;
    for (;;) {
        long first = __atomic_fetch_add(&job->next, job->batch, __ATOMIC_RELAXED);
        if (first >= job->n) {
            break;
        }
        long k = job->n - first < job->batch ? job->n - first : job->batch;
        for (long j = 0; j < k; j++) {
            docs[j] = make_doc(first + j, ts + first + j);
        }
        bool ok =
            mongoc_collection_insert_many(coll, (const bson_t **)docs, (size_t)k, &opts, NULL, &e);
        for (long j = 0; j < k; j++) {
            bson_destroy(docs[j]);
        }
        if (!ok) {
            fprintf(stderr, "store: insert_many: %s\n", e.message);
            __atomic_store_n(&job->failed, 1, __ATOMIC_RELAXED);
            break;
        }
    }
    free(docs);
    bson_destroy(&opts);
    mongoc_write_concern_destroy(wc);
    mongoc_collection_destroy(coll);
    mongoc_client_pool_push(job->pool, client);
    return NULL;
}

static int
store(const char *url, long n, long batch, int writers)
{
    bson_error_t e;
    mongoc_init();
    mongoc_uri_t *uri = mongoc_uri_new_with_error(url, &e);
    if (uri == NULL || writers < 1 || writers > 64) {
        fprintf(stderr, "store: %s\n", uri ? "1 to 64 writers" : e.message);
        return 2;
    }
    mongoc_client_pool_t *pool = mongoc_client_pool_new(uri);
    mongoc_client_pool_max_size(pool, (uint32_t)writers + 1);
    const char *dbname = mongoc_uri_get_database(uri);
    struct store_job job = {pool, dbname ? dbname : "bench", n, batch, 0, 0};
    mongoc_client_t *client = mongoc_client_pool_pop(pool);
    mongoc_database_t *db = mongoc_client_get_database(client, job.dbname);
    bson_t *cmd = BCON_NEW(
        "createIndexes", BCON_UTF8("events"), "indexes", "[", "{", "key", "{", "ts", BCON_INT32(-1),
        "_id", BCON_INT32(-1), "}", "name", BCON_UTF8("ts_id"), "}", "{", "key", "{", "type",
        BCON_INT32(1), "ts", BCON_INT32(-1), "}", "name", BCON_UTF8("type_ts"), "}", "{", "key",
        "{", "_users", BCON_INT32(1), "ts", BCON_INT32(-1), "}", "name", BCON_UTF8("users_ts"), "}",
        "{", "key", "{", "_cats", BCON_INT32(1), "ts", BCON_INT32(-1), "}", "name",
        BCON_UTF8("cats_ts"), "}", "{", "key", "{", "subject.code", BCON_INT32(1), "ts",
        BCON_INT32(-1), "}", "name", BCON_UTF8("code_ts"), "}", "]");
    bool ok = mongoc_database_write_command_with_opts(db, cmd, NULL, NULL, &e);
    bson_destroy(cmd);
    mongoc_database_destroy(db);
    mongoc_client_pool_push(pool, client);
    if (!ok) {
        fprintf(stderr, "store: createIndexes: %s\n", e.message);
        return 2;
    }
    pthread_t *threads = calloc((size_t)writers, sizeof(*threads));
    double t0 = now_s();
    for (int i = 0; i < writers; i++) {
        pthread_create(&threads[i], NULL, store_worker, &job);
    }
    for (int i = 0; i < writers; i++) {
        pthread_join(threads[i], NULL);
    }
    double dt = now_s() - t0;
    free(threads);
    mongoc_client_pool_destroy(pool);
    mongoc_uri_destroy(uri);
    mongoc_cleanup();
    if (job.failed) {
        return 2;
    }
    printf("docs=%ld writers=%d seconds=%.3f docs_per_s=%.0f\n", n, writers, dt, n / dt);
    return 0;
}

static int
check(amqp_connection_state_t c, const char *what)
{
    amqp_rpc_reply_t r = amqp_get_rpc_reply(c);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        fprintf(stderr, "publish: %s failed (reply type %d)\n", what, r.reply_type);
        return -1;
    }
    return 0;
}

static amqp_connection_state_t
open_conn(const char *url)
{
    struct amqp_connection_info ci;
    char *u = strdup(url);
    amqp_default_connection_info(&ci);
    if (amqp_parse_url(u, &ci) != AMQP_STATUS_OK) {
        return NULL;
    }
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(c);
    if (amqp_socket_open(s, ci.host, ci.port) != AMQP_STATUS_OK ||
        amqp_login(c, *ci.vhost ? ci.vhost : "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, ci.user,
                   ci.password)
                .reply_type != AMQP_RESPONSE_NORMAL) {
        return NULL;
    }
    amqp_channel_open(c, 1);
    free(u);
    return c;
}

static int
drain(const char *url, const char *queue, long n)
{
    amqp_connection_state_t c = open_conn(url);
    if (c == NULL) {
        fprintf(stderr, "drain: cannot connect\n");
        return 2;
    }
    amqp_basic_qos(c, 1, 0, 2000, 0);
    amqp_basic_consume(c, 1, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, 0, 0,
                       amqp_empty_table);
    if (check(c, "consume") != 0) {
        return 2;
    }
    double t0 = 0;
    for (long got = 0; got < n;) {
        amqp_envelope_t env;
        amqp_maybe_release_buffers(c);
        if (amqp_consume_message(c, &env, NULL, 0).reply_type != AMQP_RESPONSE_NORMAL) {
            fprintf(stderr, "drain: consume failed\n");
            return 2;
        }
        if (t0 == 0) {
            t0 = now_s();
        }
        if (++got % 500 == 0 || got == n) {
            amqp_basic_ack(c, 1, env.delivery_tag, 1);
        }
        amqp_destroy_envelope(&env);
    }
    double dt = now_s() - t0;
    printf("drained=%ld seconds=%.3f msgs_per_s=%.0f\n", n, dt, n / dt);
    amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
    return 0;
}

static int
publish(const char *url, const char *queue, long n)
{
    struct amqp_connection_info ci;
    char *u = strdup(url), dlx[256];
    amqp_default_connection_info(&ci);
    if (amqp_parse_url(u, &ci) != AMQP_STATUS_OK) {
        fprintf(stderr, "publish: bad URL\n");
        return 2;
    }
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(c);
    if (amqp_socket_open(s, ci.host, ci.port) != AMQP_STATUS_OK) {
        fprintf(stderr, "publish: cannot connect\n");
        return 2;
    }
    amqp_rpc_reply_t r = amqp_login(c, *ci.vhost ? ci.vhost : "/", 0, 131072, 0,
                                    AMQP_SASL_METHOD_PLAIN, ci.user, ci.password);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        fprintf(stderr, "publish: login failed\n");
        return 2;
    }
    amqp_channel_open(c, 1);
    snprintf(dlx, sizeof(dlx), "%s.dlx", queue);
    amqp_table_entry_t args[2] = {
        {amqp_cstring_bytes("x-queue-type"),
         {AMQP_FIELD_KIND_UTF8, {.bytes = amqp_cstring_bytes("quorum")}}},
        {amqp_cstring_bytes("x-dead-letter-exchange"),
         {AMQP_FIELD_KIND_UTF8, {.bytes = amqp_cstring_bytes(dlx)}}},
    };
    amqp_table_t table = {2, args};
    amqp_queue_declare(c, 1, amqp_cstring_bytes(queue), 0, 1, 0, 0, table);
    amqp_confirm_select(c, 1);
    if (check(c, "declare/confirm") != 0) {
        return 2;
    }
    amqp_basic_properties_t p = {0};
    p._flags = AMQP_BASIC_DELIVERY_MODE_FLAG;
    p.delivery_mode = 2;
    long long ts = 1767225600000LL;
    double t0 = now_s();
    for (long i = 0; i < n;) {
        long round = 0;
        for (; round < 1000 && i < n; round++, i++) {
            char body[700];
            int len = snprintf(body, sizeof(body),
                               "{\"pattern\":{\"cmd\":\"log.event\"},\"data\":{\"_id\":\"code."
                               "assigned:c%ld:bench-%ld\","
                               "\"ts\":%lld,\"service\":\"chance\",\"type\":\"code.assigned\","
                               "\"actor\":{\"id\":\"u%ld\","
                               "\"username\":\"user%ld\",\"role\":\"user\"},\"subject\":{"
                               "\"category\":%ld,\"code\":"
                               "\"BENCH%07ld\",\"user_id\":\"u%ld\",\"username\":\"user%ld\","
                               "\"claim_id\":\"bench-%ld\"},"
                               "\"data\":{\"reward\":12345},\"message\":\"user user%ld received "
                               "code BENCH0\\u2026 "
                               "(category %ld, 12,345 Toman)\"}}",
                               1 + i % 10, i, ts + i, i % 1000, i % 1000, 1 + i % 10, i % 10000000,
                               i % 1000, i % 1000, i, i % 1000, 1 + i % 10);
            amqp_bytes_t b = {(size_t)len, body};
            if (amqp_basic_publish(c, 1, amqp_empty_bytes, amqp_cstring_bytes(queue), 0, 0, &p,
                                   b) != AMQP_STATUS_OK) {
                fprintf(stderr, "publish: failed\n");
                return 2;
            }
        }
        /* wait for the round's confirms (multiple acks may cover it in fewer frames) */
        for (long acked = 0; acked < round;) {
            amqp_frame_t f;
            if (amqp_simple_wait_frame(c, &f) != AMQP_STATUS_OK) {
                fprintf(stderr, "publish: connection lost\n");
                return 2;
            }
            if (f.frame_type == AMQP_FRAME_METHOD && f.payload.method.id == AMQP_BASIC_ACK_METHOD) {
                amqp_basic_ack_t *a = f.payload.method.decoded;
                long tag = (long)a->delivery_tag;
                acked = a->multiple ? tag - (i - round) : acked + 1;
            }
        }
        amqp_maybe_release_buffers(c);
    }
    printf("published=%ld seconds=%.3f\n", n, now_s() - t0);
    amqp_channel_close(c, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
    free(u);
    return 0;
}

int
main(int argc, char **argv)
{
    if ((argc == 5 || argc == 6) && strcmp(argv[1], "store") == 0) {
        return store(argv[2], atol(argv[3]), atol(argv[4]), argc == 6 ? atoi(argv[5]) : 1);
    }
    if (argc == 5 && strcmp(argv[1], "drain") == 0) {
        return drain(argv[2], argv[3], atol(argv[4]));
    }
    if (argc == 5 && strcmp(argv[1], "publish") == 0) {
        return publish(argv[2], argv[3], atol(argv[4]));
    }
    fprintf(stderr,
            "usage: logger_tool store MONGO_URL N BATCH [WRITERS] | publish AMQP_URL QUEUE N | "
            "drain AMQP_URL QUEUE N\n");
    return 64;
}

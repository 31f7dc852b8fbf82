/* The logger's MongoDB adapter: libmongoc calls and error translation (BSON <-> cJSON: bsonjson.c). */
#include "mongo.h"

#include <mongoc/mongoc.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bsonjson.h"
#include "json.h"
#include "log.h"
#include "query.h"

#define COLLECTION "events"
#define TTL_INDEX "_at_ttl"
#define STATS_ROWS_MAX 50000 /* buckets x types in one log.stats reply */
#define PART_MIN 64          /* events: a smaller insert is not split (logger_mongo_insert) */
#define PARTS_MAX 16

struct logger_mongo {
    mongoc_uri_t *uri;          /* owned, parsed mongo_url */
    mongoc_client_pool_t *pool; /* owned; thread-safe */
    mongoc_write_concern_t *wc; /* owned: the URL's write concern with journaling forced on;
                                   encoded at creation, read-only after */
    int parts;                  /* an insert is split over at most this many connections */
    char db[64];                /* database from the URL (default "chanced") */
    char ns[96];                /* "db.events" for logs */
};

/* Server error codes that mean "try again later" rather than "this request is wrong". */
static bool
transient_code(uint32_t code)
{
    static const uint32_t codes[] = {6,     7,     50,    89,    91,    189, 262, 9001,
                                     10107, 11600, 11602, 13435, 13436, 64,  100};
    for (size_t i = 0; i < ARRAY_SIZE(codes); i++) {
        if (codes[i] == code) {
            return true;
        }
    }
    return false;
}

/* Library errors are translated here, once: transport trouble is "unavailable", a refusal is not. */
static int
classify(const bson_error_t *e, char *err, size_t errlen)
{
    snprintf(err, errlen, "%s", e->message);
    if ((e->domain == MONGOC_ERROR_SERVER || e->domain == MONGOC_ERROR_WRITE_CONCERN) &&
        !transient_code(e->code)) {
        return LOGGER_MONGO_FAILED;
    }
    return LOGGER_MONGO_UNAVAILABLE;
}

static void
on_driver_log(mongoc_log_level_t level, const char *domain, const char *message, void *arg)
{
    UNUSED(arg);
    if (level <= MONGOC_LOG_LEVEL_WARNING) {
        log_warn("mongoc_log", "domain=%s message=\"%.300s\"", domain, message);
    } else if (level <= MONGOC_LOG_LEVEL_INFO) {
        log_debug("mongoc_log", "domain=%s message=\"%.300s\"", domain, message);
    }
}

static void
default_int_option(mongoc_uri_t *uri, const char *name, int value)
{
    if (!mongoc_uri_has_option(uri, name)) {
        mongoc_uri_set_option_as_int32(uri, name, value);
    }
}

struct logger_mongo *
logger_mongo_new(const char *url, int timeout_ms, int max_clients, int insert_parts, char *err,
                 size_t errlen)
{
    bson_error_t e;
    mongoc_init();
    mongoc_log_set_handler(on_driver_log, NULL);
    struct logger_mongo *m = xcalloc(1, sizeof(*m));
    m->parts = insert_parts < 1 ? 1 : insert_parts > PARTS_MAX ? PARTS_MAX : insert_parts;
    m->uri = mongoc_uri_new_with_error(url, &e);
    if (m->uri == NULL) {
        snprintf(err, errlen, "mongo_url: %s", e.message);
        goto fail;
    }
    /* The driver's defaults (a 5-minute socket timeout) would hide an outage for minutes. */
    default_int_option(m->uri, MONGOC_URI_SOCKETTIMEOUTMS, timeout_ms);
    default_int_option(m->uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, timeout_ms);
    default_int_option(m->uri, MONGOC_URI_CONNECTTIMEOUTMS, timeout_ms < 5000 ? timeout_ms : 5000);
    const char *db = mongoc_uri_get_database(m->uri);
    snprintf(m->db, sizeof(m->db), "%s", db && *db ? db : "chanced");
    snprintf(m->ns, sizeof(m->ns), "%s.%s", m->db, COLLECTION);
    /* An acknowledged audit event survives a primary's failover: majority and journaled,
     * unless the URL asks for something else (w=1 for a lone server, say). */
    m->wc = mongoc_write_concern_copy(mongoc_uri_get_write_concern(m->uri));
    if (mongoc_write_concern_get_w(m->wc) == MONGOC_WRITE_CONCERN_W_DEFAULT) {
        mongoc_write_concern_set_wmajority(m->wc, timeout_ms);
    }
    mongoc_write_concern_set_journal(m->wc, true);
    /* The first mongoc_write_concern_append encodes the write concern into the object itself; do
     * it here, before the consumer thread and the workers share m->wc, so they only read it. */
    {
        bson_t scratch = BSON_INITIALIZER;
        mongoc_write_concern_append(m->wc, &scratch);
        bson_destroy(&scratch);
    }
    m->pool = mongoc_client_pool_new(m->uri);
    if (m->pool == NULL) {
        snprintf(err, errlen, "mongo_url: cannot create a client pool");
        goto fail;
    }
    mongoc_client_pool_set_error_api(m->pool, MONGOC_ERROR_API_VERSION_2);
    mongoc_client_pool_set_appname(m->pool, "chanced-logger");
    mongoc_client_pool_max_size(m->pool, (uint32_t)max_clients);
    return m;
fail:
    logger_mongo_free(m);
    return NULL;
}

void
logger_mongo_free(struct logger_mongo *m)
{
    if (m == NULL) {
        return;
    }
    if (m->pool) {
        mongoc_client_pool_destroy(m->pool);
    }
    mongoc_write_concern_destroy(m->wc);
    mongoc_uri_destroy(m->uri);
    free(m);
    mongoc_cleanup();
}

const char *
logger_mongo_namespace(const struct logger_mongo *m)
{
    return m->ns;
}

static long long
iter_number(const bson_t *doc, const char *path)
{
    bson_iter_t it, f;
    if (bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, path, &f) &&
        BSON_ITER_HOLDS_NUMBER(&f)) {
        return bson_iter_as_int64(&f);
    }
    return 0;
}

/* ---- commands ---- */

static int
run_command(struct logger_mongo *m, const bson_t *cmd, bool write, bson_t *reply, char *err,
            size_t errlen)
{
    bson_error_t e;
    mongoc_client_t *client = mongoc_client_pool_pop(m->pool);
    mongoc_database_t *db = mongoc_client_get_database(client, m->db);
    bool ok;
    if (write) {
        bson_t opts = BSON_INITIALIZER;
        mongoc_write_concern_append(m->wc, &opts);
        ok = mongoc_database_write_command_with_opts(db, cmd, &opts, reply, &e);
        bson_destroy(&opts);
    } else {
        ok = mongoc_database_command_with_opts(db, cmd, NULL, NULL, reply, &e);
    }
    mongoc_database_destroy(db);
    mongoc_client_pool_push(m->pool, client);
    return ok ? LOGGER_MONGO_OK : classify(&e, err, errlen);
}

int
logger_mongo_ping(struct logger_mongo *m, char *err, size_t errlen)
{
    bson_t *cmd = BCON_NEW("ping", BCON_INT32(1));
    bson_t reply;
    int rc = run_command(m, cmd, false, &reply, err, errlen);
    bson_destroy(&reply);
    bson_destroy(cmd);
    return rc;
}

static void
add_index(bson_t *arr, uint32_t i, const char *name, const bson_t *key, long long ttl_s)
{
    char buf[16];
    const char *k;
    bson_t spec;
    bson_uint32_to_string(i, &k, buf, sizeof(buf));
    bson_append_document_begin(arr, k, -1, &spec);
    bson_append_document(&spec, "key", -1, key);
    bson_append_utf8(&spec, "name", -1, name, -1);
    if (ttl_s > 0) {
        bson_append_int64(&spec, "expireAfterSeconds", -1, ttl_s);
    }
    bson_append_document_end(arr, &spec);
}

/* createIndexes as a command: libmongoc 1.23 has no create_indexes_with_opts helper. */
static int
create_indexes(struct logger_mongo *m, long long ttl_s, char *err, size_t errlen)
{
    bson_t *keys[] = {
        BCON_NEW("ts", BCON_INT32(-1), "_id", BCON_INT32(-1)),
        BCON_NEW("type", BCON_INT32(1), "ts", BCON_INT32(-1)),
        BCON_NEW("_users", BCON_INT32(1), "ts", BCON_INT32(-1)),
        BCON_NEW("_cats", BCON_INT32(1), "ts", BCON_INT32(-1)),
        BCON_NEW("subject.code", BCON_INT32(1), "ts", BCON_INT32(-1)),
        BCON_NEW("_at", BCON_INT32(1)),
    };
    static const char *const names[] = {"ts_id",   "type_ts", "users_ts",
                                        "cats_ts", "code_ts", TTL_INDEX};
    size_t n = ttl_s > 0 ? ARRAY_SIZE(keys) : ARRAY_SIZE(keys) - 1;
    bson_t cmd = BSON_INITIALIZER, arr, reply;
    bson_append_utf8(&cmd, "createIndexes", -1, COLLECTION, -1);
    bson_append_array_begin(&cmd, "indexes", -1, &arr);
    for (size_t i = 0; i < n; i++) {
        add_index(&arr, (uint32_t)i, names[i], keys[i], i == ARRAY_SIZE(keys) - 1 ? ttl_s : 0);
    }
    bson_append_array_end(&cmd, &arr);
    int rc = run_command(m, &cmd, true, &reply, err, errlen);
    bson_destroy(&reply);
    bson_destroy(&cmd);
    for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
        bson_destroy(keys[i]);
    }
    return rc;
}

static int
drop_ttl_index(struct logger_mongo *m, char *err, size_t errlen)
{
    bson_t *cmd = BCON_NEW("dropIndexes", BCON_UTF8(COLLECTION), "index", BCON_UTF8(TTL_INDEX));
    bson_t reply;
    int rc = run_command(m, cmd, true, &reply, err, errlen);
    long long code = iter_number(&reply, "code");
    /* NamespaceNotFound, IndexNotFound: already in the wanted state. */
    if (rc == LOGGER_MONGO_FAILED && (code == 26 || code == 27)) {
        rc = LOGGER_MONGO_OK;
    }
    bson_destroy(&reply);
    bson_destroy(cmd);
    return rc;
}

int
logger_mongo_ensure(struct logger_mongo *m, long long retention_days, char *err, size_t errlen)
{
    long long ttl_s = retention_days * 86400;
    int rc = create_indexes(m, ttl_s, err, errlen);
    if (rc == LOGGER_MONGO_FAILED && ttl_s > 0) {
        /* The retention changed: an index's options cannot be altered in place everywhere
         * (collMod is MongoDB-only), so replace the TTL index. */
        log_info("mongo_ttl_replace", "ns=%s retention_days=%lld reason=\"%s\"", m->ns,
                 retention_days, err);
        if ((rc = drop_ttl_index(m, err, errlen)) == LOGGER_MONGO_OK) {
            rc = create_indexes(m, ttl_s, err, errlen);
        }
    } else if (rc == LOGGER_MONGO_OK && ttl_s == 0) {
        rc = drop_ttl_index(m, err, errlen);
    }
    return rc;
}

/* ---- insert ---- */

static int
read_write_errors(const bson_t *reply, size_t n, unsigned char *outcome, char *err, size_t errlen)
{
    bson_iter_t it, arr;
    int rc = LOGGER_MONGO_OK;
    if (iter_number(reply, "writeConcernErrors.0.code") != 0) {
        snprintf(err, errlen, "write concern not satisfied (code %lld)",
                 iter_number(reply, "writeConcernErrors.0.code"));
        return LOGGER_MONGO_UNAVAILABLE;
    }
    if (!bson_iter_init_find(&it, reply, "writeErrors") || !BSON_ITER_HOLDS_ARRAY(&it) ||
        !bson_iter_recurse(&it, &arr)) {
        return LOGGER_MONGO_UNAVAILABLE; /* failed without a per-document reason */
    }
    while (bson_iter_next(&arr)) {
        bson_iter_t doc, f;
        long long index = -1, code = 0;
        if (!BSON_ITER_HOLDS_DOCUMENT(&arr) || !bson_iter_recurse(&arr, &doc)) {
            continue;
        }
        while (bson_iter_next(&doc)) {
            if (strcmp(bson_iter_key(&doc), "index") == 0 && BSON_ITER_HOLDS_NUMBER(&doc)) {
                index = bson_iter_as_int64(&doc);
            } else if (strcmp(bson_iter_key(&doc), "code") == 0 && BSON_ITER_HOLDS_NUMBER(&doc)) {
                code = bson_iter_as_int64(&doc);
            } else if (strcmp(bson_iter_key(&doc), "errmsg") == 0 && BSON_ITER_HOLDS_UTF8(&doc) &&
                       code != 11000) {
                f = doc;
                snprintf(err, errlen, "%s", bson_iter_utf8(&f, NULL));
            }
        }
        if (index < 0 || (size_t)index >= n) {
            return LOGGER_MONGO_UNAVAILABLE;
        }
        if (code == 11000) {
            outcome[index] = LOGGER_INSERT_DUPLICATE;
        } else if (transient_code((uint32_t)code)) {
            rc = LOGGER_MONGO_UNAVAILABLE;
        } else {
            outcome[index] = LOGGER_INSERT_REFUSED;
        }
    }
    return rc;
}

/* The content digest stored as _h: SHA-256 of the canonical event's compact JSON. */
static void
digest_of(const cJSON *ev, char out[65])
{
    char *text = cJSON_PrintUnformatted(ev);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (text == NULL || EVP_Digest(text, strlen(text), md, &len, EVP_sha256(), NULL) != 1) {
        abort(); /* out of memory */
    }
    for (unsigned i = 0; i < len && i < 32; i++) {
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    }
    free(text);
}

/*
 * Duplicates whose stored digest differs are conflicts: a different event holds the id (a
 * forged or pre-inserted one). Documents stored without a digest count as the same event.
 * Leaves outcomes alone if the read fails (they stay duplicates; logged).
 */
static void
find_conflicts(mongoc_collection_t *coll, const cJSON *const *events, char (*digests)[65], size_t n,
               unsigned char *outcome)
{
    bson_t filter = BSON_INITIALIZER, in, ids;
    size_t ndup = 0;
    BSON_APPEND_DOCUMENT_BEGIN(&filter, "_id", &in);
    BSON_APPEND_ARRAY_BEGIN(&in, "$in", &ids);
    for (size_t i = 0; i < n; i++) {
        if (outcome[i] == LOGGER_INSERT_DUPLICATE) {
            char key[16];
            const char *k;
            bson_uint32_to_string((uint32_t)ndup++, &k, key, sizeof(key));
            BSON_APPEND_UTF8(&ids, k, cJSON_GetStringValue(cJSON_GetObjectItem(events[i], "_id")));
        }
    }
    bson_append_array_end(&in, &ids);
    bson_append_document_end(&filter, &in);
    if (ndup == 0) {
        bson_destroy(&filter);
        return;
    }
    bson_t *opts = BCON_NEW("projection", "{", "_h", BCON_INT32(1), "}");
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &filter, opts, NULL);
    const bson_t *doc;
    bson_error_t e;
    while (mongoc_cursor_next(cur, &doc)) {
        bson_iter_t it;
        const char *id = NULL, *h = NULL;
        if (bson_iter_init_find(&it, doc, "_id") && BSON_ITER_HOLDS_UTF8(&it)) {
            id = bson_iter_utf8(&it, NULL);
        }
        if (bson_iter_init_find(&it, doc, "_h") && BSON_ITER_HOLDS_UTF8(&it)) {
            h = bson_iter_utf8(&it, NULL);
        }
        for (size_t i = 0; id && h && i < n; i++) {
            const char *mine = cJSON_GetStringValue(cJSON_GetObjectItem(events[i], "_id"));
            if (outcome[i] == LOGGER_INSERT_DUPLICATE && strcmp(mine, id) == 0 &&
                strcmp(digests[i], h) != 0) {
                outcome[i] = LOGGER_INSERT_CONFLICT;
            }
        }
    }
    if (mongoc_cursor_error(cur, &e)) {
        log_warn("mongo_conflict_check_failed", "reason=\"%s\"", e.message);
    }
    mongoc_cursor_destroy(cur);
    bson_destroy(opts);
    bson_destroy(&filter);
}

/* One insert_many of part of a round, on a connection of its own (logger_mongo_insert). */
static int
insert_part(struct logger_mongo *m, const cJSON *const *events, size_t n, unsigned char *outcome,
            char *err, size_t errlen)
{
    bson_error_t e;
    bson_t **docs = xcalloc(n, sizeof(*docs));
    char(*digests)[65] = xcalloc(n, sizeof(*digests));
    bson_t opts = BSON_INITIALIZER, reply;
    for (size_t i = 0; i < n; i++) {
        digest_of(events[i], digests[i]);
        docs[i] = bsonjson_event(events[i], digests[i]);
        outcome[i] = LOGGER_INSERT_STORED;
    }
    BSON_APPEND_BOOL(&opts, "ordered", false); /* one duplicate must not stop the rest */
    mongoc_write_concern_append(m->wc, &opts);
    mongoc_client_t *client = mongoc_client_pool_pop(m->pool);
    mongoc_collection_t *coll = mongoc_client_get_collection(client, m->db, COLLECTION);
    bool ok = mongoc_collection_insert_many(coll, (const bson_t **)docs, n, &opts, &reply, &e);
    int rc = LOGGER_MONGO_OK;
    if (!ok) {
        char why[256];
        rc = read_write_errors(&reply, n, outcome, why, sizeof(why));
        if (rc != LOGGER_MONGO_OK) {
            snprintf(err, errlen, "%s", e.message);
            rc = LOGGER_MONGO_UNAVAILABLE;
        } else {
            snprintf(err, errlen, "%s", why);
            find_conflicts(coll, events, digests, n, outcome);
        }
    }
    mongoc_collection_destroy(coll);
    mongoc_client_pool_push(m->pool, client);
    bson_destroy(&reply);
    bson_destroy(&opts);
    for (size_t i = 0; i < n; i++) {
        bson_destroy(docs[i]);
    }
    free(docs);
    free(digests);
    return rc;
}

struct part {
    struct logger_mongo *m;
    const cJSON *const *events; /* borrowed: this part's slice of the round */
    size_t n;
    unsigned char *outcome; /* this part's slice */
    int rc;
    char err[256];
};

static void *
part_main(void *arg)
{
    struct part *p = arg;
    p->rc = insert_part(p->m, p->events, p->n, p->outcome, p->err, sizeof(p->err));
    return NULL;
}

/*
 * A round of a few hundred events is split into parts written at once, each with its own pooled
 * connection: one part's digests and BSON are built while the store writes another's, and the
 * store takes them in parallel (a single insert_many left the consumer idle for the store's
 * reply, and the store idle while the consumer encoded; the logger reached ~55% of the store's
 * own rate). Unordered inserts are not ordered across documents anyway, so the split changes
 * no outcome; a part that fails makes the whole round unknown, as one failed insert did (the
 * retry finds the other parts' documents as duplicates). No part holds a connection while
 * waiting for another, so a pool smaller than the parts only serialises them.
 */
int
logger_mongo_insert(struct logger_mongo *m, const cJSON *const *events, size_t n,
                    unsigned char *outcome, char *err, size_t errlen)
{
    size_t parts = n / PART_MIN;
    if (parts > (size_t)m->parts) {
        parts = (size_t)m->parts;
    }
    if (parts <= 1) {
        return insert_part(m, events, n, outcome, err, errlen);
    }
    struct part p[PARTS_MAX];
    pthread_t t[PARTS_MAX];
    bool started[PARTS_MAX] = {false};
    for (size_t i = 0, at = 0; i < parts; i++) {
        size_t len = n / parts + (i < n % parts ? 1 : 0);
        p[i] = (struct part){m, events + at, len, outcome + at, LOGGER_MONGO_OK, ""};
        at += len;
    }
    for (size_t i = 1; i < parts; i++) {
        started[i] = pthread_create(&t[i], NULL, part_main, &p[i]) == 0;
    }
    part_main(&p[0]);
    for (size_t i = 1; i < parts; i++) {
        if (started[i]) {
            pthread_join(t[i], NULL);
        } else {
            part_main(&p[i]); /* no thread to be had: this part waits its turn */
        }
    }
    int rc = LOGGER_MONGO_OK;
    err[0] = '\0';
    for (size_t i = 0; i < parts; i++) {
        if (p[i].rc != LOGGER_MONGO_OK && rc == LOGGER_MONGO_OK) {
            rc = p[i].rc;
            snprintf(err, errlen, "%s", p[i].err);
        } else if (rc == LOGGER_MONGO_OK && err[0] == '\0' && p[i].err[0]) {
            snprintf(err, errlen, "%s", p[i].err); /* the first write error, for the log */
        }
    }
    return rc;
}

/* ---- reports ---- */

/* Escapes every ASCII punctuation character so user text is matched literally. */
static char *
regex_literal(const char *s)
{
    struct sbuf b = {0};
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x80 && !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
                          (c >= 'A' && c <= 'Z') || c == ' ')) {
            sbuf_append(&b, "\\", 1);
        }
        sbuf_append(&b, s, 1);
    }
    return sbuf_steal(&b);
}

static void
build_filter(const struct logger_query *q, bson_t *filter)
{
    bson_t child, and, alt, cur;
    if (q->has_from || q->has_to) {
        bson_append_document_begin(filter, "ts", -1, &child);
        if (q->has_from) {
            BSON_APPEND_INT64(&child, "$gte", q->from);
        }
        if (q->has_to) {
            BSON_APPEND_INT64(&child, "$lte", q->to);
        }
        bson_append_document_end(filter, &child);
    }
    if (*q->service) {
        BSON_APPEND_UTF8(filter, "service", q->service);
    }
    if (*q->type) {
        BSON_APPEND_UTF8(filter, "type", q->type);
    }
    if (*q->user) {
        BSON_APPEND_UTF8(filter, "_users", q->user);
    }
    if (q->has_category) {
        BSON_APPEND_INT64(filter, "_cats", q->category);
    }
    if (*q->code) {
        BSON_APPEND_UTF8(filter, "subject.code", q->code);
    }
    if (*q->text) {
        char *rx = regex_literal(q->text);
        bson_append_document_begin(filter, "message", -1, &child);
        BSON_APPEND_UTF8(&child, "$regex", rx);
        BSON_APPEND_UTF8(&child, "$options", "i");
        bson_append_document_end(filter, &child);
        free(rx);
    }
    if (q->has_cursor) { /* strictly after (cursor_ts, cursor_id) in (ts desc, _id desc) order */
        bson_append_array_begin(filter, "$and", -1, &and);
        bson_append_document_begin(&and, "0", -1, &child);
        bson_append_array_begin(&child, "$or", -1, &alt);
        bson_append_document_begin(&alt, "0", -1, &cur);
        BCON_APPEND(&cur, "ts", "{", "$lt", BCON_INT64(q->cursor_ts), "}");
        bson_append_document_end(&alt, &cur);
        bson_append_document_begin(&alt, "1", -1, &cur);
        BCON_APPEND(&cur, "ts", BCON_INT64(q->cursor_ts), "_id", "{", "$lt",
                    BCON_UTF8(q->cursor_id), "}");
        bson_append_document_end(&alt, &cur);
        bson_append_array_end(&child, &alt);
        bson_append_document_end(&and, &child);
        bson_append_array_end(filter, &and);
    }
}

static int
cursor_failed(mongoc_cursor_t *cursor, char *err, size_t errlen)
{
    bson_error_t e;
    if (mongoc_cursor_error(cursor, &e)) {
        return classify(&e, err, errlen);
    }
    return LOGGER_MONGO_OK;
}

int
logger_mongo_find(struct logger_mongo *m, const struct logger_query *q, cJSON **page, char *err,
                  size_t errlen)
{
    bson_t filter = BSON_INITIALIZER;
    build_filter(q, &filter);
    bson_t *opts =
        BCON_NEW("sort", "{", "ts", BCON_INT32(-1), "_id", BCON_INT32(-1), "}", "limit",
                 BCON_INT64(q->limit + 1), "projection", "{", "_at", BCON_INT32(0), "_users",
                 BCON_INT32(0), "_cats", BCON_INT32(0), "_h", BCON_INT32(0), "}");
    mongoc_client_t *client = mongoc_client_pool_pop(m->pool);
    mongoc_collection_t *coll = mongoc_client_get_collection(client, m->db, COLLECTION);
    mongoc_cursor_t *cursor = mongoc_collection_find_with_opts(coll, &filter, opts, NULL);
    const bson_t *doc;
    cJSON *items = cJSON_CreateArray();
    int n = 0;
    while (n < q->limit + 1 && mongoc_cursor_next(cursor, &doc)) {
        cJSON_AddItemToArray(items, bsonjson_to_json(doc, true));
        n++;
    }
    int rc = cursor_failed(cursor, err, errlen);
    mongoc_cursor_destroy(cursor);
    mongoc_collection_destroy(coll);
    mongoc_client_pool_push(m->pool, client);
    bson_destroy(opts);
    bson_destroy(&filter);
    if (rc != LOGGER_MONGO_OK) {
        cJSON_Delete(items);
        return rc;
    }
    cJSON *next = cJSON_CreateNull();
    if (n > q->limit) { /* one more than asked: there is a next page after the last kept item */
        cJSON_DeleteItemFromArray(items, q->limit);
        cJSON *last = cJSON_GetArrayItem(items, q->limit - 1);
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(last, "_id");
        const cJSON *ts = cJSON_GetObjectItemCaseSensitive(last, "ts");
        if (cJSON_IsString(id) && cJSON_IsNumber(ts)) {
            char *c = logger_query_cursor(q, (long long)ts->valuedouble, id->valuestring);
            cJSON_Delete(next);
            next = cJSON_CreateString(c);
            free(c);
        }
    }
    *page = cJSON_CreateObject();
    cJSON_AddItemToObject(*page, "items", items);
    cJSON_AddItemToObject(*page, "next_cursor", next);
    return LOGGER_MONGO_OK;
}

/* $match on the range (and type), $group by (ts - ts mod bucket, type), sorted. */
static bson_t *
stats_pipeline(const struct logger_stats_req *s)
{
    bson_t match = BSON_INITIALIZER;
    BCON_APPEND(&match, "ts", "{", "$gte", BCON_INT64(s->from), "$lte", BCON_INT64(s->to), "}");
    if (*s->type) {
        BSON_APPEND_UTF8(&match, "type", s->type);
    }
    bson_t *p = BCON_NEW(
        "pipeline", "[", "{", "$match", BCON_DOCUMENT(&match), "}", "{", "$group", "{", "_id", "{",
        "b", "{", "$subtract", "[", BCON_UTF8("$ts"), "{", "$mod", "[", BCON_UTF8("$ts"),
        BCON_INT64(s->bucket_ms), "]", "}", "]", "}", "t", BCON_UTF8("$type"), "}", "count", "{",
        "$sum", BCON_INT32(1), "}", "reward", "{", "$sum", BCON_UTF8("$data.reward"), "}", "}", "}",
        "{", "$sort", "{", "_id.b", BCON_INT32(1), "_id.t", BCON_INT32(1), "}", "}", "]");
    bson_destroy(&match);
    return p;
}

int
logger_mongo_stats(struct logger_mongo *m, const struct logger_stats_req *s, cJSON **out, char *err,
                   size_t errlen)
{
    bson_t *pipeline = stats_pipeline(s);
    mongoc_client_t *client = mongoc_client_pool_pop(m->pool);
    mongoc_collection_t *coll = mongoc_client_get_collection(client, m->db, COLLECTION);
    mongoc_cursor_t *cursor =
        mongoc_collection_aggregate(coll, MONGOC_QUERY_NONE, pipeline, NULL, NULL);
    const bson_t *doc;
    cJSON *buckets = cJSON_CreateArray();
    int n = 0, rc;
    while (mongoc_cursor_next(cursor, &doc)) {
        if (++n > STATS_ROWS_MAX) {
            break;
        }
        bson_iter_t it, f;
        cJSON *row = cJSON_CreateObject();
        cJSON_AddNumberToObject(row, "start", (double)iter_number(doc, "_id.b"));
        const char *type = "";
        if (bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, "_id.t", &f) &&
            BSON_ITER_HOLDS_UTF8(&f)) {
            type = bson_iter_utf8(&f, NULL);
        }
        cJSON_AddStringToObject(row, "type", type);
        cJSON_AddNumberToObject(row, "count", (double)iter_number(doc, "count"));
        cJSON_AddNumberToObject(row, "reward", (double)iter_number(doc, "reward"));
        cJSON_AddItemToArray(buckets, row);
    }
    rc = cursor_failed(cursor, err, errlen);
    if (rc == LOGGER_MONGO_OK && n > STATS_ROWS_MAX) {
        snprintf(err, errlen, "more than %d buckets; narrow the range", STATS_ROWS_MAX);
        rc = LOGGER_MONGO_FAILED;
    }
    mongoc_cursor_destroy(cursor);
    mongoc_collection_destroy(coll);
    mongoc_client_pool_push(m->pool, client);
    bson_destroy(pipeline);
    if (rc != LOGGER_MONGO_OK) {
        cJSON_Delete(buckets);
        return rc;
    }
    *out = cJSON_CreateObject();
    cJSON_AddItemToObject(*out, "buckets", buckets);
    return LOGGER_MONGO_OK;
}

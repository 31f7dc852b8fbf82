/* standin_check.c -- verifies test/mongo/mongo_standin.py (the MongoDB
 * wire-protocol TEST STAND-IN) against the real MongoDB C driver.
 * Test scaffolding only; not part of chanced.
 *
 * Build and run: `make standin-check` (the suite runs it too).
 * Run (spawns the stand-in itself under /usr/bin/python3, then SIGTERMs it):
 *   build/standin_check [path/to/mongo_standin.py] [port] [uri-options]
 * (uri-options default: socketTimeoutMS=2000&serverSelectionTimeoutMS=2000
 *  &connectTimeoutMS=2000)
 * Prints PASS/FAIL lines; exits 1 if anything failed.
 * Env: MONGO_STANDIN_VERBOSE=1 (stand-in logs every command to stderr),
 *      MONGO_STANDIN_STOP_SECS=N (keep it SIGSTOPped N s, inserting meanwhile).
 */
#define _POSIX_C_SOURCE 200809L
#include <mongoc/mongoc.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int failures;
static pid_t standin_pid = -1;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (cond) {                                                                                \
            printf("PASS ");                                                                       \
        } else {                                                                                   \
            printf("FAIL ");                                                                       \
            failures++;                                                                            \
        }                                                                                          \
        printf(__VA_ARGS__);                                                                       \
        printf("\n");                                                                              \
        fflush(stdout);                                                                            \
    } while (0)

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
msleep(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static void
print_err(const char *what, const bson_error_t *e)
{
    printf("     %s: domain=%u code=%u msg=\"%s\"\n", what, e->domain, e->code, e->message);
}

static void
print_doc(const char *what, const bson_t *b)
{
    char *s = bson_as_canonical_extended_json(b, NULL);
    printf("     %s: %.600s%s\n", what, s, strlen(s) > 600 ? "..." : "");
    bson_free(s);
}

static int
port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    int ok;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

static pid_t
spawn_standin(const char *script, int port)
{
    char portbuf[16];
    pid_t pid;
    snprintf(portbuf, sizeof portbuf, "%d", port);
    pid = fork();
    if (pid == 0) {
        if (getenv("MONGO_STANDIN_VERBOSE"))
            execl("/usr/bin/python3", "/usr/bin/python3", script, "--port", portbuf, "--verbose",
                  (char *)NULL);
        else
            execl("/usr/bin/python3", "/usr/bin/python3", script, "--port", portbuf, (char *)NULL);
        perror("execl /usr/bin/python3");
        _exit(127);
    }
    return pid;
}

/* Debian's libmongoc logs DEBUG lines (e.g. monitor errors) through the
 * default handler; keep WARNING and above, on stderr. */
static void
log_handler(mongoc_log_level_t level, const char *domain, const char *message, void *data)
{
    (void)data;
    if (level <= MONGOC_LOG_LEVEL_WARNING)
        fprintf(stderr, "libmongoc %s: %s: %s\n", mongoc_log_level_str(level), domain, message);
}

/* -------------------------------------------------------------------- */

static bool
run_cmd(mongoc_client_t *c, const char *db, const bson_t *cmd, bson_t *reply, bson_error_t *err)
{
    return mongoc_client_command_simple(c, db, cmd, NULL, reply, err);
}

static void
check_ping(mongoc_client_pool_t *pool)
{
    mongoc_client_t *c = mongoc_client_pool_pop(pool);
    bson_t *cmd = BCON_NEW("ping", BCON_INT32(1));
    bson_t reply;
    bson_error_t err;
    bool ok = run_cmd(c, "admin", cmd, &reply, &err);
    CHECK(ok, "ping");
    if (!ok)
        print_err("ping", &err);
    bson_destroy(&reply);
    bson_destroy(cmd);

    /* server description: wire version */
    {
        mongoc_server_description_t *sd = mongoc_client_get_server_description(c, 1);
        if (sd) {
            const bson_t *hello = mongoc_server_description_hello_response(sd);
            bson_iter_t it;
            int32_t mwv = -1;
            if (bson_iter_init_find(&it, hello, "maxWireVersion"))
                mwv = bson_iter_int32(&it);
            CHECK(mwv == 13 && !strcmp(mongoc_server_description_type(sd), "Standalone"),
                  "handshake: server type %s, maxWireVersion %d",
                  mongoc_server_description_type(sd), mwv);
            mongoc_server_description_destroy(sd);
        } else {
            CHECK(0, "server description available");
        }
    }

    /* unknown command -> 59 CommandNotFound */
    cmd = BCON_NEW("frobnicate", BCON_INT32(1));
    ok = run_cmd(c, "chanced", cmd, &reply, &err);
    CHECK(!ok && err.code == 59, "unknown command -> code %u (%s)", err.code, err.message);
    bson_destroy(&reply);
    bson_destroy(cmd);
    mongoc_client_pool_push(pool, c);
}

static void
check_indexes(mongoc_client_pool_t *pool)
{
    mongoc_client_t *c = mongoc_client_pool_pop(pool);
    mongoc_database_t *db = mongoc_client_get_database(c, "chanced");
    mongoc_collection_t *coll = mongoc_client_get_collection(c, "chanced", "events");
    bson_t reply;
    bson_error_t err;
    bson_iter_t it;
    int i;
    bson_t *cmd = BCON_NEW("createIndexes", BCON_UTF8("events"), "indexes", "[", "{", "key", "{",
                           "code", BCON_INT32(1), "}", "name", BCON_UTF8("code_1"), "unique",
                           BCON_BOOL(true), "sparse", BCON_BOOL(true), "}", "{", "key", "{", "ts",
                           BCON_INT32(1), "}", "name", BCON_UTF8("ts_ttl"), "expireAfterSeconds",
                           BCON_INT32(86400), "}", "{", "key", "{", "type", BCON_INT32(1), "ts",
                           BCON_INT32(-1), "}", "name", BCON_UTF8("type_1_ts_-1"), "}", "]");
    bson_t *opts = BCON_NEW("writeConcern", "{", "w", BCON_INT32(1), "j", BCON_BOOL(true), "}");

    for (i = 0; i < 2; i++) {
        bool ok = mongoc_database_write_command_with_opts(db, cmd, opts, &reply, &err);
        int32_t after = -1;
        if (ok && bson_iter_init_find(&it, &reply, "numIndexesAfter"))
            after = bson_iter_as_int64(&it);
        CHECK(ok && after == 4,
              "createIndexes (unique, TTL, compound) via "
              "mongoc_database_write_command_with_opts, run %d: numIndexesAfter=%d",
              i + 1, after);
        if (!ok)
            print_err("createIndexes", &err);
        if (i == 1)
            print_doc("reply", &reply);
        bson_destroy(&reply);
    }

    /* conflicting options under the same name -> 85/86 */
    {
        bson_t *bad =
            BCON_NEW("createIndexes", BCON_UTF8("events"), "indexes", "[", "{", "key", "{", "code",
                     BCON_INT32(1), "}", "name", BCON_UTF8("code_1"), "}", "]");
        bool ok = mongoc_collection_command_simple(coll, bad, NULL, &reply, &err);
        CHECK(!ok && (err.code == 85 || err.code == 86),
              "createIndexes with conflicting options via "
              "mongoc_collection_command_simple -> code %u",
              err.code);
        bson_destroy(&reply);
        bson_destroy(bad);
    }

    /* listIndexes */
    {
        mongoc_cursor_t *cur = mongoc_collection_find_indexes_with_opts(coll, NULL);
        const bson_t *doc;
        int n = 0, have_unique = 0, have_ttl = 0;
        while (mongoc_cursor_next(cur, &doc)) {
            n++;
            if (bson_iter_init_find(&it, doc, "unique") && bson_iter_as_bool(&it))
                have_unique++;
            if (bson_iter_init_find(&it, doc, "expireAfterSeconds") &&
                bson_iter_as_int64(&it) == 86400)
                have_ttl++;
        }
        CHECK(!mongoc_cursor_error(cur, &err) && n == 4 && have_unique == 1 && have_ttl == 1,
              "listIndexes: %d indexes, unique=%d ttl=%d", n, have_unique, have_ttl);
        mongoc_cursor_destroy(cur);
    }
    bson_destroy(opts);
    bson_destroy(cmd);
    mongoc_collection_destroy(coll);
    mongoc_database_destroy(db);
    mongoc_client_pool_push(pool, c);
}

static const char *types[] = {"claim", "generate", "login"};

static bson_t *
make_event(int id_num, int seq)
{
    char id[32], msg[96];
    bson_t *d;
    snprintf(id, sizeof id, "ev-%04d", id_num);
    snprintf(msg, sizeof msg, "Admin ALICE generated %d codes", seq);
    d = BCON_NEW("_id", BCON_UTF8(id), "ts", BCON_DATE_TIME((int64_t)time(NULL) * 1000 + seq),
                 "seq", BCON_INT64((int64_t)seq), "service", BCON_UTF8("chance"), "type",
                 BCON_UTF8(types[seq % 3]), "actor", "{", "id", BCON_INT64(42), "username",
                 BCON_UTF8("alice"), "role", BCON_UTF8("admin"), "}", "message", BCON_UTF8(msg));
    return d;
}

static void
check_insert_many(mongoc_client_pool_t *pool)
{
    mongoc_client_t *c = mongoc_client_pool_pop(pool);
    mongoc_collection_t *coll = mongoc_client_get_collection(c, "chanced", "events");
    bson_t *docs[500];
    bson_t reply;
    bson_error_t err;
    bson_iter_t it, ai;
    int i, nerr = 0, first_idx = -1, first_code = -1;
    int64_t n_inserted = -1, count;
    bool ok;
    bson_t *opts = BCON_NEW("ordered", BCON_BOOL(false));

    /* 500 docs, ids ev-0000..ev-0474 then ev-0000..ev-0024 again (25 dups) */
    for (i = 0; i < 500; i++)
        docs[i] = make_event(i % 475, i);
    ok = mongoc_collection_insert_many(coll, (const bson_t **)docs, 500, opts, &reply, &err);
    if (bson_iter_init_find(&it, &reply, "insertedCount"))
        n_inserted = bson_iter_as_int64(&it);
    if (bson_iter_init_find(&it, &reply, "writeErrors") && bson_iter_recurse(&it, &ai)) {
        while (bson_iter_next(&ai)) {
            bson_iter_t e;
            if (nerr == 0 && bson_iter_recurse(&ai, &e)) {
                while (bson_iter_next(&e)) {
                    if (!strcmp(bson_iter_key(&e), "index"))
                        first_idx = bson_iter_as_int64(&e);
                    if (!strcmp(bson_iter_key(&e), "code"))
                        first_code = bson_iter_as_int64(&e);
                }
            }
            nerr++;
        }
    }
    print_err("insert_many error", &err);
    CHECK(!ok && err.code == 11000 && strstr(err.message, "E11000 duplicate key error"),
          "insert_many(500, ordered:false) fails with code 11000");
    CHECK(n_inserted == 475 && nerr == 25 && first_idx == 475 && first_code == 11000,
          "insert_many reply: insertedCount=%" PRId64 " writeErrors=%d first index=%d code=%d",
          n_inserted, nerr, first_idx, first_code);
    print_doc("insert_many reply (truncated)", &reply);
    bson_destroy(&reply);
    for (i = 0; i < 500; i++)
        bson_destroy(docs[i]);
    bson_destroy(opts);

    {
        bson_t empty = BSON_INITIALIZER;
        count = mongoc_collection_count_documents(coll, &empty, NULL, NULL, NULL, &err);
        CHECK(count == 475, "count_documents after unordered insert: %" PRId64, count);
    }

    /* ordered:true stops at the first error */
    {
        bson_t *d3[3];
        d3[0] = make_event(900, 900);
        d3[1] = make_event(1, 901); /* dup */
        d3[2] = make_event(902, 902);
        ok = mongoc_collection_insert_many(coll, (const bson_t **)d3, 3, NULL, &reply, &err);
        n_inserted = -1;
        if (bson_iter_init_find(&it, &reply, "insertedCount"))
            n_inserted = bson_iter_as_int64(&it);
        CHECK(!ok && err.code == 11000 && n_inserted == 1,
              "insert_many(ordered:true) stops at dup: insertedCount=%" PRId64, n_inserted);
        bson_destroy(&reply);
        for (i = 0; i < 3; i++)
            bson_destroy(d3[i]);
    }
    mongoc_collection_destroy(coll);
    mongoc_client_pool_push(pool, c);
}

static void
check_insert_one(mongoc_client_pool_t *pool)
{
    mongoc_client_t *c = mongoc_client_pool_pop(pool);
    mongoc_collection_t *coll = mongoc_client_get_collection(c, "chanced", "events");
    mongoc_write_concern_t *wc = mongoc_write_concern_new();
    bson_t opts = BSON_INITIALIZER;
    bson_t reply;
    bson_error_t err;
    bson_oid_t oid;
    bson_t *doc;
    bool ok;

    mongoc_write_concern_set_w(wc, 1);
    mongoc_write_concern_set_journal(wc, true);
    mongoc_write_concern_append(wc, &opts);

    bson_oid_init(&oid, NULL);
    /* every BSON type the app uses */
    doc = BCON_NEW("_id", BCON_UTF8("types-1"), "s", BCON_UTF8("text"), "i32", BCON_INT32(7), "i64",
                   BCON_INT64(7), "big", BCON_INT64(INT64_C(9007199254740993)), "d",
                   BCON_DOUBLE(1.5), "b", BCON_BOOL(true), "nul", BCON_NULL, "sub", "{", "k",
                   BCON_UTF8("v"), "}", "arr", "[", BCON_INT32(1), BCON_UTF8("two"), "]", "when",
                   BCON_DATE_TIME(INT64_C(1700000000123)), "oid", BCON_OID(&oid), "re",
                   BCON_REGEX("^ab", "i"), "code", BCON_UTF8("CODE-XYZ"));
    ok = mongoc_collection_insert_one(coll, doc, &opts, &reply, &err);
    CHECK(ok, "insert_one with writeConcern {w:1, j:true}");
    if (!ok)
        print_err("insert_one", &err);
    bson_destroy(&reply);

    /* read it back and verify types */
    {
        bson_t *f = BCON_NEW("_id", BCON_UTF8("types-1"));
        mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, f, NULL, NULL);
        const bson_t *got;
        bson_iter_t it;
        int good = 0;
        if (mongoc_cursor_next(cur, &got)) {
            struct {
                const char *k;
                bson_type_t t;
            } want[] = {{"s", BSON_TYPE_UTF8},    {"i32", BSON_TYPE_INT32},
                        {"i64", BSON_TYPE_INT64}, {"big", BSON_TYPE_INT64},
                        {"d", BSON_TYPE_DOUBLE},  {"b", BSON_TYPE_BOOL},
                        {"nul", BSON_TYPE_NULL},  {"sub", BSON_TYPE_DOCUMENT},
                        {"arr", BSON_TYPE_ARRAY}, {"when", BSON_TYPE_DATE_TIME},
                        {"oid", BSON_TYPE_OID},   {"re", BSON_TYPE_REGEX}};
            size_t k;
            for (k = 0; k < sizeof want / sizeof want[0]; k++) {
                if (bson_iter_init_find(&it, got, want[k].k) && bson_iter_type(&it) == want[k].t)
                    good++;
                else
                    printf("     type mismatch for %s\n", want[k].k);
            }
            if (bson_iter_init_find(&it, got, "when") &&
                bson_iter_date_time(&it) != INT64_C(1700000000123)) {
                printf("     datetime changed\n");
                good--;
            }
            if (bson_iter_init_find(&it, got, "big") &&
                bson_iter_as_int64(&it) != INT64_C(9007199254740993)) {
                printf("     int64 changed\n");
                good--;
            }
            {
                bson_iter_t first;
                bson_iter_init(&first, got);
                if (!bson_iter_next(&first) || strcmp(bson_iter_key(&first), "_id")) {
                    printf("     _id not first\n");
                    good--;
                }
            }
            CHECK(good == 12,
                  "BSON types round-trip (string,int32,int64,double,bool,"
                  "null,doc,array,datetime,oid,regex) %d/12",
                  good);
        } else {
            CHECK(0, "read back inserted doc");
        }
        mongoc_cursor_destroy(cur);
        bson_destroy(f);
    }

    /* duplicate _id */
    ok = mongoc_collection_insert_one(coll, doc, &opts, &reply, &err);
    CHECK(!ok && err.code == 11000 &&
              strstr(err.message, "E11000 duplicate key error collection: "
                                  "chanced.events index: _id_ dup key: { _id: \"types-1\" }"),
          "insert_one duplicate _id -> 11000");
    print_err("dup _id", &err);
    print_doc("dup _id reply", &reply);
    bson_destroy(&reply);
    bson_destroy(doc);

    /* unique secondary index */
    doc = BCON_NEW("_id", BCON_UTF8("types-2"), "code", BCON_UTF8("CODE-XYZ"));
    ok = mongoc_collection_insert_one(coll, doc, &opts, &reply, &err);
    CHECK(!ok && err.code == 11000 && strstr(err.message, "index: code_1"),
          "insert_one violating unique index code_1 -> 11000");
    print_err("dup code", &err);
    bson_destroy(&reply);
    bson_destroy(doc);

    /* w:0 (unacknowledged, OP_MSG moreToCome) must not wedge the connection */
    {
        mongoc_write_concern_t *w0 = mongoc_write_concern_new();
        bson_t o0 = BSON_INITIALIZER;
        bson_t *f;
        int64_t n;
        mongoc_write_concern_set_w(w0, 0);
        mongoc_write_concern_append(w0, &o0);
        doc = BCON_NEW("_id", BCON_UTF8("w0-1"));
        ok = mongoc_collection_insert_one(coll, doc, &o0, NULL, &err);
        f = BCON_NEW("_id", BCON_UTF8("w0-1"));
        n = mongoc_collection_count_documents(coll, f, NULL, NULL, NULL, &err);
        CHECK(ok && n == 1, "unacknowledged (w:0) insert then read: n=%" PRId64, n);
        bson_destroy(f);
        bson_destroy(doc);
        bson_destroy(&o0);
        mongoc_write_concern_destroy(w0);
    }

    bson_destroy(&opts);
    mongoc_write_concern_destroy(wc);
    mongoc_collection_destroy(coll);
    mongoc_client_pool_push(pool, c);
}

static void
check_find(mongoc_client_pool_t *pool)
{
    mongoc_client_t *c = mongoc_client_pool_pop(pool);
    mongoc_collection_t *coll = mongoc_client_get_collection(c, "chanced", "events");
    bson_t *filter = BCON_NEW("type", BCON_UTF8("claim"), "seq", "{", "$lt", BCON_INT64(475), "}");
    bson_t *opts = BCON_NEW("sort", "{", "seq", BCON_INT32(-1), "}", "limit", BCON_INT64(120),
                            "batchSize", BCON_INT32(50), "projection", "{", "seq", BCON_INT32(1),
                            "type", BCON_INT32(1), "}");
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, filter, opts, NULL);
    const bson_t *doc;
    bson_error_t err;
    bson_iter_t it;
    int n = 0, sorted = 1, saw_cursor = 0, projected = 1;
    int64_t prev = INT64_MAX;

    while (mongoc_cursor_next(cur, &doc)) {
        int64_t s = -1;
        if (n == 0 && mongoc_cursor_get_id(cur) != 0)
            saw_cursor = 1;
        if (bson_iter_init_find(&it, doc, "seq"))
            s = bson_iter_as_int64(&it);
        if (s > prev)
            sorted = 0;
        if (bson_iter_init_find(&it, doc, "message"))
            projected = 0;
        prev = s;
        n++;
    }
    CHECK(!mongoc_cursor_error(cur, &err) && n == 120 && sorted && saw_cursor && projected,
          "find filter/sort/limit/projection, batchSize 50 + getMore: %d docs, "
          "sorted=%d, real cursor=%d, projected=%d",
          n, sorted, saw_cursor, projected);
    mongoc_cursor_destroy(cur);
    bson_destroy(opts);

    /* cursor abandoned early -> killCursors */
    opts = BCON_NEW("batchSize", BCON_INT32(10));
    cur = mongoc_collection_find_with_opts(coll, filter, opts, NULL);
    n = 0;
    while (n < 15 && mongoc_cursor_next(cur, &doc))
        n++;
    CHECK(n == 15 && mongoc_cursor_get_id(cur) != 0 && !mongoc_cursor_error(cur, &err),
          "partial iteration with batchSize 10 (cursor left open, killCursors on destroy)");
    mongoc_cursor_destroy(cur);
    bson_destroy(opts);
    bson_destroy(filter);

    /* case-insensitive $regex, via count_documents (aggregate $match/$group) */
    {
        bson_t *f = BCON_NEW("message", "{", "$regex", BCON_UTF8("alice generated 4"), "$options",
                             BCON_UTF8("i"), "}");
        int64_t cnt = mongoc_collection_count_documents(coll, f, NULL, NULL, NULL, &err);
        bson_t *f2 = BCON_NEW("message", BCON_REGEX("alice generated 4", "i"));
        int64_t cnt2 = mongoc_collection_count_documents(coll, f2, NULL, NULL, NULL, &err);
        /* seq 4, 40-49, 400-474 -> 1 + 10 + 75 = 86 (ids ev-0000.. dups excluded) */
        CHECK(cnt == 86 && cnt2 == 86,
              "$regex with $options:i and BSON regex /.../i: %" PRId64 ", %" PRId64, cnt, cnt2);
        bson_destroy(f);
        bson_destroy(f2);
    }
    {
        int64_t est = mongoc_collection_estimated_document_count(coll, NULL, NULL, NULL, &err);
        CHECK(est == 478, "estimated_document_count: %" PRId64, est);
        if (est < 0)
            print_err("estimated", &err);
    }
    mongoc_collection_destroy(coll);
    mongoc_client_pool_push(pool, c);
}

static void
check_aggregate_update_delete(mongoc_client_pool_t *pool)
{
    mongoc_client_t *c = mongoc_client_pool_pop(pool);
    mongoc_collection_t *coll = mongoc_client_get_collection(c, "chanced", "events");
    bson_t *pipe = BCON_NEW("pipeline", "[", "{", "$match", "{", "service", BCON_UTF8("chance"),
                            "}", "}", "{", "$group", "{", "_id", BCON_UTF8("$type"), "n", "{",
                            "$sum", BCON_INT32(1), "}", "maxSeq", "{", "$max", BCON_UTF8("$seq"),
                            "}", "}", "}", "{", "$sort", "{", "_id", BCON_INT32(1), "}", "}", "]");
    mongoc_cursor_t *cur = mongoc_collection_aggregate(coll, MONGOC_QUERY_NONE, pipe, NULL, NULL);
    const bson_t *doc;
    bson_error_t err;
    bson_iter_t it;
    int64_t total = 0;
    int groups = 0, sorted = 1;
    char prev[32] = "";
    while (mongoc_cursor_next(cur, &doc)) {
        groups++;
        if (bson_iter_init_find(&it, doc, "n"))
            total += bson_iter_as_int64(&it);
        if (bson_iter_init_find(&it, doc, "_id") && BSON_ITER_HOLDS_UTF8(&it)) {
            if (strcmp(prev, bson_iter_utf8(&it, NULL)) > 0)
                sorted = 0;
            bson_strncpy(prev, bson_iter_utf8(&it, NULL), sizeof prev);
        }
        if (groups == 1)
            print_doc("first group", doc);
    }
    /* 475 + ev-0900 = 476 chance events */
    CHECK(!mongoc_cursor_error(cur, &err) && groups == 3 && total == 476 && sorted,
          "aggregate $match/$group/$sort: %d groups, total %" PRId64, groups, total);
    mongoc_cursor_destroy(cur);
    bson_destroy(pipe);

    {
        bson_t *sel = BCON_NEW("type", BCON_UTF8("login"));
        bson_t *upd = BCON_NEW("$set", "{", "seen", BCON_BOOL(true), "}");
        bson_t reply;
        bson_iter_t i2;
        int64_t mod = -1, del = -1;
        bool ok = mongoc_collection_update_many(coll, sel, upd, NULL, &reply, &err);
        if (bson_iter_init_find(&i2, &reply, "modifiedCount"))
            mod = bson_iter_as_int64(&i2);
        bson_destroy(&reply);
        CHECK(ok && mod == 158, "update_many: modifiedCount=%" PRId64, mod);
        ok = mongoc_collection_delete_many(coll, sel, NULL, &reply, &err);
        if (bson_iter_init_find(&i2, &reply, "deletedCount"))
            del = bson_iter_as_int64(&i2);
        bson_destroy(&reply);
        CHECK(ok && del == 158, "delete_many: deletedCount=%" PRId64, del);
        bson_destroy(sel);
        bson_destroy(upd);
    }
    mongoc_collection_destroy(coll);
    mongoc_client_pool_push(pool, c);
}

static bool
insert_marker(mongoc_client_pool_t *pool, const char *id, bson_error_t *err, double *secs)
{
    mongoc_client_t *c = mongoc_client_pool_pop(pool);
    mongoc_collection_t *coll = mongoc_client_get_collection(c, "chanced", "events");
    bson_t *doc = BCON_NEW("_id", BCON_UTF8(id), "service", BCON_UTF8("probe"));
    double t0 = now_s();
    bool ok = mongoc_collection_insert_one(coll, doc, NULL, NULL, err);
    *secs = now_s() - t0;
    bson_destroy(doc);
    mongoc_collection_destroy(coll);
    mongoc_client_pool_push(pool, c);
    return ok;
}

/* kill() only makes SIGSTOP pending: a thread of the stand-in may still answer a request sent
 * right after it. Wait until the kernel reports the process stopped ('T' in /proc/PID/stat). */
static bool
wait_stopped(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    for (double t0 = now_s(); now_s() - t0 < 5.0;) {
        FILE *f = fopen(path, "r");
        size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
        if (f) {
            fclose(f);
        }
        buf[n] = '\0';
        const char *p = strrchr(buf, ')');
        if (p && (p[2] == 'T' || p[2] == 't')) {
            return true;
        }
        msleep(1);
    }
    return false;
}

static void
check_sigstop(mongoc_client_pool_t *pool)
{
    bson_error_t err;
    double secs, t0;
    bool ok;
    int attempt;
    char id[32];

    if (kill(standin_pid, SIGSTOP) != 0) {
        CHECK(0, "SIGSTOP stand-in: %s", strerror(errno));
        return;
    }
    CHECK(wait_stopped(standin_pid), "stand-in reported stopped after SIGSTOP");
    ok = insert_marker(pool, "stopped-1", &err, &secs);
    CHECK(!ok && secs < 5.0, "insert while stand-in SIGSTOPped fails after %.2fs", secs);
    print_err("while stopped #1", &err);
    ok = insert_marker(pool, "stopped-2", &err, &secs);
    CHECK(!ok && secs < 5.0, "second insert while stopped fails after %.2fs", secs);
    print_err("while stopped #2", &err);

    /* MONGO_STANDIN_STOP_SECS=N keeps it stopped ~N s (longer than the
    * driver's 10 s heartbeat) while inserts keep failing fast. */
    {
        const char *hold_env = getenv("MONGO_STANDIN_STOP_SECS");
        double hold = hold_env ? atof(hold_env) : 0, start = now_s(), worst = 0;
        int tries = 0, fails = 0;
        while (now_s() - start < hold) {
            snprintf(id, sizeof id, "held-%d", tries++);
            if (!insert_marker(pool, id, &err, &secs))
                fails++;
            if (secs > worst)
                worst = secs;
        }
        if (hold > 0)
            CHECK(fails == tries && worst < 5.0,
                  "held stopped %.0fs: %d/%d inserts failed, slowest %.2fs", hold, fails, tries,
                  worst);
    }

    kill(standin_pid, SIGCONT);
    t0 = now_s();
    for (attempt = 0;; attempt++) {
        snprintf(id, sizeof id, "after-cont-%d", attempt);
        ok = insert_marker(pool, id, &err, &secs);
        if (ok || now_s() - t0 > 30)
            break;
        msleep(200);
    }
    CHECK(ok, "pool recovers after SIGCONT: insert ok after %.2fs (%d failed attempts)",
          now_s() - t0, attempt);
    if (!ok)
        print_err("after SIGCONT", &err);

    /* The timed-out insert may still have reached the server (it sat in the
    * socket buffer).  Re-sending it must be a duplicate-key no-op or succeed. */
    ok = insert_marker(pool, "stopped-1", &err, &secs);
    CHECK(ok || err.code == 11000, "re-sending the timed-out insert after recovery: %s",
          ok ? "inserted (first attempt was lost)"
             : "duplicate key (first attempt had been applied)");
}

int
main(int argc, char **argv)
{
    const char *script = argc > 1 ? argv[1] : "test/mongo/mongo_standin.py";
    int port = argc > 2 ? atoi(argv[2]) : 27917;
    const char *uri_opts = argc > 3 ? argv[3]
                                    : "socketTimeoutMS=2000&serverSelectionTimeoutMS=2000"
                                      "&connectTimeoutMS=2000";
    char uri_str[256];
    mongoc_uri_t *uri;
    mongoc_client_pool_t *pool;
    bson_error_t err;
    int i, status;
    double t0;

    standin_pid = spawn_standin(script, port);
    for (i = 0; i < 100 && !port_open(port); i++)
        msleep(100);
    CHECK(port_open(port), "stand-in %s listening on 127.0.0.1:%d (pid %d)", script, port,
          (int)standin_pid);
    if (failures)
        return 1;

    mongoc_init();
    mongoc_log_set_handler(log_handler, NULL);
    snprintf(uri_str, sizeof uri_str, "mongodb://127.0.0.1:%d/chanced?%s", port, uri_opts);
    printf("     URI %s\n", uri_str);
    uri = mongoc_uri_new_with_error(uri_str, &err);
    if (!uri) {
        print_err("URI", &err);
        return 1;
    }
    pool = mongoc_client_pool_new(uri);
    mongoc_client_pool_set_error_api(pool, MONGOC_ERROR_API_VERSION_2);
    mongoc_client_pool_set_appname(pool, "mongo_standin_check");

    check_ping(pool);
    check_indexes(pool);
    check_insert_many(pool);
    check_insert_one(pool);
    check_find(pool);
    check_aggregate_update_delete(pool);
    check_sigstop(pool);

    mongoc_client_pool_destroy(pool);
    mongoc_uri_destroy(uri);
    mongoc_cleanup();

    kill(standin_pid, SIGTERM);
    t0 = now_s();
    status = -1;
    while (now_s() - t0 < 5) {
        if (waitpid(standin_pid, &status, WNOHANG) == standin_pid)
            break;
        status = -1;
        msleep(50);
    }
    CHECK(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "stand-in exits 0 on SIGTERM (%.2fs)", now_s() - t0);
    if (status == -1)
        kill(standin_pid, SIGKILL);

    printf("%s: %d failure(s)\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}

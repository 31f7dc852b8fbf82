/* libpq adapter: a small pool of blocking connections and per-connection prepared statements. */
#include "pg.h"

#include <errno.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

#define PG_MAX_PREPARED 64 /* distinct statements one connection remembers */

struct pg_conn {
    PGconn *pq;                                      /* open connection, or NULL */
    const struct pg_stmt *prepared[PG_MAX_PREPARED]; /* statements prepared on it */
    int nprepared;                                   /* used slots of prepared */
    bool in_use;                                     /* borrowed by a thread */
    bool pool_prepared;                              /* the pool's prepared setting */
};

struct pg_pool {
    char *url;      /* owned copy */
    char *app_name; /* owned copy */
    int connect_timeout_s;
    int statement_timeout_ms;
    bool prepared;         /* see pg_options */
    pthread_mutex_t lock;  /* guards conns[].in_use and nfree */
    pthread_cond_t freed;  /* signalled on release */
    int size;              /* number of slots */
    int nfree;             /* slots not borrowed */
    struct pg_conn *conns; /* size slots */
};

struct pg_result {
    PGresult *res; /* owned */
};

static void fill_error(struct pg_error *err, const PGresult *res, PGconn *pq);
static void on_notice(void *arg, const char *message);
static int ensure_open(struct pg_pool *pool, struct pg_conn *c, struct pg_error *err);

struct pg_pool *
pg_pool_new(const struct pg_options *opt)
{
    struct pg_pool *pool = xcalloc(1, sizeof(*pool));
    pool->url = xstrdup(opt->url);
    pool->app_name = xstrdup(opt->app_name ? opt->app_name : "chanced");
    pool->connect_timeout_s = opt->connect_timeout_s;
    pool->statement_timeout_ms = opt->statement_timeout_ms;
    pool->prepared = opt->prepared;
    pool->size = opt->size > 0 ? opt->size : 1;
    pool->nfree = pool->size;
    pool->conns = xcalloc((size_t)pool->size, sizeof(*pool->conns));
    for (int i = 0; i < pool->size; i++) {
        pool->conns[i].pool_prepared = opt->prepared;
    }
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->freed, NULL);
    return pool;
}

void
pg_pool_free(struct pg_pool *pool)
{
    if (pool == NULL) {
        return;
    }
    for (int i = 0; i < pool->size; i++) {
        if (pool->conns[i].pq) {
            PQfinish(pool->conns[i].pq);
        }
    }
    pthread_cond_destroy(&pool->freed);
    pthread_mutex_destroy(&pool->lock);
    util_wipe(pool->url, strlen(pool->url)); /* it may carry a password */
    free(pool->url);
    free(pool->app_name);
    free(pool->conns);
    free(pool);
}

static void
set_error(struct pg_error *err, enum pg_error_class cls, const char *msg)
{
    err->cls = cls;
    err->sqlstate[0] = '\0';
    err->constraint[0] = '\0';
    snprintf(err->message, sizeof(err->message), "%s", msg);
}

/* Opens the slot's connection if it has none; the pool lock is not held (connect is slow). */
static int
ensure_open(struct pg_pool *pool, struct pg_conn *c, struct pg_error *err)
{
    if (c->pq && PQstatus(c->pq) == CONNECTION_OK) {
        return 0;
    }
    if (c->pq) {
        PQfinish(c->pq);
        c->pq = NULL;
    }
    c->nprepared = 0;
    char timeout[16], options[96];
    snprintf(timeout, sizeof(timeout), "%d", pool->connect_timeout_s);
    /* A named statement keeps the plan it was given while its tables were small: on a new
     * database, a sequential scan of the first few ledger rows, kept while the ledger grows
     * (until autovacuum's next ANALYZE, a minute or more at launch-day rates). Every statement
     * here is a key look-up or an indexed range, so sequential scans are off: a plan uses an
     * index whenever one applies, whatever the table's size when it was made. */
    snprintf(options, sizeof(options), "-c statement_timeout=%d -c enable_seqscan=off",
             pool->statement_timeout_ms);
    /* The URI comes first so the keywords after it win over anything it sets. A transaction
     * pooler refuses the options startup parameter: then the timeout is the role's, and the
     * statements are unnamed (planned at every execution, for the tables as they are). */
    const char *keys[] = {"dbname", "connect_timeout", "application_name",
                          pool->prepared ? "options" : NULL, NULL};
    const char *vals[] = {pool->url, timeout, pool->app_name, options, NULL};
    c->pq = PQconnectdbParams(keys, vals, 1);
    if (c->pq == NULL || PQstatus(c->pq) != CONNECTION_OK) {
        char msg[256];
        snprintf(msg, sizeof(msg), "%s", c->pq ? PQerrorMessage(c->pq) : "out of memory");
        msg[strcspn(msg, "\n")] = '\0';
        set_error(err, PG_ERR_CONNECTION, msg);
        log_warn("pg_connect_failed", "reason=\"%s\"", msg);
        if (c->pq) {
            PQfinish(c->pq);
            c->pq = NULL;
        }
        return -1;
    }
    PQsetNoticeProcessor(c->pq, on_notice, NULL);
    return 0;
}

/* Server notices ("already exists, skipping") go to the debug log, not to stderr. */
static void
on_notice(void *arg, const char *message)
{
    UNUSED(arg);
    log_debug("pg_notice", "message=\"%.*s\"", (int)strcspn(message, "\n"), message);
}

struct pg_conn *
pg_acquire(struct pg_pool *pool, int timeout_ms, struct pg_error *err)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    struct pg_conn *c = NULL;
    pthread_mutex_lock(&pool->lock);
    while (pool->nfree == 0) {
        if (pthread_cond_timedwait(&pool->freed, &pool->lock, &deadline) == ETIMEDOUT &&
            pool->nfree == 0) {
            pthread_mutex_unlock(&pool->lock);
            set_error(err, PG_ERR_TIMEOUT, "no free database connection");
            return NULL;
        }
    }
    /* Prefer a slot that is already open. */
    for (int i = 0; i < pool->size; i++) {
        struct pg_conn *s = &pool->conns[i];
        if (!s->in_use && (c == NULL || (s->pq && !c->pq))) {
            c = s;
        }
    }
    c->in_use = true;
    pool->nfree--;
    pthread_mutex_unlock(&pool->lock);
    if (ensure_open(pool, c, err) != 0) {
        pg_release(pool, c);
        return NULL;
    }
    return c;
}

void
pg_release(struct pg_pool *pool, struct pg_conn *c)
{
    if (c == NULL) {
        return;
    }
    if (c->pq && (PQstatus(c->pq) != CONNECTION_OK || PQtransactionStatus(c->pq) != PQTRANS_IDLE)) {
        /* Never hand the next borrower a broken link or someone else's open transaction. */
        PQfinish(c->pq);
        c->pq = NULL;
        c->nprepared = 0;
    }
    pthread_mutex_lock(&pool->lock);
    c->in_use = false;
    pool->nfree++;
    pthread_cond_signal(&pool->freed);
    pthread_mutex_unlock(&pool->lock);
}

void
pg_pool_usage(struct pg_pool *pool, int *in_use, int *size)
{
    pthread_mutex_lock(&pool->lock);
    *in_use = pool->size - pool->nfree;
    *size = pool->size;
    pthread_mutex_unlock(&pool->lock);
}

static int
classify(const char *state)
{
    if (state == NULL) {
        return PG_ERR_OTHER;
    }
    if (strcmp(state, "23505") == 0) {
        return PG_ERR_UNIQUE;
    }
    if (strcmp(state, "23514") == 0 || strcmp(state, "23502") == 0) {
        return PG_ERR_CHECK;
    }
    if (strcmp(state, "23503") == 0) {
        return PG_ERR_FOREIGN;
    }
    if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0) {
        return PG_ERR_RETRY;
    }
    if (strcmp(state, "57014") == 0) {
        return PG_ERR_TIMEOUT;
    }
    if (strncmp(state, "08", 2) == 0 || strcmp(state, "57P01") == 0) {
        return PG_ERR_CONNECTION; /* connection exception, admin shutdown */
    }
    return PG_ERR_OTHER;
}

static void
fill_error(struct pg_error *err, const PGresult *res, PGconn *pq)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *cons = res ? PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME) : NULL;
    const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    err->cls = classify(state);
    if (PQstatus(pq) != CONNECTION_OK) {
        err->cls = PG_ERR_CONNECTION;
    }
    snprintf(err->sqlstate, sizeof(err->sqlstate), "%s", state ? state : "");
    snprintf(err->constraint, sizeof(err->constraint), "%s", cons ? cons : "");
    snprintf(err->message, sizeof(err->message), "%s", msg ? msg : PQerrorMessage(pq));
    err->message[strcspn(err->message, "\n")] = '\0';
}

/* Turns a finished PGresult into our result or error; consumes res. */
static int
finish(PGconn *pq, PGresult *res, struct pg_result **out, struct pg_error *err)
{
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        fill_error(err, res, pq);
        PQclear(res);
        return -1;
    }
    if (out) {
        *out = xmalloc(sizeof(**out));
        (*out)->res = res;
    } else {
        PQclear(res);
    }
    err->cls = PG_ERR_NONE;
    return 0;
}

static bool
is_prepared(const struct pg_conn *c, const struct pg_stmt *stmt)
{
    for (int i = 0; i < c->nprepared; i++) {
        if (c->prepared[i] == stmt) {
            return true;
        }
    }
    return false;
}

int
pg_exec(struct pg_conn *c, const struct pg_stmt *stmt, int nparams, const char *const *params,
        struct pg_result **res, struct pg_error *err)
{
    if (c->pq == NULL) {
        set_error(err, PG_ERR_CONNECTION, "connection closed");
        return -1;
    }
    if (!c->pool_prepared || (!is_prepared(c, stmt) && c->nprepared == PG_MAX_PREPARED)) {
        /* Unnamed (parse, bind and execute in one round trip): behind a transaction pooler,
         * or more statements than slots (a new module forgot to raise it). */
        PGresult *r = PQexecParams(c->pq, stmt->sql, nparams, NULL, params, NULL, NULL, 0);
        return finish(c->pq, r, res, err);
    }
    if (!is_prepared(c, stmt)) {
        PGresult *p = PQprepare(c->pq, stmt->name, stmt->sql, 0, NULL);
        if (finish(c->pq, p, NULL, err) != 0) {
            log_error("pg_prepare_failed", "stmt=%s reason=\"%s\"", stmt->name, err->message);
            return -1;
        }
        c->prepared[c->nprepared++] = stmt;
    }
    PGresult *r = PQexecPrepared(c->pq, stmt->name, nparams, params, NULL, NULL, 0);
    return finish(c->pq, r, res, err);
}

int
pg_exec_sql(struct pg_conn *c, const char *sql, struct pg_error *err)
{
    return pg_query_sql(c, sql, NULL, err);
}

int
pg_query_sql(struct pg_conn *c, const char *sql, struct pg_result **res, struct pg_error *err)
{
    if (c->pq == NULL) {
        set_error(err, PG_ERR_CONNECTION, "connection closed");
        return -1;
    }
    return finish(c->pq, PQexec(c->pq, sql), res, err);
}

void
pg_rollback(struct pg_conn *c)
{
    if (c->pq && PQtransactionStatus(c->pq) != PQTRANS_IDLE) {
        PQclear(PQexec(c->pq, "ROLLBACK"));
    }
}

void
pg_result_free(struct pg_result *res)
{
    if (res) {
        PQclear(res->res);
        free(res);
    }
}

int
pg_rows(const struct pg_result *res)
{
    return PQntuples(res->res);
}

const char *
pg_text(const struct pg_result *res, int row, int col)
{
    return PQgetvalue(res->res, row, col);
}

bool
pg_is_null(const struct pg_result *res, int row, int col)
{
    return PQgetisnull(res->res, row, col) != 0;
}

int64_t
pg_int(const struct pg_result *res, int row, int col)
{
    return PQgetisnull(res->res, row, col) ? 0 : strtoll(PQgetvalue(res->res, row, col), NULL, 10);
}

bool
pg_bool(const struct pg_result *res, int row, int col)
{
    return PQgetvalue(res->res, row, col)[0] == 't';
}

int
pg_col(const struct pg_result *res, const char *name)
{
    return PQfnumber(res->res, name);
}

/* Type OIDs from pg_type.h (stable across PostgreSQL versions). */
#define PG_OID_BOOL 16
#define PG_OID_INT8 20
#define PG_OID_INT2 21
#define PG_OID_INT4 23

cJSON *
pg_row_json(const struct pg_result *res, int row)
{
    cJSON *o = cJSON_CreateObject();
    for (int col = 0; col < PQnfields(res->res); col++) {
        const char *name = PQfname(res->res, col);
        if (name[0] == '_' || PQgetisnull(res->res, row, col)) {
            continue;
        }
        switch (PQftype(res->res, col)) {
        case PG_OID_BOOL: cJSON_AddBoolToObject(o, name, pg_bool(res, row, col)); break;
        case PG_OID_INT8:
        case PG_OID_INT2:
        case PG_OID_INT4: cJSON_AddNumberToObject(o, name, (double)pg_int(res, row, col)); break;
        default: cJSON_AddStringToObject(o, name, pg_text(res, row, col)); break;
        }
    }
    return o;
}

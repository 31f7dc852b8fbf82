/*
 * PostgreSQL adapter (libpq): a pool of blocking connections for worker threads, prepared
 * statements by descriptor, and SQLSTATEs translated into a few error classes. Never call these
 * from a libevent loop thread: every function here may block on the network.
 *
 * Ownership: pool -> connections; a connection is borrowed between pg_acquire and pg_release;
 * a result belongs to the caller until pg_result_free.
 */
#ifndef CHANCED_GATEWAY_PG_H
#define CHANCED_GATEWAY_PG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "util.h"

struct pg_pool;
struct pg_conn;
struct pg_result;

/* A statement prepared once per connection, on first use. Static storage; name unique. */
struct pg_stmt {
    const char *name; /* server-side statement name */
    const char *sql;  /* text with $1..$n */
};

enum pg_error_class {
    PG_ERR_NONE,       /* success */
    PG_ERR_UNIQUE,     /* 23505: a unique constraint refused the row; see constraint */
    PG_ERR_CHECK,      /* 23514 (check) or 23502 (not null): a constraint refused the values */
    PG_ERR_FOREIGN,    /* 23503: a referenced row is missing */
    PG_ERR_RETRY,      /* 40001/40P01: serialization failure or deadlock; safe to retry */
    PG_ERR_TIMEOUT,    /* 57014: statement_timeout or cancel */
    PG_ERR_CONNECTION, /* the connection is broken or could not be opened */
    PG_ERR_OTHER,      /* anything else: a bug or an operator problem */
};

struct pg_error {
    enum pg_error_class cls; /* what went wrong */
    char sqlstate[6];        /* five characters, or "" */
    char constraint[64];     /* for constraint errors: the constraint's name, or "" */
    char message[256];       /* first line of the server or libpq message */
};

struct pg_options {
    const char *url;          /* libpq URI (borrowed for the pool's lifetime) */
    int size;                 /* connections at most */
    int connect_timeout_s;    /* libpq connect_timeout */
    int statement_timeout_ms; /* server statement_timeout; 0 leaves the server's */
    const char *app_name;     /* application_name */
    bool prepared;            /* named prepared statements, statement_timeout and
                               * enable_seqscan=off at connect;
                               * false behind a transaction pooler (unnamed statements, no
                               * startup options: the timeout comes from the role) */
};

/* Creates a pool; connections open lazily. Never NULL. */
struct pg_pool *pg_pool_new(const struct pg_options *opt);
/* Closes every connection; all must have been released. NULL is a no-op. */
void pg_pool_free(struct pg_pool *pool);
/*
 * Borrows a connection, opening one if needed; waits up to timeout_ms for a free one.
 * Returns NULL (err filled: PG_ERR_TIMEOUT if the pool was busy, PG_ERR_CONNECTION if
 * PostgreSQL is unreachable).
 */
struct pg_conn *pg_acquire(struct pg_pool *pool, int timeout_ms, struct pg_error *err);
/* Returns a connection; a broken one, or one left inside a transaction, is closed instead. */
void pg_release(struct pg_pool *pool, struct pg_conn *conn);
/* Connections borrowed right now, and the pool size (for metrics). */
void pg_pool_usage(struct pg_pool *pool, int *in_use, int *size);

/*
 * Runs a prepared statement with text parameters (NULL = SQL NULL). On success returns 0 and,
 * if res is not NULL, a new result (free with pg_result_free). On failure returns -1, err filled,
 * *res untouched. A statement that returns no rows still succeeds.
 */
int pg_exec(struct pg_conn *conn, const struct pg_stmt *stmt, int nparams,
            const char *const *params, struct pg_result **res, struct pg_error *err) MUSTCHECK;
/* Runs plain SQL without parameters (BEGIN, COMMIT, DDL, several statements). */
int pg_exec_sql(struct pg_conn *conn, const char *sql, struct pg_error *err) MUSTCHECK;
/* Like pg_exec_sql, but returns rows (for one-off administrative queries). */
int pg_query_sql(struct pg_conn *conn, const char *sql, struct pg_result **res,
                 struct pg_error *err) MUSTCHECK;
/* Rolls back an open transaction, ignoring errors (a broken connection is closed on release). */
void pg_rollback(struct pg_conn *conn);

void pg_result_free(struct pg_result *res);
int pg_rows(const struct pg_result *res);
/* Text of a field (borrowed until pg_result_free); "" for NULL. */
const char *pg_text(const struct pg_result *res, int row, int col);
bool pg_is_null(const struct pg_result *res, int row, int col);
/* A field parsed as a 64-bit integer; 0 for NULL. */
int64_t pg_int(const struct pg_result *res, int row, int col);
bool pg_bool(const struct pg_result *res, int row, int col);
/* The number of the column called name, or -1. */
int pg_col(const struct pg_result *res, const char *name);
/*
 * A row as a JSON object keyed by column name (so the SQL's column aliases are the API's field
 * names): integers as numbers, booleans as booleans, the rest as strings; NULL columns and
 * columns whose name starts with '_' (cursors, internal keys) are left out.
 */
cJSON *pg_row_json(const struct pg_result *res, int row);

#endif

/*
 * Report requests: log.query and log.stats parsed from untrusted JSON into plain structs the
 * store turns into MongoDB queries, and the opaque pagination cursors. Pure functions; no I/O.
 *
 * A cursor carries the (ts, _id) of the last item of a page plus a check over that position and
 * the query's filters, so a mangled cursor, or one taken from a different query, is refused.
 * Cursors are opaque, not secret: they only name a position in a result the caller may read.
 */
#ifndef CHANCED_LOGGER_QUERY_H
#define CHANCED_LOGGER_QUERY_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>

#include "event.h"
#include "util.h"

#define LOGGER_QUERY_LIMIT_DEFAULT 50
#define LOGGER_QUERY_LIMIT_MAX 1000
#define LOGGER_QUERY_TEXT_MAX 100
#define LOGGER_STATS_BUCKETS_MAX 10000 /* (to - from) / bucket may not exceed this */

/* A parsed log.query request. Strings are copies; empty means "no filter". */
struct logger_query {
    bool has_from, has_to;                   /* time range given */
    long long from, to;                      /* inclusive bounds on ts, epoch ms */
    char service[65];                        /* exact service */
    char type[65];                           /* exact type */
    char user[65];                           /* actor id/username or subject user_id/username */
    bool has_category;                       /* category filter given */
    long long category;                      /* subject.category or one of subject.categories */
    char code[65];                           /* subject.code, upper-cased */
    char text[LOGGER_QUERY_TEXT_MAX + 1];    /* case-insensitive substring of message */
    bool has_cursor;                         /* continue after (cursor_ts, cursor_id) */
    long long cursor_ts;                     /* ts of the last item already returned */
    char cursor_id[LOGGER_EVENT_ID_MAX + 1]; /* _id of that item */
    int limit;                               /* items per page */
    uint64_t fingerprint;                    /* hash of the filters, binds cursors to this query */
};

/* A parsed log.stats request. */
struct logger_stats_req {
    long long from, to;  /* inclusive bounds on ts, epoch ms */
    long long bucket_ms; /* 3600000 or 86400000 */
    char type[65];       /* "" = every type */
};

/* Fills q from a request's data; -1 with err (a client-facing sentence naming the field). */
int logger_query_parse(const cJSON *data, struct logger_query *q, char *err,
                       size_t errlen) MUSTCHECK;
/* Returns a new cursor string (free with free()) for the position after (ts, id) in q. */
char *logger_query_cursor(const struct logger_query *q, long long ts, const char *id);

/* Fills s from a request's data; -1 with err. */
int logger_stats_parse(const cJSON *data, struct logger_stats_req *s, char *err,
                       size_t errlen) MUSTCHECK;

#endif

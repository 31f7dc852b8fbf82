/*
 * The logger's MongoDB adapter (libmongoc 1.23, synchronous): a client pool, the "events"
 * collection with its indexes and TTL, journaled unordered inserts keyed by event id, report
 * queries and per-bucket counts. Every call blocks, so only worker threads and the consumer
 * thread call these, never the event loop. Thread-safe: each call borrows a pooled client.
 *
 * Stored document: the canonical event (event.h) plus three derived fields the reports use and
 * replies never show: "_at" (ts as a BSON date, for the TTL index), "_users" (actor id and
 * username, subject user_id and username) and "_cats" (subject category and categories).
 */
#ifndef CHANCED_LOGGER_MONGO_H
#define CHANCED_LOGGER_MONGO_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "util.h"

struct logger_mongo;
struct logger_query;
struct logger_stats_req;

enum logger_mongo_status {
    LOGGER_MONGO_OK,          /* the server answered */
    LOGGER_MONGO_UNAVAILABLE, /* unreachable, timed out, or durability unconfirmed: retry later */
    LOGGER_MONGO_FAILED,      /* the server refused the request: retrying will not help */
};

enum logger_insert_outcome {
    LOGGER_INSERT_STORED,    /* inserted now */
    LOGGER_INSERT_DUPLICATE, /* an event with this _id was already stored: success */
    LOGGER_INSERT_REFUSED,   /* the server rejected this document (it will never be stored) */
    LOGGER_INSERT_CONFLICT,  /* another event, with different content, holds this _id */
};

/*
 * Parses url and creates a pool of at most max_clients connections. timeout_ms becomes the
 * socket, connect and server-selection timeouts unless the URL sets them. An insert of many
 * events is written as up to insert_parts concurrent parts (1..16). Does not connect yet.
 * NULL with err filled on a bad URL.
 */
struct logger_mongo *logger_mongo_new(const char *url, int timeout_ms, int max_clients,
                                      int insert_parts, char *err, size_t errlen);
/* Frees the pool. NULL is a no-op. No call may be running. */
void logger_mongo_free(struct logger_mongo *m);
/* "db.events" for logs. Borrowed, valid until free. */
const char *logger_mongo_namespace(const struct logger_mongo *m);

/* Creates the indexes and sets (or removes, for 0) the TTL retention. A logger_mongo_status. */
int logger_mongo_ensure(struct logger_mongo *m, long long retention_days, char *err,
                        size_t errlen) MUSTCHECK;
/* Round trip to the server. A logger_mongo_status. */
int logger_mongo_ping(struct logger_mongo *m, char *err, size_t errlen) MUSTCHECK;

/*
 * Inserts n canonical events (borrowed) unordered with a journaled write concern. Each
 * document carries _h, a digest of the event's content; an _id already stored with another
 * digest is a conflict, not a duplicate (someone stored a different event under this id). 128
 * events or more are split into parts inserted at once, each on its own connection. On
 * LOGGER_MONGO_OK, outcome[i] is a logger_insert_outcome for events[i]. Any other status means
 * nothing is known about any of them (the caller retries all; duplicates are then success).
 */
int logger_mongo_insert(struct logger_mongo *m, const cJSON *const *events, size_t n,
                        unsigned char *outcome, char *err, size_t errlen) MUSTCHECK;

/*
 * Runs a log.query: on LOGGER_MONGO_OK *page is a new {"items": [...], "next_cursor": ...}
 * (free with cJSON_Delete).
 */
int logger_mongo_find(struct logger_mongo *m, const struct logger_query *q, cJSON **page, char *err,
                      size_t errlen) MUSTCHECK;

/* Runs a log.stats: on LOGGER_MONGO_OK *out is a new {"buckets": [...]}. */
int logger_mongo_stats(struct logger_mongo *m, const struct logger_stats_req *s, cJSON **out,
                       char *err, size_t errlen) MUSTCHECK;

#endif

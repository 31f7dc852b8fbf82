/*
 * Private to the chance role: its state, the key layout in Redis, and the handlers split across
 * chance.c (lifecycle, claim), generate.c (batches) and queries.c (reads, updates, release).
 *
 * Keys (every key of a category carries its hash tag, so each script touches one slot):
 *   chance:{c<id>}:meta       hash: name, batch, reward_min/max/step, per_user_limit, starts_at,
 *                             ends_at, enabled, status (generating|ready), total, total_reward,
 *                             assigned, paid_out, created_at, prefix, revision
 *   chance:{c<id>}:free       set of available codes
 *   chance:{c<id>}:code:<C>   hash: code, category, reward, status, user_id, username, claim_id,
 *                             assigned_at
 *   chance:{c<id>}:claims     hash claim_id -> code (idempotency)
 *   chance:{c<id>}:users      hash user_id -> number of codes held
 *   chance:{c<id>}:byuser     hash user_id -> space-separated codes
 *   chance:{c<id>}:events     stream of audit events (field e), drained by the relay
 *   chance:{c<id>}:log        stream of assignments and releases, read by the gateway reconciler
 *   chance:codes              hash code -> category id (global uniqueness and lookup by code)
 *   chance:categories         sorted set of ready category ids (score = id)
 *   chance:seq:category, chance:seq:batch   id counters
 *   chance:instance           random id of this Redis dataset, set by the first batch and kept
 *                             in each category's meta (ns); part of every audit event id, so a
 *                             reset Redis (ids restart) never collides with stored events
 *   chance:batch:<id>         hash describing a batch
 *   chance:{g}:events         stream of batch-level audit events
 */
#ifndef CHANCED_CHANCE_H
#define CHANCED_CHANCE_H

#include <cjson/cJSON.h>
#include <stdbool.h>

#include "chance_conf.h"
#include "codegen.h"

struct health;
struct loop;
struct metrics;
struct redis;
struct relay;
struct role_ctx;
struct rpc_call;
struct rpc_server;

struct chance {
    struct role_ctx *ctx;           /* borrowed from main */
    struct loop *loop;              /* borrowed */
    const struct chance_conf *conf; /* borrowed, frozen */
    struct redis *redis;            /* owned */
    struct rpc_server *rpc;         /* owned */
    struct relay *relay;            /* owned; NULL when not built */
    struct codegen_rng rng;         /* CSPRNG pool for codes and rewards */
    int generating;                 /* batches in progress */
    bool stopping;
    struct event *drain_timer; /* polls for in-flight work while stopping */
    struct health *health;     /* owned: /livez /readyz /metrics */
    struct metrics *metrics;   /* borrowed, process-wide */
    struct event *stats_timer; /* refreshes gauges */
    int stats_ticks;
    bool stats_busy; /* a per-category refresh is in flight */
};

#define KEY_MAX 128

/* Writes "chance:{c<id>}:<what>" into out (KEY_MAX bytes). */
void chance_key(char *out, long long category, const char *what);

/* Parses a request's "actor" object; fills id/username/role (borrowed) or an error. */
int chance_actor(const cJSON *data, const char **id, const char **username, const char **role,
                 char *err, size_t errlen);
/* Reads a user or actor id that may be a string or an integer into buf. */
int chance_id_field(const cJSON *obj, const char *key, bool required, char *buf, size_t size,
                    char *err, size_t errlen);

/* Replies with the proper error when a Redis batch did not complete. */
void chance_reply_redis_failure(struct rpc_call *call, int status);

void chance_generate(struct rpc_call *call, const cJSON *data, void *arg);
void chance_categories(struct rpc_call *call, const cJSON *data, void *arg);
void chance_category_update(struct rpc_call *call, const cJSON *data, void *arg);
void chance_codes(struct rpc_call *call, const cJSON *data, void *arg);
void chance_code(struct rpc_call *call, const cJSON *data, void *arg);
void chance_assignments(struct rpc_call *call, const cJSON *data, void *arg);
void chance_release(struct rpc_call *call, const cJSON *data, void *arg);

/* Builds the public JSON of a category from its meta hash (flat [k, v, ...] array). */
cJSON *chance_category_json(long long id, const cJSON *meta_kv, long long remaining,
                            long long now_ms);

#endif

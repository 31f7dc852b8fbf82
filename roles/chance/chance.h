/*
 * Private to the chance role: its state, the key layout in Redis, and the handlers split across
 * chance.c (lifecycle, claim), generate.c (batches), categories.c, codes.c and assignments.c.
 *
 * Keys. Every key of a category carries its hash tag {c<id>}, the batch-level keys the tag {g},
 * and the code index {i<xy>} (xy: the code's first two random characters), so every script
 * touches one slot and Redis Cluster spreads categories and the index over its masters.
 *
 *   chance:{c<id>}:meta     hash: id, name, batch, reward_min/max/step, per_user_limit,
 *                           starts_at, ends_at, enabled, status (generating|ready), target,
 *                           total, total_reward, assigned, paid_out, created_at, prefix, ns,
 *                           revision, stale_free
 *   chance:{c<id>}:free     set of available codes
 *   chance:{c<id>}:codes    hash code -> its record (JSON, scripts.h)
 *   chance:{c<id>}:claims   hash claim_id -> code (idempotency)
 *   chance:{c<id>}:users    hash user_id -> number of codes held
 *   chance:{c<id>}:byuser   hash user_id -> space-separated codes
 *   chance:{c<id>}:events   stream of audit events (field e), drained by the relay
 *   chance:{c<id>}:log      stream of assignments, releases and repairs (gateway reconciler)
 *   chance:{i<xy>}:codes    hash code -> category id (global uniqueness, lookup by code)
 *   chance:{g}:categories   sorted set of ready category ids (score = id)
 *   chance:{g}:seq:category, chance:{g}:seq:batch   id counters
 *   chance:{g}:batch:<id>   hash: a batch, its parameters, state and progress, lease owner
 *   chance:{g}:batchkeys    hash batch key -> batch id (generation is idempotent per key)
 *   chance:{g}:active       set of batches being generated (or cleaned up after a failure)
 *   chance:{g}:events       stream of batch-level audit events
 *   chance:{g}:instance     random id of this Redis dataset, in each category's meta (ns) and
 *                           every audit event id, so a reset Redis never reuses stored ids
 */
#ifndef CHANCED_CHANCE_H
#define CHANCED_CHANCE_H

#include <cjson/cJSON.h>
#include <stdbool.h>

#include "chance_conf.h"
#include "codegen.h"
#include "redis.h"

struct event;
struct gen;
struct health;
struct loop;
struct metrics;
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
    struct relay *relay;            /* owned */
    struct codegen_rng rng;         /* CSPRNG pool for codes, rewards and nonces */
    char instance[96];              /* this process: owner name of generation leases */
    struct gen *gens;               /* owned: batches this instance is generating */
    int generating;                 /* their number */
    struct event *gen_timer;        /* owned: resumes batches whose driver died */
    bool stopping;                  /* a stop was requested */
    struct event *drain_timer;      /* polls for in-flight work while stopping */
    struct health *health;          /* owned: /livez /readyz /metrics */
    struct metrics *metrics;        /* borrowed, process-wide */
    struct event *stats_timer;      /* refreshes gauges */
    int stats_ticks;                /* seconds since start, for slower refreshes */
    bool stats_busy;                /* a per-category refresh is in flight */
    int64_t claim_seen_ms;          /* monotonic ms of the last chance.claim: generation yields */
    int64_t busy_told_ms;           /* when KEY_CLAIMS_BUSY was last set by this instance */
    int64_t busy_polled_ms;         /* when generation last read KEY_CLAIMS_BUSY */
    int64_t busy_elsewhere_ms;      /* when that read found another instance serving claims */
    bool busy_polling;              /* that read is in flight */
};

/* Claims served anywhere this recently make generation yield (generate_busy_share). */
#define CLAIMS_BUSY_MS 250
/* Note that claims are being served here, for the generation of every instance (a SET at most
 * every CLAIMS_BUSY_MS / 2). Loop thread. */
void chance_claims_busy_tell(struct chance *ch);
/* Is any instance serving claims? Reads KEY_CLAIMS_BUSY at most every 100 ms while asked (the
 * answer lags by that much). Loop thread. */
bool chance_claims_busy(struct chance *ch);

#define KEY_MAX 128
#define KEY_CATEGORIES "chance:{g}:categories"
#define KEY_EVENTS "chance:{g}:events"
#define KEY_ACTIVE "chance:{g}:active"
#define KEY_BATCHKEYS "chance:{g}:batchkeys"
#define KEY_INSTANCE "chance:{g}:instance"
#define KEY_CLAIMS_BUSY "chance:{g}:claims_busy"
#define KEY_SEQ_BATCH "chance:{g}:seq:batch"
#define KEY_SEQ_CATEGORY "chance:{g}:seq:category"
#define NONCE_HEX 16 /* characters of an event-id nonce */

/* Writes "chance:{c<id>}:<what>" into out (KEY_MAX bytes). */
/* The oldest assignment-log entry id to keep ("" when nothing is trimmed); out >= 32 bytes. */
void chance_log_minid(const struct chance *ch, char *out, size_t size);
void chance_key(char *out, long long category, const char *what);
/* Writes the code index shard of a code, "chance:{i<xy>}:codes", into out (KEY_MAX bytes). */
void chance_index_key(char *out, const char *code);
/* Writes "chance:{g}:batch:<id>" into out (KEY_MAX bytes). */
void chance_batch_key(char *out, long long batch);
/* The eight keys of a category's claim, release and reassign scripts, in their KEYS order. */
void chance_claim_keys(char keys[8][KEY_MAX], long long category);
/* A random nonce (NONCE_HEX hex characters + NUL) for audit event ids. */
void chance_nonce(struct chance *ch, char out[NONCE_HEX + 1]);

/* Parses a request's "actor" object; fills id/username/role (borrowed) or an error. */
int chance_actor(const cJSON *data, const char **id, const char **username, const char **role,
                 char *err, size_t errlen);
/* Reads a user or actor id that may be a string or an integer into buf. */
int chance_id_field(const cJSON *obj, const char *key, bool required, char *buf, size_t size,
                    char *err, size_t errlen);
/* True if s is 1..max of [A-Za-z0-9_-]. */
bool chance_token_ok(const char *s, size_t max);
/* True if s has no control characters. */
bool chance_printable(const char *s);

/* Replies with the proper error when a Redis batch did not complete. */
void chance_reply_redis_failure(struct rpc_call *call, enum redis_status status);
/* True if a batch reply holds an error reply; logs it with the call's command. */
bool chance_replies_failed(struct rpc_call *call, enum redis_status status, const cJSON *replies);

/* Handlers, by file. */
void chance_claim(struct rpc_call *call, const cJSON *data, void *arg);
void chance_generate(struct rpc_call *call, const cJSON *data, void *arg);
void chance_batch(struct rpc_call *call, const cJSON *data, void *arg);
void chance_categories(struct rpc_call *call, const cJSON *data, void *arg);
void chance_category_update(struct rpc_call *call, const cJSON *data, void *arg);
void chance_codes(struct rpc_call *call, const cJSON *data, void *arg);
void chance_code(struct rpc_call *call, const cJSON *data, void *arg);
void chance_assignments(struct rpc_call *call, const cJSON *data, void *arg);
void chance_release(struct rpc_call *call, const cJSON *data, void *arg);
void chance_reassign(struct rpc_call *call, const cJSON *data, void *arg);
void chance_verify(struct rpc_call *call, const cJSON *data, void *arg);

/* generate.c: resumes batches whose lease expired (their driver died); called periodically.
 * gen_stop_all ends every driver of this instance (their batches resume elsewhere). */
void gen_resume_orphans(struct chance *ch);
void gen_stop_all(struct chance *ch);

/* Builds the public JSON of a category from its meta hash (flat [k, v, ...] array). */
cJSON *chance_category_json(long long id, const cJSON *meta_kv, long long remaining,
                            long long now_ms);
/* The value of key in a flat [k, v, ...] array (HGETALL), or NULL. Borrowed. */
const char *chance_kv_get(const cJSON *kv, const char *key);
/* That value as an integer (0 if absent). */
long long chance_kv_int(const cJSON *kv, const char *key);

#endif

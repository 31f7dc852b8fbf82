/* Outbox relay: PostgreSQL outbox -> logger (log.append) -> delete (or mark) delivered. */
#include "outbox.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backoff.h"
#include "lease.h"
#include "log.h"
#include "gwmetrics.h"
#include "metrics.h"
#include "pg.h"
#include "rpc_client.h"

struct outbox {
    struct outbox_opts o;    /* copied; pointers borrowed */
    long long backlog;       /* atomic: undelivered events at the last look */
    int64_t housekeeping_ms; /* relay thread only: last prune and backlog count */
    char event_ns[16];       /* relay thread only: audit _id prefix of this database */
    struct lease *lease;     /* owned: only the holder prunes */
    struct backoff retry;    /* relay thread only: pacing and logging while delivery fails */
    int64_t retry_at_ms;     /* relay thread only: no delivery attempt before this */
};

/* Rows are locked while in flight so a second gateway's relay skips them instead of resending. */
static const struct pg_stmt fetch = {
    "outbox_fetch", "SELECT id, event FROM outbox WHERE delivered_at IS NULL ORDER BY id "
                    "LIMIT $1 FOR UPDATE SKIP LOCKED"};
/*
 * What a delivered event costs: with outbox_retention_s 0 its row goes in the delivery
 * transaction (the INSERT and this DELETE are the only writes); an UPDATE instead would write a
 * new tuple with the whole event and its index entries, and the prune would write again. Rows
 * parked in the same transaction (conflicts) keep their reason.
 */
static const struct pg_stmt drop = {
    "outbox_drop", "DELETE FROM outbox WHERE id = ANY($1::bigint[]) AND rejected IS NULL"};
/* outbox_retention_s > 0: delivered rows stay, marked, until the prune. */
static const struct pg_stmt mark = {"outbox_mark",
                                    "UPDATE outbox SET delivered_at = now() "
                                    "WHERE id = ANY($1::bigint[]) AND rejected IS NULL"};
static const struct pg_stmt reject = {
    "outbox_reject", "UPDATE outbox SET delivered_at = now(), rejected = $2 WHERE id = $1"};
/* Delivered rows after $1 seconds, parked ones after the longer of $1 and $2. */
static const struct pg_stmt prune = {
    "outbox_prune",
    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE delivered_at < "
    "now() - make_interval(secs => $1::int) AND (rejected IS NULL OR delivered_at < "
    "now() - make_interval(secs => greatest($1::int, $2::int))) LIMIT 10000)"};
static const struct pg_stmt namespace = {
    "outbox_namespace", "SELECT value FROM gateway_meta WHERE key = 'event_namespace'"};
static const struct pg_stmt backlog = {"outbox_backlog",
                                       "SELECT count(*) FROM outbox WHERE delivered_at IS NULL"};

enum { FETCH_COL_ID, FETCH_COL_EVENT };

/* Parks one row by its id: marked delivered with the reason, never sent again. */
static void
park(struct outbox *ob, struct pg_conn *c, const char *id, const char *reason)
{
    const char *params[] = {id, reason};
    struct pg_error perr;
    if (pg_exec(c, &reject, 2, params, NULL, &perr) == 0) {
        log_error("outbox_event_rejected", "id=%s reason=\"%.200s\"", id, reason);
        gwmetrics_count(ob->o.metrics, M_OUTBOX_REJECTED, 1);
    } else {
        log_warn("outbox_park_failed", "id=%s reason=\"%s\"", id, perr.message);
    }
}

/*
 * Builds the log.append payload. rows[k] is the result row of events[k]; rows whose stored
 * text is not an object are parked here (they can never be delivered).
 */
static cJSON *
build_batch(struct outbox *ob, struct pg_conn *c, const struct pg_result *res, const char *ns,
            struct sbuf *ids, int *rows)
{
    cJSON *data = cJSON_CreateObject();
    cJSON *events = cJSON_AddArrayToObject(data, "events");
    int k = 0;
    sbuf_appends(ids, "{");
    for (int i = 0; i < pg_rows(res); i++) {
        const char *rid = pg_text(res, i, FETCH_COL_ID);
        cJSON *ev = cJSON_Parse(pg_text(res, i, FETCH_COL_EVENT));
        if (!cJSON_IsObject(ev)) {
            cJSON_Delete(ev);
            park(ob, c, rid, "stored event is not a JSON object");
            continue;
        }
        char id[64];
        snprintf(id, sizeof(id), "gw:%s:%s", ns, rid);
        cJSON_AddStringToObject(ev, "_id", id);
        cJSON_AddItemToArray(events, ev);
        rows[k++] = i;
        sbuf_appendf(ids, "%s%s", ids->len > 1 ? "," : "", rid);
    }
    sbuf_appends(ids, "}");
    return data;
}

/*
 * The logger refused the batch: park the event it named (by its row, not its position).
 * Returns false if the refusal named no event (nothing parked).
 */
static bool
reject_named(struct outbox *ob, struct pg_conn *c, const struct pg_result *res, const int *rows,
             int nevents, const cJSON *err)
{
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(err, "message");
    const char *text = cJSON_IsString(msg) ? msg->valuestring : "refused";
    const char *p = strstr(text, "events[");
    char *end = NULL;
    long idx = p ? strtol(p + 7, &end, 10) : -1;
    if (p == NULL || end == p + 7 || *end != ']' || idx < 0 || idx >= nevents) {
        /* Not an answer about one event: park nothing, retry later, say so loudly. */
        log_error("outbox_batch_refused", "events=%d reason=\"%.200s\"", nevents, text);
        return false;
    }
    park(ob, c, pg_text(res, rows[idx], FETCH_COL_ID), text);
    return true;
}

/*
 * The logger found a different event already stored under some of our ids (a forged or
 * pre-inserted one): ours can never be stored under them. Park them with the reason and raise
 * the alarm, rather than take the other event for ours.
 */
static void
park_conflicts(struct outbox *ob, struct pg_conn *c, const cJSON *conflicts)
{
    const cJSON *id;
    cJSON_ArrayForEach (id, conflicts) {
        const char *s = cJSON_GetStringValue(id);
        size_t nslen = strlen(ob->event_ns);
        /* "gw:<ns>:<row id>" of this database; anything else is not ours to park */
        if (s == NULL || strncmp(s, "gw:", 3) != 0 || strncmp(s + 3, ob->event_ns, nslen) != 0 ||
            s[3 + nslen] != ':' || strspn(s + 4 + nslen, "0123456789") != strlen(s + 4 + nslen)) {
            continue;
        }
        log_error("audit_id_collision",
                  "id=%.40s reason=\"another event with different content holds this id\"", s);
        gwmetrics_count(ob->o.metrics, M_OUTBOX_CONFLICT, 1);
        park(ob, c, s + 4 + nslen,
             "id collision: another event with different content holds "
             "this id in the audit store");
    }
}

/* Reads the database's event namespace once (it never changes). */
static int
load_namespace(struct outbox *ob, struct pg_conn *c)
{
    if (ob->event_ns[0]) {
        return 0;
    }
    struct pg_error err;
    struct pg_result *res = NULL;
    if (pg_exec(c, &namespace, 0, NULL, &res, &err) != 0 || pg_rows(res) != 1) {
        log_error("outbox_namespace_missing", "reason=\"%s\"", res ? "no row" : err.message);
        pg_result_free(res);
        return -1;
    }
    snprintf(ob->event_ns, sizeof(ob->event_ns), "%s", pg_text(res, 0, 0));
    pg_result_free(res);
    return 0;
}

static void
housekeeping(struct outbox *ob, struct pg_conn *c)
{
    struct pg_error err;
    struct pg_result *res = NULL;
    char secs[24], parked[24];
    snprintf(secs, sizeof(secs), "%d", ob->o.retention_s);
    snprintf(parked, sizeof(parked), "%d", OUTBOX_PARKED_KEEP_S);
    const char *params[] = {secs, parked};
    if (lease_hold(ob->lease, c) && pg_exec(c, &prune, 2, params, NULL, &err) != 0) {
        log_warn("outbox_prune_failed", "reason=\"%s\"", err.message);
    }
    if (pg_exec(c, &backlog, 0, NULL, &res, &err) == 0) {
        __atomic_store_n(&ob->backlog, (long long)pg_int(res, 0, 0), __ATOMIC_RELAXED);
        metrics_set(ob->o.metrics, "chanced_gateway_outbox_backlog", "", (double)pg_int(res, 0, 0));
        pg_result_free(res);
    }
}

static void
pg_status(struct outbox *ob, bool up)
{
    __atomic_store_n(ob->o.pg_up, up ? 1 : 0, __ATOMIC_RELAXED);
}

struct outbox *
outbox_new(const struct outbox_opts *opts)
{
    struct outbox *ob = xcalloc(1, sizeof(*ob));
    ob->o = *opts;
    ob->lease = lease_new("outbox_housekeeping", opts->lease_ttl_ms, opts->metrics);
    backoff_init(&ob->retry, 100, 5000);
    return ob;
}

void
outbox_free(struct outbox *ob)
{
    if (ob == NULL) {
        return;
    }
    struct pg_error err;
    struct pg_conn *c = pg_acquire(ob->o.pg, 1000, &err);
    if (c) {
        lease_drop(ob->lease, c);
    }
    pg_release(ob->o.pg, c);
    lease_free(ob->lease);
    free(ob);
}

bool
outbox_flush_pass(struct outbox *ob)
{
    ob->retry_at_ms = 0;
    return outbox_relay_pass(ob);
}

long long
outbox_backlog(const struct outbox *ob)
{
    return __atomic_load_n(&ob->backlog, __ATOMIC_RELAXED);
}

/*
 * Sends one fetched batch inside the fetch transaction and records the outcome: delivered
 * (deleted or marked, conflicts parked), refused (the named event parked), or failed (nothing
 * changes; delivery backs off). Returns true if more events may be waiting.
 */
static bool
deliver(struct outbox *ob, struct pg_conn *c, const struct pg_result *res)
{
    struct pg_error err = {0};
    struct sbuf ids = {0};
    int n = pg_rows(res);
    int *rows = xcalloc((size_t)n, sizeof(*rows));
    cJSON *batch = build_batch(ob, c, res, ob->event_ns, &ids, rows), *reply = NULL;
    int nevents = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(batch, "events"));
    bool more = false;
    if (nevents == 0) {
        cJSON_Delete(batch);
        more = pg_exec_sql(c, "COMMIT", &err) == 0; /* only parked rows */
        goto out;
    }
    int st = rpc_client_call_sync(ob->o.logger, "log.append", batch, ob->o.logger_timeout_ms,
                                  &reply, NULL, NULL);
    if (st == RPC_OK) {
        const char *mp[] = {ids.data};
        backoff_reset(&ob->retry);
        /* Conflicts are parked first: the delete (or mark) then leaves their rows alone. A
         * failed park aborts the transaction, so nothing is recorded and the batch is sent
         * again. */
        park_conflicts(ob, c, cJSON_GetObjectItemCaseSensitive(reply, "conflicts"));
        if (pg_exec(c, ob->o.retention_s > 0 ? &mark : &drop, 1, mp, NULL, &err) != 0 ||
            pg_exec_sql(c, "COMMIT", &err) != 0) {
            log_warn("outbox_mark_failed", "reason=\"%s\" note=redelivery_is_harmless",
                     err.message);
        } else {
            gwmetrics_count(ob->o.metrics, M_OUTBOX_DELIVERED, n);
            more = n == ob->o.batch;
        }
    } else if (st == RPC_ERROR && strcmp(rpc_client_err_code(reply), "bad_request") == 0) {
        more =
            reject_named(ob, c, res, rows, nevents, reply) && pg_exec_sql(c, "COMMIT", &err) == 0;
    } else {
        char why[128];
        snprintf(why, sizeof(why), "status=%s code=%s", rpc_client_status_name(st),
                 rpc_client_err_code(reply));
        ob->retry_at_ms = time_mono_ms() + backoff_next(&ob->retry);
        (void)backoff_fail(&ob->retry, "outbox_delivery_failed", why);
    }
out:
    free(rows);
    cJSON_Delete(reply);
    sbuf_cleanup(&ids);
    return more;
}

bool
outbox_relay_pass(void *arg)
{
    struct outbox *ob = arg;
    struct pg_error err = {0};
    struct pg_result *res = NULL;
    bool more = false;
    if (time_mono_ms() < ob->retry_at_ms) {
        return false; /* the logger failed lately: kicks do not hurry the retry */
    }
    struct pg_conn *c = pg_acquire(ob->o.pg, ob->o.acquire_timeout_ms, &err);
    if (c == NULL) {
        pg_status(ob, err.cls != PG_ERR_CONNECTION);
        return false;
    }
    char limit[16];
    snprintf(limit, sizeof(limit), "%d", ob->o.batch);
    const char *params[] = {limit};
    if (pg_exec_sql(c, "BEGIN", &err) != 0 || pg_exec(c, &fetch, 1, params, &res, &err) != 0) {
        pg_status(ob, err.cls != PG_ERR_CONNECTION);
        log_warn("outbox_fetch_failed", "reason=\"%s\"", err.message);
    } else {
        pg_status(ob, true);
        if (pg_rows(res) > 0 && load_namespace(ob, c) == 0) {
            more = deliver(ob, c, res);
        }
    }
    pg_rollback(c);
    if (!more && time_mono_ms() - ob->housekeeping_ms > 5000) {
        ob->housekeeping_ms = time_mono_ms();
        housekeeping(ob, c);
    }
    pg_result_free(res);
    pg_release(ob->o.pg, c);
    return more;
}

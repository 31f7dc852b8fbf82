/* Reconciler: assignment log -> missing credits; stale pending claims -> credited or failed. */
#include "reconcile.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "claimid.h"
#include "claims.h"
#include "gw.h"
#include "json.h"
#include "lease.h"
#include "log.h"
#include "gwmetrics.h"
#include "pg.h"
#include "rpc_client.h"
#include "settle.h"

#define REC_PAGE 500           /* assignments per chance.assignments call */
#define REC_FULL_SCAN_MS 60000 /* rescan every category this often, changed or not */
#define REC_PENDING_BATCH 100  /* pending claims settled per pass */
#define REC_CURSOR_MAX 64      /* longest assignment-log cursor we keep */
#define REC_VERIFY_BATCH 1000  /* ledger rows checked against Redis per pass */

struct rec_cat {
    int64_t id;                      /* category id */
    bool scanned;                    /* read to the end at least once */
    char seen[REC_CURSOR_MAX + 1];   /* chance's log_last then ("" if none) */
    int64_t per_user_limit;          /* as chance listed it this pass */
    bool loaded;                     /* cursor read from PostgreSQL */
    char cursor[REC_CURSOR_MAX + 1]; /* last handled assignment-log entry, "" = start */
};

struct reconciler {
    struct gw *gw;        /* borrowed */
    struct lease *lease;  /* owned: only the holder reconciles */
    struct rec_cat *cats; /* known categories, by id ascending */
    size_t ncats, cap;    /* used and allocated */
    int64_t last_full_ms; /* monotonic time of the last full scan */
};

static const struct pg_stmt cursor_get = {
    "rec_cursor_get", "SELECT cursor FROM reconcile_cursors WHERE category = $1"};
static const struct pg_stmt cursor_put = {
    "rec_cursor_put",
    "INSERT INTO reconcile_cursors (category, cursor) VALUES ($1, $2) ON CONFLICT (category)"
    " DO UPDATE SET cursor = EXCLUDED.cursor, updated_at = now()"};
static const struct pg_stmt credited = {
    "rec_credited", "SELECT claim_id, code FROM ledger WHERE claim_id = ANY($1::text[])"};
enum { CREDITED_COL_CLAIM, CREDITED_COL_CODE };
static const struct pg_stmt released = {
    "rec_released", "UPDATE claims SET status = 'failed', error = 'released', updated_at = now()"
                    " WHERE claim_id = $1 AND status = 'pending'"};
/*
 * The ledger's tail, for the check against Redis: credits after the verified mark that are
 * older than reconcile_verify_delay_ms (long enough for Redis to have made them durable; a
 * crash can only lose what is younger). Ordered by id, so the mark only moves forward.
 */
static const struct pg_stmt tail = {
    "rec_tail", "SELECT l.id, l.claim_id, l.code, l.category, l.user_id, u.username, l.amount,"
                " (extract(epoch FROM l.created_at) * 1000)::bigint"
                " FROM ledger l JOIN users u ON u.id = l.user_id"
                " WHERE l.id > coalesce((SELECT value::bigint FROM gateway_meta"
                "   WHERE key = 'ledger_verified'), 0)"
                "   AND l.created_at < now() - make_interval(secs => $1::double precision / 1000)"
                " ORDER BY l.id LIMIT $2"};
enum {
    TAIL_COL_ID,
    TAIL_COL_CLAIM,
    TAIL_COL_CODE,
    TAIL_COL_CATEGORY,
    TAIL_COL_USER,
    TAIL_COL_USERNAME,
    TAIL_COL_AMOUNT,
    TAIL_COL_AT,
};
static const struct pg_stmt tail_done = {
    "rec_tail_done",
    "INSERT INTO gateway_meta (key, value) VALUES ('ledger_verified', $1) ON CONFLICT (key)"
    " DO UPDATE SET value = EXCLUDED.value"
    " WHERE gateway_meta.value::bigint < EXCLUDED.value::bigint"};

/*
 * Takes the oldest stale pending claims for this pass: touching updated_at leases them for
 * pending_settle_ms, and SKIP LOCKED keeps two settlers (two gateways) off the same rows, with
 * nothing held across the settling itself.
 */
static const struct pg_stmt stale = {
    "rec_stale", "WITH s AS (SELECT claim_id FROM claims WHERE status = 'pending'"
                 "   AND updated_at < now() - make_interval(secs => $1::double precision / 1000)"
                 "   ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
                 " UPDATE claims c SET updated_at = now() FROM s, users u"
                 " WHERE c.claim_id = s.claim_id AND u.id = c.user_id"
                 " RETURNING c.claim_id, c.user_id, u.username, c.category"};
enum { STALE_COL_CLAIM, STALE_COL_USER, STALE_COL_USERNAME, STALE_COL_CATEGORY };

struct reconciler *
reconciler_new(struct gw *gw)
{
    struct reconciler *rec = xcalloc(1, sizeof(*rec));
    rec->gw = gw;
    rec->lease = lease_new("reconciler", (int)gw->conf->lease_ttl_ms, gw->metrics);
    return rec;
}

void
reconciler_free(struct reconciler *rec)
{
    if (rec) {
        struct pg_error err;
        struct pg_conn *c = pg_acquire(rec->gw->pg, 1000, &err);
        if (c) {
            lease_drop(rec->lease, c); /* another gateway takes over now, not after the TTL */
        }
        pg_release(rec->gw->pg, c);
        lease_free(rec->lease);
        free(rec->cats);
        free(rec);
    }
}

static struct rec_cat *
cat_get(struct reconciler *rec, int64_t id)
{
    size_t lo = 0, hi = rec->ncats;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (rec->cats[mid].id < id) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if (lo < rec->ncats && rec->cats[lo].id == id) {
        return &rec->cats[lo];
    }
    if (rec->ncats == rec->cap) {
        rec->cap = rec->cap ? rec->cap * 2 : 64;
        rec->cats = xrealloc(rec->cats, rec->cap * sizeof(*rec->cats));
    }
    memmove(&rec->cats[lo + 1], &rec->cats[lo], (rec->ncats - lo) * sizeof(*rec->cats));
    rec->ncats++;
    memset(&rec->cats[lo], 0, sizeof(rec->cats[lo]));
    rec->cats[lo].id = id;
    return &rec->cats[lo];
}

static bool
token_ok(const char *s, size_t max)
{
    size_t n = strlen(s);
    return n > 0 && n <= max &&
           strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                     "0123456789_-") == n;
}

static int
load_cursor(struct reconciler *rec, struct pg_conn *c, struct rec_cat *cat)
{
    struct pg_error err;
    struct pg_result *res = NULL;
    char id[24];
    snprintf(id, sizeof(id), "%" PRId64, cat->id);
    const char *params[] = {id};
    if (pg_exec(c, &cursor_get, 1, params, &res, &err) != 0) {
        gw_pg_status(rec->gw, err.cls != PG_ERR_CONNECTION);
        return -1;
    }
    snprintf(cat->cursor, sizeof(cat->cursor), "%s", pg_rows(res) ? pg_text(res, 0, 0) : "");
    cat->loaded = true;
    pg_result_free(res);
    return 0;
}

static int
save_cursor(struct pg_conn *c, const struct rec_cat *cat)
{
    struct pg_error err;
    char id[24];
    snprintf(id, sizeof(id), "%" PRId64, cat->id);
    const char *params[] = {id, cat->cursor};
    if (pg_exec(c, &cursor_put, 2, params, NULL, &err) != 0) {
        log_warn("reconcile_cursor_failed", "category=%" PRId64 " reason=\"%s\"", cat->id,
                 err.message);
        return -1;
    }
    return 0;
}

/*
 * An assignment under a claim id no gateway issued: someone who reached chance directly (a
 * compromised internal peer) assigned a code. It is never credited; it is counted, logged and
 * audited (claim.forged, for the admins' log reports), and the code stays assigned in Redis
 * for an operator to look at.
 */
static void
forged_claim(struct reconciler *rec, struct pg_conn *c, const char *claim, long long user,
             const char *uname, const char *code, int64_t category)
{
    struct gw *gw = rec->gw;
    gwmetrics_count(gw->metrics, M_FORGED_CLAIM, 1);
    log_error("forged_claim",
              "claim=%.12s user=%lld category=%" PRId64
              " reason=\"the claim id's tag does not verify: not issued by a gateway\"",
              claim, user, category);
    char uid[24], msg[256], name[65];
    snprintf(uid, sizeof(uid), "%lld", user);
    audit_printable(uname, name, sizeof(name));
    snprintf(msg, sizeof(msg),
             "an assignment of category %" PRId64 " under a claim id no gateway issued was "
             "refused (user %s)",
             category, name[0] ? name : "-");
    struct audit_actor actor = {"reconciler", "reconciler", "system"};
    cJSON *subject = cJSON_CreateObject();
    cJSON_AddNumberToObject(subject, "category", (double)category);
    cJSON_AddStringToObject(subject, "code", code);
    cJSON_AddStringToObject(subject, "user_id", uid);
    cJSON *data = cJSON_CreateObject();
    cJSON_AddStringToObject(data, "claim_id", claim);
    cJSON_AddStringToObject(data, "reason", "claim id not issued by a gateway");
    char *event = audit_event("claim.forged", &actor, subject, data, msg);
    struct pg_error err;
    if (audit_record(c, gw->relay, event, &err) != 0) {
        log_warn("audit_failed", "type=claim.forged reason=\"%s\"", err.message);
    }
    free(event);
}

/* Settles one assignment item; false if PostgreSQL or chance failed (stop, retry next pass). */
static bool
credit_item(struct reconciler *rec, struct pg_conn *c, const cJSON *it, int64_t per_user_limit)
{
    struct gw *gw = rec->gw;
    const char *claim = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it, "claim_id"));
    const char *code = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it, "code"));
    const char *uid = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it, "user_id"));
    const char *uname = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it, "username"));
    const cJSON *reward = cJSON_GetObjectItemCaseSensitive(it, "reward");
    const cJSON *cat = cJSON_GetObjectItemCaseSensitive(it, "category");
    char *end = NULL;
    long long user = uid ? strtoll(uid, &end, 10) : 0;
    if (!claim || !token_ok(claim, CLAIM_ID_MAX) || !code || !token_ok(code, CLAIM_CODE_MAX) ||
        !uname || !json_is_int(reward) || reward->valuedouble < 1 || !json_is_int(cat) ||
        user <= 0 || *end != '\0') {
        gwmetrics_count(gw->metrics, M_RECONCILE_ORPHAN, 1);
        log_error("reconcile_item_invalid", "claim=%.12s", claim ? claim : "-");
        return true; /* nothing we could ever credit: move on, loudly */
    }
    if (!claimid_verify(gw->claim_secret, strlen(gw->claim_secret), claim, user)) {
        forged_claim(rec, c, claim, user, uname, code, (int64_t)cat->valuedouble);
        return true; /* never credited; alarmed once per log entry read */
    }
    struct assignment a = {.category = (int64_t)cat->valuedouble,
                           .reward = (int64_t)reward->valuedouble,
                           .per_user_limit = per_user_limit > 0 ? per_user_limit : 1};
    snprintf(a.code, sizeof(a.code), "%s", code);
    struct claimant who = {claim, user, uname, "reconciler"};
    struct settle_out out;
    switch (settle_assignment(gw, c, &who, &a, &out)) {
    case SETTLE_CREDITED:
        gwmetrics_count(gw->metrics, M_RECONCILE_CREDITED, 1);
        log_info("reconcile_credited", "claim=%.12s user=%lld category=%" PRId64, claim, user,
                 a.category);
        return true;
    case SETTLE_ORPHAN:
        gwmetrics_count(gw->metrics, M_RECONCILE_ORPHAN, 1);
        log_error("reconcile_orphan", "claim=%.12s user=%lld reason=\"no such user\"", claim, user);
        return true;
    case SETTLE_UNKNOWN:
        log_warn("reconcile_credit_failed", "claim=%.12s reason=\"%s\"", claim, out.err.message);
        return false;
    case SETTLE_REFUSED:
        log_info("reconcile_refused", "claim=%.12s reason=%s", claim, out.reason);
        return true;
    case SETTLE_REPLAYED:
    case SETTLE_KEY_REUSED: return true;
    }
    return true;
}

/* Handles one page of the log; returns items consumed, -1 to stop the category. */
static int
handle_page(struct reconciler *rec, struct pg_conn *c, struct rec_cat *cat, const cJSON *items,
            bool *young)
{
    int64_t horizon = time_wall_ms() - rec->gw->conf->reconcile_grace_ms;
    struct sbuf arr = {0};
    struct pg_result *done = NULL;
    struct pg_error err;
    int n = 0, total = 0;
    const cJSON **v = json_items(items, &total);
    sbuf_appends(&arr, "{");
    for (; n < total; n++) {
        const cJSON *it = v[n];
        const cJSON *at = cJSON_GetObjectItemCaseSensitive(it, "at");
        const char *claim = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it, "claim_id"));
        if (json_is_int(at) && at->valuedouble > (double)horizon) {
            *young = true; /* leave it to the request that is crediting it right now */
            break;
        }
        if (claim && token_ok(claim, CLAIM_ID_MAX)) {
            sbuf_appendf(&arr, "%s%s", arr.len > 1 ? "," : "", claim);
        }
    }
    sbuf_appends(&arr, "}");
    const char *params[] = {arr.data};
    if (n > 0 && pg_exec(c, &credited, 1, params, &done, &err) != 0) {
        sbuf_cleanup(&arr);
        free(v);
        return -1;
    }
    sbuf_cleanup(&arr);
    int consumed = 0;
    for (; consumed < n; consumed++) {
        const cJSON *it = v[consumed];
        const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it, "type"));
        const char *claim = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it, "claim_id"));
        const char *code = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it, "code"));
        const char *ledger_code = NULL;
        for (int r = 0; claim && done && r < pg_rows(done) && !ledger_code; r++) {
            if (strcmp(pg_text(done, r, CREDITED_COL_CLAIM), claim) == 0) {
                ledger_code = pg_text(done, r, CREDITED_COL_CODE);
            }
        }
        bool assigned = type && (strcmp(type, "assigned") == 0 || strcmp(type, "repaired") == 0);
        if (type && strcmp(type, "released") == 0 && claim) {
            const char *p[] = {claim};
            if (pg_exec(c, &released, 1, p, NULL, &err) != 0) {
                break;
            }
        } else if (assigned && !(ledger_code && code && strcmp(ledger_code, code) == 0) &&
                   !credit_item(rec, c, it, cat->per_user_limit)) {
            /* Not in the ledger as it is: settling credits it, or repairs Redis from the
             * ledger, or gives the code back. */
            break;
        }
        const char *cur = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it, "cursor"));
        if (cur && strlen(cur) <= REC_CURSOR_MAX) {
            snprintf(cat->cursor, sizeof(cat->cursor), "%s", cur);
        }
    }
    pg_result_free(done);
    free(v);
    return consumed < n ? -1 : consumed;
}

/* Reads the category's log from its cursor to the end (or a young entry); true if complete. */
static bool
scan_category(struct reconciler *rec, struct pg_conn *c, struct rec_cat *cat)
{
    struct gw *gw = rec->gw;
    if (!cat->loaded && load_cursor(rec, c, cat) != 0) {
        return false;
    }
    for (;;) {
        char before[REC_CURSOR_MAX + 1];
        snprintf(before, sizeof(before), "%s", cat->cursor);
        cJSON *data = cJSON_CreateObject(), *result = NULL;
        cJSON_AddNumberToObject(data, "category", (double)cat->id);
        cJSON_AddNumberToObject(data, "limit", REC_PAGE);
        if (cat->cursor[0]) {
            cJSON_AddStringToObject(data, "after", cat->cursor);
        }
        int st = rpc_client_call_sync(gw->chance, "chance.assignments", data,
                                      (int)gw->conf->rpc_timeout_ms, &result, NULL, NULL);
        const cJSON *items = cJSON_GetObjectItemCaseSensitive(result, "items");
        if (st != RPC_OK || !cJSON_IsArray(items)) {
            log_warn("reconcile_read_failed", "category=%" PRId64 " status=%s code=%s", cat->id,
                     rpc_client_status_name(st), rpc_client_err_code(result));
            cJSON_Delete(result);
            return false;
        }
        bool young = false;
        int n = handle_page(rec, c, cat, items, &young);
        int total = cJSON_GetArraySize(items);
        cJSON_Delete(result);
        if (strcmp(before, cat->cursor) != 0) {
            (void)save_cursor(
                c, cat); /* a lost cursor only means re-reading: credits are idempotent */
        }
        if (n < 0 || young) {
            return false;
        }
        if (total < REC_PAGE || __atomic_load_n(&gw->stopping, __ATOMIC_RELAXED)) {
            return true;
        }
    }
}

/* Re-drives one pending claim with its own claim id: chance replays or assigns, or refuses. */
static void
settle_one(struct reconciler *rec, struct pg_conn *c, const struct pg_result *res, int i)
{
    struct gw *gw = rec->gw;
    const char *claim = pg_text(res, i, STALE_COL_CLAIM);
    const char *uname = pg_text(res, i, STALE_COL_USERNAME);
    int64_t user = pg_int(res, i, STALE_COL_USER), category = pg_int(res, i, STALE_COL_CATEGORY);
    cJSON *data = cJSON_CreateObject(), *result = NULL;
    cJSON_AddStringToObject(data, "claim_id", claim);
    cJSON_AddNumberToObject(data, "category", (double)category);
    cJSON *u = cJSON_AddObjectToObject(data, "user");
    cJSON_AddNumberToObject(u, "id", (double)user);
    cJSON_AddStringToObject(u, "username", uname);
    int st = rpc_client_call_sync(gw->chance, "chance.claim", data, (int)gw->conf->rpc_timeout_ms,
                                  &result, NULL, NULL);
    const char *code = rpc_client_err_code(result);
    struct pg_error err = {0};
    struct assignment a;
    if (st == RPC_OK && settle_parse(result, claim, &a) == 0) {
        struct claimant who = {claim, user, uname, "reconciler"};
        struct settle_out out;
        enum settle_result rc = settle_assignment(gw, c, &who, &a, &out);
        if (rc != SETTLE_UNKNOWN) {
            gwmetrics_count(gw->metrics, M_PENDING_SETTLED, 1);
        }
    } else if (st == RPC_ERROR && strcmp(code, "unavailable") != 0 &&
               strcmp(code, "timeout") != 0 && strcmp(code, "internal") != 0) {
        if (claims_mark_failed(gw, c, claim, user, uname, category, code[0] ? code : "refused",
                               &err) == 0) {
            gwmetrics_count(gw->metrics, M_PENDING_SETTLED, 1);
            log_info("pending_failed", "claim=%.12s reason=%s", claim, code);
        }
    }
    /* Otherwise it stays pending; the pass that took it leased it for pending_settle_ms. */
    cJSON_Delete(result);
}

static void
settle_pending(struct reconciler *rec, struct pg_conn *c)
{
    struct gw *gw = rec->gw;
    struct pg_error err;
    struct pg_result *res = NULL;
    char age[24], limit[24];
    snprintf(age, sizeof(age), "%lld", gw->conf->pending_settle_ms);
    snprintf(limit, sizeof(limit), "%d", REC_PENDING_BATCH);
    const char *params[] = {age, limit};
    if (pg_exec(c, &stale, 2, params, &res, &err) != 0) {
        log_warn("pending_scan_failed", "reason=\"%s\"", err.message);
        return;
    }
    for (int i = 0; i < pg_rows(res) && !__atomic_load_n(&gw->stopping, __ATOMIC_RELAXED); i++) {
        settle_one(rec, c, res, i);
    }
    pg_result_free(res);
}

/* Asks chance about one category's rows of the tail; repairs what Redis forgot. */
static bool
verify_category(struct reconciler *rec, const struct pg_result *res, int64_t category,
                const int *rows, int n)
{
    struct gw *gw = rec->gw;
    cJSON *data = cJSON_CreateObject(), *result = NULL;
    cJSON_AddNumberToObject(data, "category", (double)category);
    cJSON *items = cJSON_AddArrayToObject(data, "items");
    for (int k = 0; k < n; k++) {
        cJSON *it = cJSON_CreateObject();
        cJSON_AddStringToObject(it, "code", pg_text(res, rows[k], TAIL_COL_CODE));
        cJSON_AddStringToObject(it, "claim_id", pg_text(res, rows[k], TAIL_COL_CLAIM));
        cJSON_AddItemToArray(items, it);
    }
    int st = rpc_client_call_sync(gw->chance, "chance.verify", data, (int)gw->conf->rpc_timeout_ms,
                                  &result, NULL, NULL);
    const cJSON *wrong = cJSON_GetObjectItemCaseSensitive(result, "mismatches");
    bool ok = st == RPC_OK && cJSON_IsArray(wrong);
    if (!ok) {
        log_warn("reconcile_verify_failed", "category=%" PRId64 " status=%s code=%s", category,
                 rpc_client_status_name(st), rpc_client_err_code(result));
        wrong = NULL;
    }
    const cJSON *m;
    cJSON_ArrayForEach (m, wrong) {
        const char *code = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "code"));
        const char *state = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(m, "state"));
        for (int k = 0; code && k < n; k++) {
            int r = rows[k];
            if (strcmp(pg_text(res, r, TAIL_COL_CODE), code) != 0) {
                continue;
            }
            struct credit_row row = {0};
            snprintf(row.claim_id, sizeof(row.claim_id), "%s", pg_text(res, r, TAIL_COL_CLAIM));
            snprintf(row.code, sizeof(row.code), "%s", code);
            snprintf(row.username, sizeof(row.username), "%s", pg_text(res, r, TAIL_COL_USERNAME));
            row.user_id = pg_int(res, r, TAIL_COL_USER);
            row.category = category;
            row.reward = pg_int(res, r, TAIL_COL_AMOUNT);
            row.credited_at = pg_int(res, r, TAIL_COL_AT);
            log_warn("reconcile_redis_forgot", "category=%" PRId64 " claim=%.12s state=%s",
                     category, row.claim_id, state ? state : "-");
            ok = settle_repair(gw, &row) == 0 && ok;
            break;
        }
    }
    cJSON_Delete(result);
    return ok;
}

/*
 * PostgreSQL -> Redis: every credit, once it is older than Redis can lose, is checked to be
 * assigned in Redis to its claim; what Redis forgot (a crash, a failover) is repaired now
 * rather than when a second user happens to draw the code. Moves the verified mark only over
 * rows that checked out.
 */
static void
verify_tail(struct reconciler *rec, struct pg_conn *c)
{
    struct gw *gw = rec->gw;
    struct pg_error err;
    struct pg_result *res = NULL;
    char delay[24], limit[24];
    snprintf(delay, sizeof(delay), "%lld", gw->conf->reconcile_verify_delay_ms);
    snprintf(limit, sizeof(limit), "%d", REC_VERIFY_BATCH);
    const char *params[] = {delay, limit};
    if (pg_exec(c, &tail, 2, params, &res, &err) != 0) {
        log_warn("reconcile_tail_failed", "reason=\"%s\"", err.message);
        return;
    }
    int n = pg_rows(res);
    int *rows = xcalloc((size_t)n + 1, sizeof(*rows));
    bool *done = xcalloc((size_t)n + 1, sizeof(*done));
    bool ok = true;
    for (int i = 0; i < n && ok; i++) {
        if (done[i]) {
            continue;
        }
        int64_t category = pg_int(res, i, TAIL_COL_CATEGORY);
        int k = 0;
        for (int j = i; j < n; j++) {
            if (!done[j] && pg_int(res, j, TAIL_COL_CATEGORY) == category) {
                rows[k++] = j;
                done[j] = true;
            }
        }
        ok = verify_category(rec, res, category, rows, k);
    }
    if (ok && n > 0) {
        const char *p[] = {pg_text(res, n - 1, TAIL_COL_ID)};
        if (pg_exec(c, &tail_done, 1, p, NULL, &err) != 0) {
            log_warn("reconcile_tail_mark_failed", "reason=\"%s\"", err.message);
        }
    }
    free(rows);
    free(done);
    pg_result_free(res);
}

/* Lists every category with its assigned count; NULL if chance could not be read. */
static cJSON *
list_categories(struct gw *gw)
{
    cJSON *all = cJSON_CreateArray();
    long long after = 0;
    for (;;) {
        cJSON *data = cJSON_CreateObject(), *result = NULL;
        cJSON_AddNumberToObject(data, "limit", 1000);
        if (after > 0) {
            cJSON_AddNumberToObject(data, "after", (double)after);
        }
        int st = rpc_client_call_sync(gw->chance, "chance.categories", data,
                                      (int)gw->conf->rpc_timeout_ms, &result, NULL, NULL);
        cJSON *items = cJSON_GetObjectItemCaseSensitive(result, "items");
        if (st != RPC_OK || !cJSON_IsArray(items)) {
            cJSON_Delete(result);
            cJSON_Delete(all);
            return NULL;
        }
        cJSON *it;
        while ((it = cJSON_DetachItemFromArray(items, 0)) != NULL) {
            cJSON_AddItemToArray(all, it);
        }
        const cJSON *next = cJSON_GetObjectItemCaseSensitive(result, "next_cursor");
        after = json_is_int(next) && next->valuedouble > (double)after
                    ? (long long)next->valuedouble
                    : 0;
        cJSON_Delete(result);
        if (after == 0) {
            return all;
        }
    }
}

bool
reconcile_pass(void *arg)
{
    struct reconciler *rec = arg;
    struct gw *gw = rec->gw;
    if (!__atomic_load_n(&gw->chance_up, __ATOMIC_RELAXED)) {
        return false;
    }
    struct pg_error err;
    struct pg_conn *c = pg_acquire(gw->pg, (int)gw->conf->pg_acquire_timeout_ms, &err);
    if (c == NULL) {
        return false;
    }
    cJSON *cats = NULL;
    if (!lease_hold(rec->lease, c) || (cats = list_categories(gw)) == NULL) {
        pg_release(gw->pg, c);
        return false;
    }
    bool full = time_mono_ms() - rec->last_full_ms >= REC_FULL_SCAN_MS, complete = true;
    const cJSON *it;
    cJSON_ArrayForEach (it, cats) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
        const char *last = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it, "log_last"));
        last = last ? last : "";
        if (!json_is_int(id) || __atomic_load_n(&gw->stopping, __ATOMIC_RELAXED)) {
            continue;
        }
        struct rec_cat *cat = cat_get(rec, (int64_t)id->valuedouble);
        const cJSON *limit = cJSON_GetObjectItemCaseSensitive(it, "per_user_limit");
        cat->per_user_limit = json_is_int(limit) ? (int64_t)limit->valuedouble : 1;
        /* An unchanged newest log entry means nothing was logged since the last scan. */
        if (!full && cat->scanned && strcmp(cat->seen, last) == 0) {
            continue;
        }
        /* a pass can outlast the lease (chance slow or failing over): stop when it is gone */
        if (!lease_keep(rec->lease, c)) {
            complete = false;
            break;
        }
        if (scan_category(rec, c, cat)) {
            cat->scanned = true;
            snprintf(cat->seen, sizeof(cat->seen), "%s", last);
        } else {
            complete = false;
        }
    }
    if (full && complete) {
        rec->last_full_ms = time_mono_ms();
    }
    if (lease_keep(rec->lease, c)) {
        settle_pending(rec, c);
    }
    if (lease_keep(rec->lease, c)) {
        verify_tail(rec, c);
    }
    pg_release(gw->pg, c);
    cJSON_Delete(cats);
    return false;
}

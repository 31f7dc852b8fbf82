/*
 * chance.codes and chance.code: looking codes up for admins. A page of a category's codes comes
 * from one of three scans, named by the cursor's mode: the free set (available codes), the
 * assignment log (assigned codes, in order) or the code records (every code).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chance.h"
#include "json.h"
#include "log.h"
#include "redis.h"
#include "rpc_server.h"

#define PAGE_DEFAULT 100
#define PAGE_MAX 1000
#define CURSOR_MAX 60

enum scan_mode {
    SCAN_FREE = 'a', /* SSCAN of the free set: available codes */
    SCAN_LOG = 's',  /* XRANGE of the assignment log: assigned codes */
    SCAN_ALL = 'h',  /* HSCAN of the code records: every code */
};

/* Where a page starts: "<mode>:<position>:<skip>" on the wire. */
struct scan_pos {
    enum scan_mode mode;
    char pos[48];   /* the SSCAN/HSCAN cursor or the last stream id */
    long long skip; /* items of that scan step already returned */
};

struct codes_query {
    struct chance *ch;     /* borrowed */
    struct rpc_call *call; /* answered at the end */
    long long category;    /* 0: look up by code */
    long long limit;
    char status[16];             /* "" or a status to keep */
    char user[65];               /* "" or a user whose codes to list */
    char code[CODEGEN_MAX_CODE]; /* a single code to look up, or "" */
    struct scan_pos at;          /* where this page starts */
    struct scan_pos next;        /* where the next one does; next.mode 0: no next page */
    cJSON *codes;                /* the page's codes, in order, while their records are fetched */
};

static cJSON *
code_json(const char *code, long long category, const char *record)
{
    cJSON *d = record ? cJSON_Parse(record) : NULL;
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(d, "r");
    const char *s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(d, "s"));
    if (!json_is_int(r) || s == NULL) {
        cJSON_Delete(d);
        return NULL; /* damaged record: not shown as a code */
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "code", code);
    cJSON_AddNumberToObject(o, "category", (double)category);
    cJSON_AddNumberToObject(o, "reward", r->valuedouble);
    cJSON_AddStringToObject(o, "status", s);
    if (strcmp(s, "assigned") == 0) {
        const char *u = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(d, "u"));
        const char *n = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(d, "n"));
        const char *c = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(d, "c"));
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(d, "t");
        cJSON_AddStringToObject(o, "user_id", u ? u : "");
        cJSON_AddStringToObject(o, "username", n ? n : "");
        cJSON_AddStringToObject(o, "claim_id", c ? c : "");
        cJSON_AddNumberToObject(o, "assigned_at", cJSON_IsNumber(t) ? t->valuedouble : 0);
    }
    cJSON_Delete(d);
    return o;
}

static void
format_cursor(const struct scan_pos *p, char *out, size_t size)
{
    snprintf(out, size, "%c:%s:%lld", (char)p->mode, p->pos, p->skip);
}

static bool
digits(const char *s)
{
    return *s && strspn(s, "0123456789") == strlen(s);
}

static bool
stream_id(const char *s)
{
    const char *dash = strchr(s, '-');
    if (dash == NULL || dash == s || !digits(dash + 1)) {
        return false;
    }
    return strspn(s, "0123456789") == (size_t)(dash - s);
}

/* Parses a cursor this service issued; -1 if it is not one. */
static int
parse_cursor(const char *s, struct scan_pos *p)
{
    if (strlen(s) > CURSOR_MAX || s[0] == '\0' || s[1] != ':') {
        return -1;
    }
    const char *pos = s + 2, *colon = strrchr(pos, ':');
    if (colon == NULL || (size_t)(colon - pos) >= sizeof(p->pos) || !digits(colon + 1) ||
        strlen(colon + 1) > 7) {
        return -1;
    }
    memcpy(p->pos, pos, (size_t)(colon - pos));
    p->pos[colon - pos] = '\0';
    p->skip = atoll(colon + 1);
    p->mode = (enum scan_mode)s[0];
    switch (p->mode) {
    case SCAN_FREE:
    case SCAN_ALL: return digits(p->pos) ? 0 : -1;
    case SCAN_LOG: return stream_id(p->pos) ? 0 : -1;
    }
    return -1;
}

static void
query_free(struct codes_query *q)
{
    cJSON_Delete(q->codes);
    free(q);
}

static void
reply_page(struct codes_query *q, cJSON *items)
{
    cJSON *resp = cJSON_CreateObject();
    cJSON_AddItemToObject(resp, "items", items);
    if (q->next.mode) {
        char cur[CURSOR_MAX + 8];
        format_cursor(&q->next, cur, sizeof(cur));
        cJSON_AddStringToObject(resp, "next_cursor", cur);
    } else {
        cJSON_AddNullToObject(resp, "next_cursor");
    }
    rpc_reply(q->call, resp);
}

/* Adds the item of a code to items if it passes the status and user filters (and is not
 * there yet: the assignment log can name a code twice). */
static void
add_item(struct codes_query *q, cJSON *items, const char *code, const char *record)
{
    cJSON *o = code_json(code, q->category, record);
    if (o == NULL) {
        return;
    }
    const char *st = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "status"));
    const char *uid = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "user_id"));
    bool dup = false;
    const cJSON *it;
    cJSON_ArrayForEach (it, items) {
        const char *c = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it, "code"));
        dup = dup || (c && strcmp(c, code) == 0);
    }
    if (dup || (q->status[0] && strcmp(st, q->status) != 0) ||
        (q->user[0] && (uid == NULL || strcmp(uid, q->user) != 0))) {
        cJSON_Delete(o);
        return;
    }
    cJSON_AddItemToArray(items, o);
}

/* ---- a list of codes -> their records ---- */

static void
on_records(enum redis_status status, cJSON *replies, void *arg)
{
    struct codes_query *q = arg;
    if (!chance_replies_failed(q->call, status, replies)) {
        const cJSON *records = cJSON_GetArrayItem(replies, 0);
        const cJSON *c = NULL, *r = NULL;
        cJSON *items = cJSON_CreateArray();
        for (int i = 0; i < cJSON_GetArraySize(q->codes); i++) {
            c = c ? c->next : q->codes->child;
            r = r ? r->next : (records ? records->child : NULL);
            const char *rec = cJSON_GetStringValue(r);
            if (cJSON_IsString(c) && rec) {
                add_item(q, items, c->valuestring, rec);
            }
        }
        reply_page(q, items);
    }
    cJSON_Delete(replies);
    query_free(q);
}

/* Fetches the records of q->codes (set by the caller) and answers with the page. */
static void
fetch_records(struct codes_query *q)
{
    int n = cJSON_GetArraySize(q->codes);
    struct redis_batch *b = redis_batch_new(q->ch->redis);
    char key[KEY_MAX];
    chance_key(key, q->category, "codes");
    if (n == 0) {
        redis_batch_cmd(b, "HMGET %s %s", key, "-"); /* an empty page keeps one shape */
    } else {
        const char **argv = xcalloc((size_t)n + 2, sizeof(char *));
        argv[0] = "HMGET";
        argv[1] = key;
        const cJSON *it = q->codes->child;
        for (int i = 0; i < n; i++, it = it->next) {
            const char *c = cJSON_GetStringValue(it);
            argv[2 + i] = c ? c : "-";
        }
        redis_batch_argv(b, n + 2, argv, NULL);
        free(argv);
    }
    redis_batch_send(b, on_records, q);
}

/* ---- scans ---- */

/* After a SSCAN/HSCAN step of `got` items: where the next page starts. */
static void
next_after_scan(struct codes_query *q, const char *cursor, long long got)
{
    if (q->at.skip + q->limit < got) {
        /* This scan step holds more than a page: resume inside it. */
        q->next = q->at;
        q->next.skip = q->at.skip + q->limit;
    } else if (cursor && strcmp(cursor, "0") != 0 && strlen(cursor) < sizeof(q->next.pos)) {
        q->next.mode = q->at.mode;
        snprintf(q->next.pos, sizeof(q->next.pos), "%s", cursor);
        q->next.skip = 0;
    }
}

static void
on_page(enum redis_status status, cJSON *replies, void *arg)
{
    struct codes_query *q = arg;
    if (chance_replies_failed(q->call, status, replies)) {
        cJSON_Delete(replies);
        query_free(q);
        return;
    }
    const cJSON *r = cJSON_GetArrayItem(replies, 0);
    q->codes = cJSON_CreateArray();
    if (q->at.mode == SCAN_FREE) { /* [cursor, [code, ...]] */
        const cJSON *list = cJSON_GetArrayItem(r, 1);
        long long n = cJSON_GetArraySize(list);
        for (long long i = q->at.skip; i < n && i < q->at.skip + q->limit; i++) {
            const cJSON *c = cJSON_GetArrayItem(list, (int)i);
            if (cJSON_IsString(c)) {
                cJSON_AddItemToArray(q->codes, cJSON_CreateString(c->valuestring));
            }
        }
        next_after_scan(q, cJSON_GetStringValue(cJSON_GetArrayItem(r, 0)), n);
    } else if (q->at.mode == SCAN_ALL) { /* [cursor, [code, record, ...]]: records in hand */
        const cJSON *list = cJSON_GetArrayItem(r, 1);
        long long n = cJSON_GetArraySize(list) / 2;
        cJSON *items = cJSON_CreateArray();
        for (long long i = q->at.skip; i < n && i < q->at.skip + q->limit; i++) {
            const char *c = cJSON_GetStringValue(cJSON_GetArrayItem(list, (int)(2 * i)));
            const char *rec = cJSON_GetStringValue(cJSON_GetArrayItem(list, (int)(2 * i + 1)));
            if (c && rec) {
                add_item(q, items, c, rec);
            }
        }
        next_after_scan(q, cJSON_GetStringValue(cJSON_GetArrayItem(r, 0)), n);
        cJSON_Delete(replies);
        reply_page(q, items);
        query_free(q);
        return;
    } else { /* the log: [[id, [k, v, ...]], ...] */
        const cJSON *e;
        const char *last = NULL;
        long long n = 0;
        cJSON_ArrayForEach (e, r) {
            const cJSON *id = cJSON_GetArrayItem(e, 0), *kv = cJSON_GetArrayItem(e, 1);
            const char *t = chance_kv_get(kv, "t"), *code = chance_kv_get(kv, "code");
            last = cJSON_GetStringValue(id);
            n++;
            if (t && code && (strcmp(t, "assigned") == 0 || strcmp(t, "repaired") == 0)) {
                cJSON_AddItemToArray(q->codes, cJSON_CreateString(code));
            }
        }
        if (n == q->limit && last && strlen(last) < sizeof(q->next.pos)) {
            q->next.mode = SCAN_LOG;
            snprintf(q->next.pos, sizeof(q->next.pos), "%s", last);
        }
    }
    cJSON_Delete(replies);
    fetch_records(q);
}

static void
run_page(struct codes_query *q)
{
    char key[KEY_MAX];
    struct redis_batch *b = redis_batch_new(q->ch->redis);
    switch (q->at.mode) {
    case SCAN_FREE:
        chance_key(key, q->category, "free");
        redis_batch_cmd(b, "SSCAN %s %s COUNT %lld", key, q->at.pos, q->limit);
        break;
    case SCAN_ALL:
        chance_key(key, q->category, "codes");
        redis_batch_cmd(b, "HSCAN %s %s COUNT %lld", key, q->at.pos, q->limit);
        break;
    case SCAN_LOG:
        chance_key(key, q->category, "log");
        redis_batch_cmd(b, "XRANGE %s (%s + COUNT %lld", key, q->at.pos, q->limit);
        break;
    }
    redis_batch_send(b, on_page, q);
}

/* ---- by user, by code ---- */

static void
on_user_codes(enum redis_status status, cJSON *replies, void *arg)
{
    struct codes_query *q = arg;
    if (chance_replies_failed(q->call, status, replies)) {
        cJSON_Delete(replies);
        query_free(q);
        return;
    }
    const char *list = cJSON_GetStringValue(cJSON_GetArrayItem(replies, 0));
    q->codes = cJSON_CreateArray();
    if (list) {
        char *copy = xstrdup(list), *save = NULL;
        for (char *t = strtok_r(copy, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
            cJSON_AddItemToArray(q->codes, cJSON_CreateString(t));
        }
        free(copy);
    }
    cJSON_Delete(replies);
    fetch_records(q);
}

/* The index named the code's category (or nothing). */
static void
on_code_category(enum redis_status status, cJSON *replies, void *arg)
{
    struct codes_query *q = arg;
    if (chance_replies_failed(q->call, status, replies)) {
        cJSON_Delete(replies);
        query_free(q);
        return;
    }
    const char *cat = cJSON_GetStringValue(cJSON_GetArrayItem(replies, 0));
    long long c = cat ? atoll(cat) : 0;
    cJSON_Delete(replies);
    q->codes = cJSON_CreateArray();
    if (c > 0 && (q->category == 0 || q->category == c)) {
        q->category = c;
        cJSON_AddItemToArray(q->codes, cJSON_CreateString(q->code));
    }
    fetch_records(q);
}

static void
lookup_code(struct codes_query *q)
{
    char key[KEY_MAX];
    chance_index_key(key, q->code);
    struct redis_batch *b = redis_batch_new(q->ch->redis);
    redis_batch_cmd(b, "HGET %s %s", key, q->code);
    redis_batch_send(b, on_code_category, q);
}

void
chance_codes(struct rpc_call *call, const cJSON *data, void *arg)
{
    static const char *const fields[] = {"category", "status", "user", "code",
                                         "cursor",   "limit",  NULL};
    struct codes_query *q = xcalloc(1, sizeof(*q));
    const char *status = NULL, *code = NULL, *cursor = NULL;
    char err[256];
    q->ch = arg;
    q->call = call;
    q->limit = PAGE_DEFAULT;
    if (json_check_fields(data, fields, err, sizeof(err)) ||
        json_get_int(data, "limit", false, 1, PAGE_MAX, &q->limit, err, sizeof(err)) ||
        json_get_int(data, "category", false, 1, JSON_MAX_SAFE_INT, &q->category, err,
                     sizeof(err)) ||
        json_get_string(data, "status", false, 15, &status, err, sizeof(err)) ||
        json_get_string(data, "code", false, CODEGEN_MAX_CODE - 1, &code, err, sizeof(err)) ||
        json_get_string(data, "cursor", false, CURSOR_MAX, &cursor, err, sizeof(err)) ||
        chance_id_field(data, "user", false, q->user, sizeof(q->user), err, sizeof(err))) {
        goto bad;
    }
    if (status && strcmp(status, "available") != 0 && strcmp(status, "assigned") != 0) {
        snprintf(err, sizeof(err), "field 'status' must be 'available' or 'assigned'");
        goto bad;
    }
    snprintf(q->status, sizeof(q->status), "%s", status ? status : "");
    if (code) {
        if (codegen_normalise(code, q->code, sizeof(q->code)) != 0) {
            snprintf(err, sizeof(err), "field 'code' has characters no code contains");
            goto bad;
        }
        lookup_code(q);
        return;
    }
    if (q->category == 0) {
        snprintf(err, sizeof(err), "give 'category' (or 'code')");
        goto bad;
    }
    if (q->user[0]) {
        char key[KEY_MAX];
        chance_key(key, q->category, "byuser");
        struct redis_batch *b = redis_batch_new(q->ch->redis);
        redis_batch_cmd(b, "HGET %s %s", key, q->user);
        redis_batch_send(b, on_user_codes, q);
        return;
    }
    q->at.mode = !status ? SCAN_ALL : strcmp(status, "available") == 0 ? SCAN_FREE : SCAN_LOG;
    snprintf(q->at.pos, sizeof(q->at.pos), "%s", q->at.mode == SCAN_LOG ? "0-0" : "0");
    if (cursor) {
        struct scan_pos p;
        if (parse_cursor(cursor, &p) != 0) {
            snprintf(err, sizeof(err), "field 'cursor' is not a cursor this service issued");
            goto bad;
        }
        if (p.mode != q->at.mode) {
            snprintf(err, sizeof(err), "field 'cursor' does not match the status filter");
            goto bad;
        }
        q->at = p;
    }
    run_page(q);
    return;
bad:
    rpc_reply_error(call, "bad_request", "%s", err);
    query_free(q);
}

/* ---- chance.code ---- */

static void
on_single_record(enum redis_status status, cJSON *replies, void *arg)
{
    struct codes_query *q = arg;
    if (!chance_replies_failed(q->call, status, replies)) {
        const char *rec = cJSON_GetStringValue(cJSON_GetArrayItem(replies, 0));
        cJSON *o = rec ? code_json(q->code, q->category, rec) : NULL;
        if (o == NULL) {
            rpc_reply_error(q->call, "code_not_found", "no such code");
        } else {
            rpc_reply(q->call, o);
        }
    }
    cJSON_Delete(replies);
    query_free(q);
}

static void
on_single_category(enum redis_status status, cJSON *replies, void *arg)
{
    struct codes_query *q = arg;
    if (chance_replies_failed(q->call, status, replies)) {
        cJSON_Delete(replies);
        query_free(q);
        return;
    }
    const char *cat = cJSON_GetStringValue(cJSON_GetArrayItem(replies, 0));
    q->category = cat ? atoll(cat) : 0;
    cJSON_Delete(replies);
    if (q->category < 1) {
        rpc_reply_error(q->call, "code_not_found", "no such code");
        query_free(q);
        return;
    }
    char key[KEY_MAX];
    chance_key(key, q->category, "codes");
    struct redis_batch *b = redis_batch_new(q->ch->redis);
    redis_batch_cmd(b, "HGET %s %s", key, q->code);
    redis_batch_send(b, on_single_record, q);
}

void
chance_code(struct rpc_call *call, const cJSON *data, void *arg)
{
    static const char *const fields[] = {"code", NULL};
    struct codes_query *q = xcalloc(1, sizeof(*q));
    const char *code = NULL;
    char err[256];
    q->ch = arg;
    q->call = call;
    if (json_check_fields(data, fields, err, sizeof(err)) ||
        json_get_string(data, "code", true, CODEGEN_MAX_CODE - 1, &code, err, sizeof(err))) {
        goto bad;
    }
    if (codegen_normalise(code, q->code, sizeof(q->code)) != 0) {
        snprintf(err, sizeof(err), "field 'code' has characters no code contains");
        goto bad;
    }
    char key[KEY_MAX];
    chance_index_key(key, q->code);
    struct redis_batch *b = redis_batch_new(q->ch->redis);
    redis_batch_cmd(b, "HGET %s %s", key, q->code);
    redis_batch_send(b, on_single_category, q);
    return;
bad:
    rpc_reply_error(call, "bad_request", "%s", err);
    query_free(q);
}

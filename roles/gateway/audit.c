/* Builds gateway audit events and writes them to the outbox table. */
#include "audit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bgtask.h"
#include "pg.h"

char *
audit_event(const char *type, const struct audit_actor *actor, cJSON *subject, cJSON *data,
            const char *message)
{
    cJSON *ev = cJSON_CreateObject();
    cJSON_AddNumberToObject(ev, "ts", (double)time_wall_ms());
    cJSON_AddStringToObject(ev, "service", "gateway");
    cJSON_AddStringToObject(ev, "type", type);
    if (actor) {
        cJSON *a = cJSON_AddObjectToObject(ev, "actor");
        cJSON_AddStringToObject(a, "id", actor->id);
        cJSON_AddStringToObject(a, "username", actor->username);
        cJSON_AddStringToObject(a, "role", actor->role);
    } else {
        cJSON_AddNullToObject(ev, "actor");
    }
    cJSON_AddItemToObject(ev, "subject", subject ? subject : cJSON_CreateObject());
    cJSON_AddItemToObject(ev, "data", data ? data : cJSON_CreateObject());
    cJSON_AddStringToObject(ev, "message", message);
    char *text = cJSON_PrintUnformatted(ev);
    cJSON_Delete(ev);
    if (text == NULL) {
        abort(); /* cJSON only fails here on out-of-memory */
    }
    return text;
}

static int
insert_event(struct pg_conn *c, const char *event, struct pg_error *err)
{
    static const struct pg_stmt insert = {"audit_insert", "INSERT INTO outbox (event) VALUES ($1)"};
    const char *params[] = {event};
    return pg_exec(c, &insert, 1, params, NULL, err);
}

int
audit_commit(struct pg_conn *c, struct bgtask *relay, audit_apply_fn apply, void *arg,
             struct pg_error *err)
{
    char *event = NULL;
    int rc = -1;
    if (pg_exec_sql(c, "BEGIN", err) == 0) {
        rc = apply(c, arg, &event, err);
        if (rc > 0 && event == NULL) {
            abort(); /* a change without its event: a bug in the caller */
        }
        if (rc < 0 || (rc > 0 && insert_event(c, event, err) != 0) ||
            pg_exec_sql(c, "COMMIT", err) != 0) {
            rc = -1;
        }
    }
    if (rc < 0) {
        pg_rollback(c);
    } else if (rc > 0 && relay) {
        bgtask_kick(relay);
    }
    free(event);
    return rc;
}

int
audit_record(struct pg_conn *c, struct bgtask *relay, const char *event, struct pg_error *err)
{
    if (insert_event(c, event, err) != 0) {
        return -1;
    }
    if (relay) {
        bgtask_kick(relay);
    }
    return 0;
}

void
audit_printable(const char *in, char *out, size_t size)
{
    struct sbuf b = {0};
    for (const unsigned char *p = (const unsigned char *)in; *p; p++) {
        if (*p < 0x20 || *p == 0x7f) {
            sbuf_appendf(&b, "\\x%02x", *p);
        } else {
            sbuf_appendf(&b, "%c", *p);
        }
    }
    const char *text = b.data ? b.data : "";
    int n = util_utf8_prefix(text, size - 1);
    snprintf(out, size, "%.*s", n, text);
    sbuf_cleanup(&b);
}

void
audit_money(int64_t amount, char *buf, size_t size)
{
    char digits[32];
    int n = snprintf(digits, sizeof(digits), "%lld", (long long)(amount < 0 ? -amount : amount));
    size_t o = 0;
    if (amount < 0 && o + 1 < size) {
        buf[o++] = '-';
    }
    for (int i = 0; i < n && o + 1 < size; i++) {
        if (i > 0 && (n - i) % 3 == 0 && o + 1 < size) {
            buf[o++] = ',';
        }
        buf[o++] = digits[i];
    }
    buf[o] = '\0';
}

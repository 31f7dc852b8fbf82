/* Validation of audit events from untrusted sources into the canonical shape the store writes. */
#include "event.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

#define TS_MAX 32503680000000LL /* 3000-01-01: anything later is a unit mistake (seconds vs ms) */
#define NAME_MAX_LEN 64         /* service, type, ids and names */
#define DATA_MAX_DEPTH 8        /* nesting of data, counting data itself */
#define KEY_MAX_LEN 100         /* field names inside subject and data */
#define CATEGORIES_MAX 1000     /* subject.categories items */

static int check_tree(const cJSON *node, const char *where, char *err, size_t errlen);

static const char *const event_fields[] = {"_id",     "ts",   "service", "type", "actor",
                                           "subject", "data", "message", NULL};

static bool
is_token(const char *s)
{
    for (; *s; s++) {
        if (!(isalnum((unsigned char)*s) || *s == '.' || *s == '_' || *s == '-')) {
            return false;
        }
    }
    return true;
}

static bool
has_control(const char *s)
{
    for (; *s; s++) {
        if ((unsigned char)*s < 0x20 || *s == 0x7f) {
            return true;
        }
    }
    return false;
}

/*
 * Field names must be storable in MongoDB and queryable: no leading '$' (operators), no '.'
 * (paths), valid UTF-8, bounded.
 */
static int
check_key(const char *key, const char *where, char *err, size_t errlen)
{
    size_t n = strlen(key);
    if (n == 0 || n > KEY_MAX_LEN || key[0] == '$' || strchr(key, '.') != NULL ||
        !util_utf8_valid(key, n)) {
        snprintf(err, errlen,
                 "field name '%.40s' in %s is not allowed (1 to %d bytes of UTF-8, "
                 "no leading '$', no '.')",
                 key, where, KEY_MAX_LEN);
        return -1;
    }
    return 0;
}

static int
check_tree(const cJSON *node, const char *where, char *err, size_t errlen)
{
    if (cJSON_IsString(node) && !util_utf8_valid(node->valuestring, strlen(node->valuestring))) {
        snprintf(err, errlen, "a string in %s is not valid UTF-8", where);
        return -1;
    }
    for (const cJSON *c = node->child; c; c = c->next) {
        if (cJSON_IsObject(node) && check_key(c->string, where, err, errlen) != 0) {
            return -1;
        }
        if (check_tree(c, where, err, errlen) != 0) {
            return -1;
        }
    }
    return 0;
}

/* An id that may arrive as a string or an integer; stored as a string. */
static cJSON *
get_id(const cJSON *obj, const char *key, bool required, const char *where, char *err,
       size_t errlen)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (it == NULL || cJSON_IsNull(it)) {
        if (required) {
            snprintf(err, errlen, "field '%s.%s' is required", where, key);
        } else {
            err[0] = '\0';
        }
        return NULL;
    }
    if (json_is_int(it)) {
        char buf[32];
        snprintf(buf, sizeof(buf), "%lld", (long long)it->valuedouble);
        return cJSON_CreateString(buf);
    }
    size_t n = cJSON_IsString(it) ? strlen(it->valuestring) : 0;
    if (n == 0 || n > NAME_MAX_LEN || !util_utf8_valid(it->valuestring, n) ||
        has_control(it->valuestring)) {
        snprintf(err, errlen, "field '%s.%s' must be an integer or 1 to %d bytes of text", where,
                 key, NAME_MAX_LEN);
        return NULL;
    }
    return cJSON_CreateString(it->valuestring);
}

static cJSON *
normalise_actor(const cJSON *actor, char *err, size_t errlen)
{
    static const char *const fields[] = {"id", "username", "role", NULL};
    const char *role = NULL;
    if (json_check_fields(actor, fields, err, errlen) != 0) {
        size_t n = strlen(err);
        snprintf(err + n, errlen - n, " in actor");
        return NULL;
    }
    cJSON *out = cJSON_CreateObject();
    cJSON *id = get_id(actor, "id", true, "actor", err, errlen);
    if (id == NULL) {
        goto fail;
    }
    cJSON_AddItemToObject(out, "id", id);
    cJSON *name = get_id(actor, "username", true, "actor", err, errlen);
    if (name == NULL) {
        goto fail;
    }
    cJSON_AddItemToObject(out, "username", name);
    if (json_get_string(actor, "role", true, 32, &role, err, errlen) != 0 || !is_token(role)) {
        snprintf(err, errlen, "field 'actor.role' must be a word such as user, admin or system");
        goto fail;
    }
    cJSON_AddStringToObject(out, "role", role);
    return out;
fail:
    cJSON_Delete(out);
    return NULL;
}

static int
copy_int(cJSON *out, const cJSON *f, char *err, size_t errlen)
{
    if (cJSON_IsNull(f)) {
        return 0;
    }
    if (!json_is_int(f) || f->valuedouble < 1) {
        snprintf(err, errlen, "field 'subject.%s' must be a positive integer", f->string);
        return -1;
    }
    cJSON_AddNumberToObject(out, f->string, f->valuedouble);
    return 0;
}

static int
copy_categories(cJSON *out, const cJSON *list, char *err, size_t errlen)
{
    if (!cJSON_IsArray(list) || cJSON_GetArraySize(list) > CATEGORIES_MAX) {
        snprintf(err, errlen, "field 'subject.categories' must be an array of at most %d ids",
                 CATEGORIES_MAX);
        return -1;
    }
    cJSON *arr = cJSON_AddArrayToObject(out, "categories");
    for (const cJSON *c = list->child; c; c = c->next) {
        if (!json_is_int(c) || c->valuedouble < 1) {
            snprintf(err, errlen, "field 'subject.categories' must hold positive integers");
            return -1;
        }
        cJSON_AddItemToArray(arr, cJSON_CreateNumber(c->valuedouble));
    }
    return 0;
}

/* Known subject fields get their types checked; others must be short scalars. */
static int
copy_subject_field(cJSON *out, const cJSON *in, const cJSON *f, char *err, size_t errlen)
{
    const char *k = f->string;
    if (strcmp(k, "category") == 0 || strcmp(k, "batch") == 0) {
        return copy_int(out, f, err, errlen);
    }
    if (strcmp(k, "categories") == 0) {
        return copy_categories(out, f, err, errlen);
    }
    if (strcmp(k, "code") == 0 || strcmp(k, "user_id") == 0 || strcmp(k, "username") == 0 ||
        strcmp(k, "claim_id") == 0) {
        cJSON *v = get_id(in, k, false, "subject", err, errlen);
        if (v == NULL) {
            return err[0] ? -1 : 0;
        }
        if (strcmp(k, "code") == 0) { /* codes are case-insensitive; store them one way */
            for (char *p = v->valuestring; *p; p++) {
                *p = (char)toupper((unsigned char)*p);
            }
        }
        cJSON_AddItemToObject(out, k, v);
        return 0;
    }
    if (check_key(k, "subject", err, errlen) != 0) {
        return -1;
    }
    if (cJSON_IsString(f) && strlen(f->valuestring) <= 256 &&
        util_utf8_valid(f->valuestring, strlen(f->valuestring))) {
        cJSON_AddStringToObject(out, k, f->valuestring);
    } else if (cJSON_IsNumber(f) || cJSON_IsBool(f) || cJSON_IsNull(f)) {
        cJSON_AddItemToObject(out, k, cJSON_Duplicate(f, 0));
    } else {
        snprintf(err, errlen,
                 "field 'subject.%.40s' must be a number, a boolean or a string of "
                 "at most 256 bytes",
                 k);
        return -1;
    }
    return 0;
}

static cJSON *
normalise_subject(const cJSON *subject, char *err, size_t errlen)
{
    cJSON *out = cJSON_CreateObject();
    if (subject == NULL || cJSON_IsNull(subject)) {
        return out;
    }
    if (!cJSON_IsObject(subject)) {
        snprintf(err, errlen, "field 'subject' must be an object");
        goto fail;
    }
    for (const cJSON *f = subject->child; f; f = f->next) {
        if (copy_subject_field(out, subject, f, err, errlen) != 0) {
            goto fail;
        }
    }
    return out;
fail:
    cJSON_Delete(out);
    return NULL;
}

static cJSON *
normalise_data(const cJSON *data, char *err, size_t errlen)
{
    if (data == NULL || cJSON_IsNull(data)) {
        return cJSON_CreateObject();
    }
    if (!cJSON_IsObject(data)) {
        snprintf(err, errlen, "field 'data' must be an object");
        return NULL;
    }
    if (json_depth(data) > DATA_MAX_DEPTH) {
        snprintf(err, errlen, "field 'data' is nested deeper than %d levels", DATA_MAX_DEPTH);
        return NULL;
    }
    if (check_tree(data, "data", err, errlen) != 0) {
        return NULL;
    }
    /* log.stats sums data.reward, so it must be an integer when present */
    const cJSON *reward = cJSON_GetObjectItemCaseSensitive(data, "reward");
    if (reward != NULL && !cJSON_IsNull(reward) && !json_is_int(reward)) {
        snprintf(err, errlen, "field 'data.reward' must be an integer");
        return NULL;
    }
    return cJSON_Duplicate(data, 1);
}

/* _id, ts, service, type and message: the scalar head of an event. */
static int
add_head(cJSON *out, const cJSON *ev, char *err, size_t errlen)
{
    const char *id = NULL, *service = NULL, *type = NULL;
    long long ts = 0;
    if (json_get_string(ev, "_id", true, LOGGER_EVENT_ID_MAX, &id, err, errlen) != 0) {
        return -1;
    }
    if (has_control(id)) {
        snprintf(err, errlen, "field '_id' must not contain control characters");
        return -1;
    }
    if (json_get_int(ev, "ts", true, 0, TS_MAX, &ts, err, errlen) != 0 ||
        json_get_string(ev, "service", true, NAME_MAX_LEN, &service, err, errlen) != 0 ||
        json_get_string(ev, "type", true, NAME_MAX_LEN, &type, err, errlen) != 0) {
        return -1;
    }
    if (!is_token(service) || !is_token(type)) {
        snprintf(err, errlen, "fields 'service' and 'type' use letters, digits, '.', '_', '-'");
        return -1;
    }
    cJSON_AddStringToObject(out, "_id", id);
    cJSON_AddNumberToObject(out, "ts", (double)ts);
    cJSON_AddStringToObject(out, "service", service);
    cJSON_AddStringToObject(out, "type", type);
    return 0;
}

cJSON *
logger_event_normalise(const cJSON *ev, char *err, size_t errlen)
{
    const char *message = NULL;
    cJSON *out = cJSON_CreateObject(), *part;
    if (json_check_fields(ev, event_fields, err, errlen) != 0) {
        goto fail;
    }
    if (json_has_duplicate_keys(ev)) {
        snprintf(err, errlen, "the event repeats a field name");
        goto fail;
    }
    if (add_head(out, ev, err, errlen) != 0) {
        goto fail;
    }
    const cJSON *actor = cJSON_GetObjectItemCaseSensitive(ev, "actor");
    if (actor == NULL || cJSON_IsNull(actor)) {
        cJSON_AddNullToObject(out, "actor");
    } else if ((part = normalise_actor(actor, err, errlen)) != NULL) {
        cJSON_AddItemToObject(out, "actor", part);
    } else {
        goto fail;
    }
    if ((part = normalise_subject(cJSON_GetObjectItemCaseSensitive(ev, "subject"), err, errlen)) ==
        NULL) {
        goto fail;
    }
    cJSON_AddItemToObject(out, "subject", part);
    if ((part = normalise_data(cJSON_GetObjectItemCaseSensitive(ev, "data"), err, errlen)) ==
        NULL) {
        goto fail;
    }
    cJSON_AddItemToObject(out, "data", part);
    if (json_get_string(ev, "message", true, LOGGER_EVENT_MSG_MAX, &message, err, errlen) != 0) {
        goto fail;
    }
    cJSON_AddStringToObject(out, "message", message);
    return out;
fail:
    cJSON_Delete(out);
    return NULL;
}

enum message_cmd { CMD_NONE, CMD_EVENT, CMD_EVENTS };

/*
 * Which command pattern names: {"cmd": "log.event"} or {"cmd": "log.events"}, as an object or as
 * that object in a JSON string (NestJS serialises object patterns that way).
 */
static enum message_cmd
message_pattern(const cJSON *pattern)
{
    cJSON *parsed = NULL;
    if (cJSON_IsString(pattern)) { /* the whole string: nothing but whitespace after the object */
        parsed = cJSON_ParseWithOpts(pattern->valuestring, NULL, true);
        pattern = parsed;
    }
    const cJSON *cmd = cJSON_IsObject(pattern) && cJSON_GetArraySize(pattern) == 1
                           ? cJSON_GetObjectItemCaseSensitive(pattern, "cmd")
                           : NULL;
    enum message_cmd which = CMD_NONE;
    if (cJSON_IsString(cmd) && strcmp(cmd->valuestring, "log.event") == 0) {
        which = CMD_EVENT;
    } else if (cJSON_IsString(cmd) && strcmp(cmd->valuestring, "log.events") == 0) {
        which = CMD_EVENTS;
    }
    cJSON_Delete(parsed);
    return which;
}

/*
 * True if JSON text holds a NUL byte or a \u0000 escape. cJSON ends a string at the NUL, so an
 * event "_id": "a\u0000b" would be stored as "a" (and dropped as a duplicate of event "a"). The
 * RPC path refuses these in the codec; queue bodies arrive here unchecked. In text cJSON accepts,
 * every backslash is inside a string, so pairing escapes from the start of the text is exact.
 */
static bool
has_nul(const char *s, size_t len)
{
    if (memchr(s, '\0', len) != NULL) {
        return true;
    }
    for (size_t i = 0; i + 5 < len; i++) {
        if (s[i] == '\\') {
            if (memcmp(s + i + 1, "u0000", 5) == 0) {
                return true;
            }
            i++; /* skip the escaped character: in \\u0000 the u0000 is text */
        }
    }
    return false;
}

/* One event of a message: valid, and outside the gateways' _id namespace. */
static cJSON *
queue_event(const cJSON *data, char *err, size_t errlen)
{
    cJSON *ev = logger_event_normalise(data, err, errlen);
    const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(ev, "_id"));
    if (id && strncmp(id, LOGGER_GATEWAY_ID_PREFIX, strlen(LOGGER_GATEWAY_ID_PREFIX)) == 0) {
        snprintf(err, errlen, "field '_id': ids starting with '%s' belong to the gateways",
                 LOGGER_GATEWAY_ID_PREFIX);
        cJSON_Delete(ev);
        ev = NULL;
    }
    return ev;
}

/*
 * The events of a log.events message. Each is checked on its own: one bad event must not cost
 * its neighbours their place in the store, but it marks the message (PARTIAL) so the caller
 * keeps it in the dead-letter queue, where replaying it later only adds the missing events.
 */
static enum logger_message_status
batch_events(const cJSON *data, struct logger_message *out, char *err, size_t errlen)
{
    if (!cJSON_IsObject(data) || cJSON_GetArraySize(data) != 1 ||
        strcmp(data->child->string, "events") != 0) {
        snprintf(err, errlen, "log.events: 'data' must be an object with the one field 'events'");
        return LOGGER_MESSAGE_BAD;
    }
    const cJSON *events = data->child;
    int count = cJSON_IsArray(events) ? cJSON_GetArraySize(events) : 0;
    if (count < 1 || count > LOGGER_MESSAGE_EVENTS_MAX) {
        snprintf(err, errlen, "log.events: field 'events' must be an array of 1 to %d events",
                 LOGGER_MESSAGE_EVENTS_MAX);
        return LOGGER_MESSAGE_BAD;
    }
    out->events = xcalloc((size_t)count, sizeof(*out->events));
    out->count = (size_t)count;
    bool bad = false;
    size_t i = 0;
    for (const cJSON *e = events->child; e; e = e->next, i++) {
        char why[256];
        cJSON *ev = queue_event(e, why, sizeof(why));
        if (ev != NULL) {
            out->events[out->n++] = ev;
        } else if (!bad) {
            snprintf(err, errlen, "events[%zu]: %s", i, why);
            bad = true;
        }
    }
    if (!bad) {
        return LOGGER_MESSAGE_OK;
    }
    return out->n > 0 ? LOGGER_MESSAGE_PARTIAL : LOGGER_MESSAGE_BAD;
}

enum logger_message_status
logger_message_parse(const char *body, size_t len, struct logger_message *out, char *err,
                     size_t errlen)
{
    /* "id" appears when a Nest client used send() instead of emit(); we never reply. */
    static const char *const fields[] = {"pattern", "data", "id", NULL};
    const char *end = NULL;
    enum logger_message_status st = LOGGER_MESSAGE_BAD;
    *out = (struct logger_message){0};
    cJSON *msg = cJSON_ParseWithLengthOpts(body, len, &end, false);
    if (msg == NULL) {
        snprintf(err, errlen, "the body is not JSON");
        return LOGGER_MESSAGE_BAD;
    }
    while (end < body + len && isspace((unsigned char)*end)) {
        end++;
    }
    if (end != body + len) {
        snprintf(err, errlen, "the body has bytes after its JSON value");
        goto out;
    }
    if (has_nul(body, len)) {
        snprintf(err, errlen, "NUL characters are not allowed in strings");
        goto out;
    }
    if (json_check_fields(msg, fields, err, errlen) != 0) {
        goto out;
    }
    enum message_cmd cmd = message_pattern(cJSON_GetObjectItemCaseSensitive(msg, "pattern"));
    if (cmd == CMD_NONE) {
        snprintf(err, errlen,
                 "the pattern is not {\"cmd\":\"log.event\"} or {\"cmd\":\"log.events\"}");
        goto out;
    }
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(msg, "data");
    if (data == NULL) {
        snprintf(err, errlen, "the message has no data");
        goto out;
    }
    if (cmd == CMD_EVENTS) {
        out->batch = true;
        st = batch_events(data, out, err, errlen);
        goto out;
    }
    cJSON *ev = queue_event(data, err, errlen);
    if (ev != NULL) {
        out->events = xcalloc(1, sizeof(*out->events));
        out->events[0] = ev;
        out->n = out->count = 1;
        st = LOGGER_MESSAGE_OK;
    }
out:
    if (st == LOGGER_MESSAGE_BAD) {
        bool batch = out->batch;
        logger_message_cleanup(out);
        out->batch = batch;
    }
    cJSON_Delete(msg);
    return st;
}

void
logger_message_cleanup(struct logger_message *m)
{
    for (size_t i = 0; i < m->n; i++) {
        cJSON_Delete(m->events[i]);
    }
    free(m->events);
    *m = (struct logger_message){0};
}

cJSON *
logger_event_from_message(const char *body, size_t len, char *err, size_t errlen)
{
    struct logger_message m;
    cJSON *ev = NULL;
    if (logger_message_parse(body, len, &m, err, errlen) == LOGGER_MESSAGE_BAD) {
        return NULL;
    }
    if (m.batch) {
        snprintf(err, errlen, "a log.events message, not log.event");
    } else {
        ev = m.events[0];
        m.events[0] = NULL;
        m.n = 0;
    }
    logger_message_cleanup(&m);
    return ev;
}

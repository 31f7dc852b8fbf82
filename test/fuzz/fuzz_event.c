/*
 * libFuzzer target for the audit event validator (roles/logger/event.h). The input is tried as an
 * event (logger_event_normalise), as a queue message body (log.event or log.events), as the data
 * of a well-formed log.event message and as the events of a log.events message. Accepted events
 * must have the canonical shape and be a fixed point of normalise.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "json.h"

#define FUZZ_ASSERT(cond)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_event.c:%d: %s\n", __LINE__, #cond);                             \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define TS_MAX 32503680000000.0 /* event.c's bound, 3000-01-01 */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A \u0000 escape in JSON text: a backslash after an even run of them, then u0000. */
static bool
ref_nul_escape(const char *s, size_t len)
{
    size_t run = 0;
    for (size_t i = 0; i + 5 < len; i++) {
        if (s[i] == '\\' && run % 2 == 0 && memcmp(s + i + 1, "u0000", 5) == 0) {
            return true;
        }
        run = s[i] == '\\' ? run + 1 : 0;
    }
    return false;
}

static bool
is_text(const cJSON *item, size_t max)
{
    if (!cJSON_IsString(item)) {
        return false;
    }
    size_t n = strlen(item->valuestring);
    return n >= 1 && n <= max && util_utf8_valid(item->valuestring, n);
}

static bool
no_control(const char *s)
{
    for (; *s; s++) {
        if ((unsigned char)*s < 0x20 || *s == 0x7f) {
            return false;
        }
    }
    return true;
}

/* Exact equality: same kinds, keys in the same order, numbers equal as doubles. */
static bool
same_tree(const cJSON *a, const cJSON *b)
{
    if ((a->type & 0xff) != (b->type & 0xff) || (a->string == NULL) != (b->string == NULL) ||
        (a->string && strcmp(a->string, b->string) != 0)) {
        return false;
    }
    if (cJSON_IsNumber(a)) {
        return a->valuedouble == b->valuedouble;
    }
    if (cJSON_IsString(a)) {
        return strcmp(a->valuestring, b->valuestring) == 0;
    }
    const cJSON *x = a->child, *y = b->child;
    for (; x && y; x = x->next, y = y->next) {
        if (!same_tree(x, y)) {
            return false;
        }
    }
    return x == NULL && y == NULL;
}

/*
 * The canonical shape (event.h), and a fixed point: normalised again, as a tree or through its
 * printed text, it is unchanged. (The text is compared as text: cJSON prints some numbers with 15
 * digits, which the store never sees; the tree comparison is exact.)
 */
static void
check_canonical(const cJSON *ev)
{
    static const char *const order[] = {"_id",     "ts",   "service", "type", "actor",
                                        "subject", "data", "message", NULL};
    const cJSON *f = ev->child;
    for (const char *const *k = order; *k; k++, f = f->next) {
        FUZZ_ASSERT(f != NULL && strcmp(f->string, *k) == 0);
    }
    FUZZ_ASSERT(f == NULL);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(ev, "_id");
    FUZZ_ASSERT(is_text(id, LOGGER_EVENT_ID_MAX) && no_control(id->valuestring));
    const cJSON *ts = cJSON_GetObjectItemCaseSensitive(ev, "ts");
    FUZZ_ASSERT(json_is_int(ts) && ts->valuedouble >= 0 && ts->valuedouble <= TS_MAX);
    FUZZ_ASSERT(is_text(cJSON_GetObjectItemCaseSensitive(ev, "service"), 64));
    FUZZ_ASSERT(is_text(cJSON_GetObjectItemCaseSensitive(ev, "type"), 64));
    const cJSON *actor = cJSON_GetObjectItemCaseSensitive(ev, "actor");
    if (!cJSON_IsNull(actor)) {
        FUZZ_ASSERT(cJSON_IsObject(actor) && cJSON_GetArraySize(actor) == 3);
        FUZZ_ASSERT(is_text(cJSON_GetObjectItemCaseSensitive(actor, "id"), 64));
        FUZZ_ASSERT(is_text(cJSON_GetObjectItemCaseSensitive(actor, "username"), 64));
        FUZZ_ASSERT(is_text(cJSON_GetObjectItemCaseSensitive(actor, "role"), 32));
    }
    const cJSON *subject = cJSON_GetObjectItemCaseSensitive(ev, "subject");
    FUZZ_ASSERT(cJSON_IsObject(subject));
    static const char *const ids[] = {"code", "user_id", "username", "claim_id", NULL};
    for (const char *const *k = ids; *k; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(subject, *k);
        FUZZ_ASSERT(v == NULL || (is_text(v, 64) && no_control(v->valuestring)));
    }
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(subject, "code");
    for (const char *p = code ? code->valuestring : ""; *p; p++) {
        FUZZ_ASSERT(!(*p >= 'a' && *p <= 'z'));
    }
    const cJSON *cats = cJSON_GetObjectItemCaseSensitive(subject, "categories");
    for (const cJSON *c = cats ? cats->child : NULL; c; c = c->next) {
        FUZZ_ASSERT(json_is_int(c) && c->valuedouble >= 1);
    }
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(ev, "data");
    FUZZ_ASSERT(cJSON_IsObject(data) && json_depth(data) <= 8);
    const cJSON *reward = cJSON_GetObjectItemCaseSensitive(data, "reward");
    FUZZ_ASSERT(reward == NULL || cJSON_IsNull(reward) || json_is_int(reward));
    FUZZ_ASSERT(is_text(cJSON_GetObjectItemCaseSensitive(ev, "message"), LOGGER_EVENT_MSG_MAX));
    FUZZ_ASSERT(!json_has_duplicate_keys(ev));

    char err[256];
    cJSON *same = logger_event_normalise(ev, err, sizeof(err));
    FUZZ_ASSERT(same != NULL && same_tree(ev, same));
    cJSON_Delete(same);

    char *once = cJSON_PrintUnformatted(ev);
    cJSON *back = cJSON_Parse(once);
    FUZZ_ASSERT(back != NULL);
    cJSON *again = logger_event_normalise(back, err, sizeof(err));
    if (again == NULL) {
        fprintf(stderr, "canonical event refused (%s): %s\n", err, once);
    }
    FUZZ_ASSERT(again != NULL);
    char *twice = cJSON_PrintUnformatted(again);
    if (strcmp(once, twice) != 0) {
        fprintf(stderr, "once:  %s\ntwice: %s\n", once, twice);
    }
    FUZZ_ASSERT(strcmp(once, twice) == 0);
    free(twice);
    cJSON_Delete(again);
    cJSON_Delete(back);
    free(once);
}

static cJSON *
from_message(const char *body, size_t len)
{
    char err[128];
    memset(err, '#', sizeof(err));
    cJSON *ev = logger_event_from_message(body, len, err, sizeof(err));
    if (ev == NULL) {
        FUZZ_ASSERT(memchr(err, '\0', sizeof(err)) != NULL && err[0] != '\0');
        return NULL;
    }
    /* cJSON would have cut a string at a NUL: such bodies are refused. */
    FUZZ_ASSERT(memchr(body, '\0', len) == NULL && !ref_nul_escape(body, len));
    check_canonical(ev);
    return ev;
}

/*
 * The same body through logger_message_parse: every event it holds is canonical; BAD holds none;
 * PARTIAL names an event; a log.event body agrees with from_message. Returns the events held.
 */
static size_t
check_message(const char *body, size_t len, const cJSON *single)
{
    char err[128];
    struct logger_message m;
    memset(err, '#', sizeof(err));
    enum logger_message_status st = logger_message_parse(body, len, &m, err, sizeof(err));
    FUZZ_ASSERT(m.n <= m.count && m.count <= LOGGER_MESSAGE_EVENTS_MAX);
    if (st != LOGGER_MESSAGE_OK) {
        FUZZ_ASSERT(memchr(err, '\0', sizeof(err)) != NULL && err[0] != '\0');
    }
    if (st == LOGGER_MESSAGE_BAD) {
        FUZZ_ASSERT(m.n == 0 && m.events == NULL);
    } else if (st == LOGGER_MESSAGE_PARTIAL) {
        FUZZ_ASSERT(m.batch && m.n >= 1 && m.n < m.count && strncmp(err, "events[", 7) == 0);
    } else {
        FUZZ_ASSERT(m.n == m.count && m.n >= 1);
    }
    if (m.n > 0) {
        FUZZ_ASSERT(memchr(body, '\0', len) == NULL && !ref_nul_escape(body, len));
    }
    for (size_t i = 0; i < m.n; i++) {
        check_canonical(m.events[i]);
    }
    FUZZ_ASSERT(m.batch || (single != NULL) == (m.n == 1));
    size_t n = m.n;
    logger_message_cleanup(&m);
    return n;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;

    /* As an event. */
    cJSON *in = cJSON_ParseWithLength(text, size);
    cJSON *ev = NULL;
    if (in != NULL) {
        char err[64];
        memset(err, '#', sizeof(err));
        ev = logger_event_normalise(in, err, sizeof(err));
        if (ev != NULL) {
            check_canonical(ev);
        } else {
            FUZZ_ASSERT(memchr(err, '\0', sizeof(err)) != NULL && err[0] != '\0');
        }
    }

    /* As a queue message body. */
    cJSON *single = from_message(text, size);
    (void)check_message(text, size, single);
    cJSON_Delete(single);

    /* As the data of a message: if the wrapped body is accepted, it is the same event. */
    static const char head[] = "{\"pattern\":{\"cmd\":\"log.event\"},\"data\":";
    char *body = malloc(sizeof(head) + size + 1);
    memcpy(body, head, sizeof(head) - 1);
    memcpy(body + sizeof(head) - 1, text, size);
    body[sizeof(head) - 1 + size] = '}';
    cJSON *wrapped = from_message(body, sizeof(head) + size);
    if (wrapped != NULL && ev != NULL) {
        char *a = cJSON_PrintUnformatted(ev), *b = cJSON_PrintUnformatted(wrapped);
        FUZZ_ASSERT(strcmp(a, b) == 0);
        free(a);
        free(b);
    }
    (void)check_message(body, sizeof(head) + size, wrapped);
    cJSON_Delete(wrapped);
    free(body);

    /* As the events of a log.events message: one valid event is that same event. */
    static const char bhead[] = "{\"pattern\":{\"cmd\":\"log.events\"},\"data\":{\"events\":[";
    body = malloc(sizeof(bhead) + size + 3);
    memcpy(body, bhead, sizeof(bhead) - 1);
    memcpy(body + sizeof(bhead) - 1, text, size);
    memcpy(body + sizeof(bhead) - 1 + size, "]}}", 3);
    size_t blen = sizeof(bhead) - 1 + size + 3;
    struct logger_message m;
    char err[128];
    if (logger_message_parse(body, blen, &m, err, sizeof(err)) == LOGGER_MESSAGE_OK &&
        m.count == 1 && ev != NULL) {
        char *a = cJSON_PrintUnformatted(ev), *b = cJSON_PrintUnformatted(m.events[0]);
        FUZZ_ASSERT(strcmp(a, b) == 0);
        free(a);
        free(b);
    }
    logger_message_cleanup(&m);
    (void)check_message(body, blen, NULL);
    free(body);
    cJSON_Delete(ev);
    cJSON_Delete(in);
    return 0;
}

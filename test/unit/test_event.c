/*
 * Unit tests of the logger's audit event validator (event.h): the canonical shape, each field's
 * bounds and error, subject and data rules, and the queue message envelope.
 */
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "harness.h"
#include "json.h"

#define HEAD "\"_id\":\"e1\",\"ts\":1700000000000,\"service\":\"chance\",\"type\":\"code.assigned\""
#define TAIL "\"message\":\"m\""
#define CANON_HEAD                                                                                 \
    "{\"_id\":\"e1\",\"ts\":1700000000000,\"service\":\"chance\",\"type\":\"code.assigned\","

/* Normalises text; returns the canonical event printed (free()), or NULL with err filled. */
static char *
normalise_text(const char *text, char *err, size_t errlen)
{
    cJSON *in = cJSON_Parse(text);
    CHECK(in != NULL, "test input does not parse: %.80s", text);
    err[0] = '\0';
    cJSON *out = logger_event_normalise(in, err, errlen);
    cJSON_Delete(in);
    if (out == NULL) {
        CHECK(err[0] != '\0', "refused without a message: %.80s", text);
        return NULL;
    }
    char *printed = cJSON_PrintUnformatted(out);
    cJSON_Delete(out);
    return printed;
}

static void
expect(const char *text, const char *want)
{
    char err[256];
    char *got = normalise_text(text, err, sizeof(err));
    CHECK(got != NULL, "%s refused: %s", text, err);
    if (got) {
        CHECK(strcmp(got, want) == 0, "%s\n    got  %s\n    want %s", text, got, want);
    }
    free(got);
}

static void
refuse(const char *text, const char *msg)
{
    char err[256];
    char *got = normalise_text(text, err, sizeof(err));
    CHECK(got == NULL, "%s accepted as %s", text, got);
    CHECK(got != NULL || strstr(err, msg) != NULL, "%s: err '%s' lacks \"%s\"", text, err, msg);
    free(got);
}

static void
test_canonical(void)
{
    /* Keys in schema order whatever the input order; defaults for what is absent. */
    expect("{\"message\":\"m\",\"type\":\"t\",\"ts\":5,\"service\":\"s\",\"_id\":\"x\"}",
           "{\"_id\":\"x\",\"ts\":5,\"service\":\"s\",\"type\":\"t\",\"actor\":null,"
           "\"subject\":{},\"data\":{},\"message\":\"m\"}");
    expect("{" HEAD ",\"actor\":null,\"subject\":null,\"data\":null," TAIL "}",
           CANON_HEAD "\"actor\":null,\"subject\":{},\"data\":{},\"message\":\"m\"}");
    /* A full event: ids as strings, the code upper-cased, data copied as is. */
    expect("{\"data\":{\"reward\":50,\"nested\":{\"k\":[1,\"two\",null,true]}},"
           "\"subject\":{\"code\":\"abc-def\",\"category\":3,\"user_id\":7,\"claim_id\":\"c9\","
           "\"username\":\"bob\",\"categories\":[1,2],\"batch\":4,\"note\":\"free text\"},"
           "\"actor\":{\"role\":\"admin\",\"username\":\"root\",\"id\":1}," HEAD "," TAIL "}",
           CANON_HEAD "\"actor\":{\"id\":\"1\",\"username\":\"root\",\"role\":\"admin\"},"
                      "\"subject\":{\"code\":\"ABC-DEF\",\"category\":3,\"user_id\":\"7\","
                      "\"claim_id\":\"c9\",\"username\":\"bob\",\"categories\":[1,2],\"batch\":4,"
                      "\"note\":\"free text\"},"
                      "\"data\":{\"reward\":50,\"nested\":{\"k\":[1,\"two\",null,true]}},"
                      "\"message\":\"m\"}");
    /* Integers given as 1.0 or 1e3 are integers; a username may be a number. */
    expect("{\"_id\":\"x\",\"ts\":1e3,\"service\":\"s\",\"type\":\"t\",\"actor\":{\"id\":2.0,"
           "\"username\":42,\"role\":\"user\"},\"subject\":{\"category\":1.0},\"message\":\"m\"}",
           "{\"_id\":\"x\",\"ts\":1000,\"service\":\"s\",\"type\":\"t\",\"actor\":{\"id\":\"2\","
           "\"username\":\"42\",\"role\":\"user\"},\"subject\":{\"category\":1},\"data\":{},"
           "\"message\":\"m\"}");
    /* null in a known subject field leaves it out; in another field it is kept. */
    expect("{" HEAD ",\"subject\":{\"category\":null,\"code\":null,\"x\":null}," TAIL "}",
           CANON_HEAD "\"actor\":null,\"subject\":{\"x\":null},\"data\":{},\"message\":\"m\"}");
    /* Upper-casing is ASCII only. */
    expect("{" HEAD ",\"subject\":{\"code\":\"\\u00e9t\\u00e9-x1\"}," TAIL "}",
           CANON_HEAD "\"actor\":null,\"subject\":{\"code\":\"\xc3\xa9T\xc3\xa9-X1\"},"
                      "\"data\":{},\"message\":\"m\"}");
    /* A negative or zero id is still an id. */
    expect("{" HEAD ",\"actor\":{\"id\":-3,\"username\":0,\"role\":\"system\"}," TAIL "}",
           CANON_HEAD "\"actor\":{\"id\":\"-3\",\"username\":\"0\",\"role\":\"system\"},"
                      "\"subject\":{},\"data\":{},\"message\":\"m\"}");
}

static void
test_head(void)
{
    char id200[256], id201[256], svc64[80], svc65[80], msg[2100], text[2400];
    memset(id200, 'i', 200);
    id200[200] = '\0';
    memcpy(id201, id200, 200);
    strcpy(id201 + 200, "i");
    memset(svc64, 's', 64);
    svc64[64] = '\0';
    memcpy(svc65, svc64, 64);
    strcpy(svc65 + 64, "s");

    snprintf(text, sizeof(text),
             "{\"_id\":\"%s\",\"ts\":0,\"service\":\"%s\",\"type\":\"%s\",\"message\":\"m\"}",
             id200, svc64, svc64);
    char err[256];
    char *got = normalise_text(text, err, sizeof(err));
    CHECK(got != NULL, "200-byte _id, 64-byte service and type: %s", err);
    free(got);

    static const struct {
        const char *field, *value, *msg;
    } bad[] = {
        {"_id", "\"\"", "'_id'"},
        {"_id", "7", "'_id' must be a string"},
        {"_id", "\"a\\nb\"", "control"},
        {"_id", "\"a\\u007fb\"", "control"},
        {"_id", "\"\\u001f\"", "control"},
        {"_id", "null", "'_id' is required"},
        {"ts", "-1", "'ts'"},
        {"ts", "1.5", "'ts'"},
        {"ts", "\"1700000000000\"", "'ts'"},
        {"ts", "32503680000001", "'ts'"}, /* after 3000-01-01: seconds taken for ms */
        {"ts", "null", "'ts' is required"},
        {"service", "\"\"", "'service'"},
        {"service", "\"a b\"", "'service' and 'type'"},
        {"service", "\"a/b\"", "'service' and 'type'"},
        {"service", "\"caf\\u00e9\"", "'service' and 'type'"},
        {"service", "1", "'service'"},
        {"type", "\"code assigned\"", "'service' and 'type'"},
        {"type", "\"a:b\"", "'service' and 'type'"},
        {"message", "\"\"", "'message'"},
        {"message", "3", "'message'"},
        {"message", "null", "'message' is required"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        /* The good event with one field replaced. */
        const char *f[] = {"_id", "ts", "service", "type", "message"};
        const char *v[] = {"\"e\"", "1", "\"s\"", "\"t\"", "\"m\""};
        size_t o = (size_t)snprintf(text, sizeof(text), "{");
        for (size_t k = 0; k < ARRAY_SIZE(f); k++) {
            o += (size_t)snprintf(text + o, sizeof(text) - o, "%s\"%s\":%s", k ? "," : "", f[k],
                                  strcmp(f[k], bad[i].field) == 0 ? bad[i].value : v[k]);
        }
        snprintf(text + o, sizeof(text) - o, "}");
        refuse(text, bad[i].msg);
    }
    snprintf(text, sizeof(text),
             "{\"_id\":\"%s\",\"ts\":0,\"service\":\"s\",\"type\":\"t\"," TAIL "}", id201);
    refuse(text, "'_id'");
    snprintf(text, sizeof(text),
             "{\"_id\":\"e\",\"ts\":0,\"service\":\"%s\",\"type\":\"t\"," TAIL "}", svc65);
    refuse(text, "'service'");
    snprintf(text, sizeof(text),
             "{\"_id\":\"e\",\"ts\":0,\"service\":\"s\",\"type\":\"%s\"," TAIL "}", svc65);
    refuse(text, "'type'");
    /* The message: up to 2000 bytes of UTF-8, any characters. */
    memset(msg, 'm', LOGGER_EVENT_MSG_MAX);
    msg[LOGGER_EVENT_MSG_MAX] = '\0';
    snprintf(text, sizeof(text), "{" HEAD ",\"message\":\"%s\"}", msg);
    got = normalise_text(text, err, sizeof(err));
    CHECK(got != NULL, "2000-byte message: %s", err);
    free(got);
    snprintf(text, sizeof(text), "{" HEAD ",\"message\":\"%sm\"}", msg);
    refuse(text, "'message'");
    expect("{" HEAD ",\"message\":\"two\\nlines \\u00e9\"}", CANON_HEAD
           "\"actor\":null,\"subject\":{},\"data\":{},\"message\":\"two\\nlines \xc3\xa9\"}");
    expect("{\"_id\":\"x\",\"ts\":32503680000000,\"service\":\"s\",\"type\":\"t\"," TAIL "}",
           "{\"_id\":\"x\",\"ts\":32503680000000,\"service\":\"s\",\"type\":\"t\",\"actor\":null,"
           "\"subject\":{},\"data\":{},\"message\":\"m\"}");
    /* Tokens: letters, digits, '.', '_', '-'. */
    expect("{\"_id\":\"x\",\"ts\":1,\"service\":\"Gate_way-2.0\",\"type\":\"a.b_c-D9\"," TAIL "}",
           "{\"_id\":\"x\",\"ts\":1,\"service\":\"Gate_way-2.0\",\"type\":\"a.b_c-D9\","
           "\"actor\":null,\"subject\":{},\"data\":{},\"message\":\"m\"}");
}

static void
test_structure(void)
{
    refuse("[]", "object");
    refuse("\"event\"", "object");
    refuse("{" HEAD "," TAIL ",\"extra\":1}", "'extra'");
    refuse("{" HEAD "," TAIL ",\"Message\":\"m\"}", "'Message'");
    refuse("{" HEAD "," TAIL ",\"message\":\"again\"}", "repeats");
    refuse("{" HEAD ",\"data\":{\"a\":{\"b\":1,\"b\":2}}," TAIL "}", "repeats");
    refuse("{" HEAD ",\"subject\":{\"code\":\"a\",\"code\":\"b\"}," TAIL "}", "repeats");
    refuse("{\"ts\":1,\"service\":\"s\",\"type\":\"t\"," TAIL "}", "'_id' is required");
}

static void
test_actor(void)
{
    static const struct {
        const char *actor, *msg;
    } bad[] = {
        {"5", "in actor"},
        {"[]", "in actor"},
        {"\"root\"", "in actor"},
        {"{\"id\":1,\"username\":\"u\",\"role\":\"user\",\"email\":\"e\"}", "'email' in actor"},
        {"{\"username\":\"u\",\"role\":\"user\"}", "'actor.id' is required"},
        {"{\"id\":1,\"role\":\"user\"}", "'actor.username' is required"},
        {"{\"id\":1,\"username\":\"u\"}", "'actor.role'"},
        {"{\"id\":1.5,\"username\":\"u\",\"role\":\"user\"}", "'actor.id'"},
        {"{\"id\":9007199254740992,\"username\":\"u\",\"role\":\"user\"}", "'actor.id'"},
        {"{\"id\":\"\",\"username\":\"u\",\"role\":\"user\"}", "'actor.id'"},
        {"{\"id\":true,\"username\":\"u\",\"role\":\"user\"}", "'actor.id'"},
        {"{\"id\":{},\"username\":\"u\",\"role\":\"user\"}", "'actor.id'"},
        {"{\"id\":\"a\\tb\",\"username\":\"u\",\"role\":\"user\"}", "'actor.id'"},
        {"{\"id\":1,\"username\":\"\\u0001\",\"role\":\"user\"}", "'actor.username'"},
        {"{\"id\":1,\"username\":\"u\",\"role\":\"super user\"}", "'actor.role'"},
        {"{\"id\":1,\"username\":\"u\",\"role\":\"\"}", "'actor.role'"},
        {"{\"id\":1,\"username\":\"u\",\"role\":7}", "'actor.role'"},
        {"{\"id\":1,\"username\":\"u\",\"role\":\"abcdefghijklmnopqrstuvwxyz0123456\"}",
         "'actor.role'"},
    };
    char text[512];
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        snprintf(text, sizeof(text), "{" HEAD ",\"actor\":%s," TAIL "}", bad[i].actor);
        refuse(text, bad[i].msg);
    }
    /* Bounds that pass: a 64-byte id of text, a 32-byte role, 2^53-1. */
    expect("{" HEAD ",\"actor\":{\"id\":9007199254740991,\"username\":"
           "\"uuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuu\","
           "\"role\":\"abcdefghijklmnopqrstuvwxyz012345\"}," TAIL "}",
           CANON_HEAD "\"actor\":{\"id\":\"9007199254740991\",\"username\":"
                      "\"uuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuu\","
                      "\"role\":\"abcdefghijklmnopqrstuvwxyz012345\"},"
                      "\"subject\":{},\"data\":{},\"message\":\"m\"}");
    refuse("{" HEAD ",\"actor\":{\"id\":1,\"role\":\"user\",\"username\":"
           "\"uuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuu\"}," TAIL "}",
           "'actor.username'");
}

static void
test_subject(void)
{
    static const struct {
        const char *subject, *msg;
    } bad[] = {
        {"[]", "'subject' must be an object"},
        {"\"s\"", "'subject' must be an object"},
        {"{\"category\":0}", "'subject.category' must be a positive integer"},
        {"{\"category\":-2}", "'subject.category'"},
        {"{\"category\":1.5}", "'subject.category'"},
        {"{\"category\":\"3\"}", "'subject.category'"},
        {"{\"batch\":0}", "'subject.batch'"},
        {"{\"batch\":[1]}", "'subject.batch'"},
        {"{\"categories\":3}", "'subject.categories' must be an array"},
        {"{\"categories\":[1,0]}", "'subject.categories' must hold positive integers"},
        {"{\"categories\":[1,\"2\"]}", "'subject.categories' must hold"},
        {"{\"categories\":[[1]]}", "'subject.categories' must hold"},
        {"{\"code\":\"\"}", "'subject.code'"},
        {"{\"code\":\"a\\nb\"}", "'subject.code'"},
        {"{\"user_id\":1.25}", "'subject.user_id'"},
        {"{\"claim_id\":[]}", "'subject.claim_id'"},
        {"{\"username\":false}", "'subject.username'"},
        {"{\"$where\":1}", "field name '$where' in subject"},
        {"{\"a.b\":1}", "field name 'a.b' in subject"},
        {"{\"\":1}", "field name '' in subject"},
        {"{\"x\":{}}", "'subject.x' must be a number, a boolean or a string"},
        {"{\"x\":[1]}", "'subject.x'"},
    };
    char text[2048];
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        snprintf(text, sizeof(text), "{" HEAD ",\"subject\":%s," TAIL "}", bad[i].subject);
        refuse(text, bad[i].msg);
    }
    /* Other fields: strings up to 256 bytes, keys up to 100 bytes. */
    char s256[300], k100[120];
    memset(s256, 'v', 256);
    s256[256] = '\0';
    memset(k100, 'k', 100);
    k100[100] = '\0';
    snprintf(text, sizeof(text),
             "{" HEAD ",\"subject\":{\"%s\":\"%s\",\"f\":1.5,\"b\":false}," TAIL "}", k100, s256);
    char err[256];
    char *got = normalise_text(text, err, sizeof(err));
    CHECK(got != NULL, "256-byte value under a 100-byte key: %s", err);
    free(got);
    snprintf(text, sizeof(text), "{" HEAD ",\"subject\":{\"x\":\"%sv\"}," TAIL "}", s256);
    refuse(text, "'subject.x'");
    snprintf(text, sizeof(text), "{" HEAD ",\"subject\":{\"%sk\":1}," TAIL "}", k100);
    refuse(text, "in subject is not allowed");

    /* categories: up to 1000 items. */
    struct sbuf b = {0};
    sbuf_appends(&b, "{" HEAD ",\"subject\":{\"categories\":[1");
    for (int i = 2; i <= 1000; i++) {
        sbuf_appendf(&b, ",%d", i);
    }
    sbuf_appends(&b, "]}," TAIL "}");
    got = normalise_text(b.data, err, sizeof(err));
    CHECK(got != NULL, "1000 categories: %s", err);
    free(got);
    b.len -= strlen("]}," TAIL "}");
    sbuf_appends(&b, ",1001]}," TAIL "}");
    refuse(b.data, "at most 1000");
    sbuf_cleanup(&b);
}

static void
test_data(void)
{
    static const struct {
        const char *data, *msg;
    } bad[] = {
        {"[]", "'data' must be an object"},
        {"1", "'data' must be an object"},
        {"{\"$set\":1}", "field name '$set' in data"},
        {"{\"a\":{\"b.c\":1}}", "field name 'b.c' in data"},
        {"{\"a\":[{\"$x\":1}]}", "field name '$x' in data"},
        {"{\"a\":[[{\"\":1}]]}", "field name '' in data"},
        {"{\"reward\":1.5}", "'data.reward' must be an integer"},
        {"{\"reward\":\"5\"}", "'data.reward'"},
        {"{\"reward\":1e300}", "'data.reward'"},
        /* data plus 8 levels: one too many */
        {"{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":1}}}}}}}}}",
         "deeper than 8"},
        {"{\"a\":[[[[[[[[1]]]]]]]]}", "deeper than 8"},
    };
    char text[512];
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        snprintf(text, sizeof(text), "{" HEAD ",\"data\":%s," TAIL "}", bad[i].data);
        refuse(text, bad[i].msg);
    }
    /* Eight levels, data included; keys and values of any other kind; reward null or negative. */
    expect("{" HEAD ",\"data\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":[1]}}}}}}}," TAIL
           "}",
           CANON_HEAD "\"actor\":null,\"subject\":{},"
                      "\"data\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":[1]}}}}}}},"
                      "\"message\":\"m\"}");
    expect("{" HEAD ",\"data\":{\"reward\":-5,\"a$\":\"x\",\"\\u00e9\":[],\"big\":1e300,"
           "\"f\":0.1}," TAIL "}",
           CANON_HEAD "\"actor\":null,\"subject\":{},\"data\":{\"reward\":-5,\"a$\":\"x\","
                      "\"\xc3\xa9\":[],\"big\":1e+300,\"f\":0.1},\"message\":\"m\"}");
    expect("{" HEAD ",\"data\":{\"reward\":null}," TAIL "}", CANON_HEAD
           "\"actor\":null,\"subject\":{},\"data\":{\"reward\":null},\"message\":\"m\"}");

    /* Strings in data must be UTF-8: a tree built by hand, as cJSON's parser does not check. */
    cJSON *ev = cJSON_Parse("{" HEAD "," TAIL "}");
    cJSON *data = cJSON_AddObjectToObject(ev, "data");
    cJSON *list = cJSON_AddArrayToObject(data, "list");
    cJSON_AddItemToArray(list, cJSON_CreateString("ok"));
    cJSON_AddItemToArray(list, cJSON_CreateString("bad \xc3("));
    char err[256] = "";
    cJSON *out = logger_event_normalise(ev, err, sizeof(err));
    CHECK(out == NULL && strstr(err, "a string in data is not valid UTF-8"), "bad UTF-8: %s", err);
    cJSON_Delete(out);
    /* And keys too. */
    cJSON_DeleteItemFromObject(ev, "data");
    data = cJSON_AddObjectToObject(ev, "data");
    cJSON_AddNumberToObject(data, "k\xff", 1);
    out = logger_event_normalise(ev, err, sizeof(err));
    CHECK(out == NULL && strstr(err, "in data is not allowed"), "bad UTF-8 key: %s", err);
    cJSON_Delete(out);
    cJSON_Delete(ev);
}

/* The result owns its strings: it outlives the input, and changing the input leaves it alone. */
static void
test_independent(void)
{
    cJSON *in =
        cJSON_Parse("{" HEAD ",\"actor\":{\"id\":\"u1\",\"username\":\"ann\",\"role\":"
                    "\"user\"},\"subject\":{\"note\":\"n\"},\"data\":{\"d\":[\"x\"]}," TAIL "}");
    char err[256];
    cJSON *out = logger_event_normalise(in, err, sizeof(err));
    CHECK(out != NULL, "refused: %s", err);
    char *before = cJSON_PrintUnformatted(out);
    cJSON_SetValuestring(cJSON_GetObjectItem(in, "_id"), "changed");
    cJSON_SetValuestring(
        cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetObjectItem(in, "data"), "d"), 0),
        "changed");
    cJSON_Delete(in);
    char *after = cJSON_PrintUnformatted(out);
    CHECK(strcmp(before, after) == 0, "output changed with its input: %s", after);
    free(before);
    free(after);
    cJSON_Delete(out);
}

/* A canonical event is a fixed point: normalising it again changes nothing. */
static void
test_idempotent(void)
{
    static const char *const events[] = {
        "{" HEAD "," TAIL "}",
        "{\"message\":\"x\",\"subject\":{\"code\":\"ab-1\",\"user_id\":12,\"categories\":[3],"
        "\"z\":true},\"actor\":{\"id\":5,\"username\":6,\"role\":\"admin\"},\"data\":{\"reward\":"
        "1e2,\"f\":1.5,\"deep\":[[{\"k\":null}]]}," HEAD "}",
    };
    for (size_t i = 0; i < ARRAY_SIZE(events); i++) {
        char err[256];
        char *once = normalise_text(events[i], err, sizeof(err));
        CHECK(once != NULL, "event %zu refused: %s", i, err);
        if (once == NULL) {
            continue;
        }
        char *twice = normalise_text(once, err, sizeof(err));
        CHECK(twice != NULL && strcmp(once, twice) == 0, "event %zu: %s became %s (%s)", i, once,
              twice ? twice : "NULL", err);
        free(once);
        free(twice);
    }
}

static cJSON *
from_message(const char *body, char *err)
{
    err[0] = '\0';
    cJSON *ev = logger_event_from_message(body, strlen(body), err, 256);
    CHECK(ev != NULL || err[0] != '\0', "refused without a message: %s", body);
    return ev;
}

#define EVENT "{" HEAD "," TAIL "}"
#define PATTERN "\"pattern\":{\"cmd\":\"log.event\"}"

static void
test_message(void)
{
    static const char *const good[] = {
        "{" PATTERN ",\"data\":" EVENT "}",
        "{\"data\":" EVENT "," PATTERN "}",
        "{\"pattern\":\"{\\\"cmd\\\":\\\"log.event\\\"}\",\"data\":" EVENT "}",
        "{" PATTERN ",\"data\":" EVENT ",\"id\":\"ignored\"}",
        " \n{" PATTERN ",\"data\":" EVENT "}\r\n\t ",
    };
    char want[512];
    snprintf(want, sizeof(want),
             CANON_HEAD "\"actor\":null,\"subject\":{},\"data\":{},\"message\":\"m\"}");
    for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
        char err[256];
        cJSON *ev = from_message(good[i], err);
        CHECK(ev != NULL, "message %zu refused: %s", i, err);
        char *p = ev ? cJSON_PrintUnformatted(ev) : NULL;
        CHECK(p && strcmp(p, want) == 0, "message %zu: %s", i, p ? p : "NULL");
        free(p);
        cJSON_Delete(ev);
    }

    static const struct {
        const char *body, *msg;
    } bad[] = {
        {"", "not JSON"},
        {"{", "not JSON"},
        {"not json", "not JSON"},
        {"{" PATTERN ",\"data\":" EVENT "} x", "bytes after"},
        {"{" PATTERN ",\"data\":" EVENT "}{}", "bytes after"},
        {"[]", "object"},
        {"{" PATTERN ",\"data\":" EVENT ",\"extra\":1}", "'extra'"},
        {"{\"data\":" EVENT "}", "pattern"},
        {"{\"pattern\":null,\"data\":" EVENT "}", "pattern"},
        {"{\"pattern\":{\"cmd\":\"log.other\"},\"data\":" EVENT "}", "pattern"},
        {"{\"pattern\":{\"cmd\":\"log.event\",\"x\":1},\"data\":" EVENT "}", "pattern"},
        {"{\"pattern\":{\"CMD\":\"log.event\"},\"data\":" EVENT "}", "pattern"},
        {"{\"pattern\":\"log.event\",\"data\":" EVENT "}", "pattern"},
        {"{\"pattern\":\"{\\\"cmd\\\":\\\"log.other\\\"}\",\"data\":" EVENT "}", "pattern"},
        {"{\"pattern\":\"{\\\"cmd\\\":\\\"log.event\\\"} junk\",\"data\":" EVENT "}", "pattern"},
        {"{\"pattern\":[\"log.event\"],\"data\":" EVENT "}", "pattern"},
        {"{" PATTERN "}", "no data"},
        {"{" PATTERN ",\"data\":null}", "object"},
        {"{" PATTERN ",\"data\":{\"_id\":\"e\"}}", "'ts' is required"},
        /* the gateways' namespace: nobody on the queue may pre-insert their ids */
        {"{" PATTERN ",\"data\":{\"_id\":\"gw:ns:1\",\"ts\":1,\"service\":\"s\","
         "\"type\":\"t\",\"message\":\"m\"}}",
         "belong to the gateways"},
        /* cJSON would end these strings at the NUL: "e1\u0000x" would be stored as "e1". */
        {"{" PATTERN ",\"data\":{" HEAD ",\"message\":\"m\\u0000hidden\"}}", "NUL"},
        {"{" PATTERN ",\"data\":{\"_id\":\"e1\\u0000x\",\"ts\":1,\"service\":\"s\",\"type\":\"t\","
         "\"message\":\"m\"}}",
         "NUL"},
        {"{" PATTERN ",\"data\":{" HEAD "," TAIL ",\"subject\":{\"a\\u0000\":1}}}", "NUL"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        char err[256];
        cJSON *ev = from_message(bad[i].body, err);
        CHECK(ev == NULL, "bad message %zu accepted: %s", i, bad[i].body);
        CHECK(strstr(err, bad[i].msg) != NULL, "bad message %zu: err '%s' lacks \"%s\"", i, err,
              bad[i].msg);
        cJSON_Delete(ev);
    }
    /* An escaped backslash before u0000 is text, not a NUL. */
    char err[256];
    cJSON *ev = from_message("{" PATTERN ",\"data\":{" HEAD ",\"message\":\"a\\\\u0000\"}}", err);
    CHECK(ev != NULL, "escaped backslash: %s", err);
    const cJSON *m = cJSON_GetObjectItem(ev, "message");
    CHECK(cJSON_IsString(m) && strcmp(m->valuestring, "a\\u0000") == 0, "message text");
    cJSON_Delete(ev);

    /* A raw NUL byte, and len bounding the body. */
    static const char raw_nul[] = "{" PATTERN ",\"data\":{" HEAD ",\"message\":\"m\0x\"}}";
    ev = logger_event_from_message(raw_nul, sizeof(raw_nul) - 1, err, sizeof(err));
    CHECK(ev == NULL && strstr(err, "NUL"), "raw NUL byte: %s", err);
    cJSON_Delete(ev);
    static const char longer[] = "{" PATTERN ",\"data\":" EVENT "}garbage";
    ev =
        logger_event_from_message(longer, sizeof(longer) - 1 - strlen("garbage"), err, sizeof(err));
    CHECK(ev != NULL, "len not honoured: %s", err);
    cJSON_Delete(ev);
}

#define BATCH_PATTERN "\"pattern\":{\"cmd\":\"log.events\"}"
#define BATCH(events) "{" BATCH_PATTERN ",\"data\":{\"events\":[" events "]}}"
#define EV(id) "{\"_id\":\"" id "\",\"ts\":1,\"service\":\"s\",\"type\":\"t\"," TAIL "}"

static enum logger_message_status
parse(const char *body, struct logger_message *m, char *err)
{
    err[0] = '\0';
    enum logger_message_status st = logger_message_parse(body, strlen(body), m, err, 256);
    CHECK(st == LOGGER_MESSAGE_OK || err[0] != '\0', "not OK without a reason: %s", body);
    return st;
}

/* log.events: 1..1000 events, each checked on its own; the first bad one is named. */
static void
test_batch(void)
{
    struct logger_message m;
    char err[256];
    static const char *const ok[] = {
        BATCH(EV("a") "," EV("b")),
        "{\"data\":{\"events\":[" EV("a") "," EV(
            "b") "]},\"pattern\":"
                 "\"{\\\"cmd\\\":\\\"log.events\\\"}\",\"id\":\"x\"}",
    };
    for (size_t i = 0; i < ARRAY_SIZE(ok); i++) {
        CHECK(parse(ok[i], &m, err) == LOGGER_MESSAGE_OK, "batch %zu: %s", i, err);
        CHECK(m.batch && m.n == 2 && m.count == 2, "batch %zu: n %zu count %zu", i, m.n, m.count);
        const char *id =
            m.n == 2 ? cJSON_GetStringValue(cJSON_GetObjectItem(m.events[1], "_id")) : NULL;
        CHECK(id && strcmp(id, "b") == 0, "batch %zu: order", i);
        logger_message_cleanup(&m);
    }
    /* the single form goes through the same parser */
    CHECK(parse("{" PATTERN ",\"data\":" EV("a") "}", &m, err) == LOGGER_MESSAGE_OK && !m.batch &&
              m.n == 1 && m.count == 1,
          "log.event: %s", err);
    logger_message_cleanup(&m);

    /* Invalid events among valid ones: those are kept, the first bad one is named. */
    CHECK(parse(BATCH(EV("a") ",{\"_id\":\"b\"}," EV("c") "," EV("gw:d")), &m, err) ==
              LOGGER_MESSAGE_PARTIAL,
          "partial: %s", err);
    CHECK(m.n == 2 && m.count == 4 && strncmp(err, "events[1]: field 'ts'", 21) == 0,
          "partial: n %zu count %zu err %s", m.n, m.count, err);
    logger_message_cleanup(&m);
    CHECK(parse(BATCH(EV("a") "," EV("gw:d")), &m, err) == LOGGER_MESSAGE_PARTIAL &&
              strstr(err, "events[1]: field '_id'") && strstr(err, "gateways"),
          "gateway id: %s", err);
    logger_message_cleanup(&m);

    /* Nothing usable: BAD, nothing held. */
    static const struct {
        const char *body, *msg;
    } bad[] = {
        {BATCH("{\"_id\":\"b\"}"), "events[0]: field 'ts'"},
        {BATCH(""), "1 to 1000 events"},
        {"{" BATCH_PATTERN ",\"data\":{\"events\":{}}}", "1 to 1000 events"},
        {"{" BATCH_PATTERN ",\"data\":{\"events\":null}}", "1 to 1000 events"},
        {"{" BATCH_PATTERN ",\"data\":[" EV("a") "]}", "'data' must be an object"},
        {"{" BATCH_PATTERN ",\"data\":{}}", "'data' must be an object"},
        {"{" BATCH_PATTERN ",\"data\":{\"events\":[" EV("a") "],\"x\":1}}", "'data' must"},
        {"{" BATCH_PATTERN ",\"data\":{\"events\":[],\"events\":[" EV("a") "]}}", "'data' must"},
        {"{" BATCH_PATTERN ",\"data\":{\"Events\":[" EV("a") "]}}", "'data' must"},
        {"{" BATCH_PATTERN "}", "no data"},
        {"{\"pattern\":{\"cmd\":\"log.eventsx\"},\"data\":{\"events\":[" EV("a") "]}}", "pattern"},
        {"{\"pattern\":\"log.events\",\"data\":{\"events\":[" EV("a") "]}}", "pattern"},
        {"{" BATCH_PATTERN ",\"data\":{\"events\":[" EV("a\\u0000") "]}}", "NUL"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        CHECK(parse(bad[i].body, &m, err) == LOGGER_MESSAGE_BAD, "bad batch %zu accepted", i);
        CHECK(m.n == 0 && m.events == NULL, "bad batch %zu holds events", i);
        CHECK(strstr(err, bad[i].msg) != NULL, "bad batch %zu: err '%s' lacks \"%s\"", i, err,
              bad[i].msg);
        logger_message_cleanup(&m);
    }

    /* 1000 events, and one more. */
    size_t cap = 64 + 1001 * 80, len = 0;
    char *big = malloc(cap);
    len += (size_t)snprintf(big, cap, "{" BATCH_PATTERN ",\"data\":{\"events\":[");
    for (int i = 0; i < 1001; i++) {
        len += (size_t)snprintf(big + len, cap - len,
                                "%s{\"_id\":\"e%d\",\"ts\":1,"
                                "\"service\":\"s\",\"type\":\"t\"," TAIL "}",
                                i ? "," : "", i);
        if (i == 999) {
            char *thousand = malloc(len + 8);
            memcpy(thousand, big, len);
            strcpy(thousand + len, "]}}");
            CHECK(parse(thousand, &m, err) == LOGGER_MESSAGE_OK && m.n == 1000, "1000 events: %s",
                  err);
            logger_message_cleanup(&m);
            free(thousand);
        }
    }
    snprintf(big + len, cap - len, "]}}");
    CHECK(parse(big, &m, err) == LOGGER_MESSAGE_BAD && strstr(err, "1 to 1000"), "1001: %s", err);
    logger_message_cleanup(&m);
    free(big);

    /* The single-event helper refuses a batch. */
    const char *two = BATCH(EV("a"));
    cJSON *ev = logger_event_from_message(two, strlen(two), err, sizeof(err));
    CHECK(ev == NULL && strstr(err, "log.events"), "from_message on a batch: %s", err);
    cJSON_Delete(ev);
}

/* err is filled within errlen, whichever check fails, including the " in actor" suffix. */
static void
test_err_bounds(void)
{
    static const char *const bad[] = {
        "{" HEAD ",\"actor\":5," TAIL "}",
        "{" HEAD ",\"actor\":{\"id\":1,\"username\":\"u\",\"role\":\"user\",\"x\":1}," TAIL "}",
        "{" HEAD ",\"subject\":{\"$aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\":1}," TAIL
        "}",
        "{" HEAD ",\"data\":{\"reward\":0.5}," TAIL "}",
        "{\"_id\":\"e\"}",
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        cJSON *in = cJSON_Parse(bad[i]);
        CHECK(in != NULL, "test input %zu does not parse", i);
        for (size_t errlen = 1; errlen < 40; errlen += 6) {
            char err[64];
            memset(err, '#', sizeof(err));
            cJSON *out = logger_event_normalise(in, err, errlen);
            CHECK(out == NULL, "case %zu accepted", i);
            CHECK(memchr(err, '\0', errlen) != NULL && err[errlen] == '#',
                  "case %zu, errlen %zu: overrun", i, errlen);
            cJSON_Delete(out);
        }
        cJSON_Delete(in);
    }
}

static const struct test_case cases[] = {
    {"canonical", test_canonical},
    {"head", test_head},
    {"structure", test_structure},
    {"actor", test_actor},
    {"subject", test_subject},
    {"data", test_data},
    {"independent", test_independent},
    {"idempotent", test_idempotent},
    {"message", test_message},
    {"err_bounds", test_err_bounds},
    {"batch", test_batch},
};

HARNESS_MAIN("event", cases)

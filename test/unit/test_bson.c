/*
 * Unit tests of the logger's BSON <-> cJSON conversions (bsonjson.h): BSON types chosen for each
 * JSON value, the stored document of an event with its derived _at, _users and _cats, and the
 * round trip back to the canonical event.
 */
#include <stdlib.h>
#include <string.h>

#include "bsonjson.h"
#include "harness.h"
#include "json.h"

static cJSON *
parse(const char *text)
{
    cJSON *j = cJSON_Parse(text);
    CHECK(j != NULL, "test input does not parse: %.80s", text);
    return j;
}

/* The BSON type of a dotted path in doc, or BSON_TYPE_EOD when absent. */
static bson_type_t
type_at(const bson_t *doc, const char *path, bson_iter_t *out)
{
    bson_iter_t it;
    if (!bson_iter_init(&it, doc) || !bson_iter_find_descendant(&it, path, out)) {
        return BSON_TYPE_EOD;
    }
    return bson_iter_type(out);
}

/* Keys of doc's top level, comma-separated, into buf. */
static const char *
top_keys(const bson_t *doc, char *buf, size_t len)
{
    bson_iter_t it;
    size_t o = 0;
    buf[0] = '\0';
    if (bson_iter_init(&it, doc)) {
        while (bson_iter_next(&it) && o < len) {
            o += (size_t)snprintf(buf + o, len - o, "%s%s", o ? "," : "", bson_iter_key(&it));
        }
    }
    return buf;
}

static void
test_append_types(void)
{
    cJSON *v = parse("{\"s\":\"t\\u00e9xt\",\"t\":true,\"f\":false,\"z\":null,\"i\":42,\"neg\":-7,"
                     "\"one\":1.0,\"e3\":1e3,\"max\":9007199254740991,\"min\":-9007199254740991,"
                     "\"big\":9007199254740992,\"d\":1.5,\"huge\":1e300,\"tiny\":5e-324,"
                     "\"arr\":[1,\"a\",[2.5],{\"k\":null}],\"obj\":{\"in\":{\"deep\":[]}}}");
    bson_t b = BSON_INITIALIZER;
    bsonjson_append(&b, "v", v);
    bson_iter_t it;
    static const struct {
        const char *path;
        bson_type_t type;
    } want[] = {
        {"v", BSON_TYPE_DOCUMENT},        {"v.s", BSON_TYPE_UTF8},
        {"v.t", BSON_TYPE_BOOL},          {"v.f", BSON_TYPE_BOOL},
        {"v.z", BSON_TYPE_NULL},          {"v.i", BSON_TYPE_INT64},
        {"v.neg", BSON_TYPE_INT64},       {"v.one", BSON_TYPE_INT64},
        {"v.e3", BSON_TYPE_INT64},        {"v.max", BSON_TYPE_INT64},
        {"v.min", BSON_TYPE_INT64},       {"v.big", BSON_TYPE_DOUBLE},
        {"v.d", BSON_TYPE_DOUBLE},        {"v.huge", BSON_TYPE_DOUBLE},
        {"v.tiny", BSON_TYPE_DOUBLE},     {"v.arr", BSON_TYPE_ARRAY},
        {"v.arr.0", BSON_TYPE_INT64},     {"v.arr.1", BSON_TYPE_UTF8},
        {"v.arr.2", BSON_TYPE_ARRAY},     {"v.arr.2.0", BSON_TYPE_DOUBLE},
        {"v.arr.3", BSON_TYPE_DOCUMENT},  {"v.arr.3.k", BSON_TYPE_NULL},
        {"v.obj.in", BSON_TYPE_DOCUMENT}, {"v.obj.in.deep", BSON_TYPE_ARRAY},
    };
    for (size_t i = 0; i < ARRAY_SIZE(want); i++) {
        bson_type_t t = type_at(&b, want[i].path, &it);
        CHECK(t == want[i].type, "%s: type 0x%x, want 0x%x", want[i].path, t, want[i].type);
    }
    /* Values, exactly. */
    CHECK(type_at(&b, "v.s", &it) == BSON_TYPE_UTF8 &&
              strcmp(bson_iter_utf8(&it, NULL), "t\xc3\xa9xt") == 0,
          "string value");
    CHECK(type_at(&b, "v.t", &it) == BSON_TYPE_BOOL && bson_iter_bool(&it), "true");
    CHECK(type_at(&b, "v.f", &it) == BSON_TYPE_BOOL && !bson_iter_bool(&it), "false");
    CHECK(type_at(&b, "v.neg", &it) == BSON_TYPE_INT64 && bson_iter_int64(&it) == -7, "-7");
    CHECK(type_at(&b, "v.e3", &it) == BSON_TYPE_INT64 && bson_iter_int64(&it) == 1000, "1e3");
    CHECK(type_at(&b, "v.max", &it) == BSON_TYPE_INT64 && bson_iter_int64(&it) == JSON_MAX_SAFE_INT,
          "2^53-1");
    CHECK(type_at(&b, "v.min", &it) == BSON_TYPE_INT64 &&
              bson_iter_int64(&it) == -JSON_MAX_SAFE_INT,
          "-(2^53-1)");
    CHECK(type_at(&b, "v.big", &it) == BSON_TYPE_DOUBLE &&
              bson_iter_double(&it) == 9007199254740992.0,
          "2^53");
    CHECK(type_at(&b, "v.d", &it) == BSON_TYPE_DOUBLE && bson_iter_double(&it) == 1.5, "1.5");
    CHECK(type_at(&b, "v.tiny", &it) == BSON_TYPE_DOUBLE && bson_iter_double(&it) == 5e-324,
          "5e-324");
    CHECK(type_at(&b, "v.arr.2.0", &it) == BSON_TYPE_DOUBLE && bson_iter_double(&it) == 2.5, "2.5");
    /* Object keys in order. */
    bson_iter_t child;
    CHECK(type_at(&b, "v", &it) == BSON_TYPE_DOCUMENT && bson_iter_recurse(&it, &child), "recurse");
    const char *order[] = {"s",   "t",   "f",   "z", "i",    "neg",  "one", "e3",
                           "max", "min", "big", "d", "huge", "tiny", "arr", "obj"};
    for (size_t i = 0; i < ARRAY_SIZE(order); i++) {
        CHECK(bson_iter_next(&child) && strcmp(bson_iter_key(&child), order[i]) == 0,
              "key %zu: want %s", i, order[i]);
    }
    CHECK(!bson_iter_next(&child), "extra keys");
    bson_destroy(&b);
    cJSON_Delete(v);

    /* Scalars at the top, and kinds JSON text cannot make: infinity, raw. */
    bson_init(&b);
    cJSON *inf = cJSON_CreateNumber(1.0 / 0.0), *raw = cJSON_CreateRaw("{\"x\":1}");
    cJSON *empty_arr = cJSON_CreateArray(), *empty_obj = cJSON_CreateObject();
    bsonjson_append(&b, "inf", inf);
    bsonjson_append(&b, "raw", raw);
    bsonjson_append(&b, "ea", empty_arr);
    bsonjson_append(&b, "eo", empty_obj);
    CHECK(type_at(&b, "inf", &it) == BSON_TYPE_DOUBLE && bson_iter_double(&it) > 1e308, "inf");
    CHECK(type_at(&b, "raw", &it) == BSON_TYPE_NULL, "raw is not null");
    CHECK(type_at(&b, "ea", &it) == BSON_TYPE_ARRAY, "[]");
    CHECK(type_at(&b, "eo", &it) == BSON_TYPE_DOCUMENT, "{}");
    char keys[128];
    CHECK(strcmp(top_keys(&b, keys, sizeof(keys)), "inf,raw,ea,eo") == 0, "keys %s", keys);
    cJSON_Delete(inf);
    cJSON_Delete(raw);
    cJSON_Delete(empty_arr);
    cJSON_Delete(empty_obj);
    bson_destroy(&b);
}

#define EVENT_HEAD                                                                                 \
    "{\"_id\":\"e1\",\"ts\":1714567890123,\"service\":\"chance\",\"type\":\"code.assigned\","

static void
test_event_document(void)
{
    cJSON *ev =
        parse(EVENT_HEAD "\"actor\":{\"id\":\"7\",\"username\":\"alice\",\"role\":\"user\"},"
                         "\"subject\":{\"category\":3,\"code\":\"ABC\",\"user_id\":\"7\","
                         "\"username\":\"bob\",\"categories\":[4,5]},"
                         "\"data\":{\"reward\":250,\"_at\":1},\"message\":\"m\"}");
    bson_t *doc = bsonjson_event(ev, "d1g3st");
    char keys[256];
    CHECK(strcmp(top_keys(doc, keys, sizeof(keys)),
                 "_id,ts,_at,service,type,actor,subject,data,message,_users,_cats,_h") == 0,
          "keys %s", keys);
    bson_iter_t it;
    CHECK(type_at(doc, "ts", &it) == BSON_TYPE_INT64 && bson_iter_int64(&it) == 1714567890123LL,
          "ts");
    CHECK(type_at(doc, "_at", &it) == BSON_TYPE_DATE_TIME &&
              bson_iter_date_time(&it) == 1714567890123LL,
          "_at");
    CHECK(type_at(doc, "data.reward", &it) == BSON_TYPE_INT64 && bson_iter_int64(&it) == 250,
          "reward");
    CHECK(type_at(doc, "subject.categories.1", &it) == BSON_TYPE_INT64 && bson_iter_int64(&it) == 5,
          "categories");

    /* _users: actor id and username, subject user_id and username, each once, in that order. */
    const char *users[] = {"7", "alice", "bob"};
    for (size_t i = 0; i < ARRAY_SIZE(users); i++) {
        char path[32];
        snprintf(path, sizeof(path), "_users.%zu", i);
        CHECK(type_at(doc, path, &it) == BSON_TYPE_UTF8 &&
                  strcmp(bson_iter_utf8(&it, NULL), users[i]) == 0,
              "%s: want %s", path, users[i]);
    }
    CHECK(type_at(doc, "_users.3", &it) == BSON_TYPE_EOD, "_users has a 4th item");
    /* _cats: the category, then the categories, as int64. */
    const long long cats[] = {3, 4, 5};
    for (size_t i = 0; i < ARRAY_SIZE(cats); i++) {
        char path[32];
        snprintf(path, sizeof(path), "_cats.%zu", i);
        CHECK(type_at(doc, path, &it) == BSON_TYPE_INT64 && bson_iter_int64(&it) == cats[i],
              "%s: want %lld", path, cats[i]);
    }
    CHECK(type_at(doc, "_cats.3", &it) == BSON_TYPE_EOD, "_cats has a 4th item");
    bson_destroy(doc);
    cJSON_Delete(ev);

    /* No actor, an empty subject: both derived arrays present and empty. */
    ev = parse(EVENT_HEAD "\"actor\":null,\"subject\":{},\"data\":{},\"message\":\"m\"}");
    doc = bsonjson_event(ev, NULL);
    CHECK(type_at(doc, "_users", &it) == BSON_TYPE_ARRAY, "_users missing");
    CHECK(type_at(doc, "_users.0", &it) == BSON_TYPE_EOD, "_users not empty");
    CHECK(type_at(doc, "_cats", &it) == BSON_TYPE_ARRAY, "_cats missing");
    CHECK(type_at(doc, "_cats.0", &it) == BSON_TYPE_EOD, "_cats not empty");
    CHECK(type_at(doc, "actor", &it) == BSON_TYPE_NULL, "actor not null");
    bson_destroy(doc);
    cJSON_Delete(ev);

    /* The same user four times is listed once; a subject user alone is listed. */
    ev = parse(EVENT_HEAD "\"actor\":{\"id\":\"u\",\"username\":\"u\",\"role\":\"user\"},"
                          "\"subject\":{\"user_id\":\"u\",\"username\":\"u\"},\"data\":{},"
                          "\"message\":\"m\"}");
    doc = bsonjson_event(ev, NULL);
    CHECK(type_at(doc, "_users.0", &it) == BSON_TYPE_UTF8 &&
              strcmp(bson_iter_utf8(&it, NULL), "u") == 0,
          "_users.0");
    CHECK(type_at(doc, "_users.1", &it) == BSON_TYPE_EOD, "a repeated user listed twice");
    bson_destroy(doc);
    cJSON_Delete(ev);
    ev = parse(EVENT_HEAD "\"actor\":null,\"subject\":{\"username\":\"carol\",\"categories\":[9]},"
                          "\"data\":{},\"message\":\"m\"}");
    doc = bsonjson_event(ev, NULL);
    CHECK(type_at(doc, "_users.0", &it) == BSON_TYPE_UTF8 &&
              strcmp(bson_iter_utf8(&it, NULL), "carol") == 0,
          "subject username alone");
    CHECK(type_at(doc, "_cats.0", &it) == BSON_TYPE_INT64 && bson_iter_int64(&it) == 9 &&
              type_at(doc, "_cats.1", &it) == BSON_TYPE_EOD,
          "categories alone");
    bson_destroy(doc);
    cJSON_Delete(ev);
}

/* Canonical events come back from their stored documents as they went in. */
static void
test_round_trip(void)
{
    static const char *const events[] = {
        EVENT_HEAD "\"actor\":null,\"subject\":{},\"data\":{},\"message\":\"m\"}",
        EVENT_HEAD
        "\"actor\":{\"id\":\"7\",\"username\":\"alice\",\"role\":\"user\"},"
        "\"subject\":{\"category\":3,\"code\":\"ABC\",\"categories\":[4,5],\"batch\":2,"
        "\"flag\":true,\"ratio\":0.25,\"none\":null},"
        "\"data\":{\"reward\":-9007199254740991,\"f\":1.5,\"big\":9007199254740992,"
        "\"s\":\"\\\"quoted\\\" \\u00e9\\ud83d\\ude00\",\"list\":[[1,[2,[3]]],{\"a\":[]},"
        "{}],\"deep\":{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{\"f\":[true,false,null]}}}}}}},"
        "\"message\":\"two\\nlines\"}",
        "{\"_id\":\"x\",\"ts\":0,\"service\":\"s\",\"type\":\"t\",\"actor\":null,\"subject\":{},"
        "\"data\":{\"_at\":5,\"_users\":[\"nested derived names are data\"],\"_cats\":{}},"
        "\"message\":\"m\"}",
        "{\"_id\":\"x\",\"ts\":32503680000000,\"service\":\"s\",\"type\":\"t\",\"actor\":null,"
        "\"subject\":{},\"data\":{\"tiny\":5e-324,\"neg\":-0.5,\"e\":1e300},\"message\":\"m\"}",
    };
    for (size_t i = 0; i < ARRAY_SIZE(events); i++) {
        cJSON *ev = parse(events[i]);
        bson_t *doc = bsonjson_event(ev, "digest");
        cJSON *back = bsonjson_to_json(doc, true);
        CHECK(cJSON_Compare(ev, back, true), "event %zu changed", i);
        /* cJSON_Compare forgives small number differences; compare the numbers exactly too. */
        char *a = cJSON_PrintUnformatted(ev), *b = cJSON_PrintUnformatted(back);
        CHECK(strcmp(a, b) == 0, "event %zu:\n    in   %s\n    back %s", i, a, b);
        const cJSON *r = cJSON_GetObjectItem(cJSON_GetObjectItem(back, "data"), "reward");
        if (r) {
            CHECK(r->valuedouble == -9007199254740991.0, "reward %.17g", r->valuedouble);
        }
        free(a);
        free(b);

        /* Without hiding, the derived fields come back too: _at as epoch ms. */
        cJSON *full = bsonjson_to_json(doc, false);
        const cJSON *at = cJSON_GetObjectItem(full, "_at");
        CHECK(cJSON_IsNumber(at) && at->valuedouble == cJSON_GetObjectItem(ev, "ts")->valuedouble,
              "event %zu: _at", i);
        CHECK(cJSON_IsArray(cJSON_GetObjectItem(full, "_users")) &&
                  cJSON_IsArray(cJSON_GetObjectItem(full, "_cats")),
              "event %zu: derived arrays", i);
        CHECK(cJSON_GetArraySize(full) == cJSON_GetArraySize(ev) + 4, "event %zu: %d fields", i,
              cJSON_GetArraySize(full));
        CHECK(strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(full, "_h")), "digest") == 0,
              "event %zu: _h", i);
        cJSON_Delete(full);
        cJSON_Delete(back);
        bson_destroy(doc);
        cJSON_Delete(ev);
    }
}

/* Documents written by others (or by older versions): other BSON types read back sensibly. */
static void
test_to_json_types(void)
{
    bson_t *doc =
        BCON_NEW("i32", BCON_INT32(-12), "i64", BCON_INT64(1LL << 40), "d", BCON_DOUBLE(2.5), "dt",
                 BCON_DATE_TIME(1714567890123LL), "b", BCON_BOOL(true), "n", BCON_NULL, "s",
                 BCON_UTF8("x"), "arr", "[", BCON_INT32(1), "{", "k", BCON_UTF8("v"), "}", "[", "]",
                 "]", "doc", "{", "in", "[", BCON_INT64(5), "]", "}");
    bson_oid_t oid;
    bson_oid_init_from_string(&oid, "65f0a1b2c3d4e5f601234567");
    BSON_APPEND_OID(doc, "oid", &oid);
    BSON_APPEND_BINARY(doc, "bin", BSON_SUBTYPE_BINARY, (const uint8_t *)"ab", 2);
    BSON_APPEND_REGEX(doc, "re", "^a", "i");
    cJSON *j = bsonjson_to_json(doc, false);
    char *p = cJSON_PrintUnformatted(j);
    CHECK(strcmp(p, "{\"i32\":-12,\"i64\":1099511627776,\"d\":2.5,\"dt\":1714567890123,\"b\":true,"
                    "\"n\":null,\"s\":\"x\",\"arr\":[1,{\"k\":\"v\"},[]],\"doc\":{\"in\":[5]},"
                    "\"oid\":null,\"bin\":null,\"re\":null}") == 0,
          "got %s", p);
    const cJSON *arr = cJSON_GetObjectItem(j, "arr");
    CHECK(cJSON_IsArray(arr) && cJSON_GetArraySize(arr) == 3, "arr is an array of 3");
    CHECK(cJSON_IsArray(cJSON_GetArrayItem(arr, 2)), "nested empty array");
    free(p);
    cJSON_Delete(j);

    /* hide_derived drops only the top-level derived names. */
    bson_t *stored =
        BCON_NEW("_id", BCON_UTF8("e"), "_at", BCON_DATE_TIME(1), "_users", "[", "]", "_cats", "[",
                 "]", "_h", BCON_UTF8("d"), "data", "{", "_at", BCON_INT64(2), "}");
    j = bsonjson_to_json(stored, true);
    p = cJSON_PrintUnformatted(j);
    CHECK(strcmp(p, "{\"_id\":\"e\",\"data\":{\"_at\":2}}") == 0, "hidden: %s", p);
    free(p);
    cJSON_Delete(j);
    j = bsonjson_to_json(stored, false);
    CHECK(cJSON_GetArraySize(j) == 6, "not hidden: %d fields", cJSON_GetArraySize(j));
    cJSON_Delete(j);
    bson_destroy(stored);
    bson_destroy(doc);

    /* An empty document is an empty object. */
    bson_t empty = BSON_INITIALIZER;
    j = bsonjson_to_json(&empty, true);
    CHECK(cJSON_IsObject(j) && j->child == NULL, "empty document");
    cJSON_Delete(j);
}

static const struct test_case cases[] = {
    {"append_types", test_append_types},
    {"event_document", test_event_document},
    {"round_trip", test_round_trip},
    {"to_json_types", test_to_json_types},
};

HARNESS_MAIN("bson", cases)

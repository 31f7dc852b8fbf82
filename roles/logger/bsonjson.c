/* BSON <-> cJSON for the logger's store (bsonjson.h). */
#include "bsonjson.h"

#include <stdbool.h>
#include <string.h>

#include "json.h"

/* ---- cJSON -> BSON ---- */

void
bsonjson_append(bson_t *b, const char *key, const cJSON *v)
{
    if (cJSON_IsObject(v) || cJSON_IsArray(v)) {
        bson_t child;
        bool arr = cJSON_IsArray(v);
        if (arr) {
            bson_append_array_begin(b, key, -1, &child);
        } else {
            bson_append_document_begin(b, key, -1, &child);
        }
        uint32_t i = 0;
        for (const cJSON *c = v->child; c; c = c->next, i++) {
            char buf[16];
            const char *k = c->string;
            if (arr) {
                bson_uint32_to_string(i, &k, buf, sizeof(buf));
            }
            bsonjson_append(&child, k, c);
        }
        if (arr) {
            bson_append_array_end(b, &child);
        } else {
            bson_append_document_end(b, &child);
        }
    } else if (cJSON_IsString(v)) {
        bson_append_utf8(b, key, -1, v->valuestring, -1);
    } else if (cJSON_IsBool(v)) {
        bson_append_bool(b, key, -1, cJSON_IsTrue(v));
    } else if (json_is_int(v)) {
        bson_append_int64(b, key, -1, (int64_t)v->valuedouble);
    } else if (cJSON_IsNumber(v)) {
        bson_append_double(b, key, -1, v->valuedouble);
    } else {
        bson_append_null(b, key, -1);
    }
}

static void
append_string_once(bson_t *arr, uint32_t *n, const char **seen, const cJSON *v)
{
    if (!cJSON_IsString(v)) {
        return;
    }
    for (uint32_t i = 0; i < *n; i++) {
        if (strcmp(seen[i], v->valuestring) == 0) {
            return;
        }
    }
    char buf[16];
    const char *k;
    bson_uint32_to_string(*n, &k, buf, sizeof(buf));
    bson_append_utf8(arr, k, -1, v->valuestring, -1);
    seen[(*n)++] = v->valuestring;
}

/* The derived fields: one multikey index each serves the user and category filters. */
static void
append_derived(bson_t *doc, const cJSON *ev)
{
    const cJSON *actor = cJSON_GetObjectItemCaseSensitive(ev, "actor");
    const cJSON *subject = cJSON_GetObjectItemCaseSensitive(ev, "subject");
    bson_t arr;
    const char *seen[4];
    uint32_t n = 0;
    bson_append_array_begin(doc, "_users", -1, &arr);
    append_string_once(&arr, &n, seen, cJSON_GetObjectItemCaseSensitive(actor, "id"));
    append_string_once(&arr, &n, seen, cJSON_GetObjectItemCaseSensitive(actor, "username"));
    append_string_once(&arr, &n, seen, cJSON_GetObjectItemCaseSensitive(subject, "user_id"));
    append_string_once(&arr, &n, seen, cJSON_GetObjectItemCaseSensitive(subject, "username"));
    bson_append_array_end(doc, &arr);

    bson_append_array_begin(doc, "_cats", -1, &arr);
    n = 0;
    char buf[16];
    const char *k;
    const cJSON *cat = cJSON_GetObjectItemCaseSensitive(subject, "category");
    if (json_is_int(cat)) {
        bson_uint32_to_string(n++, &k, buf, sizeof(buf));
        bson_append_int64(&arr, k, -1, (int64_t)cat->valuedouble);
    }
    const cJSON *cats = cJSON_GetObjectItemCaseSensitive(subject, "categories");
    for (const cJSON *c = cats ? cats->child : NULL; c; c = c->next) {
        bson_uint32_to_string(n++, &k, buf, sizeof(buf));
        bson_append_int64(&arr, k, -1, (int64_t)c->valuedouble);
    }
    bson_append_array_end(doc, &arr);
}

bson_t *
bsonjson_event(const cJSON *ev, const char *digest)
{
    bson_t *doc = bson_new();
    for (const cJSON *f = ev->child; f; f = f->next) {
        bsonjson_append(doc, f->string, f);
        if (strcmp(f->string, "ts") == 0) {
            bson_append_date_time(doc, "_at", -1, (int64_t)f->valuedouble);
        }
    }
    append_derived(doc, ev);
    if (digest) {
        bson_append_utf8(doc, "_h", -1, digest, -1);
    }
    return doc;
}

/* ---- BSON -> cJSON ---- */

static cJSON *
value_to_json(bson_iter_t *it)
{
    switch (bson_iter_type(it)) {
    case BSON_TYPE_UTF8: return cJSON_CreateString(bson_iter_utf8(it, NULL));
    case BSON_TYPE_INT32: return cJSON_CreateNumber(bson_iter_int32(it));
    case BSON_TYPE_INT64: return cJSON_CreateNumber((double)bson_iter_int64(it));
    case BSON_TYPE_DOUBLE: return cJSON_CreateNumber(bson_iter_double(it));
    case BSON_TYPE_BOOL: return cJSON_CreateBool(bson_iter_bool(it));
    case BSON_TYPE_DATE_TIME: return cJSON_CreateNumber((double)bson_iter_date_time(it));
    case BSON_TYPE_DOCUMENT:
    case BSON_TYPE_ARRAY: {
        const uint8_t *data;
        uint32_t len;
        bson_t sub;
        if (BSON_ITER_HOLDS_DOCUMENT(it)) {
            bson_iter_document(it, &len, &data);
        } else {
            bson_iter_array(it, &len, &data);
        }
        if (!bson_init_static(&sub, data, len)) {
            return cJSON_CreateNull();
        }
        cJSON *out = bsonjson_to_json(&sub, false);
        if (BSON_ITER_HOLDS_ARRAY(it)) { /* same children, array container */
            cJSON *arr = cJSON_CreateArray();
            while (out->child) {
                cJSON_AddItemToArray(arr, cJSON_DetachItemViaPointer(out, out->child));
            }
            cJSON_Delete(out);
            return arr;
        }
        return out;
    }
    default: return cJSON_CreateNull(); /* types we never write */
    }
}

cJSON *
bsonjson_to_json(const bson_t *doc, bool hide_derived)
{
    bson_iter_t it;
    cJSON *out = cJSON_CreateObject();
    if (!bson_iter_init(&it, doc)) {
        return out;
    }
    while (bson_iter_next(&it)) {
        const char *k = bson_iter_key(&it);
        if (hide_derived && (strcmp(k, "_at") == 0 || strcmp(k, "_users") == 0 ||
                             strcmp(k, "_cats") == 0 || strcmp(k, "_h") == 0)) {
            continue;
        }
        cJSON_AddItemToObject(out, k, value_to_json(&it));
    }
    return out;
}

/*
 * The logger's conversions between its canonical cJSON events and BSON documents: the stored
 * document of an event (the event's fields in order, plus the derived "_at", "_users" and
 * "_cats" the reports index), and documents read back as cJSON (integers as numbers, dates as
 * epoch ms). Pure functions over libbson and cJSON; no I/O; unit-tested.
 */
#ifndef CHANCED_LOGGER_BSONJSON_H
#define CHANCED_LOGGER_BSONJSON_H

#include <bson/bson.h>
#include <cjson/cJSON.h>
#include <stdbool.h>

/* Appends v under key: objects and arrays recursively, integers as int64, other numbers as
 * double, null and unknown kinds as null. */
void bsonjson_append(bson_t *b, const char *key, const cJSON *v);
/* The document stored for a canonical event (new; free with bson_destroy), with _h = digest
 * (the event's content digest) unless digest is NULL. */
bson_t *bsonjson_event(const cJSON *ev, const char *digest);
/* A document as a new cJSON object (free with cJSON_Delete); hide_derived drops the derived
 * fields of a stored event ("_at", "_users", "_cats", "_h") at the top level. */
cJSON *bsonjson_to_json(const bson_t *doc, bool hide_derived);

#endif

/*
 * Gateway audit events (docs/protocol.md, "Audit event schema"): built here as JSON text and
 * inserted into the PostgreSQL outbox inside the transaction of the change they describe.
 * The relay (outbox.c) adds `_id` = "gw:<database namespace>:<outbox id>" when it delivers them.
 */
#ifndef CHANCED_GATEWAY_AUDIT_H
#define CHANCED_GATEWAY_AUDIT_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

struct pg_conn;
struct pg_error;

/* Who did it; all fields borrowed. */
struct audit_actor {
    const char *id;       /* user id as text */
    const char *username; /* as stored */
    const char *role;     /* "user", "admin" or "system" */
};

/*
 * Returns new JSON text (free with free()) of an event of `type` at the current time. actor may
 * be NULL (JSON null). Takes ownership of subject and data (NULL makes an empty object).
 */
char *audit_event(const char *type, const struct audit_actor *actor, cJSON *subject, cJSON *data,
                  const char *message);
/* Inserts an event into the outbox on c (inside the caller's transaction, if any). */
int audit_insert(struct pg_conn *c, const char *event, struct pg_error *err) MUSTCHECK;
/* Formats Toman with thousands separators ("12,345") into buf (>= 32 bytes). */
void audit_money(int64_t amount, char *buf, size_t size);

#endif

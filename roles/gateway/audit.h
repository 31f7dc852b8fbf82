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

struct bgtask;
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
/*
 * The change an audited transaction makes, on c. Returns 1 after changing something, with
 * *event set to the event describing it (text from audit_event; audit_commit frees it), 0 when
 * there was nothing to change (no event; *event may be left NULL), -1 on failure (err filled).
 */
typedef int (*audit_apply_fn)(struct pg_conn *c, void *arg, char **event, struct pg_error *err);
/*
 * One audited change: BEGIN, apply, its event into the outbox, COMMIT, then wakes the relay
 * (NULL: nobody to wake, e.g. a command-line tool). Rolls back on any failure. Returns what
 * apply returned (1 or 0), or -1 (err filled).
 */
int audit_commit(struct pg_conn *c, struct bgtask *relay, audit_apply_fn apply, void *arg,
                 struct pg_error *err) MUSTCHECK;
/* Writes one event on its own (no surrounding change) and wakes the relay (may be NULL). */
int audit_record(struct pg_conn *c, struct bgtask *relay, const char *event,
                 struct pg_error *err) MUSTCHECK;
/*
 * Copies text a client chose (an attempted username) into out for an event: control
 * characters become visible "\xNN" escapes and the result is cut at a UTF-8 boundary to fit
 * size - 1 bytes, so the logger, which refuses control characters, never refuses the event.
 */
void audit_printable(const char *in, char *out, size_t size);
/* Formats Toman with thousands separators ("12,345") into buf (>= 32 bytes). */
void audit_money(int64_t amount, char *buf, size_t size);

#endif

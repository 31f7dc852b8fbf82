/*
 * Audit events as the logger accepts them (docs/protocol.md, "Audit event schema"): validation
 * of untrusted JSON, from log.append or from a queue message, into one canonical tree that the
 * store writes as is. Pure functions over cJSON; no I/O.
 */
#ifndef CHANCED_LOGGER_EVENT_H
#define CHANCED_LOGGER_EVENT_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "util.h"

#define LOGGER_EVENT_ID_MAX 200   /* bytes of an event _id */
#define LOGGER_EVENT_MSG_MAX 2000 /* bytes of the human message */

/*
 * Validates one event and returns a new canonical tree (free with cJSON_Delete): keys in schema
 * order (_id, ts, service, type, actor, subject, data, message), actor null when absent, subject
 * and data {} when absent, actor and subject ids as strings. NULL with err naming the field.
 */
cJSON *logger_event_normalise(const cJSON *ev, char *err, size_t errlen);

/*
 * Event ids are namespaced by origin: the gateways' events (log.append) are "gw:..."; nothing
 * from the queue may use that prefix, and log.append accepts nothing else, so neither path can
 * pre-insert an id the other will use.
 */
#define LOGGER_GATEWAY_ID_PREFIX "gw:"

/*
 * Parses a queue message body {"pattern": {"cmd": "log.event"}, "data": <event>} (the NestJS
 * RMQ event shape; the pattern may also be that object as a JSON string) and returns the
 * canonical event (free with cJSON_Delete), or NULL with err saying why the body is unusable
 * (an _id in the gateways' namespace included).
 */
cJSON *logger_event_from_message(const char *body, size_t len, char *err, size_t errlen);

#endif

/*
 * Audit events as the logger accepts them (docs/protocol.md, "Audit event schema"): validation
 * of untrusted JSON, from log.append or from a queue message, into one canonical tree that the
 * store writes as is. Pure functions over cJSON; no I/O.
 */
#ifndef CHANCED_LOGGER_EVENT_H
#define CHANCED_LOGGER_EVENT_H

#include <cjson/cJSON.h>
#include <stdbool.h>
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

/* Most events one log.events message may carry. */
#define LOGGER_MESSAGE_EVENTS_MAX 1000

/* What logger_message_parse made of a queue message body. */
enum logger_message_status {
    LOGGER_MESSAGE_OK,      /* every event is valid */
    LOGGER_MESSAGE_PARTIAL, /* a batch with invalid events: events holds the valid ones */
    LOGGER_MESSAGE_BAD,     /* nothing in the body is usable: events is empty */
};

/* The canonical events of one queue message (free with logger_message_cleanup). */
struct logger_message {
    cJSON **events; /* owned canonical events, in message order, the invalid ones left out */
    size_t n;       /* events held */
    size_t count;   /* events the message carried (1 for log.event; 0 if the body is unusable) */
    bool batch;     /* a log.events message: reasons name events[i] */
};

/*
 * Parses a queue message body, one of (docs/protocol.md, "RabbitMQ (chance -> logger)"):
 *   {"pattern": {"cmd": "log.event"},  "data": <event>}                  (NestJS RMQ event shape)
 *   {"pattern": {"cmd": "log.events"}, "data": {"events": [<event>, ...1..1000]}}
 * The pattern may also be that object as a JSON string. Each event is validated as by
 * logger_event_normalise, and may not use the gateways' _id namespace. BAD: err says why the
 * body is unusable (a log.event whose event is invalid is BAD). PARTIAL: err names the first
 * invalid event ("events[3]: ..."); the valid ones are in out. out is always initialised.
 */
enum logger_message_status logger_message_parse(const char *body, size_t len,
                                                struct logger_message *out, char *err,
                                                size_t errlen);
void logger_message_cleanup(struct logger_message *m);

/*
 * The event of a log.event message body (free with cJSON_Delete), or NULL with err saying why
 * the body is unusable; a log.events body is refused. (For tests and the fuzzer.)
 */
cJSON *logger_event_from_message(const char *body, size_t len, char *err, size_t errlen);

#endif

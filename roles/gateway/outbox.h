/*
 * The outbox relay: delivers audit events committed to the outbox table to the logger with
 * log.append, and marks them delivered only after the logger acknowledged them (at-least-once;
 * the logger makes redelivery a no-op through the deterministic _id "gw:<ns>:<outbox id>", ns
 * being random per database).
 */
#ifndef CHANCED_GATEWAY_OUTBOX_H
#define CHANCED_GATEWAY_OUTBOX_H

#include <stdbool.h>

struct gw;

/* One relay pass (a bgtask function; arg is struct gw). True if more events are waiting. */
bool outbox_relay_pass(void *arg);

#endif

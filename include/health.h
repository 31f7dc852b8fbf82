/*
 * The small HTTP port of the chance and logger roles (libevent's evhttp on the role's own loop):
 * GET /livez (the loop answers), /readyz (dependencies reachable and not draining; 503 with the
 * reason otherwise) and /metrics (Prometheus text format).
 */
#ifndef CHANCED_HEALTH_H
#define CHANCED_HEALTH_H

#include <stdbool.h>
#include <stddef.h>

struct health;
struct loop;
struct metrics;

/* Returns true if ready; otherwise writes a short reason into why. Runs on the loop thread. */
typedef bool (*health_ready_fn)(void *arg, char *why, size_t size);

/* Listens on "host:port"; NULL with err filled if it cannot. metrics and arg are borrowed. */
struct health *health_new(struct loop *loop, const char *listen, struct metrics *metrics,
                          health_ready_fn ready, void *arg, char *err, size_t errlen);
void health_free(struct health *h);

#endif

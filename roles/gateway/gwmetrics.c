/* Gateway metrics: names, labels and the gauges sampled at render time. */
#include "gwmetrics.h"

#include <stdio.h>

#include "gw.h"
#include "metrics.h"
#include "passwd.h"
#include "pg.h"

static const char *const counters[M_COUNTER_COUNT][2] = {
    {"chanced_gateway_claims_total", "result=\"credited\""},
    {"chanced_gateway_claims_total", "result=\"replayed\""},
    {"chanced_gateway_claims_total", "result=\"pending\""},
    {"chanced_gateway_claims_total", "result=\"refused\""},
    {"chanced_gateway_claims_total", "result=\"unavailable\""},
    {"chanced_gateway_reconciler_credits_total", ""},
    {"chanced_gateway_reconciler_orphans_total", ""},
    {"chanced_gateway_pending_settled_total", ""},
    {"chanced_gateway_outbox_delivered_total", ""},
    {"chanced_gateway_outbox_rejected_total", ""},
    {"chanced_gateway_logins_total", "result=\"ok\""},
    {"chanced_gateway_logins_total", "result=\"failed\""},
    {"chanced_gateway_rate_limited_total", ""},
    {"chanced_gateway_redis_repairs_total", ""},
    {"chanced_gateway_over_limit_releases_total", ""},
    {"chanced_gateway_forged_claims_total", ""},
    {"chanced_gateway_outbox_conflicts_total", ""},
    {"chanced_gateway_logins_total", "result=\"busy\""},
    {"chanced_gateway_logins_slowed_total", ""},
};

static void
collect(struct metrics *m, void *arg)
{
    struct gw *gw = arg;
    int in_use = 0, size = 0;
    pg_pool_usage(gw->pg, &in_use, &size);
    metrics_set(m, "chanced_gateway_pg_connections", "state=\"in_use\"", in_use);
    metrics_set(m, "chanced_gateway_pg_connections", "state=\"pool_size\"", size);
    metrics_set(m, "chanced_gateway_argon2_inflight", "", passwd_inflight(gw->passwd));
    metrics_set(m, "chanced_gateway_dependency_up", "dependency=\"postgres\"",
                __atomic_load_n(&gw->pg_up, __ATOMIC_RELAXED));
    metrics_set(m, "chanced_gateway_dependency_up", "dependency=\"chance\"",
                __atomic_load_n(&gw->chance_up, __ATOMIC_RELAXED));
    metrics_set(m, "chanced_gateway_dependency_up", "dependency=\"logger\"",
                __atomic_load_n(&gw->logger_up, __ATOMIC_RELAXED));
}

void
gwmetrics_init(struct gw *gw)
{
    struct metrics *m = gw->metrics;
    metrics_describe(m, "chanced_gateway_claims_total", METRICS_COUNTER, "Claims by result.");
    metrics_describe(m, "chanced_gateway_reconciler_credits_total", METRICS_COUNTER,
                     "Credits written by the reconciler.");
    metrics_describe(m, "chanced_gateway_reconciler_orphans_total", METRICS_COUNTER,
                     "Assignments that cannot be credited here (unknown user, bad data).");
    metrics_describe(m, "chanced_gateway_pending_settled_total", METRICS_COUNTER,
                     "Pending claims driven to a final state.");
    metrics_describe(m, "chanced_gateway_outbox_delivered_total", METRICS_COUNTER,
                     "Audit events acknowledged by the logger.");
    metrics_describe(m, "chanced_gateway_outbox_rejected_total", METRICS_COUNTER,
                     "Audit events the logger refused as malformed.");
    metrics_describe(m, "chanced_gateway_logins_total", METRICS_COUNTER,
                     "Logins by result (busy: 503, no hashing slot in time).");
    metrics_describe(m, "chanced_gateway_logins_slowed_total", METRICS_COUNTER,
                     "Logins delayed because their username is past login_rate_user.");
    metrics_describe(m, "chanced_gateway_rate_limited_total", METRICS_COUNTER,
                     "Requests answered 429.");
    metrics_describe(m, "chanced_gateway_http_requests_total", METRICS_COUNTER,
                     "HTTP responses by route and status code.");
    metrics_describe(m, "chanced_gateway_http_request_duration_seconds", METRICS_HISTOGRAM,
                     "Time to answer an HTTP request, by route.");
    metrics_describe(m, "chanced_gateway_pg_connections", METRICS_GAUGE,
                     "PostgreSQL connections borrowed and the pool size.");
    metrics_describe(m, "chanced_gateway_argon2_inflight", METRICS_GAUGE,
                     "Password hashes being computed.");
    metrics_describe(m, "chanced_gateway_outbox_backlog", METRICS_GAUGE,
                     "Audit events not yet delivered to the logger.");
    metrics_describe(m, "chanced_gateway_dependency_up", METRICS_GAUGE,
                     "1 if the dependency answered recently.");
    metrics_describe(m, "chanced_gateway_redis_repairs_total", METRICS_COUNTER,
                     "Codes Redis had forgotten or handed to a second claim, restored from the "
                     "ledger.");
    metrics_describe(m, "chanced_gateway_over_limit_releases_total", METRICS_COUNTER,
                     "Codes given back because the ledger says the user is at the limit.");
    metrics_describe(m, "chanced_gateway_forged_claims_total", METRICS_COUNTER,
                     "Assignments under claim ids no gateway issued (never credited).");
    metrics_describe(m, "chanced_gateway_outbox_conflicts_total", METRICS_COUNTER,
                     "Audit events whose id a different event already holds (parked, alarmed).");
    metrics_describe(m, "chanced_gateway_lease_held", METRICS_GAUGE,
                     "1 while this gateway holds the lease (reconciler, outbox_housekeeping).");
    for (int i = 0; i < M_COUNTER_COUNT; i++) {
        metrics_add(m, counters[i][0], counters[i][1], 0); /* zeros are worth showing */
    }
    metrics_on_collect(m, collect, gw);
}

void
gwmetrics_cleanup(struct gw *gw)
{
    if (gw->metrics) {
        metrics_off_collect(gw->metrics, collect, gw);
    }
}

void
gwmetrics_count(struct metrics *m, enum gw_counter counter, double n)
{
    metrics_add(m, counters[counter][0], counters[counter][1], n);
}

void
gwmetrics_http(struct metrics *m, const char *route, int status, int64_t usec)
{
    char labels[200];
    snprintf(labels, sizeof(labels), "route=\"%s\",code=\"%d\"", route ? route : "unmatched",
             status);
    metrics_add(m, "chanced_gateway_http_requests_total", labels, 1);
    snprintf(labels, sizeof(labels), "route=\"%s\"", route ? route : "unmatched");
    metrics_observe(m, "chanced_gateway_http_request_duration_seconds", labels, (double)usec / 1e6);
}

/* Named leases in PostgreSQL (lease.h). */
#include "lease.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"
#include "pg.h"
#include "util.h"

struct lease {
    const char *name;
    int ttl_ms;
    struct metrics *metrics; /* borrowed */
    bool held;               /* as of the last look */
    int64_t renewed_ms;      /* monotonic: when the last successful renewal was sent */
    /* Monotonic time until which the lease is ours (0: not held). Counted from before the
     * statement was sent, so it ends no later than the row's expiry in the database: a pass
     * that outlasts it (blocked on chance, say) must not act, nor be reported, as the holder
     * while another gateway may have taken over. Read by the metrics hook on another thread. */
    int64_t until_ms;
    char holder[96]; /* "<host>:<pid>:<random>" */
    char labels[64]; /* lease="<name>" */
};

/* Taken when free or expired, renewed when ours; returns the row only if we hold it now. */
static const struct pg_stmt hold = {
    "lease_hold",
    "INSERT INTO leases (name, holder, expires_at)"
    " VALUES ($1, $2, now() + make_interval(secs => $3::double precision / 1000))"
    " ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at,"
    "   taken_at = CASE WHEN leases.holder = EXCLUDED.holder THEN leases.taken_at ELSE now() END"
    " WHERE leases.holder = EXCLUDED.holder OR leases.expires_at < now()"
    " RETURNING holder"};
static const struct pg_stmt drop = {
    "lease_drop", "UPDATE leases SET expires_at = now() WHERE name = $1 AND holder = $2"};

/* The gauge says what holds now, not what held at the last renewal. */
static void
collect(struct metrics *m, void *arg)
{
    struct lease *l = arg;
    int64_t until = __atomic_load_n(&l->until_ms, __ATOMIC_RELAXED);
    metrics_set(m, "chanced_gateway_lease_held", l->labels, until > time_mono_ms() ? 1 : 0);
}

struct lease *
lease_new(const char *name, int ttl_ms, struct metrics *metrics)
{
    struct lease *l = xcalloc(1, sizeof(*l));
    char host[64] = "", rnd[9];
    gethostname(host, sizeof(host) - 1);
    util_random_hex(rnd, 4);
    l->name = name;
    l->ttl_ms = ttl_ms;
    l->metrics = metrics;
    snprintf(l->holder, sizeof(l->holder), "%.60s:%d:%s", host, (int)getpid(), rnd);
    snprintf(l->labels, sizeof(l->labels), "lease=\"%s\"", name);
    metrics_set(metrics, "chanced_gateway_lease_held", l->labels, 0);
    metrics_on_collect(metrics, collect, l);
    return l;
}

void
lease_free(struct lease *l)
{
    if (l) {
        metrics_off_collect(l->metrics, collect, l);
    }
    free(l);
}

static void
set_held(struct lease *l, bool held, int64_t sent_ms)
{
    __atomic_store_n(&l->until_ms, held ? sent_ms + l->ttl_ms : 0, __ATOMIC_RELAXED);
    if (held) {
        l->renewed_ms = sent_ms;
    }
    if (held != l->held) {
        if (held) {
            log_info("lease_taken", "lease=%s holder=%s", l->name, l->holder);
        } else {
            log_info("lease_lost", "lease=%s holder=%s", l->name, l->holder);
        }
    }
    l->held = held;
    metrics_set(l->metrics, "chanced_gateway_lease_held", l->labels, held ? 1 : 0);
}

bool
lease_hold(struct lease *l, struct pg_conn *c)
{
    char ttl[24];
    snprintf(ttl, sizeof(ttl), "%d", l->ttl_ms);
    const char *params[] = {l->name, l->holder, ttl};
    struct pg_result *res = NULL;
    struct pg_error err;
    int64_t sent = time_mono_ms();
    if (pg_exec(c, &hold, 3, params, &res, &err) != 0) {
        log_warn("lease_failed", "lease=%s reason=\"%s\"", l->name, err.message);
        set_held(l, false, sent); /* cannot tell: act as if another holds it */
        return false;
    }
    set_held(l, pg_rows(res) == 1, sent);
    pg_result_free(res);
    /* a renewal that took longer than the TTL came back too late to count on */
    return l->held && time_mono_ms() < __atomic_load_n(&l->until_ms, __ATOMIC_RELAXED);
}

void
lease_drop(struct lease *l, struct pg_conn *c)
{
    if (!l->held) {
        return;
    }
    const char *params[] = {l->name, l->holder};
    struct pg_error err;
    if (pg_exec(c, &drop, 2, params, NULL, &err) != 0) {
        log_warn("lease_drop_failed", "lease=%s reason=\"%s\"", l->name, err.message);
    }
    set_held(l, false, 0);
}

bool
lease_keep(struct lease *l, struct pg_conn *c)
{
    if (!l->held) {
        return false;
    }
    int64_t now = time_mono_ms();
    if (now >= __atomic_load_n(&l->until_ms, __ATOMIC_RELAXED)) {
        /* ran out mid-pass: another gateway may hold it by now; take it again only if free */
        return lease_hold(l, c);
    }
    if (now - l->renewed_ms >= l->ttl_ms / 3) {
        return lease_hold(l, c);
    }
    return true;
}

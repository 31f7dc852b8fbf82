/* The helpers every gateway module calls (gw.h). */
#include "gw.h"

#include <signal.h>
#include <string.h>

#include "bgtask.h"
#include "log.h"
#include "passwd.h"
#include "pg.h"

void
gw_outbox_kick(struct gw *gw)
{
    bgtask_kick(gw->relay);
}

void
gw_failpoint(struct gw *gw, const char *name)
{
    if (gw->failpoint && strcmp(gw->failpoint, name) == 0) {
        log_warn("failpoint_hit", "name=%s action=SIGKILL", name);
        raise(SIGKILL);
    }
}

void
gw_pg_status(struct gw *gw, bool up)
{
    __atomic_store_n(&gw->pg_up, up ? 1 : 0, __ATOMIC_RELAXED);
}

struct pg_pool *
gw_pool_new(const struct gateway_conf *conf, int size)
{
    struct pg_options opt = {conf->postgres_url,
                             size,
                             (int)conf->pg_connect_timeout_s,
                             (int)conf->pg_statement_timeout_ms,
                             "chanced-gateway",
                             conf->pg_prepared};
    return pg_pool_new(&opt);
}

struct passwd_hasher *
gw_passwd_new(const struct gateway_conf *conf)
{
    struct passwd_params pp = {
        (unsigned)conf->argon2_memory_kib,  (unsigned)conf->argon2_iterations,
        (unsigned)conf->argon2_parallelism, (int)conf->argon2_max_inflight,
        (int)conf->argon2_queue_ms,         (int)conf->argon2_queue_max};
    return passwd_new(&pp);
}

int
gw_load_claim_secret(struct gw *gw)
{
    static const struct pg_stmt meta = {
        "gw_claim_secret", "SELECT value FROM gateway_meta WHERE key = 'claim_secret'"};
    if (gw->conf->claim_secret[0]) {
        gw->claim_secret = xstrdup(gw->conf->claim_secret);
        return 0;
    }
    struct pg_error err = {0};
    struct pg_result *res = NULL;
    struct pg_conn *c = pg_acquire(gw->pg, 30000, &err);
    if (c && pg_exec(c, &meta, 0, NULL, &res, &err) == 0 && pg_rows(res) == 1) {
        gw->claim_secret = xstrdup(pg_text(res, 0, 0));
    }
    pg_result_free(res);
    pg_release(gw->pg, c);
    if (gw->claim_secret == NULL) {
        log_error("gateway_start_failed", "reason=\"no claim id key: %s\"",
                  err.message[0] ? err.message : "gateway_meta has no claim_secret");
        return -1;
    }
    return 0;
}

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
    struct passwd_params pp = {(unsigned)conf->argon2_memory_kib, (unsigned)conf->argon2_iterations,
                               (unsigned)conf->argon2_parallelism, (int)conf->argon2_max_inflight,
                               (int)conf->argon2_queue_ms};
    return passwd_new(&pp);
}

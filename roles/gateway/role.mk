# The gateway role's sources, libraries and compile flags (included by the top-level Makefile).
GATEWAY_SRCS := roles/gateway/gateway.c roles/gateway/gw.c roles/gateway/gateway_conf.c roles/gateway/api.c \
                roles/gateway/api_auth.c roles/gateway/api_user.c roles/gateway/api_claims.c \
                roles/gateway/api_admin.c roles/gateway/api_logs.c roles/gateway/openapi.c \
                roles/gateway/assets_serve.c \
                roles/gateway/auth.c roles/gateway/audit.c roles/gateway/body.c roles/gateway/urlquery.c \
                roles/gateway/bgtask.c roles/gateway/claims.c roles/gateway/claimid.c roles/gateway/crypto.c \
                roles/gateway/clientaddr.c \
                roles/gateway/http.c roles/gateway/gwmetrics.c roles/gateway/migrate.c \
                roles/gateway/outbox.c roles/gateway/passwd.c roles/gateway/pg.c \
                roles/gateway/ratelimit.c roles/gateway/reconcile.c roles/gateway/settle.c \
                roles/gateway/lease.c \
                roles/gateway/usercmd.c
GATEWAY_CFLAGS := $(shell pkg-config --cflags libpq libargon2 libcrypto)
GATEWAY_LIBS := $(shell pkg-config --libs libpq libargon2 libcrypto)

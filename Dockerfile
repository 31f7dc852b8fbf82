# chanced: one image for every role (gateway, chance, logger; or all three in one process).
#
#   docker build -t chanced:local .
#   docker run --rm chanced:local --help
#   docker run -e CHANCED_ROLE=chance -e CHANCED_REDIS_URL_FILE=... chanced:local
#
# The role comes from CHANCED_ROLE (default: all) or --role=...; the HEALTHCHECK below runs
# `chanced healthcheck`, which reads the same environment, so prefer CHANCED_ROLE (compose.yaml
# sets both and gives each service an explicit healthcheck). Configuration: CHANCED_<KEY>
# variables, CHANCED_<KEY>_FILE for secrets; see docs/deploy.md.

# ---- build ---------------------------------------------------------------------------------
FROM debian:bookworm-slim AS build

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        build-essential pkg-config \
        libevent-dev libhiredis-dev libcjson-dev librabbitmq-dev libmongoc-dev libbson-dev \
        libargon2-dev libinih-dev libssl-dev libpq-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# Only what `make` reads (see .dockerignore): a test or doc edit does not invalidate this layer.
COPY Makefile ./
COPY include/ include/
COPY src/ src/
COPY roles/ roles/
COPY tools/ tools/
COPY web/ web/
RUN make -j"$(nproc)" build/chanced \
 && strip --strip-debug build/chanced \
 && build/chanced --version \
 && build/chanced config check >/dev/null

# ---- runtime -------------------------------------------------------------------------------
FROM debian:bookworm-slim

ARG VERSION=0.2.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="chanced" \
      org.opencontainers.image.description="Chance codes service: gateway, chance and logger roles" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.vendor="The chanced authors" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-slim"

# Runtime libraries only: one package per library the binary links (test_deploy.py checks this
# list against `ldd build/chanced`). ca-certificates: TLS to managed databases. openssl: the
# command deploy/gen-certs.sh runs (compose's certs one-shot: the internal links' certificates).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates openssl \
        libevent-2.1-7 libevent-pthreads-2.1-7 libevent-openssl-2.1-7 libhiredis0.14 \
        libcjson1 librabbitmq4 libmongoc-1.0-0 libbson-1.0-0 libargon2-1 libinih1 \
        libssl3 libpq5 \
 && rm -rf /var/lib/apt/lists/*

# A fixed, non-root uid/gid: volume and secret permissions can be planned for it.
RUN groupadd --system --gid 10001 chanced \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin chanced

# Where compose mounts the internal links' certificates (one volume per directory): a new
# volume takes this directory's owner and mode, so the certs one-shot (uid 10001) can fill it.
RUN install -d -o 10001 -g 10001 -m 0700 /tls/ca /tls/gateway /tls/chance /tls/logger

COPY --from=build /src/build/chanced /usr/local/bin/chanced
COPY deploy/gen-certs.sh /usr/local/share/chanced/gen-certs.sh
COPY LICENSE /usr/share/doc/chanced/LICENSE
# Fails the build if a runtime library is missing (the dynamic loader runs here).
RUN ["/usr/local/bin/chanced", "--version"]

USER 10001:10001

# Containers listen on every interface; the environment beats a --config file, flags beat both.
# Each role has its own health port (gateway 9100, chance 9101, logger 9102), so --role=all
# gets three distinct ones. The internal links (chance 4001, logger 4002) keep their loopback
# defaults: --role=all needs nothing else, and a chance or logger container that serves other
# containers sets CHANCED_CHANCE_LISTEN / CHANCED_LOGGER_LISTEN with mutual TLS (compose.yaml).
ENV CHANCED_ROLE=all \
    CHANCED_HTTP_LISTEN=0.0.0.0:8080 \
    CHANCED_GATEWAY_HEALTH_LISTEN=0.0.0.0:9100 \
    CHANCED_CHANCE_HEALTH_LISTEN=0.0.0.0:9101 \
    CHANCED_LOGGER_HEALTH_LISTEN=0.0.0.0:9102

# 8080 gateway HTTP (API, UI, /livez /readyz /metrics); 9100 gateway, 9101 chance and 9102 logger
# health and metrics (keep them off public networks). Not the internal links (4001, 4002):
# only the gateway calls them, over the container network.
EXPOSE 8080 9100 9101 9102

STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/chanced", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/chanced"]

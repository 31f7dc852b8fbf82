# The gateway role's sources, libraries and compile flags (included by the top-level Makefile).
GATEWAY_SRCS := roles/gateway/gateway.c
GATEWAY_CFLAGS :=
GATEWAY_LIBS :=

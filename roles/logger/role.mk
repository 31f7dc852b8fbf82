# The logger role's sources, libraries and compile flags (included by the top-level Makefile).
LOGGER_SRCS := roles/logger/logger.c
LOGGER_CFLAGS :=
LOGGER_LIBS :=

# The logger role's sources, libraries and compile flags (included by the top-level Makefile).
LOGGER_SRCS := roles/logger/logger.c roles/logger/logger_conf.c roles/logger/event.c \
               roles/logger/query.c roles/logger/mongo.c roles/logger/bsonjson.c roles/logger/amqp.c \
               roles/logger/consumer.c roles/logger/workers.c
LOGGER_CFLAGS := $(shell pkg-config --cflags libmongoc-1.0 libbson-1.0 librabbitmq libcrypto)
LOGGER_LIBS := $(shell pkg-config --libs libmongoc-1.0 libbson-1.0 librabbitmq libcrypto)

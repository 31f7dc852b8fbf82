# The chance role's sources, libraries and compile flags (included by the top-level Makefile).
CHANCE_SRCS := roles/chance/chance.c roles/chance/chance_conf.c roles/chance/claim.c \
               roles/chance/generate.c roles/chance/categories.c roles/chance/codes.c \
               roles/chance/assignments.c roles/chance/scripts.c roles/chance/codegen.c \
               roles/chance/redis.c roles/chance/redis_node.c roles/chance/redisurl.c \
               roles/chance/cluster.c roles/chance/relay.c roles/chance/publisher.c \
               roles/chance/amqp.c
CHANCE_CFLAGS := $(shell pkg-config --cflags hiredis libcrypto libssl librabbitmq)
CHANCE_LIBS := $(shell pkg-config --libs hiredis libcrypto libssl librabbitmq)

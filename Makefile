# chanced: one non-recursive Makefile. Sources are listed by name, here and in roles/*/role.mk.
#
#   make            build build/chanced (optimised, with debug info)
#   make test       everything, on real servers, with ASan+UBSan (the README's test command)
#   make unit       core unit tests only, no servers
#   make run        build, start private backing servers, run --role=all, print the URL
#   make bench      benchmarks against reference tools measured in the same run
#   make fuzz       libFuzzer on the codec and JSON validators (clang)
#   make format     clang-format every source

VERSION  := 0.1.0
CC       ?= cc
SAN      ?= 0
ifeq ($(SAN),1)
BUILD    := build/san
OPT      := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
LDSAN    := -fsanitize=address,undefined
else
BUILD    := build
OPT      := -O2 -g
LDSAN    :=
endif

PKGS     := libevent libevent_pthreads libcjson inih librabbitmq
CFLAGS   ?=
CFLAGS   += -std=gnu11 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
            -Wno-missing-field-initializers $(OPT) -pthread -MMD -MP \
            -DCHANCED_VERSION='"$(VERSION)"' $(shell pkg-config --cflags $(PKGS))
LDLIBS   := $(shell pkg-config --libs $(PKGS)) -lm -pthread

CORE_SRCS := src/util.c src/log.c src/conf.c src/core_conf.c src/codec.c src/json.c src/loop.c \
             src/metrics.c src/health.c src/rmq.c \
             src/conn.c src/rpc_server.c src/rpc_client.c src/notify.c
MAIN_SRCS := src/main.c

include roles/chance/role.mk
include roles/gateway/role.mk
include roles/logger/role.mk

CORE_OBJS := $(CORE_SRCS:%.c=$(BUILD)/%.o)
MAIN_OBJS := $(MAIN_SRCS:%.c=$(BUILD)/%.o)
ROLE_OBJS := $(CHANCE_SRCS:%.c=$(BUILD)/%.o) $(GATEWAY_SRCS:%.c=$(BUILD)/%.o) \
             $(LOGGER_SRCS:%.c=$(BUILD)/%.o)
ROLE_LIBS := $(CHANCE_LIBS) $(GATEWAY_LIBS) $(LOGGER_LIBS)

# The web app: tools/embed.c turns web/'s files into one C source (a byte array, Content-Type
# and ETag per file) that the gateway serves (roles/gateway/assets_serve.c).
WEB_FILES := $(sort $(wildcard web/*.html web/*.css web/*.js web/*.svg))
WEB_OBJS  := $(BUILD)/gen/web_assets.o

UNIT_TESTS := test_util test_codec test_conf test_json test_codegen test_rpc
UNIT_BINS  := $(UNIT_TESTS:%=$(BUILD)/test/unit/%)

.PHONY: all unit test run bench fuzz fuzz-smoke format clean clean-run FORCE
all: $(BUILD)/chanced

$(BUILD)/libcore.a: $(CORE_OBJS)
	ar rcs $@ $^

$(BUILD)/chanced: $(MAIN_OBJS) $(ROLE_OBJS) $(WEB_OBJS) $(BUILD)/libcore.a
	$(CC) $(LDSAN) -o $@ $^ $(ROLE_LIBS) $(LDLIBS)

# The core sees only include/; main.c additionally only sees role descriptors through role.h.
$(BUILD)/src/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Iinclude -c -o $@ $<

# Each role is compiled with include/ and its own folder only: roles never include each other.
$(BUILD)/roles/chance/%.o: roles/chance/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CHANCE_CFLAGS) -Iinclude -Iroles/chance -c -o $@ $<
$(BUILD)/roles/gateway/%.o: roles/gateway/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(GATEWAY_CFLAGS) -Iinclude -Iroles/gateway -c -o $@ $<
$(BUILD)/roles/logger/%.o: roles/logger/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LOGGER_CFLAGS) -Iinclude -Iroles/logger -c -o $@ $<

# A build tool, never linked into chanced: no sanitizers, whatever SAN says.
build/embed: tools/embed.c
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
	    -O2 -o $@ $<

# web_files.list changes when a file is added or removed, so the source is regenerated then too.
$(BUILD)/gen/web_files.list: FORCE
	@mkdir -p $(dir $@)
	@echo '$(WEB_FILES)' | cmp -s - $@ || echo '$(WEB_FILES)' > $@

$(BUILD)/gen/web_assets.c: build/embed $(WEB_FILES) $(BUILD)/gen/web_files.list
	build/embed $@ web $(WEB_FILES)

$(BUILD)/gen/web_assets.o: $(BUILD)/gen/web_assets.c roles/gateway/assets.h
	$(CC) $(CFLAGS) -Iinclude -Iroles/gateway -c -o $@ $<

# Unit tests link against the core archive alone: if one will not link, a boundary leaks.
$(BUILD)/test/unit/%: test/unit/%.c test/unit/harness.h $(BUILD)/libcore.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Iinclude -Itest/unit $(LDSAN) -o $@ $< $(BUILD)/libcore.a $(LDLIBS)

# test_codegen tests the chance role's pure code generator, so it links that one object too.
$(BUILD)/test/unit/test_codegen: test/unit/test_codegen.c test/unit/harness.h \
                                 $(BUILD)/roles/chance/codegen.o $(BUILD)/libcore.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Iinclude -Iroles/chance -Itest/unit $(LDSAN) -o $@ $< \
	    $(BUILD)/roles/chance/codegen.o $(BUILD)/libcore.a $(LDLIBS)

unit: $(UNIT_BINS)
	@pass=0; fail=0; for t in $(UNIT_BINS); do \
	    if $$t; then pass=$$((pass+1)); else fail=$$((fail+1)); echo "FAILED: $$t"; fi; done; \
	    echo "unit binaries: $$pass passed, $$fail failed"; [ $$fail -eq 0 ]

test:
	bash test/deps.sh
	$(MAKE) SAN=1 all build/san/test/unit/.stamp
	$(MAKE) fuzz-smoke
	CHANCED_BIN=build/san/chanced CHANCED_UNIT_DIR=build/san/test/unit bash test/run.sh

build/san/test/unit/.stamp: $(UNIT_TESTS:%=build/san/test/unit/%)
	@touch $@

run: all
	bash deploy/run.sh

bench: all
	bash test/bench/run.sh

# Benchmark load generators (test code: may link role sources, unlike unit tests).
build/claim_load: test/bench/claim_load.c roles/chance/scripts.c build/libcore.a
	$(CC) $(CFLAGS) -Iinclude -Iroles/chance -o $@ $^ $(LDLIBS)

fuzz:
	$(MAKE) -f test/fuzz/fuzz.mk

fuzz-smoke:
	$(MAKE) -f test/fuzz/fuzz.mk fuzz-smoke

format:
	clang-format -i src/*.c include/*.h roles/*/*.c roles/*/*.h test/unit/*.c test/unit/*.h

clean:
	rm -rf build

clean-run:
	rm -rf .run

-include $(CORE_OBJS:.o=.d) $(MAIN_OBJS:.o=.d) $(ROLE_OBJS:.o=.d) $(WEB_OBJS:.o=.d)

# chanced: one non-recursive Makefile. Sources are listed by name, here and in roles/*/role.mk.
#
#   make              build build/chanced (optimised, with debug info)
#   make test         everything, on real servers, with ASan+UBSan (the README's test command)
#   make unit         unit tests only, no servers
#   make run          install what is missing, build, start private servers, run --role=all
#   make bench        benchmarks against reference tools measured in the same run
#   make bench-smoke  every benchmark once on tiny sizes (make test runs it)
#   make proof        the fault-injection proof suite (build/proof/report.md)
#   make fuzz         libFuzzer on the codec, the validators and the cluster reply parser
#   make tsan         ThreadSanitizer build: unit tests and one --role=all scenario under load
#   make format       clang-format every C source; `make format-check` fails if one is not
#   make standin-check  check the MongoDB test stand-in against the real C driver
#   make headers-check  compile every header of include/ and roles/*/ on its own
#
# Flags: project flags live in CHANCED_CFLAGS and are always applied; CFLAGS (default -O2 -g)
# is yours to override (`make CFLAGS=-O0`) without losing -Werror, -MMD, -pthread or the version.

VERSION  := 0.2.0
CC       ?= cc
SAN      ?=

ifeq ($(SAN),1)
BUILD    := build/san
SANFLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
CFLAGS   ?= -O1 -g
else ifeq ($(SAN),thread)
BUILD    := build/tsan
SANFLAGS := -fsanitize=thread -fno-omit-frame-pointer
CFLAGS   ?= -O1 -g
else
BUILD    := build
SANFLAGS :=
CFLAGS   ?= -O2 -g
endif

PKGS     := libevent libevent_pthreads libevent_openssl libcjson inih librabbitmq libssl libcrypto
CHANCED_CFLAGS := -std=gnu11 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
                  -Wmissing-prototypes -Wno-missing-field-initializers -pthread -MMD -MP \
                  -DCHANCED_VERSION='"$(VERSION)"' $(shell pkg-config --cflags $(PKGS))
ALL_CFLAGS := $(CHANCED_CFLAGS) $(SANFLAGS) $(CFLAGS)
LDLIBS   := $(shell pkg-config --libs $(PKGS)) -lm -pthread

CORE_SRCS := src/util.c src/log.c src/conf.c src/core_conf.c src/codec.c src/json.c src/loop.c \
             src/metrics.c src/health.c src/backoff.c src/rmq.c src/rmq_conf.c src/tls.c \
             src/conn.c src/rpc_server.c src/rpc_client.c src/notify.c src/runtime.c \
             src/failpoint.c
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

# Unit tests: test/unit/test_<name>.c links the core archive and, for a role module, the objects
# named by test_<name>_OBJS (and libraries by test_<name>_LIBS). One line per role-module test.
UNIT_TESTS := test_util test_codec test_conf test_json test_rpc test_backoff test_codegen \
              test_cluster test_redisurl test_body test_urlquery test_event test_logquery \
              test_bson test_claimid test_ratelimit test_clientaddr
test_codegen_OBJS  := roles/chance/codegen.o
test_cluster_OBJS  := roles/chance/cluster.o
test_cluster_LIBS  := -lhiredis
test_redisurl_OBJS := roles/chance/redisurl.o
test_body_OBJS     := roles/gateway/body.o
test_urlquery_OBJS := roles/gateway/urlquery.o
test_event_OBJS    := roles/logger/event.o
test_logquery_OBJS := roles/logger/query.o
test_bson_OBJS     := roles/logger/bsonjson.o
test_bson_LIBS     := $(shell pkg-config --libs libbson-1.0)
test_claimid_OBJS  := roles/gateway/claimid.o roles/gateway/crypto.o
test_claimid_LIBS  := -lcrypto
test_ratelimit_OBJS := roles/gateway/ratelimit.o
test_ratelimit_LIBS := -lm
test_clientaddr_OBJS := roles/gateway/clientaddr.o
UNIT_BINS  := $(UNIT_TESTS:%=$(BUILD)/test/unit/%)

C_SOURCES = src/*.c include/*.h roles/*/*.c roles/*/*.h test/unit/*.c test/unit/*.h \
            test/fuzz/*.c test/bench/*.c test/mongo/*.c tools/*.c

.PHONY: all unit test run bench bench-smoke proof fuzz fuzz-smoke tsan tsan-build format \
        format-check standin-check headers-check clean clean-run FORCE
all: $(BUILD)/chanced

$(BUILD)/libcore.a: $(CORE_OBJS)
	ar rcs $@ $^

$(BUILD)/chanced: $(MAIN_OBJS) $(ROLE_OBJS) $(WEB_OBJS) $(BUILD)/libcore.a
	$(CC) $(SANFLAGS) -o $@ $^ $(ROLE_LIBS) $(LDLIBS)

# The core sees only include/; main.c additionally only sees role descriptors through role.h.
$(BUILD)/src/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Iinclude -c -o $@ $<

# Each role is compiled with include/ and its own folder only: roles never include each other.
$(BUILD)/roles/chance/%.o: roles/chance/%.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(CHANCE_CFLAGS) -Iinclude -Iroles/chance -c -o $@ $<
$(BUILD)/roles/gateway/%.o: roles/gateway/%.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(GATEWAY_CFLAGS) -Iinclude -Iroles/gateway -c -o $@ $<
$(BUILD)/roles/logger/%.o: roles/logger/%.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(LOGGER_CFLAGS) -Iinclude -Iroles/logger -c -o $@ $<

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
	$(CC) $(ALL_CFLAGS) -Iinclude -Iroles/gateway -c -o $@ $<

# Unit tests link the core archive and the role objects they name: if one will not link, a
# module's boundary leaks.
.SECONDEXPANSION:
$(BUILD)/test/unit/%: test/unit/%.c test/unit/harness.h $$(addprefix $(BUILD)/,$$($$*_OBJS)) \
                      $(BUILD)/libcore.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Iinclude $(addprefix -I,$(sort $(dir $($*_OBJS)))) -Itest/unit \
	    $(CHANCE_CFLAGS) $(GATEWAY_CFLAGS) $(LOGGER_CFLAGS) $(SANFLAGS) -o $@ $< \
	    $(addprefix $(BUILD)/,$($*_OBJS)) $(BUILD)/libcore.a $($*_LIBS) $(LDLIBS)

unit: $(UNIT_BINS)
	@pass=0; fail=0; for t in $(UNIT_BINS); do \
	    if $$t >$$t.log 2>&1; then pass=$$((pass+1)); tail -n 1 $$t.log; \
	    else fail=$$((fail+1)); cat $$t.log; echo "FAILED: $$t"; fi; done; \
	    echo "unit binaries: $$pass passed, $$fail failed"; [ $$fail -eq 0 ]

# The README's test command: format check, the ASan+UBSan build, the TSan build, the fuzz
# smoke runs, the benchmarks once on tiny sizes, then every suite on real servers (test/run.sh
# starts and stops them).
test:
	bash test/deps.sh
	$(MAKE) format-check
	$(MAKE) headers-check
	$(MAKE) SAN=1 all build/san/test/unit/.stamp
	$(MAKE) SAN=thread tsan-build
	$(MAKE) fuzz-smoke
	$(MAKE) standin-check
	$(MAKE) SAN=1 bench-smoke
	CHANCED_BIN=build/san/chanced CHANCED_TSAN_BIN=build/tsan/chanced TSAN_OPTIONS="$(TSAN_OPTS)" \
	    CHANCED_UNIT_DIRS="build/san/test/unit build/tsan/test/unit" bash test/run.sh

build/san/test/unit/.stamp: $(UNIT_TESTS:%=build/san/test/unit/%)
	@touch $@

# TSan: unit tests and the --role=all scenario (test/tsan) on private servers. A report fails
# the binary that wrote it (exit code 66); test/tsan/tsan.supp holds the third-party false
# positives, each with its reason (the scenario sets its own TSAN_OPTIONS, with the same file).
TSAN_OPTS := second_deadlock_stack=1 suppressions=$(CURDIR)/test/tsan/tsan.supp
tsan-build: $(BUILD)/chanced $(UNIT_BINS)
tsan:
	bash test/deps.sh
	$(MAKE) SAN=thread tsan-build
	CHANCED_BIN=build/tsan/chanced CHANCED_TSAN_BIN=build/tsan/chanced TSAN_OPTIONS="$(TSAN_OPTS)" \
	    CHANCED_UNIT_DIRS=build/tsan/test/unit CHANCED_PYTEST_PATHS=test/tsan bash test/run.sh

# Installs, builds, starts: deploy/run.sh does the steps in that order (a fresh machine has no
# libraries to compile against before the install).
run:
	bash deploy/run.sh

# Benchmarks (test/bench/README.md): `make bench` measures and prints build/bench/results.md;
# `make bench-smoke` runs every benchmark once on tiny sizes (part of `make test`, so the
# scripts cannot rot; its figures mean nothing).
BENCH_TOOLS := $(BUILD)/chanced $(BUILD)/claim_load $(BUILD)/logger_tool
bench: $(BENCH_TOOLS)
	CHANCED_BIN=$(BUILD)/chanced CHANCED_BENCH_TOOLS=$(BUILD) bash test/bench/run.sh

bench-smoke: $(BENCH_TOOLS)
	CHANCED_BIN=$(BUILD)/chanced CHANCED_BENCH_TOOLS=$(BUILD) CHANCED_BENCH_SMOKE=1 \
	    bash test/bench/run.sh

proof:
	bash test/deps.sh
	$(MAKE) SAN=1 all
	CHANCED_BIN=build/san/chanced CHANCED_UNIT_DIRS= CHANCED_PYTEST_PATHS=test/proof \
	    CHANCED_PROOF=full CHANCED_TEST_BUDGET=3000 bash test/run.sh; rc=$$?; \
	    cat build/proof/report.md 2>/dev/null || echo "make proof: no report written"; exit $$rc

# Benchmark load generators (test code: may link role sources, unlike unit tests).
$(BUILD)/claim_load: test/bench/claim_load.c roles/chance/scripts.c $(BUILD)/libcore.a
	$(CC) $(ALL_CFLAGS) -Iinclude -Iroles/chance -o $@ $^ $(LDLIBS)

$(BUILD)/logger_tool: test/bench/logger_tool.c
	$(CC) $(ALL_CFLAGS) $(shell pkg-config --cflags libmongoc-1.0 libbson-1.0) -o $@ $< \
	    $(shell pkg-config --libs libmongoc-1.0 libbson-1.0 librabbitmq)

# The MongoDB stand-in's check program: the real driver against test/mongo/mongo_standin.py.
build/standin_check: test/mongo/standin_check.c
	@mkdir -p build
	$(CC) -std=gnu11 -Wall -Wextra -Werror -O1 -o $@ $< $(shell pkg-config --cflags --libs libmongoc-1.0)

standin-check: build/standin_check
	build/standin_check test/mongo/mongo_standin.py

fuzz:
	$(MAKE) -f test/fuzz/fuzz.mk

fuzz-smoke:
	$(MAKE) -f test/fuzz/fuzz.mk fuzz-smoke

# Every header compiles on its own (a one-line source that includes only it), with the project
# flags and the include path of its module: a header carries its own includes and declarations.
HEADERS := $(sort $(wildcard include/*.h roles/*/*.h))
headers-check:
	@fail=0; for h in $(HEADERS); do \
	    d=$$(dirname $$h); \
	    case $$d in \
	    roles/chance) f="$(CHANCE_CFLAGS)";; roles/gateway) f="$(GATEWAY_CFLAGS)";; \
	    roles/logger) f="$(LOGGER_CFLAGS)";; *) f="";; esac; \
	    printf '#include "%s"\n' "$$(basename $$h)" | \
	        $(CC) $(filter-out -MMD -MP,$(CHANCED_CFLAGS)) $$f -Iinclude -I$$d -fsyntax-only \
	        -x c - || { echo "headers-check: $$h does not compile alone"; fail=$$((fail+1)); }; \
	done; echo "headers-check: $(words $(HEADERS)) headers, $$fail failed"; [ $$fail -eq 0 ]

format:
	clang-format -i $(C_SOURCES)

format-check:
	@clang-format --dry-run --Werror $(C_SOURCES) && echo "format-check: clean"

clean:
	rm -rf build

clean-run:
	rm -rf .run

-include $(CORE_OBJS:.o=.d) $(MAIN_OBJS:.o=.d) $(ROLE_OBJS:.o=.d) $(WEB_OBJS:.o=.d)

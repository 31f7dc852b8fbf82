# libFuzzer targets for the NestJS codec, the JSON validators and the roles' pure parsers and
# validators (clang, -fsanitize=fuzzer).
#
#   make -f test/fuzz/fuzz.mk             build, run each target for FUZZ_SECONDS (default 60)
#   make -f test/fuzz/fuzz.mk fuzz-smoke  build, run each target for 10 s (the suite's check)
#   make -f test/fuzz/fuzz.mk fuzz-build  build only
#
# Seeds come from test/data/nest_frames.txt and test/fuzz/seeds/<target>/. New inputs accumulate
# in build/fuzz/corpus-<target>; crashes land in build/fuzz/artifacts/ and replay with
# `build/fuzz/fuzz_<target> <file>`. The targets compile the sources they test (instrumented), not
# the core archive; a role module is compiled with its own folder on the include path, as in the
# Makefile. A target uses test/fuzz/<target>.dict if there is one, else json.dict.

FUZZ_CC      ?= $(shell command -v clang-14 || command -v clang)
FUZZ_SECONDS ?= 60
FUZZ_DIR     := build/fuzz
FUZZ_FLAGS   := -std=gnu11 -g -O1 -fno-omit-frame-pointer \
                -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
                -Iinclude $(shell pkg-config --cflags libcjson)
FUZZ_LIBS    := $(shell pkg-config --libs libcjson) -lm
FUZZ_TARGETS := codec json body urlquery event logquery clientaddr
FUZZ_RUN     := -timeout=10 -rss_limit_mb=2048 \
                -artifact_prefix=$(FUZZ_DIR)/artifacts/ -print_final_stats=1

.PHONY: fuzz fuzz-smoke fuzz-build
fuzz: fuzz-build
	@$(MAKE) -f test/fuzz/fuzz.mk --no-print-directory fuzz-run RUN_SECONDS=$(FUZZ_SECONDS)

fuzz-smoke: fuzz-build
	@$(MAKE) -f test/fuzz/fuzz.mk --no-print-directory fuzz-run RUN_SECONDS=10

fuzz-build: $(FUZZ_TARGETS:%=$(FUZZ_DIR)/fuzz_%) $(FUZZ_DIR)/seed/.stamp

# Runs every target in turn, each to its end; fails if any target found a problem.
.PHONY: fuzz-run
fuzz-run:
	@mkdir -p $(FUZZ_DIR)/artifacts
	@failed=""; for t in $(FUZZ_TARGETS); do \
	    mkdir -p $(FUZZ_DIR)/corpus-$$t; \
	    echo "fuzz: $$t for $(RUN_SECONDS) s"; \
	    dict=test/fuzz/$$t.dict; [ -f $$dict ] || dict=test/fuzz/json.dict; \
	    $(FUZZ_DIR)/fuzz_$$t $(FUZZ_RUN) -dict=$$dict -max_total_time=$(RUN_SECONDS) \
	        $(FUZZ_DIR)/corpus-$$t $(FUZZ_DIR)/seed/$$t >$(FUZZ_DIR)/fuzz_$$t.log 2>&1; \
	    rc=$$?; grep -E '^Done|ERROR|SUMMARY|^fuzz_.*\.c:' $(FUZZ_DIR)/fuzz_$$t.log; \
	    if [ $$rc -ne 0 ]; then \
	        echo "fuzz: $$t FAILED (exit $$rc), log in $(FUZZ_DIR)/fuzz_$$t.log"; \
	        failed="$$failed $$t"; \
	    fi; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz: failed:$$failed"; exit 1; fi; \
	echo "fuzz: all targets passed"

$(FUZZ_DIR)/fuzz_codec: test/fuzz/fuzz_codec.c src/codec.c src/util.c include/codec.h include/util.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ test/fuzz/fuzz_codec.c src/codec.c src/util.c $(FUZZ_LIBS)

$(FUZZ_DIR)/fuzz_json: test/fuzz/fuzz_json.c src/json.c src/util.c include/json.h include/util.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ test/fuzz/fuzz_json.c src/json.c src/util.c $(FUZZ_LIBS)

$(FUZZ_DIR)/fuzz_body: test/fuzz/fuzz_body.c roles/gateway/body.c roles/gateway/body.h src/json.c \
                       src/util.c include/json.h include/util.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -Iroles/gateway -o $@ test/fuzz/fuzz_body.c roles/gateway/body.c \
	    src/json.c src/util.c $(FUZZ_LIBS)

$(FUZZ_DIR)/fuzz_urlquery: test/fuzz/fuzz_urlquery.c roles/gateway/urlquery.c \
                           roles/gateway/urlquery.h src/util.c include/util.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -Iroles/gateway -o $@ test/fuzz/fuzz_urlquery.c \
	    roles/gateway/urlquery.c src/util.c $(FUZZ_LIBS)

$(FUZZ_DIR)/fuzz_clientaddr: test/fuzz/fuzz_clientaddr.c roles/gateway/clientaddr.c \
                             roles/gateway/clientaddr.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -Iroles/gateway -o $@ test/fuzz/fuzz_clientaddr.c \
	    roles/gateway/clientaddr.c $(FUZZ_LIBS)

$(FUZZ_DIR)/fuzz_event: test/fuzz/fuzz_event.c roles/logger/event.c roles/logger/event.h src/json.c \
                        src/util.c include/json.h include/util.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -Iroles/logger -o $@ test/fuzz/fuzz_event.c roles/logger/event.c \
	    src/json.c src/util.c $(FUZZ_LIBS)

$(FUZZ_DIR)/fuzz_logquery: test/fuzz/fuzz_logquery.c roles/logger/query.c roles/logger/query.h \
                           roles/logger/event.h src/json.c src/util.c include/json.h include/util.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -Iroles/logger -o $@ test/fuzz/fuzz_logquery.c roles/logger/query.c \
	    src/json.c src/util.c $(FUZZ_LIBS)

# Seeds: each Nest frame as a file, all of them pipelined in one; for the JSON target, each
# frame's body behind a selector byte ("A"); plus the hand-written edge cases in test/fuzz/seeds/
# (these run first, so a known regression fails the smoke run at once, not by luck).
FUZZ_SEEDS := $(wildcard $(FUZZ_TARGETS:%=test/fuzz/seeds/%/*))
$(FUZZ_DIR)/seed/.stamp: test/data/nest_frames.txt test/fuzz/fuzz.mk $(FUZZ_SEEDS)
	@rm -rf $(FUZZ_DIR)/seed
	@for t in $(FUZZ_TARGETS); do mkdir -p $(FUZZ_DIR)/seed/$$t && \
	    cp test/fuzz/seeds/$$t/* $(FUZZ_DIR)/seed/$$t/ || exit 1; done
	@awk -F '\t' -v dir=$(FUZZ_DIR)/seed '/^#/ || NF < 2 { next } \
	    { printf "%s", $$2 > (dir "/codec/" $$1); close(dir "/codec/" $$1); \
	      printf "A%s", substr($$2, index($$2, "#") + 1) > (dir "/json/" $$1); \
	      close(dir "/json/" $$1); all = all $$2 } \
	    END { printf "%s", all > (dir "/codec/all-pipelined") }' test/data/nest_frames.txt
	@touch $@

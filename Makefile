# Shop: build, run and test. `make help` lists the targets.
#
# BUILD selects the output folder; SAN=1 builds with AddressSanitizer and
# UndefinedBehaviorSanitizer (the test suite uses build/san).

BUILD ?= build
SAN   ?= 0

CC     ?= cc
PKGS    = libmicrohttpd jansson libpq rdkafka nettle libsodium libcurl
# Deferred (=) so that pkg-config only runs when something is compiled: on a
# fresh machine `make start` installs the packages before it gets that far.
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   = $(shell pkg-config --libs $(PKGS)) -lwslay -lpthread -lm
TEST_LIBS  = $(shell pkg-config --libs criterion)

CFLAGS_COMMON = -std=c17 -D_GNU_SOURCE -Wall -Wextra -Werror -g -MMD -MP -Isrc
ifeq ($(SAN),1)
CFLAGS_OPT = -O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS_SAN = -fsanitize=address,undefined
else ifeq ($(SAN),fuzz)
# libFuzzer targets (clang): coverage, ASan and UBSan on every object.
CFLAGS_OPT = -O1 -fsanitize=address,undefined,fuzzer-no-link -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS_SAN = -fsanitize=address,undefined,fuzzer
else
CFLAGS_OPT = -O2
LDFLAGS_SAN =
endif
ALL_CFLAGS = $(CFLAGS_COMMON) $(CFLAGS_OPT) $(PKG_CFLAGS) $(CFLAGS)

LIB_SRC      = $(wildcard src/lib/*.c)
PAYMENTS_SRC = $(filter-out src/payments/main.c,$(wildcard src/payments/*.c))
ORDERS_SRC   = $(filter-out src/orders/main.c,$(wildcard src/orders/*.c))
IDENTITY_SRC = $(filter-out src/identity/main.c,$(wildcard src/identity/*.c))
# Pure domain modules: what the unit tests may link besides src/lib.
DOMAIN_SRC   = src/orders/order.c
# Modules of a service that unit tests exercise without a server.
UNIT_EXTRA   = src/orders/live.c src/orders/store.c
UNIT_SRC     = $(wildcard tests/unit/*.c)
INTEG_SRC    = $(wildcard tests/integration/*.c)
CHAOS_SRC    = $(wildcard tests/chaos/*.c) tests/integration/harness.c

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

BINS = $(BUILD)/bin/orders $(BUILD)/bin/payments $(BUILD)/bin/identity
BENCH = $(BUILD)/bin/loadgen $(BUILD)/bin/token_cost
TESTS = $(BUILD)/tests/unit $(BUILD)/tests/integration $(BUILD)/tests/chaos

.PHONY: settings mutants fuzz fuzzers help build services deps-run deps-build construct tests deps run stop clean rerun start restart fresh test status bench format reconcile
.DEFAULT_GOAL := help

help:
	@echo "make start    install what is missing, build, and start the whole stack"
	@echo "make test     install what is missing, build (also with sanitizers), run every test"
	@echo "make build    compile everything into build/ (services, tests, bench)"
	@echo "make services compile the services only     make construct  clean rebuild"
	@echo "make run      start what is not running     make stop       stop everything"
	@echo "make rerun    stop + run                    make restart    stop + start"
	@echo "make clean    stop, delete var/ (all data)"
	@echo "make fresh    clean + start                 make status     what is running"
	@echo "make bench    benchmark: orders/s and latency vs pgbench on the same cluster"
	@echo "make format   clang-format every C file (make test checks it)"
	@echo "make fuzz     every libFuzzer target for FUZZ_SECONDS (60) each"
	@echo "make mutants  deliberate bugs (tests/mutants), each caught by a named test"
	@echo "make reconcile  check the running shop's books across both databases (RECONCILE_USERS)"

# Each target installs what it needs first (scripts/deps.sh checks in a
# fraction of a second and installs only what is missing); prerequisites
# run left to right.
build: deps-build $(BINS) $(BENCH) $(TESTS)

# What `make start` runs, and nothing that needs the test packages.
services: deps-run $(BINS)

deps-run:
	@scripts/deps.sh

deps-build:
	@scripts/deps.sh build

construct:
	rm -rf $(BUILD)
	$(MAKE) build

deps:
	@scripts/deps.sh

start:
	@$(MAKE) --no-print-directory services
	@scripts/stack.sh up

run:
	@scripts/stack.sh up

stop:
	@scripts/stack.sh down

status:
	@scripts/stack.sh status

rerun: stop run

restart: stop start

clean:
	@scripts/stack.sh wipe

fresh: clean start

test:
	@scripts/test.sh

# Every C file of ours: found on disk, so that a checkout without .git
# (a downloaded archive) formats and checks the same.
C_FILES = find src tests bench -name '*.[ch]' -not -path '*/corpus/*'

# The README's settings table, made again from the services' own tables.
settings: services
	@scripts/settings.sh

format:
	@scripts/deps.sh format
	@$(C_FILES) | xargs clang-format -i

# Deliberate bugs (tests/mutants), each of which a named test must catch;
# not part of make test (it takes a quarter of an hour or more).
mutants:
	@scripts/mutants.sh

# libFuzzer targets: built by clang into build/fuzz (scripts/fuzz.sh).
FUZZ_DIR = build/fuzz
fuzz:
	@scripts/fuzz.sh

fuzzers: $(BUILD)/fuzz_msg $(BUILD)/fuzz_token $(BUILD)/fuzz_input $(BUILD)/fuzz_ws $(BUILD)/fuzz_http_orders $(BUILD)/fuzz_http_payments

$(BUILD)/fuzz_msg: $(call obj,tests/fuzz/fuzz_msg.c $(LIB_SRC))
$(BUILD)/fuzz_token: $(call obj,tests/fuzz/fuzz_token.c $(LIB_SRC))
$(BUILD)/fuzz_input: $(call obj,tests/fuzz/fuzz_input.c $(DOMAIN_SRC) $(LIB_SRC))
$(BUILD)/fuzz_ws: $(call obj,tests/fuzz/fuzz_ws.c $(filter-out src/lib/ws.c,$(LIB_SRC)))
$(BUILD)/fuzz_http_orders: $(call obj,tests/fuzz/fuzz_http_orders.c $(ORDERS_SRC) $(LIB_SRC))
$(BUILD)/fuzz_http_payments: $(call obj,tests/fuzz/fuzz_http_payments.c $(PAYMENTS_SRC) $(LIB_SRC))
$(BUILD)/fuzz_%:
	@mkdir -p $(dir $@)
	@echo "  LD  $@"
	@$(CC) $(LDFLAGS_SAN) -o $@ $^ $(PKG_LIBS) $(LDFLAGS)

# The books of the running shop (scripts/reconcile.sh): exits 1 on a mismatch.
reconcile:
	@scripts/reconcile.sh

bench:
	@scripts/deps.sh bench
	@$(MAKE) --no-print-directory services $(BENCH)
	@scripts/bench.sh

$(BUILD)/bin/payments: $(call obj,src/payments/main.c $(PAYMENTS_SRC) $(LIB_SRC))
	@mkdir -p $(dir $@)
	@echo "  LD  $@"
	@$(CC) $(LDFLAGS_SAN) -o $@ $^ $(PKG_LIBS) $(LDFLAGS)

$(BUILD)/bin/identity: $(call obj,src/identity/main.c $(IDENTITY_SRC) $(LIB_SRC))
	@mkdir -p $(dir $@)
	@echo "  LD  $@"
	@$(CC) $(LDFLAGS_SAN) -o $@ $^ $(PKG_LIBS) $(LDFLAGS)

$(BUILD)/bin/orders: $(call obj,src/orders/main.c $(ORDERS_SRC) $(LIB_SRC))
	@mkdir -p $(dir $@)
	@echo "  LD  $@"
	@$(CC) $(LDFLAGS_SAN) -o $@ $^ $(PKG_LIBS) $(LDFLAGS)

$(BUILD)/tests/unit: $(call obj,$(UNIT_SRC) $(DOMAIN_SRC) $(UNIT_EXTRA) $(LIB_SRC))
	@mkdir -p $(dir $@)
	@echo "  LD  $@"
	@$(CC) $(LDFLAGS_SAN) -o $@ $^ $(PKG_LIBS) $(TEST_LIBS) $(LDFLAGS)

$(BUILD)/tests/integration: $(call obj,$(INTEG_SRC) $(DOMAIN_SRC) $(LIB_SRC))
	@mkdir -p $(dir $@)
	@echo "  LD  $@"
	@$(CC) $(LDFLAGS_SAN) -o $@ $^ $(PKG_LIBS) $(TEST_LIBS) $(LDFLAGS)

$(BUILD)/bin/loadgen: $(call obj,bench/loadgen.c)
	@mkdir -p $(dir $@)
	@echo "  LD  $@"
	@$(CC) $(LDFLAGS_SAN) -o $@ $^ $(PKG_LIBS) $(LDFLAGS)

$(BUILD)/bin/token_cost: $(call obj,bench/token_cost.c $(LIB_SRC))
	@mkdir -p $(dir $@)
	@echo "  LD  $@"
	@$(CC) $(LDFLAGS_SAN) -o $@ $^ $(PKG_LIBS) $(LDFLAGS)

$(BUILD)/tests/chaos: $(call obj,$(CHAOS_SRC) $(LIB_SRC))
	@mkdir -p $(dir $@)
	@echo "  LD  $@"
	@$(CC) $(LDFLAGS_SAN) -o $@ $^ $(PKG_LIBS) $(TEST_LIBS) $(LDFLAGS)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC  $<"
	@$(CC) $(ALL_CFLAGS) -c -o $@ $<

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

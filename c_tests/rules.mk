# C tests and the demo: built against the generated header and the shared library.
# Included by the top-level Makefile (which defines LIBDIR, LIB, BUILD, FIXTURES).

CC        ?= cc
C_FLAGS   := -std=gnu11 -O1 -g -Wall -Wextra -Werror -Iinclude
C_LINK    := -L$(LIBDIR) -lreduce -Wl,-rpath,$(abspath $(LIBDIR))
SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
C_SRCS    := $(filter-out c_tests/demo.c,$(wildcard c_tests/*.c))
# A program of the 2019 API alone, built on its own: it must compile unchanged.
API2019   := c_tests/api2019/api2019.c
C_HDRS    := $(wildcard c_tests/*.h) include/reduce.h
FIXTURE_NAMES := $(notdir $(wildcard $(FIXTURES)/g*))
FIXTURE_FILES := $(foreach f,$(FIXTURE_NAMES),$(foreach x,backing.img pm expected.img,$(BUILD)/fixtures/$(f)/$(x)))

.PHONY: c-test c-test-asan c-test-valgrind demo c-fixtures readme-snippets

$(LIB): lib

$(BUILD)/fixtures/%: $(FIXTURES)/%.zst
	@mkdir -p $(dir $@)
	zstd -d -q -f $< -o $@

c-fixtures: $(FIXTURE_FILES)

$(BUILD)/c_tests: $(C_SRCS) $(C_HDRS) lib
	@mkdir -p $(BUILD)
	$(CC) $(C_FLAGS) -o $@ $(C_SRCS) $(C_LINK)

$(BUILD)/c_tests_asan: $(C_SRCS) $(C_HDRS) lib
	@mkdir -p $(BUILD)
	$(CC) $(C_FLAGS) $(SAN_FLAGS) -o $@ $(C_SRCS) $(C_LINK)

$(BUILD)/api2019: $(API2019) include/reduce.h include/spdk/reduce.h lib
	@mkdir -p $(BUILD)
	$(CC) $(C_FLAGS) -o $@ $(API2019) $(C_LINK)

$(BUILD)/api2019_asan: $(API2019) include/reduce.h include/spdk/reduce.h lib
	@mkdir -p $(BUILD)
	$(CC) $(C_FLAGS) $(SAN_FLAGS) -o $@ $(API2019) $(C_LINK)

c-test: $(BUILD)/c_tests $(BUILD)/api2019 c-fixtures
	$(BUILD)/c_tests
	$(BUILD)/api2019

# The Rust library is not instrumented; ASan checks the C side and every access the
# library makes to C memory through the interceptors, and reports leaks at exit.
c-test-asan: $(BUILD)/c_tests_asan $(BUILD)/api2019_asan c-fixtures
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  $(BUILD)/c_tests_asan
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  $(BUILD)/api2019_asan

VALGRIND := valgrind -q --error-exitcode=1 --leak-check=full \
  --errors-for-leak-kinds=definite,indirect --suppressions=c_tests/valgrind.supp

c-test-valgrind: $(BUILD)/c_tests $(BUILD)/api2019 c-fixtures
	REDUCE_TEST_SCALE=small $(VALGRIND) $(BUILD)/c_tests
	$(VALGRIND) $(BUILD)/api2019

# The demo reads its corpus from DEMO_DIRS (its own default list when empty) and puts
# its files under $TMPDIR (default /tmp).
DEMO_DIRS ?=

$(BUILD)/demo: c_tests/demo.c include/reduce.h lib | deps
	@mkdir -p $(BUILD)
	$(CC) $(C_FLAGS) -O2 -o $@ c_tests/demo.c $(C_LINK)

demo: deps $(BUILD)/demo
	$(BUILD)/demo $(DEMO_DIRS)

# The C and Rust examples in README.md, built and run as written.
readme-snippets: lib | deps
	LIBDIR=$(LIBDIR) BUILD=$(BUILD) CC=$(CC) scripts/readme-snippets.sh

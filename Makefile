# reduce — build, demo and tests. Two commands do everything on a fresh machine:
#   make demo   builds the library and runs the C demo (SPDK-style poll loop, real files)
#   make test   every test: Rust, C (plain, ASan+UBSan, valgrind), miri, header, lint
# Long runs have their own targets: make soak, make fuzz, make bench.

CARGO    ?= cargo
PROFILE  ?= release
LIBDIR   := target/$(PROFILE)
LIB      := $(LIBDIR)/libreduce.so
BUILD    := build
FIXTURES := tests/fixtures

.PHONY: all lib deps demo test rust-test miri header-check lint soak fuzz bench clean

all: lib

# What a fresh machine may lack: the C toolchain bits, valgrind, zstd (fixtures), and
# the nightly toolchain with miri. Each is installed only when missing.
deps:
	@need=""; \
	for t in cc:gcc valgrind:valgrind zstd:zstd; do \
	  command -v $${t%%:*} >/dev/null 2>&1 || need="$$need $${t#*:}"; \
	done; \
	if [ -n "$$need" ]; then \
	  echo "installing:$$need"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$need) >/dev/null; \
	fi
	@cargo +nightly miri --version >/dev/null 2>&1 || \
	  rustup toolchain install nightly --profile minimal --component miri rust-src >/dev/null 2>&1 || \
	  echo "note: nightly miri not available; 'make miri' will say so"

lib:
	$(CARGO) build --profile $(PROFILE) --lib

include c_tests/rules.mk

test: deps lint header-check rust-test c-test c-test-asan c-test-valgrind miri
	@echo "make test: all suites passed"

rust-test:
	$(CARGO) test --profile $(PROFILE) -q

# The core under miri, with in-memory doubles (no zstd C code, no files).
miri:
	@if cargo +nightly miri --version >/dev/null 2>&1; then \
	  MIRIFLAGS="-Zmiri-disable-isolation" cargo +nightly miri test -q --lib --test miri_core; \
	else echo "SKIPPED miri: nightly toolchain with miri is not installed"; fi

# The committed header must be what cbindgen generates now.
header-check: lib
	@git diff --exit-code -- include/ || { echo "include/reduce.h is stale: commit the regenerated header"; exit 1; }
	@echo "header current"

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -q -- -D warnings

clean:
	$(CARGO) clean
	rm -rf $(BUILD)

bench:
	$(CARGO) bench --bench throughput

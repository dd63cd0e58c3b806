# reduce — build, demo and tests. Two commands do everything on a fresh machine:
#   make demo   builds the library and runs the C demo (SPDK-style poll loop, real files)
#   make test   every test: Rust, C (plain, ASan+UBSan, valgrind), miri, header, lint,
#               the README's examples
# `make` builds the library and the reduce command (target/release/reduce).
# Long runs have their own targets: make soak, make fuzz, make bench.

CARGO    ?= cargo
PROFILE  ?= release
LIBDIR   := target/$(PROFILE)
LIB      := $(LIBDIR)/libreduce.so
BUILD    := build
FIXTURES := tests/fixtures

.PHONY: all lib cli deps demo test rust-test miri header header-check lint soak fuzz fuzz-seeds bench clean

all: lib cli

# What a fresh machine may lack: the C toolchain bits, valgrind, zstd (fixtures), clippy
# and rustfmt for the stable toolchain, and the nightly toolchain with miri and rust-src.
# Each is installed only when missing; a failed install stops make with the tool's own
# error, so no suite silently goes missing.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

deps:
	@need=""; \
	for t in cc:gcc valgrind:valgrind zstd:zstd; do \
	  command -v $${t%%:*} >/dev/null 2>&1 || need="$$need $${t#*:}"; \
	done; \
	if [ -n "$$need" ]; then \
	  echo "installing:$$need"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$need; \
	fi
	@for c in clippy rustfmt; do \
	  rustup component list --installed | grep -q "^$$c" || rustup component add $$c || exit 1; \
	done
	@# A nightly without miri or rust-src gets them; if that nightly has no miri, a newer one.
	@if rustup toolchain list | grep -q '^nightly-'; then \
	  rustup component list --toolchain nightly --installed | grep -q '^miri' && \
	  rustup component list --toolchain nightly --installed | grep -q '^rust-src' || \
	  { rustup component add --toolchain nightly miri rust-src || \
	    rustup toolchain install --no-self-update nightly --profile minimal --component miri --component rust-src; }; \
	else \
	  rustup toolchain install --no-self-update nightly --profile minimal --component miri --component rust-src; \
	fi

# The library's soname is libreduce.so.0; programs linked to it look for that name.
lib:
	$(CARGO) build --profile $(PROFILE) --lib
	@ln -sf libreduce.so $(LIBDIR)/libreduce.so.0

# The reduce command (cli/, a workspace member of its own): target/$(PROFILE)/reduce.
cli:
	$(CARGO) build --profile $(PROFILE) -p reduce-cli

include c_tests/rules.mk

test: deps lint header-check rust-test c-test c-test-asan c-test-valgrind miri readme-snippets
	@echo "make test: all suites passed"

# The library's suites and the command's (which run the built binary); tools/header has
# no tests, and leaving it out spares building cbindgen in release.
rust-test:
	$(CARGO) test --profile $(PROFILE) -q -p reduce -p reduce-cli

# The core under miri, with in-memory doubles (no zstd C code, no files). make deps
# installs miri; if it cannot, this fails rather than skip.
miri: deps
	MIRIFLAGS="-Zmiri-disable-isolation" cargo +nightly miri test -q --lib --test miri_core --test miri_shadow

# include/reduce.h is generated from src/ffi by tools/header (cbindgen) and committed:
# `make header` regenerates it; `make header-check` fails when it is stale.
HEADER_GEN := $(CARGO) run -q -p reduce-header --

header:
	$(HEADER_GEN) include/reduce.h

header-check:
	@tmp=$$(mktemp) && trap 'rm -f "$$tmp"' EXIT && $(HEADER_GEN) "$$tmp" && \
	  { diff -u include/reduce.h "$$tmp" || \
	    { echo "include/reduce.h is stale: run make header and commit it"; exit 1; }; }
	@echo "header current"

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -q -- -D warnings

# Long runs, outside make test.
SOAK_OPS     ?= 1000000
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := load ops

soak:
	REDUCE_SOAK_OPS=$(SOAK_OPS) $(CARGO) test --profile $(PROFILE) --test soak -- --nocapture

# Each fuzz target for FUZZ_SECONDS, from the committed seeds (fuzz/corpus, read only)
# plus what earlier runs found (build/fuzz-corpus).
fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(BUILD)/fuzz-corpus/$$t; \
	  (cd fuzz && cargo +nightly fuzz run -O $$t ../$(BUILD)/fuzz-corpus/$$t corpus/$$t -- \
	     -max_total_time=$(FUZZ_SECONDS) -max_len=20000) 2>&1 | grep -E '^Done|ERROR|panicked' || exit 1; \
	done

# Regenerates the seed corpus from real volumes.
fuzz-seeds:
	$(CARGO) run --profile $(PROFILE) -q --example fuzz_seeds

clean:
	$(CARGO) clean
	rm -rf $(BUILD) fuzz/target

bench:
	$(CARGO) bench --bench throughput

# reduce — build, demo and tests. Two commands do everything on a fresh machine:
#   make demo   builds the library and runs the C demo (SPDK-style poll loop, real files)
#   make test   every test: Rust, C (plain, ASan+UBSan, valgrind), miri, header, lint,
#               the README's examples, the staged install, the NBD export with real clients;
#               it builds the benchmark too
# `make` builds the library, the reduce command (target/release/reduce) and the nbdkit plugin.
# Long runs have their own targets: make soak, make fuzz, make bench, make scale,
# make integration.
# Installing: make, then make install PREFIX=/usr/local (DESTDIR= to stage); make uninstall.

CARGO    ?= cargo
PROFILE  ?= release
LIBDIR   := target/$(PROFILE)
LIB      := $(LIBDIR)/libreduce.so
BUILD    := build
FIXTURES := tests/fixtures

.PHONY: all lib cli deps demo test rust-test miri header header-check lint soak fuzz fuzz-seeds bench scale clean
.PHONY: install uninstall install-built install-test

all: lib cli nbd-plugin

# What a fresh machine may lack: the C toolchain bits, valgrind, zstd (fixtures), clippy
# and rustfmt for the stable toolchain, and the nightly toolchain with miri and rust-src;
# for the NBD plugin and its tests: nbdkit and its plugin header, libnbd's tools (nbdcopy,
# nbdinfo, nbdsh), qemu-img/qemu-io, fio, mke2fs (disk images of real files), pkg-config.
# Each is installed only when missing (a command on PATH, or a file); a failed install
# stops make with the tool's own error, so no suite silently goes missing.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEPS_APT := cc:gcc valgrind:valgrind zstd:zstd \
	nbdkit:nbdkit /usr/include/nbdkit-plugin.h:nbdkit-plugin-dev nbdcopy:libnbd-bin \
	nbdsh:python3-libnbd qemu-img:qemu-utils fio:fio /usr/sbin/mke2fs:e2fsprogs \
	pkg-config:pkgconf

deps:
	@need=""; \
	for t in $(DEPS_APT); do \
	  x=$${t%%:*}; command -v $$x >/dev/null 2>&1 || [ -e $$x ] || need="$$need $${t#*:}"; \
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

# Installing, as a system library: make install PREFIX=/usr/local (DESTDIR=/stage to
# stage), make uninstall with the same variables. Under sudo nothing is built (root
# would own files in target/): run make first as yourself.
PREFIX   ?= /usr/local
DESTDIR  ?=
VERSION  := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' Cargo.toml | head -n 1)
SONAME   := libreduce.so.0
LIB_REAL := $(SONAME).$(word 2,$(subst ., ,$(VERSION))).$(word 3,$(subst ., ,$(VERSION)))
INST_BIN := $(DESTDIR)$(PREFIX)/bin
INST_INC := $(DESTDIR)$(PREFIX)/include
INST_LIB := $(DESTDIR)$(PREFIX)/lib
INST_NBD := $(INST_LIB)/nbdkit/plugins
CLI      := $(LIBDIR)/reduce

install: $(if $(SUDO_USER),install-built,lib cli nbd-plugin)
	install -d $(INST_LIB)/pkgconfig $(INST_INC)/spdk $(INST_NBD)
	install -m 0755 $(LIB) $(INST_LIB)/$(LIB_REAL)
	ln -sfn $(LIB_REAL) $(INST_LIB)/$(SONAME)
	ln -sfn $(SONAME) $(INST_LIB)/libreduce.so
	install -m 0644 $(LIBDIR)/libreduce.a $(INST_LIB)/libreduce.a
	install -m 0644 include/reduce.h $(INST_INC)/reduce.h
	install -m 0644 include/spdk/reduce.h $(INST_INC)/spdk/reduce.h
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' reduce.pc.in \
	  >$(INST_LIB)/pkgconfig/reduce.pc
	install -m 0755 $(NBD_PLUGIN_INSTALL) $(INST_NBD)/nbdkit-reduce-plugin.so
	install -d $(INST_BIN)
	install -s -m 0755 $(CLI) $(INST_BIN)/reduce
	@# The dynamic linker's cache, for a real install into a directory it searches.
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ] && command -v ldconfig >/dev/null; then ldconfig; fi

install-built:
	@for f in $(LIB) $(LIBDIR)/libreduce.a $(CLI) $(NBD_PLUGIN_INSTALL); do \
	  [ -f $$f ] || { echo "$$f is not built: run make install without sudo, or make first"; exit 1; }; \
	done

uninstall:
	rm -f $(INST_LIB)/$(LIB_REAL) $(INST_LIB)/$(SONAME) $(INST_LIB)/libreduce.so \
	  $(INST_LIB)/libreduce.a $(INST_INC)/reduce.h $(INST_INC)/spdk/reduce.h \
	  $(INST_LIB)/pkgconfig/reduce.pc $(INST_NBD)/nbdkit-reduce-plugin.so $(INST_BIN)/reduce
	@# Directories only we use, and only when empty.
	@rmdir $(INST_INC)/spdk $(INST_NBD) $(INST_LIB)/nbdkit 2>/dev/null || true
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ] && command -v ldconfig >/dev/null; then ldconfig; fi

# A staged install (DESTDIR), a C program built with pkg-config alone, then uninstall.
install-test: lib cli nbd-plugin | deps
	MAKE="$(MAKE)" TEST_CC="$(CC)" tests/integration/install.sh

include c_tests/rules.mk
include nbd/rules.mk

# The benchmark is built (with -Werror), not run: it takes minutes and measures, not tests.
test: deps lint header-check rust-test c-test c-test-asan c-test-valgrind miri readme-snippets \
      install-test nbd-test $(BUILD)/bench
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
	@# Every intra-doc link resolves, private items' included.
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc -q --no-deps --document-private-items -p reduce

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

# The C benchmark through the C ABI (benches/bench.c): prints a markdown table of
# throughput and lib/codec ratios. BENCH_QUICK=1 for a short run; the other knobs are
# at the top of benches/bench.c. Rust micro-benchmarks: cargo bench --bench throughput.
$(BUILD)/bench: benches/bench.c include/reduce.h lib
	@mkdir -p $(BUILD)
	$(CC) -std=gnu11 -O2 -g -Wall -Wextra -Werror -Iinclude -o $@ benches/bench.c $(C_LINK) -lm

bench: $(BUILD)/bench
	$(BUILD)/bench

# Init and load of large volumes (tests/scale.rs, its ignored tests): prints time,
# resident memory and heap for a sparse 1 TiB volume and a full 64 GiB one (3 GiB and
# 192 MiB pm files on /dev/shm).
scale:
	$(CARGO) test --profile $(PROFILE) --test scale -- --ignored --nocapture --test-threads=1

# The nbdkit plugin, its tests and demo. Included by the top-level Makefile (which
# defines LIBDIR, LIB, BUILD, VERSION).
#
# Two builds of one source: $(NBD_PLUGIN) finds libreduce.so.0 in $(LIBDIR), for the
# tests and the demo; $(NBD_PLUGIN_INSTALL), which make install copies to
# PREFIX/lib/nbdkit/plugins, finds it two directories up from itself (PREFIX/lib),
# whatever the prefix.

NBD_SRC            := nbd/nbdkit-reduce-plugin.c
NBD_PLUGIN         := $(BUILD)/nbdkit-reduce-plugin.so
NBD_PLUGIN_INSTALL := $(BUILD)/install/nbdkit-reduce-plugin.so
NBD_CFLAGS         := -std=gnu11 -O2 -g -Wall -Wextra -Werror -fPIC -shared -Iinclude \
                      -DREDUCE_VERSION='"$(VERSION)"'
NBD_LIBS           := -L$(LIBDIR) -lreduce -lpthread

.PHONY: nbd-plugin nbd-header nbd-test integration nbd-demo

nbd-plugin: $(NBD_PLUGIN) $(NBD_PLUGIN_INSTALL)

nbd-header:
	@printf '#include <nbdkit-plugin.h>\n' | $(CC) -E -x c - >/dev/null 2>&1 || \
	  { echo "nbdkit-plugin.h not found: apt-get install nbdkit-plugin-dev (make deps does)"; exit 1; }

$(NBD_PLUGIN): $(NBD_SRC) include/reduce.h lib nbd-header
	@mkdir -p $(dir $@)
	$(CC) $(NBD_CFLAGS) -o $@ $(NBD_SRC) $(NBD_LIBS) -Wl,-rpath,$(abspath $(LIBDIR))

$(NBD_PLUGIN_INSTALL): $(NBD_SRC) include/reduce.h lib nbd-header
	@mkdir -p $(dir $@)
	$(CC) $(NBD_CFLAGS) -o $@ $(NBD_SRC) $(NBD_LIBS) -Wl,--enable-new-dtags,-rpath,'$$ORIGIN/../..'

# The quick tests with real clients (qemu-img, qemu-io, nbdcopy, nbdsh, fio, SIGKILL),
# in make test; the long ones in make integration.
nbd-test: $(NBD_PLUGIN) cli | deps
	PLUGIN=$(NBD_PLUGIN) REDUCE=$(CLI) BUILD=$(BUILD) tests/integration/nbd.sh quick

integration: deps $(NBD_PLUGIN) cli
	PLUGIN=$(NBD_PLUGIN) REDUCE=$(CLI) BUILD=$(BUILD) tests/integration/nbd.sh long

# Serves a new volume on a unix socket and writes a disk image of real files to it with
# qemu-img, then reads it back.
nbd-demo: deps $(NBD_PLUGIN)
	PLUGIN=$(NBD_PLUGIN) nbd/demo.sh

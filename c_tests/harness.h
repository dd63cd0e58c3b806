/* Test harness for the C suite.
 *
 * - struct mem_dev: an in-memory backing device embedding struct
 *   spdk_reduce_backing_dev (the harness is recovered with container_of). It completes
 *   either inside the call (IMMEDIATE) or from mem_dev_poll() (DEFERRED), one queued
 *   completion at a time, FIFO, like an SPDK poller. In DEFERRED mode the work itself
 *   (the data copy of a read or a write, the codec call) happens at delivery time,
 *   through the library's own iovec arrays and cb_args, as a DMA engine or an
 *   accelerator would: the library must keep them alive until the completion.
 * - Fault injection: the Nth operation of a kind completes with a chosen status; every
 *   completion of a kind delivered twice (twice[kind]).
 * - Synchronous wrappers (h_init, h_write, ...) that poll until the callback ran.
 * - A tiny test framework: TEST(name) registers a test run in both completion modes,
 *   CHECK/CHECK_EQ record failures with file:line and continue.
 */
#ifndef REDUCE_C_TESTS_HARNESS_H
#define REDUCE_C_TESTS_HARNESS_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/uio.h>

#include "spdk/reduce.h"

#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

enum mem_op { OP_READ, OP_WRITE, OP_UNMAP, OP_COMPRESS, OP_DECOMPRESS, OP_KINDS };
enum mem_mode { IMMEDIATE = 0, DEFERRED = 1 };

struct pending;

struct mem_dev {
	struct spdk_reduce_backing_dev dev;
	uint8_t *image;
	int deferred;
	struct pending *head, *tail;
	size_t pending, max_pending;  /* queued completions now, and the most at once */
	uint64_t count[OP_KINDS];     /* operations of each kind so far */
	uint64_t fail_at[OP_KINDS];   /* inject at the operation with this count (1-based) */
	int fail_status[OP_KINDS];    /* what the injected operation completes with */
	uint32_t chunk_size;          /* when set: codec calls are checked against it */
	uint64_t protocol_errors;     /* malformed calls the device saw (bad lba, iov...) */
	/* When set, every completion of the kind is delivered twice, as a buggy device
	 * might: IMMEDIATE calls args->cb_fn(args->cb_arg, ...) again right after the
	 * first call; DEFERRED keeps cb_fn and cb_arg and queues the second call at the
	 * back, after whatever is pending by then. */
	int twice[OP_KINDS];
	uint64_t duplicates; /* second deliveries made */
};

void mem_dev_init(struct mem_dev *d, uint32_t blocklen, uint64_t blockcnt, int deferred);
/* Frees the image; a completion still queued is a test failure (and is dropped). */
void mem_dev_free(struct mem_dev *d);
/* Delivers the oldest pending completion; 0 when none is pending. */
int mem_dev_poll(struct mem_dev *d);
/* Delivers until nothing is pending (capped; fails the test at the cap). */
void mem_dev_poll_all(struct mem_dev *d);
/* The `nth` operation of `kind` from now (1: the next one) completes with `status`
 * without doing anything. For reads and writes `status` is a negative errno; for the
 * codec it may also be a positive (lying) byte count. */
void mem_dev_fail_nth(struct mem_dev *d, enum mem_op kind, uint64_t nth, int status);
void mem_dev_fail_next(struct mem_dev *d, enum mem_op kind, int status);

/* Synchronous wrappers: submit, then poll the device until the callback ran. They
 * return the completion status (-ETIMEDOUT, and a test failure, when it never came). */
int h_init(struct mem_dev *d, struct spdk_reduce_vol_params *p, const char *dir,
	   struct spdk_reduce_vol **vol);
int h_load(struct mem_dev *d, struct spdk_reduce_vol **vol);
int h_unload(struct mem_dev *d, struct spdk_reduce_vol *vol);
int h_destroy(struct mem_dev *d);
int h_io(struct mem_dev *d, struct spdk_reduce_vol *vol, int write, struct iovec *iov,
	 int iovcnt, uint64_t offset, uint64_t length);
int h_write(struct mem_dev *d, struct spdk_reduce_vol *vol, const void *buf, uint64_t offset,
	    uint64_t length);
int h_read(struct mem_dev *d, struct spdk_reduce_vol *vol, void *buf, uint64_t offset,
	   uint64_t length);
int h_unmap(struct mem_dev *d, struct spdk_reduce_vol *vol, uint64_t offset, uint64_t length);
int h_check(struct mem_dev *d, struct spdk_reduce_vol *vol, struct reduce_vol_check_report *r);
/* Io units allocated to chunks (and writes in flight) per spdk_reduce_vol_get_info:
 * its allocated_io_units less the metadata's io units, which it also counts. */
uint64_t h_units(struct spdk_reduce_vol *vol);

/* The usual start of a test: a temp dir for the pm file, a device of `chunks` chunks
 * (plus the 128 extra ones) in the given mode, default params, and init. */
int rig_open(struct mem_dev *d, struct spdk_reduce_vol_params *p, char *dir, size_t dir_len,
	     uint64_t chunks, int deferred, struct spdk_reduce_vol **vol);
/* Unload (when vol is set), free the device, remove the temp dir. */
void rig_close(struct mem_dev *d, struct spdk_reduce_vol *vol, const char *dir);

/* Polls until *flag is set. Fails the test (returns -1) when nothing is left to poll
 * or after POLL_CAP deliveries, instead of hanging. */
#define POLL_CAP 20000000ULL
int poll_until(struct mem_dev *d, const int *flag);

/* Deterministic data of varied compressibility, and incompressible data. */
void fill_data(void *buf, size_t len, uint64_t seed);
void fill_random(void *buf, size_t len, uint64_t seed);
/* Compressible, never all zeros (stored compressed, so a read decompresses), varied by
 * `seed`. */
void fill_text(void *buf, size_t len, uint64_t seed);
uint64_t rng_next(uint64_t *state);

/* A fresh directory under /tmp, its removal with everything in it, its entry count. */
void make_tmpdir(char *out, size_t len);
void remove_tree(const char *dir);
int count_files(const char *dir);
long file_size(const char *path);

/* 1 when REDUCE_TEST_SCALE=small (the valgrind run): fewer iterations. */
int small_scale(void);
/* `full` normally, `small` under REDUCE_TEST_SCALE=small. */
#define SCALE(full, small) (small_scale() ? (small) : (full))

/* The default geometry: 512-byte blocks, 4 KiB io units, 16 KiB chunks. */
#define DEF_BLOCKLEN 512
#define DEF_IO_UNIT 4096
#define DEF_CHUNK 16384
#define DEF_BPC (DEF_CHUNK / DEF_BLOCKLEN) /* logical blocks per chunk */
void default_params(struct spdk_reduce_vol_params *p);
uint64_t blockcnt_for_chunks(uint64_t chunks);

/* ---- the test framework ---- */

extern int g_test_failures;
extern const char *g_test_mode;

#define CHECK(cond)                                                                         \
	do {                                                                                \
		if (!(cond)) {                                                              \
			fprintf(stderr, "    %s:%d: [%s] CHECK(%s) failed\n", __FILE__,      \
				__LINE__, g_test_mode, #cond);                              \
			g_test_failures++;                                                  \
		}                                                                           \
	} while (0)

#define CHECK_EQ(a, b)                                                                      \
	do {                                                                                \
		long long _a = (long long)(a), _b = (long long)(b);                         \
		if (_a != _b) {                                                             \
			fprintf(stderr, "    %s:%d: [%s] %s == %s failed: %lld != %lld\n",   \
				__FILE__, __LINE__, g_test_mode, #a, #b, _a, _b);           \
			g_test_failures++;                                                  \
		}                                                                           \
	} while (0)

/* CHECK_EQ for a test that is about to depend on the result. */
#define REQUIRE_EQ(a, b, label)                                                             \
	do {                                                                                \
		int _before = g_test_failures;                                              \
		CHECK_EQ(a, b);                                                             \
		if (g_test_failures != _before) {                                           \
			goto label;                                                         \
		}                                                                           \
	} while (0)

typedef void (*test_fn)(int deferred);
void register_test(const char *name, test_fn fn, int both_modes);

/* TEST(name): runs in IMMEDIATE and DEFERRED mode (the argument says which).
 * TEST_ONCE(name): runs once, with deferred == 0. */
#define TEST_(name, both)                                                                   \
	static void name(int deferred);                                                     \
	__attribute__((constructor)) static void register_##name(void)                      \
	{                                                                                   \
		register_test(#name, name, both);                                           \
	}                                                                                   \
	static void name(int deferred)
#define TEST(name) TEST_(name, 1)
#define TEST_ONCE(name) TEST_(name, 0)

#endif

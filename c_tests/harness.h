/* Test harness for the C suite: an in-memory backing device that completes inside
 * the call or later from a poll loop, fault injection, synchronous wrappers that poll
 * until a completion arrives, and a minimal test framework. */
#ifndef REDUCE_C_TESTS_HARNESS_H
#define REDUCE_C_TESTS_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/uio.h>

#include "spdk/reduce.h"

#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

enum mem_op { OP_READ, OP_WRITE, OP_COMPRESS, OP_DECOMPRESS, OP_KINDS };

struct pending;

struct mem_dev {
	struct spdk_reduce_backing_dev dev;
	uint8_t *image;
	int deferred;
	struct pending *head, *tail;
	uint64_t count[OP_KINDS];   /* operations of each kind so far */
	uint64_t fail_at[OP_KINDS]; /* fail the operation with this count (1-based); 0: none */
	int fail_errno[OP_KINDS];
};

void mem_dev_init(struct mem_dev *d, uint32_t blocklen, uint64_t blockcnt, int deferred);
void mem_dev_free(struct mem_dev *d);
/* Delivers the oldest pending completion; 0 when none is pending. */
int mem_dev_poll(struct mem_dev *d);
void mem_dev_poll_all(struct mem_dev *d);
size_t mem_dev_pending(const struct mem_dev *d);
/* Fails the next operation of `kind` with `err` (a negative errno). */
void mem_dev_fail_next(struct mem_dev *d, enum mem_op kind, int err);

/* Synchronous wrappers: submit, then poll the device until the callback ran. */
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
int h_check(struct mem_dev *d, struct spdk_reduce_vol *vol, struct reduce_vol_check_report *r);

/* The usual start of a test: a temp dir for the pm file, a device of `chunks` chunks
 * (plus the extra ones) in the given mode, default params, and init. */
int rig_open(struct mem_dev *d, struct spdk_reduce_vol_params *p, char *dir, size_t dir_len,
	     uint64_t chunks, int deferred, struct spdk_reduce_vol **vol);

/* Polls until *flag is set; fails the test (returns -1) if nothing is left to poll. */
int poll_until(struct mem_dev *d, const int *flag);

/* Deterministic data of varied compressibility. */
void fill_data(void *buf, size_t len, uint64_t seed);
uint64_t rng_next(uint64_t *state);

/* A fresh directory under /tmp, and its removal with everything in it. */
void make_tmpdir(char *out, size_t len);
void remove_tree(const char *dir);
int count_files(const char *dir);

/* 1 when REDUCE_TEST_SCALE=small (valgrind runs). */
int small_scale(void);

/* The default geometry: 512-byte blocks, 4 KiB io units, 16 KiB chunks. */
void default_params(struct spdk_reduce_vol_params *p);
uint64_t blockcnt_for_chunks(uint64_t chunks);

extern int g_test_failures;

#define CHECK(cond)                                                                         \
	do {                                                                                \
		if (!(cond)) {                                                              \
			fprintf(stderr, "    %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, \
				#cond);                                                     \
			g_test_failures++;                                                  \
		}                                                                           \
	} while (0)

#define CHECK_EQ(a, b)                                                                      \
	do {                                                                                \
		long long _a = (long long)(a), _b = (long long)(b);                         \
		if (_a != _b) {                                                             \
			fprintf(stderr, "    %s:%d: %s == %s failed: %lld != %lld\n", __FILE__, \
				__LINE__, #a, #b, _a, _b);                                  \
			g_test_failures++;                                                  \
		}                                                                           \
	} while (0)

/* Each test takes the completion mode: 0 immediate, 1 deferred. */
typedef void (*test_fn)(int deferred);

#endif

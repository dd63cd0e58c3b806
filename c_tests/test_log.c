/* The log hook, reduce_set_log_fn: a message for every call the library refuses, at
 * the C boundary (NULL arguments, bad iovecs, NULL callbacks) and in the core (a load
 * that finds no volume), and a NULL function restoring the default. */
#define _GNU_SOURCE
#include <string.h>

#include "harness.h"

struct log {
	int count;
	int errors;  /* messages at REDUCE_LOG_ERROR */
	int bad_level;
	char all[8192]; /* every message, one per line (truncated when full) */
};

static void capture(void *ctx, int level, const char *msg)
{
	struct log *l = ctx;
	size_t used = strlen(l->all);
	l->count++;
	l->errors += level == REDUCE_LOG_ERROR;
	l->bad_level += level != REDUCE_LOG_ERROR && level != REDUCE_LOG_WARN;
	/* msg is valid during this call only: copy it. */
	snprintf(l->all + used, sizeof(l->all) - used, "%s\n", msg);
}

static void log_reset(struct log *l)
{
	memset(l, 0, sizeof(*l));
}

/* One more error message than `before`, mentioning every word given (case-insensitive). */
#define CHECK_LOGGED(l, before, ...)                                                        \
	do {                                                                                \
		const char *_words[] = {__VA_ARGS__};                                       \
		CHECK((l)->errors > (before));                                              \
		for (size_t _i = 0; _i < sizeof(_words) / sizeof(_words[0]); _i++) {        \
			CHECK(strcasestr((l)->all, _words[_i]) != NULL);                    \
		}                                                                           \
		if ((l)->errors <= (before)) {                                              \
			fprintf(stderr, "    log so far:\n%s", (l)->all);                       \
		}                                                                           \
	} while (0)

static void op_status(void *arg, int status)
{
	*(int *)arg = status;
}

static void handle_status(void *arg, struct spdk_reduce_vol *vol, int status)
{
	*(int *)arg = vol == NULL ? status : 1;
}

TEST(log_boundary_refusals)
{
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	struct spdk_reduce_vol *vol = NULL;
	struct log l;
	char dir[64];
	uint8_t buf[512];
	struct iovec iov = {buf, sizeof(buf)};
	int status, before;

	log_reset(&l);
	reduce_set_log_fn(capture, &l);

	/* Init with a NULL pm_file_dir: -EINVAL, and a message naming the argument. */
	make_tmpdir(dir, sizeof(dir));
	mem_dev_init(&d, DEF_BLOCKLEN, blockcnt_for_chunks(16), deferred);
	default_params(&p);
	before = l.errors;
	CHECK_EQ(h_init(&d, &p, NULL, &vol), -EINVAL);
	CHECK(vol == NULL);
	CHECK_LOGGED(&l, before, "spdk_reduce_vol_init", "pm_file_dir");

	/* A device with a NULL member: the message names the member. */
	d.dev.compress = NULL;
	before = l.errors;
	CHECK_EQ(h_init(&d, &p, dir, &vol), -EINVAL);
	CHECK_LOGGED(&l, before, "compress");
	mem_dev_free(&d);
	remove_tree(dir);

	/* A load with a NULL callback does nothing (no I/O) and says so. */
	REQUIRE_EQ(rig_open(&d, &p, dir, sizeof(dir), 16, deferred, &vol), 0, out);
	CHECK_EQ(h_unload(&d, vol), 0);
	vol = NULL;
	uint64_t reads = d.count[OP_READ];
	before = l.errors;
	spdk_reduce_vol_load(&d.dev, NULL, NULL);
	mem_dev_poll_all(&d);
	CHECK_EQ(d.count[OP_READ], reads);
	CHECK_LOGGED(&l, before, "spdk_reduce_vol_load", "cb_fn");
	REQUIRE_EQ(h_load(&d, &vol), 0, out);

	/* Bad iovecs: -EINVAL with a message about them. */
	before = l.errors;
	CHECK_EQ(h_io(&d, vol, 0, NULL, 1, 0, 1), -EINVAL);
	CHECK_LOGGED(&l, before, "spdk_reduce_vol_readv", "iovec");
	before = l.errors;
	CHECK_EQ(h_io(&d, vol, 1, &iov, -1, 0, 1), -EINVAL);
	CHECK_LOGGED(&l, before, "spdk_reduce_vol_writev", "iovec");

	/* Reads and writes with a NULL callback: nothing happens, and it is logged. */
	uint64_t ops = d.count[OP_READ] + d.count[OP_WRITE];
	before = l.errors;
	spdk_reduce_vol_readv(vol, &iov, 1, 0, 1, NULL, NULL);
	spdk_reduce_vol_writev(vol, &iov, 1, 0, 1, NULL, NULL);
	mem_dev_poll_all(&d);
	CHECK_EQ(d.count[OP_READ] + d.count[OP_WRITE], ops);
	CHECK_EQ(l.errors, before + 2);
	CHECK_LOGGED(&l, before, "spdk_reduce_vol_writev", "cb_fn");

	/* NULL volumes. */
	before = l.errors;
	status = 1;
	spdk_reduce_vol_unload(NULL, op_status, &status);
	CHECK_EQ(status, -EINVAL);
	CHECK_LOGGED(&l, before, "spdk_reduce_vol_unload", "vol");
	before = l.errors;
	status = 1;
	spdk_reduce_vol_destroy(NULL, op_status, &status);
	CHECK_EQ(status, -EINVAL);
	CHECK_LOGGED(&l, before, "spdk_reduce_vol_destroy", "backing_dev");

	/* The built-in codec with no way to complete. */
	before = l.errors;
	reduce_zstd_compress(&d.dev, &iov, 1, &iov, 1, NULL);
	CHECK_LOGGED(&l, before, "reduce_zstd_compress", "args");

	/* A NULL function restores the default: nothing more arrives here. */
	reduce_set_log_fn(NULL, NULL);
	int count = l.count;
	status = 1;
	spdk_reduce_vol_load(NULL, handle_status, &status);
	CHECK_EQ(status, -EINVAL);
	CHECK_EQ(l.count, count);
	CHECK_EQ(l.bad_level, 0);
out:
	reduce_set_log_fn(NULL, NULL);
	rig_close(&d, vol, dir);
}

/* A load refused by the core: -EILSEQ for a device whose signature is gone, and a
 * message that names the check that failed. */
TEST(log_refused_load_names_check)
{
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	struct spdk_reduce_vol *vol = NULL;
	struct log l;
	char dir[64];

	log_reset(&l);
	REQUIRE_EQ(rig_open(&d, &p, dir, sizeof(dir), 16, deferred, &vol), 0, out);
	CHECK_EQ(h_unload(&d, vol), 0);
	vol = NULL;
	d.image[0] ^= 0xff; /* "SPDKREDU" no more */
	reduce_set_log_fn(capture, &l);
	CHECK_EQ(h_load(&d, &vol), -EILSEQ);
	CHECK(vol == NULL);
	CHECK_LOGGED(&l, 0, "signature");
	CHECK_EQ(l.bad_level, 0);
out:
	reduce_set_log_fn(NULL, NULL);
	rig_close(&d, vol, dir);
}

/* Re-entrancy: a chain of 10,000 requests each submitted from the previous one's
 * completion callback (the original asserted when the device completed inside a
 * read-modify-write, and recursed once per request), 1,000 requests submitted at once
 * (the original failed at 256 with -ENOMEM), a long queue on one chunk, I/O from the
 * init/load callbacks, and unload from inside a completion callback. */
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define CHUNKS 16
#define BPC DEF_BPC
#define CHUNK DEF_CHUNK

struct chain {
	struct spdk_reduce_vol *vol;
	uint8_t *model;
	uint8_t buf[CHUNK];
	struct iovec iov[2];
	uint64_t offset, blocks;
	int step, steps, write, failures, done, depth, max_depth;
	uint64_t rng;
};

static void chain_next(struct chain *c);

static void chain_done(void *arg, int status)
{
	struct chain *c = arg;
	if (status != 0) {
		if (c->failures++ < 5) {
			fprintf(stderr, "    step %d: status %d\n", c->step, status);
		}
	} else if (c->write) {
		memcpy(c->model + c->offset * 512, c->buf, c->blocks * 512);
	} else if (memcmp(c->buf, c->model + c->offset * 512, c->blocks * 512) != 0) {
		if (c->failures++ < 5) {
			fprintf(stderr, "    step %d: wrong data\n", c->step);
		}
	}
	if (++c->step == c->steps) {
		c->done = 1;
		return;
	}
	c->depth++;
	if (c->depth > c->max_depth) {
		c->max_depth = c->depth;
	}
	chain_next(c);
	c->depth--;
}

/* Alternates writes and reads: whole-chunk writes, partial (read-modify-write) writes
 * into written and fresh chunks, reads of any range; two iovecs each. */
static void chain_next(struct chain *c)
{
	uint64_t chunk = rng_next(&c->rng) % CHUNKS;
	int kind = c->step % 4; /* 0: whole write, 1: read, 2: partial write, 3: read */
	uint64_t first = kind == 0 ? 0 : rng_next(&c->rng) % BPC;
	c->blocks = kind == 0 ? BPC : 1 + rng_next(&c->rng) % (BPC - first);
	c->offset = chunk * BPC + first;
	c->write = kind % 2 == 0;
	size_t len = c->blocks * 512, cut = rng_next(&c->rng) % (len + 1);
	c->iov[0] = (struct iovec){c->buf, cut};
	c->iov[1] = (struct iovec){c->buf + cut, len - cut};
	if (c->write) {
		fill_data(c->buf, len, (uint64_t)c->step);
		spdk_reduce_vol_writev(c->vol, c->iov, 2, c->offset, c->blocks, chain_done, c);
	} else {
		memset(c->buf, 0x5A, len);
		spdk_reduce_vol_readv(c->vol, c->iov, 2, c->offset, c->blocks, chain_done, c);
	}
}

TEST(reentrancy_chain_10000)
{
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	char dir[64];
	struct chain *c = calloc(1, sizeof(*c));
	c->model = calloc(CHUNKS, CHUNK);

	REQUIRE_EQ(rig_open(&d, &p, dir, sizeof(dir), CHUNKS, deferred, &c->vol), 0, out);
	c->steps = SCALE(10000, 1000);
	c->rng = 99 + (uint64_t)deferred;
	chain_next(c);
	poll_until(&d, &c->done);
	CHECK_EQ(c->step, c->steps);
	CHECK_EQ(c->failures, 0);
	/* Immediate mode: the whole chain ran inside the first submission; the library
	 * must not have recursed through our callback (it calls back from a drain loop,
	 * so our callback's nesting stays shallow). */
	if (!deferred) {
		CHECK(c->max_depth < 64);
	}
	CHECK_EQ(h_check(&d, c->vol, NULL), 0);
	/* Everything the chain wrote, after a reload. */
	CHECK_EQ(h_unload(&d, c->vol), 0);
	c->vol = NULL;
	REQUIRE_EQ(h_load(&d, &c->vol), 0, out);
	uint8_t *got = malloc(CHUNK);
	for (uint64_t k = 0; k < CHUNKS; k++) {
		CHECK_EQ(h_read(&d, c->vol, got, k * BPC, BPC), 0);
		CHECK(memcmp(got, c->model + k * CHUNK, CHUNK) == 0);
	}
	free(got);
out:
	rig_close(&d, c->vol, dir);
	free(c->model);
	free(c);
}

struct counter {
	int ok, failed, last_failure;
};

static void count_done(void *arg, int status)
{
	struct counter *n = arg;
	if (status == 0) {
		n->ok++;
	} else {
		n->failed++;
		n->last_failure = status;
	}
}

TEST(reentrancy_1000_at_once)
{
	enum { N = 1000 };
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	struct spdk_reduce_vol *vol = NULL;
	char dir[64];
	struct counter n = {0};
	uint8_t *bufs = malloc((size_t)N * 512), got[512];
	struct iovec *iov = calloc(N, sizeof(*iov));

	REQUIRE_EQ(rig_open(&d, &p, dir, sizeof(dir), CHUNKS, deferred, &vol), 0, out);
	/* Blocks spread over every chunk, two writes per block: all submitted before any
	 * completes (in deferred mode). */
	for (int i = 0; i < N; i++) {
		fill_data(bufs + (size_t)i * 512, 512, (uint64_t)i);
		/* Never all zeros: zeros into an empty chunk complete at once. */
		bufs[(size_t)i * 512] |= 1;
		iov[i] = (struct iovec){bufs + (size_t)i * 512, 512};
		spdk_reduce_vol_writev(vol, &iov[i], 1, (uint64_t)(i % (CHUNKS * BPC)), 1, count_done,
				       &n);
	}
	if (deferred) {
		CHECK_EQ(n.ok + n.failed, 0); /* nothing completed before polling */
	}
	mem_dev_poll_all(&d);
	CHECK_EQ(n.ok, N);
	CHECK_EQ(n.failed, 0);
	CHECK_EQ(n.last_failure, 0);
	/* The last write to each block wins. */
	for (int b = 0; b < CHUNKS * BPC; b++) {
		int last = b + ((N - 1 - b) / (CHUNKS * BPC)) * (CHUNKS * BPC);
		CHECK_EQ(h_read(&d, vol, got, (uint64_t)b, 1), 0);
		if (memcmp(got, bufs + (size_t)last * 512, 512) != 0) {
			CHECK(!"last write wins");
			break;
		}
	}
	CHECK_EQ(h_check(&d, vol, NULL), 0);
	/* 1000 reads at once too. */
	uint8_t *rbufs = malloc((size_t)N * 512);
	struct counter rn = {0};
	for (int i = 0; i < N; i++) {
		iov[i] = (struct iovec){rbufs + (size_t)i * 512, 512};
		spdk_reduce_vol_readv(vol, &iov[i], 1, (uint64_t)(i % (CHUNKS * BPC)), 1, count_done,
				      &rn);
	}
	mem_dev_poll_all(&d);
	CHECK_EQ(rn.ok, N);
	for (int i = 0; i < N; i++) {
		int b = i % (CHUNKS * BPC), last = b + ((N - 1 - b) / (CHUNKS * BPC)) * (CHUNKS * BPC);
		if (memcmp(rbufs + (size_t)i * 512, bufs + (size_t)last * 512, 512) != 0) {
			CHECK(!"1000 reads at once: data");
			break;
		}
	}
	free(rbufs);
out:
	rig_close(&d, vol, dir);
	free(bufs);
	free(iov);
}

/* 600 requests to one chunk at once: alternating partial writes and reads. Each read
 * must see exactly the writes submitted before it. */
struct ordered_read {
	uint8_t buf[512];
	uint8_t expect[512];
	int *bad;
};

static void ordered_read_done(void *arg, int status)
{
	struct ordered_read *r = arg;
	if (status != 0 || memcmp(r->buf, r->expect, 512) != 0) {
		(*r->bad)++;
	}
}

TEST(reentrancy_one_chunk_queue)
{
	enum { N = 600 };
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	struct spdk_reduce_vol *vol = NULL;
	char dir[64];
	uint8_t model[CHUNK] = {0};
	uint8_t *wbufs = malloc((size_t)N * 512);
	struct ordered_read *reads = calloc(N, sizeof(*reads));
	struct iovec *iov = calloc(N, sizeof(*iov));
	struct counter w = {0};
	int bad = 0;
	uint64_t rng = 5;

	REQUIRE_EQ(rig_open(&d, &p, dir, sizeof(dir), CHUNKS, deferred, &vol), 0, out);
	for (int i = 0; i < N; i++) {
		uint64_t block = rng_next(&rng) % BPC;
		if (i % 2 == 0) {
			fill_data(wbufs + (size_t)i * 512, 512, (uint64_t)i + 1000);
			memcpy(model + block * 512, wbufs + (size_t)i * 512, 512);
			iov[i] = (struct iovec){wbufs + (size_t)i * 512, 512};
			spdk_reduce_vol_writev(vol, &iov[i], 1, 3 * BPC + block, 1, count_done, &w);
		} else {
			reads[i].bad = &bad;
			memcpy(reads[i].expect, model + block * 512, 512);
			iov[i] = (struct iovec){reads[i].buf, 512};
			spdk_reduce_vol_readv(vol, &iov[i], 1, 3 * BPC + block, 1, ordered_read_done,
					      &reads[i]);
		}
	}
	mem_dev_poll_all(&d);
	CHECK_EQ(w.ok, N / 2);
	CHECK_EQ(bad, 0);
	uint8_t got[CHUNK];
	CHECK_EQ(h_read(&d, vol, got, 3 * BPC, BPC), 0);
	CHECK(memcmp(got, model, CHUNK) == 0);
out:
	rig_close(&d, vol, dir);
	free(wbufs);
	free(reads);
	free(iov);
}

struct unload_ctx {
	struct spdk_reduce_vol *vol;
	int io_status, unload_status, unloaded, calls;
};

static void unloaded(void *arg, int status)
{
	struct unload_ctx *u = arg;
	u->unload_status = status;
	u->unloaded = 1;
	u->calls++;
}

static void io_then_unload(void *arg, int status)
{
	struct unload_ctx *u = arg;
	u->io_status = status;
	spdk_reduce_vol_unload(u->vol, unloaded, u);
}

TEST(reentrancy_unload_from_callback)
{
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	char dir[64];
	struct unload_ctx u = {0};
	uint8_t buf[CHUNK], got[CHUNK];
	struct iovec iov = {buf, sizeof(buf)};
	struct spdk_reduce_vol *vol = NULL;

	REQUIRE_EQ(rig_open(&d, &p, dir, sizeof(dir), CHUNKS, deferred, &u.vol), 0, out);
	/* From a write's completion (a partial write: read-modify-write). */
	fill_data(buf, sizeof(buf), 5);
	CHECK_EQ(h_write(&d, u.vol, buf, 0, BPC), 0);
	iov.iov_len = 512;
	spdk_reduce_vol_writev(u.vol, &iov, 1, 7, 1, io_then_unload, &u);
	poll_until(&d, &u.unloaded);
	CHECK_EQ(u.io_status, 0);
	CHECK_EQ(u.unload_status, 0);
	CHECK_EQ(u.calls, 1);
	memcpy(got, buf, CHUNK);
	memcpy(got + 7 * 512, buf, 512);
	/* It really closed: it loads again, with the data. */
	REQUIRE_EQ(h_load(&d, &vol), 0, out);
	CHECK_EQ(h_read(&d, vol, buf, 0, BPC), 0);
	CHECK(memcmp(got, buf, CHUNK) == 0);

	/* From a read's completion. */
	u = (struct unload_ctx){.vol = vol};
	vol = NULL;
	iov = (struct iovec){buf, CHUNK};
	spdk_reduce_vol_readv(u.vol, &iov, 1, 0, BPC, io_then_unload, &u);
	poll_until(&d, &u.unloaded);
	CHECK_EQ(u.io_status, 0);
	CHECK_EQ(u.unload_status, 0);
	CHECK(memcmp(got, buf, CHUNK) == 0);
	REQUIRE_EQ(h_load(&d, &vol), 0, out);
out:
	rig_close(&d, vol, dir);
}

/* I/O issued from inside the init and load callbacks. */
struct lifecycle_ctx {
	struct spdk_reduce_vol *vol;
	uint8_t buf[CHUNK];
	struct iovec iov;
	int status, io_status, io_done;
};

static void io_done_cb(void *arg, int status)
{
	struct lifecycle_ctx *c = arg;
	c->io_status = status;
	c->io_done = 1;
}

static void opened_then_io(void *arg, struct spdk_reduce_vol *vol, int status)
{
	struct lifecycle_ctx *c = arg;
	c->vol = vol;
	c->status = status;
	if (status == 0) {
		c->iov = (struct iovec){c->buf, CHUNK};
		spdk_reduce_vol_writev(vol, &c->iov, 1, 2 * BPC, BPC, io_done_cb, c);
	} else {
		c->io_done = 1;
	}
}

TEST(reentrancy_io_from_init_and_load_callbacks)
{
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	char dir[64];
	struct lifecycle_ctx c = {0};
	uint8_t got[CHUNK];

	make_tmpdir(dir, sizeof(dir));
	mem_dev_init(&d, DEF_BLOCKLEN, blockcnt_for_chunks(CHUNKS), deferred);
	default_params(&p);
	fill_data(c.buf, CHUNK, 77);
	spdk_reduce_vol_init(&p, &d.dev, dir, opened_then_io, &c);
	poll_until(&d, &c.io_done);
	CHECK_EQ(c.status, 0);
	CHECK_EQ(c.io_status, 0);
	REQUIRE_EQ(c.status, 0, out);
	CHECK_EQ(h_read(&d, c.vol, got, 2 * BPC, BPC), 0);
	CHECK(memcmp(got, c.buf, CHUNK) == 0);
	CHECK_EQ(h_unload(&d, c.vol), 0);
	c.vol = NULL;

	fill_data(c.buf, CHUNK, 78);
	c.io_done = 0;
	spdk_reduce_vol_load(&d.dev, opened_then_io, &c);
	poll_until(&d, &c.io_done);
	CHECK_EQ(c.status, 0);
	CHECK_EQ(c.io_status, 0);
	REQUIRE_EQ(c.status, 0, out);
	CHECK_EQ(h_read(&d, c.vol, got, 2 * BPC, BPC), 0);
	CHECK(memcmp(got, c.buf, CHUNK) == 0);
out:
	rig_close(&d, c.vol, dir);
}

/* Many requests in flight; the callback of the last one to complete unloads. */
struct drain_ctx {
	struct spdk_reduce_vol *vol;
	int left, failed, unload_status, unloaded;
};

static void drain_unloaded(void *arg, int status)
{
	struct drain_ctx *c = arg;
	c->unload_status = status;
	c->unloaded = 1;
}

static void drain_done(void *arg, int status)
{
	struct drain_ctx *c = arg;
	c->failed += status != 0;
	if (--c->left == 0) {
		spdk_reduce_vol_unload(c->vol, drain_unloaded, c);
	}
}

TEST(reentrancy_unload_from_last_of_many)
{
	enum { N = 200 };
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	char dir[64];
	struct drain_ctx c = {0};
	uint8_t *bufs = malloc((size_t)N * 2048);
	struct iovec *iov = calloc(N, sizeof(*iov));
	struct spdk_reduce_vol *vol = NULL;

	REQUIRE_EQ(rig_open(&d, &p, dir, sizeof(dir), CHUNKS, deferred, &c.vol), 0, out);
	c.left = N;
	for (int i = 0; i < N; i++) {
		fill_data(bufs + (size_t)i * 2048, 2048, (uint64_t)i);
		iov[i] = (struct iovec){bufs + (size_t)i * 2048, 2048};
		uint64_t off = (uint64_t)(i % CHUNKS) * BPC + (uint64_t)(i / CHUNKS) % 8 * 4;
		spdk_reduce_vol_writev(c.vol, &iov[i], 1, off, 4, drain_done, &c);
	}
	poll_until(&d, &c.unloaded);
	CHECK_EQ(c.failed, 0);
	CHECK_EQ(c.unload_status, 0);
	c.vol = NULL;
	REQUIRE_EQ(h_load(&d, &vol), 0, out);
	CHECK_EQ(h_check(&d, vol, NULL), 0);
out:
	rig_close(&d, vol ? vol : c.vol, dir);
	free(bufs);
	free(iov);
}

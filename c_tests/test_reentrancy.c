/* Re-entrancy: long chains of requests each submitted from the previous one's
 * completion (the original failed at 256 in flight and asserted when the device
 * completed inside a read-modify-write), many requests at once, and unload from a
 * completion callback. */
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "tests.h"

#define CHUNKS 16
#define BPC 32
#define CHUNK 16384

struct chain {
	struct spdk_reduce_vol *vol;
	uint8_t *model;
	uint8_t buf[CHUNK];
	struct iovec iov;
	uint64_t offset, blocks;
	int step, steps, write, failures, done;
	uint64_t rng;
};

static void chain_next(struct chain *c);

static void chain_done(void *arg, int status)
{
	struct chain *c = arg;
	if (status != 0) {
		c->failures++;
	} else if (c->write) {
		memcpy(c->model + c->offset * 512, c->buf, c->blocks * 512);
	} else if (memcmp(c->buf, c->model + c->offset * 512, c->blocks * 512) != 0) {
		c->failures++;
	}
	if (++c->step == c->steps) {
		c->done = 1;
		return;
	}
	chain_next(c);
}

/* Alternates whole-chunk writes, partial (read-modify-write) writes and reads. */
static void chain_next(struct chain *c)
{
	uint64_t chunk = rng_next(&c->rng) % CHUNKS;
	int kind = c->step % 3;
	uint64_t first = kind == 0 ? 0 : rng_next(&c->rng) % BPC;
	c->blocks = kind == 0 ? BPC : 1 + rng_next(&c->rng) % (BPC - first);
	c->offset = chunk * BPC + first;
	c->write = kind != 2;
	c->iov = (struct iovec){c->buf, c->blocks * 512};
	if (c->write) {
		fill_data(c->buf, c->blocks * 512, (uint64_t)c->step);
		spdk_reduce_vol_writev(c->vol, &c->iov, 1, c->offset, c->blocks, chain_done, c);
	} else {
		spdk_reduce_vol_readv(c->vol, &c->iov, 1, c->offset, c->blocks, chain_done, c);
	}
}

void test_chain(int deferred)
{
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	char dir[64];
	struct chain *c = calloc(1, sizeof(*c));

	CHECK_EQ(rig_open(&d, &p, dir, sizeof(dir), CHUNKS, deferred, &c->vol), 0);
	c->model = calloc(CHUNKS, CHUNK);
	c->steps = small_scale() ? 1500 : 10000;
	c->rng = 99;
	chain_next(c);
	poll_until(&d, &c->done);
	CHECK_EQ(c->step, c->steps);
	CHECK_EQ(c->failures, 0);
	CHECK_EQ(h_check(&d, c->vol, NULL), 0);
	CHECK_EQ(h_unload(&d, c->vol), 0);
	mem_dev_free(&d);
	remove_tree(dir);
	free(c->model);
	free(c);
}

struct counter {
	int ok, failed;
};

static void count_done(void *arg, int status)
{
	struct counter *n = arg;
	status == 0 ? n->ok++ : n->failed++;
}

void test_many_at_once(int deferred)
{
	enum { N = 1000 };
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	struct spdk_reduce_vol *vol = NULL;
	char dir[64];
	struct counter n = {0};
	uint8_t *bufs = malloc((size_t)N * 512), got[512];
	struct iovec *iov = calloc(N, sizeof(*iov));

	CHECK_EQ(rig_open(&d, &p, dir, sizeof(dir), CHUNKS, deferred, &vol), 0);
	/* Blocks spread over every chunk, several per chunk: all submitted before any
	 * completes (in deferred mode). */
	for (int i = 0; i < N; i++) {
		fill_data(bufs + (size_t)i * 512, 512, (uint64_t)i);
		iov[i] = (struct iovec){bufs + (size_t)i * 512, 512};
		spdk_reduce_vol_writev(vol, &iov[i], 1, (uint64_t)(i % (CHUNKS * BPC)), 1, count_done,
				       &n);
	}
	mem_dev_poll_all(&d);
	CHECK_EQ(n.ok, N);
	CHECK_EQ(n.failed, 0);
	/* The last write to each block wins. */
	for (int b = 0; b < CHUNKS * BPC; b += 37) {
		int last = b + ((N - 1 - b) / (CHUNKS * BPC)) * (CHUNKS * BPC);
		CHECK_EQ(h_read(&d, vol, got, (uint64_t)b, 1), 0);
		CHECK(memcmp(got, bufs + (size_t)last * 512, 512) == 0);
	}
	CHECK_EQ(h_unload(&d, vol), 0);
	mem_dev_free(&d);
	remove_tree(dir);
	free(bufs);
	free(iov);
}

struct unload_ctx {
	struct spdk_reduce_vol *vol;
	int write_status, unload_status, unloaded;
};

static void unloaded(void *arg, int status)
{
	struct unload_ctx *u = arg;
	u->unload_status = status;
	u->unloaded = 1;
}

static void write_then_unload(void *arg, int status)
{
	struct unload_ctx *u = arg;
	u->write_status = status;
	spdk_reduce_vol_unload(u->vol, unloaded, u);
}

void test_unload_from_callback(int deferred)
{
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	char dir[64];
	struct unload_ctx u = {0};
	uint8_t buf[CHUNK];
	struct iovec iov = {buf, sizeof(buf)};

	CHECK_EQ(rig_open(&d, &p, dir, sizeof(dir), CHUNKS, deferred, &u.vol), 0);
	fill_data(buf, sizeof(buf), 5);
	spdk_reduce_vol_writev(u.vol, &iov, 1, 0, BPC, write_then_unload, &u);
	poll_until(&d, &u.unloaded);
	CHECK_EQ(u.write_status, 0);
	CHECK_EQ(u.unload_status, 0);
	/* It really closed: it loads again, with the data. */
	struct spdk_reduce_vol *vol = NULL;
	uint8_t got[CHUNK];
	CHECK_EQ(h_load(&d, &vol), 0);
	if (vol) {
		CHECK_EQ(h_read(&d, vol, got, 0, BPC), 0);
		CHECK(memcmp(got, buf, CHUNK) == 0);
		CHECK_EQ(h_unload(&d, vol), 0);
	}
	mem_dev_free(&d);
	remove_tree(dir);
}

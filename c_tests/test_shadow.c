/* Randomized reads and writes against a shadow byte array of the whole volume: partial
 * chunks, 1 to 4 iovecs cut at arbitrary bytes, overwrites, and in DEFERRED mode up to
 * 32 requests in flight with completions polled at random moments. Writes update the
 * model at submission and reads capture the model at submission: requests to one chunk
 * run in submission order, so that is exactly what a read must see. Every read is
 * verified; at the end the volume is reloaded and compared whole. Run in three
 * geometries (those of the fixtures). */
#include <stdlib.h>
#include <string.h>

#include "harness.h"

struct geometry {
	const char *name;
	uint32_t blocklen, io_unit, chunk, lbs;
	uint64_t chunks;
};

static const struct geometry geometries[] = {
	{"bl512-io4k-c16k-lb512", 512, 4096, 16384, 512, 48},
	{"bl4k-io4k-c16k-lb4k", 4096, 4096, 16384, 4096, 48},
	{"bl512-io16k-c64k-lb4k", 512, 16384, 65536, 4096, 16},
};

struct shadow_req {
	struct iovec iov[4];
	int iovcnt;
	uint8_t *buf;
	uint8_t *expect; /* reads: the model's content at submission; writes: the data */
	size_t len;
	int write;
	uint64_t offset;
	int *in_flight;
	int *errors;
};

static void shadow_done(void *arg, int status)
{
	struct shadow_req *r = arg;
	if (status != 0) {
		fprintf(stderr, "    %s at block %llu: %d\n", r->write ? "write" : "read",
			(unsigned long long)r->offset, status);
		(*r->errors)++;
	} else if (r->write && memcmp(r->buf, r->expect, r->len) != 0) {
		fprintf(stderr, "    write at block %llu: the library changed the caller's buffer\n",
			(unsigned long long)r->offset);
		(*r->errors)++;
	} else if (!r->write && memcmp(r->buf, r->expect, r->len) != 0) {
		fprintf(stderr, "    read at block %llu (%zu bytes, %d iovecs): wrong data\n",
			(unsigned long long)r->offset, r->len, r->iovcnt);
		(*r->errors)++;
	}
	(*r->in_flight)--;
	free(r->buf);
	free(r->expect);
	free(r);
}

static void shadow_run(const struct geometry *g, int deferred, int ops)
{
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	struct spdk_reduce_vol *vol = NULL;
	char dir[64];
	uint64_t chunk_bytes = g->chunk, vol_bytes = g->chunks * chunk_bytes;
	uint64_t bpc = g->chunk / g->lbs;
	uint8_t *model = calloc(1, vol_bytes);
	uint64_t rng = 7 + (uint64_t)deferred * 1000 + g->chunk;
	int in_flight = 0, errors = 0, max_depth = deferred ? 32 : 1, before = g_test_failures;

	make_tmpdir(dir, sizeof(dir));
	mem_dev_init(&d, g->blocklen, (g->chunks + 128) * (g->chunk / g->blocklen), deferred);
	memset(&p, 0, sizeof(p));
	p.backing_io_unit_size = g->io_unit;
	p.logical_block_size = g->lbs;
	p.chunk_size = g->chunk;
	REQUIRE_EQ(h_init(&d, &p, dir, &vol), 0, out);
	CHECK_EQ(p.vol_size, vol_bytes);

	for (int op = 0; op < ops; op++) {
		/* A few hot chunks get most requests, so queues form behind busy chunks. */
		uint64_t chunk = rng_next(&rng) % 4 == 0 ? rng_next(&rng) % 3
							 : rng_next(&rng) % g->chunks;
		uint64_t first, blocks;
		switch (rng_next(&rng) % 4) {
		case 0: /* whole chunk */
			first = 0;
			blocks = bpc;
			break;
		case 1: /* one block */
			first = rng_next(&rng) % bpc;
			blocks = 1;
			break;
		default:
			first = rng_next(&rng) % bpc;
			blocks = 1 + rng_next(&rng) % (bpc - first);
		}
		struct shadow_req *r = calloc(1, sizeof(*r));
		r->offset = chunk * bpc + first;
		r->len = blocks * g->lbs;
		r->buf = malloc(r->len);
		r->write = rng_next(&rng) % 2;
		r->in_flight = &in_flight;
		r->errors = &errors;
		uint8_t *shadow = model + r->offset * g->lbs;
		if (r->write) {
			fill_data(r->buf, r->len, rng_next(&rng));
			memcpy(shadow, r->buf, r->len); /* the model as of submission */
			r->expect = malloc(r->len);
			memcpy(r->expect, r->buf, r->len);
		} else {
			memset(r->buf, 0xA5, r->len);
			r->expect = malloc(r->len);
			memcpy(r->expect, shadow, r->len);
		}
		/* 1-4 iovecs cut at arbitrary byte positions (some may be empty). */
		r->iovcnt = 1 + (int)(rng_next(&rng) % 4);
		size_t cuts[5] = {0};
		cuts[r->iovcnt] = r->len;
		for (int k = 1; k < r->iovcnt; k++) {
			cuts[k] = rng_next(&rng) % (r->len + 1);
		}
		for (int k = 1; k < r->iovcnt; k++) { /* sort the inner cuts */
			for (int m = k + 1; m < r->iovcnt; m++) {
				if (cuts[m] < cuts[k]) {
					size_t t = cuts[k];
					cuts[k] = cuts[m];
					cuts[m] = t;
				}
			}
		}
		for (int k = 0; k < r->iovcnt; k++) {
			r->iov[k] = (struct iovec){r->buf + cuts[k], cuts[k + 1] - cuts[k]};
		}
		in_flight++;
		if (r->write) {
			spdk_reduce_vol_writev(vol, r->iov, r->iovcnt, r->offset, blocks, shadow_done, r);
		} else {
			spdk_reduce_vol_readv(vol, r->iov, r->iovcnt, r->offset, blocks, shadow_done, r);
		}
		/* Deliver a random number of completions, more when the queue is deep. */
		uint64_t polls = rng_next(&rng) % 8;
		for (uint64_t k = 0; k < polls && mem_dev_poll(&d); k++) {
		}
		while (in_flight >= max_depth && mem_dev_poll(&d)) {
		}
		if (in_flight >= max_depth) {
			CHECK(!"requests outstanding with nothing to poll");
			break;
		}
		if (op == ops / 2) {
			mem_dev_poll_all(&d);
			CHECK_EQ(h_unload(&d, vol), 0);
			vol = NULL;
			REQUIRE_EQ(h_load(&d, &vol), 0, out);
		}
	}
	mem_dev_poll_all(&d);
	CHECK_EQ(in_flight, 0);
	CHECK_EQ(errors, 0);
	if (deferred) {
		CHECK(d.max_pending > 1);
	}
	CHECK_EQ(h_check(&d, vol, NULL), 0);
	CHECK_EQ(h_unload(&d, vol), 0);
	vol = NULL;
	REQUIRE_EQ(h_load(&d, &vol), 0, out);
	/* The whole volume, one chunk at a time. */
	uint8_t *got = malloc(chunk_bytes);
	int mismatches = 0;
	for (uint64_t c = 0; c < g->chunks; c++) {
		CHECK_EQ(h_read(&d, vol, got, c * bpc, bpc), 0);
		if (memcmp(got, model + c * chunk_bytes, chunk_bytes) != 0) {
			mismatches++;
			fprintf(stderr, "    %s: chunk %llu differs after reload\n", g->name,
				(unsigned long long)c);
		}
	}
	CHECK_EQ(mismatches, 0);
	free(got);
out:
	if (g_test_failures != before) {
		fprintf(stderr, "    (geometry %s)\n", g->name);
	}
	rig_close(&d, vol, dir);
	free(model);
}

TEST(shadow_random_io)
{
	for (size_t i = 0; i < sizeof(geometries) / sizeof(geometries[0]); i++) {
		shadow_run(&geometries[i], deferred, SCALE(3000, 300));
	}
}

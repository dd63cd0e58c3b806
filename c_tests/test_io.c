/* Reads and writes from C: persistence across unload/load, a shadow-model random
 * test with several requests in flight, the checker, and destroy. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "tests.h"

#define CHUNKS 64
#define BPC 32 /* logical blocks per chunk */
#define CHUNK 16384

void test_persistence(int deferred)
{
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	struct spdk_reduce_vol *vol = NULL;
	char dir[64];
	uint8_t *want = malloc(CHUNK * 4), *got = malloc(CHUNK * 4);

	CHECK_EQ(rig_open(&d, &p, dir, sizeof(dir), CHUNKS, deferred, &vol), 0);
	CHECK_EQ(p.vol_size, (uint64_t)CHUNKS * CHUNK);
	CHECK(vol != NULL);
	if (!vol) {
		goto out;
	}
	CHECK(memcmp(spdk_reduce_vol_get_uuid(vol), &p.uuid, 16) == 0);
	CHECK_EQ(spdk_reduce_vol_get_params(vol)->vol_size, p.vol_size);
	CHECK(strncmp(spdk_reduce_vol_get_pm_path(vol), dir, strlen(dir)) == 0);
	CHECK(access(spdk_reduce_vol_get_pm_path(vol), R_OK | W_OK) == 0);

	fill_data(want, CHUNK * 4, 42);
	/* A full chunk, two partial writes and a read across multiple iovecs. */
	CHECK_EQ(h_write(&d, vol, want, 0, BPC), 0);
	CHECK_EQ(h_write(&d, vol, want + CHUNK, BPC + 3, 5), 0);
	CHECK_EQ(h_write(&d, vol, want + 2 * CHUNK, 2 * BPC + 31, 1), 0);
	struct iovec iov[3] = {{got, 1024}, {got + 1024, 512}, {got + 1536, CHUNK - 1536}};
	CHECK_EQ(h_io(&d, vol, 0, iov, 3, 0, BPC), 0);
	CHECK(memcmp(got, want, CHUNK) == 0);
	CHECK_EQ(h_read(&d, vol, got, BPC + 3, 5), 0);
	CHECK(memcmp(got, want + CHUNK, 5 * 512) == 0);
	CHECK(spdk_reduce_vol_get_info(vol)->allocated_io_units > 0);
	spdk_reduce_vol_print_info(vol);

	struct reduce_vol_check_report r;
	CHECK_EQ(h_check(&d, vol, &r), 0);
	CHECK_EQ(r.chunks_in_use, 3);
	CHECK_EQ(r.chunks_read, 3);
	CHECK_EQ(r.problems, 0);

	CHECK_EQ(h_unload(&d, vol), 0);
	vol = NULL;
	CHECK_EQ(h_load(&d, &vol), 0);
	CHECK(vol != NULL);
	if (!vol) {
		goto out;
	}
	CHECK(memcmp(spdk_reduce_vol_get_uuid(vol), &p.uuid, 16) == 0);
	memset(got, 0xEE, CHUNK);
	CHECK_EQ(h_read(&d, vol, got, 0, BPC), 0);
	CHECK(memcmp(got, want, CHUNK) == 0);
	CHECK_EQ(h_read(&d, vol, got, BPC + 3, 5), 0);
	CHECK(memcmp(got, want + CHUNK, 5 * 512) == 0);
	CHECK_EQ(h_read(&d, vol, got, 2 * BPC + 31, 1), 0);
	CHECK(memcmp(got, want + 2 * CHUNK, 512) == 0);
	/* Never written: zeros. */
	CHECK_EQ(h_read(&d, vol, got, 10 * BPC, BPC), 0);
	for (int i = 0; i < CHUNK; i++) {
		if (got[i]) {
			CHECK(got[i] == 0);
			break;
		}
	}
	CHECK_EQ(h_unload(&d, vol), 0);

	/* Destroy: the pm file goes, and the device no longer holds a volume. */
	CHECK_EQ(count_files(dir), 1);
	CHECK_EQ(h_destroy(&d), 0);
	CHECK_EQ(count_files(dir), 0);
	vol = NULL;
	CHECK_EQ(h_load(&d, &vol), -EILSEQ);
	CHECK(vol == NULL);
	CHECK_EQ(h_destroy(&d), -EILSEQ);
out:
	mem_dev_free(&d);
	remove_tree(dir);
	free(want);
	free(got);
}

struct shadow_req {
	struct iovec iov[3];
	uint8_t *buf;
	uint8_t *shadow; /* where this range lives in the model */
	size_t len;
	int write;
	int *in_flight;
};

static void shadow_done(void *arg, int status)
{
	struct shadow_req *r = arg;
	CHECK_EQ(status, 0);
	if (r->write) {
		memcpy(r->shadow, r->buf, r->len);
	} else {
		CHECK(memcmp(r->buf, r->shadow, r->len) == 0);
	}
	(*r->in_flight)--;
	free(r->buf);
	free(r);
}

/* Random requests, up to 16 in flight, against a byte copy of the volume. Requests to
 * one chunk run in submission order, so completing in that order keeps the model
 * exact. */
void test_shadow(int deferred)
{
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	struct spdk_reduce_vol *vol = NULL;
	char dir[64];
	uint8_t *model = calloc(CHUNKS, CHUNK);
	uint64_t rng = 7 + (uint64_t)deferred;
	int in_flight = 0, ops = small_scale() ? 300 : 4000;

	CHECK_EQ(rig_open(&d, &p, dir, sizeof(dir), CHUNKS, deferred, &vol), 0);
	for (int op = 0; op < ops && vol; op++) {
		uint64_t chunk = rng_next(&rng) % 16, first = rng_next(&rng) % BPC;
		uint64_t blocks = 1 + rng_next(&rng) % (BPC - first);
		uint64_t offset = chunk * BPC + first;
		struct shadow_req *r = calloc(1, sizeof(*r));
		r->len = blocks * 512;
		r->buf = malloc(r->len);
		r->shadow = model + offset * 512;
		r->write = rng_next(&rng) % 2;
		r->in_flight = &in_flight;
		if (r->write) {
			fill_data(r->buf, r->len, (uint64_t)op);
		}
		size_t cut = (rng_next(&rng) % blocks) * 512;
		r->iov[0] = (struct iovec){r->buf, cut};
		r->iov[1] = (struct iovec){r->buf + cut, r->len - cut};
		in_flight++;
		if (r->write) {
			spdk_reduce_vol_writev(vol, r->iov, 2, offset, blocks, shadow_done, r);
		} else {
			spdk_reduce_vol_readv(vol, r->iov, 2, offset, blocks, shadow_done, r);
		}
		while (in_flight >= 16) {
			mem_dev_poll(&d);
		}
		if (op == ops / 2) {
			mem_dev_poll_all(&d);
			CHECK_EQ(h_unload(&d, vol), 0);
			CHECK_EQ(h_load(&d, &vol), 0);
		}
	}
	mem_dev_poll_all(&d);
	CHECK_EQ(in_flight, 0);
	if (vol) {
		uint8_t *got = malloc(CHUNK);
		CHECK_EQ(h_unload(&d, vol), 0);
		CHECK_EQ(h_load(&d, &vol), 0);
		for (int c = 0; c < CHUNKS && vol; c++) {
			CHECK_EQ(h_read(&d, vol, got, (uint64_t)c * BPC, BPC), 0);
			CHECK(memcmp(got, model + (size_t)c * CHUNK, CHUNK) == 0);
		}
		CHECK_EQ(h_check(&d, vol, NULL), 0);
		CHECK_EQ(h_unload(&d, vol), 0);
		free(got);
	}
	mem_dev_free(&d);
	remove_tree(dir);
	free(model);
}

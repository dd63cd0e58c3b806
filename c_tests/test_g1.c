/* Fixture g1's pm file has the original's size, 28672 bytes: room for 512 chunk maps
 * where the fixed formula would have 640. A write never replaces a chunk in place, so
 * overwrites need spare chunk maps; the library holds back one per chunk holding data,
 * up to 128. So writes to chunks never written take maps until 512 - 128 = 384 chunks
 * hold data, then fail with -ENOSPC, holding nothing; overwrites of the chunks holding
 * data keep working, as many times as asked. The file is never grown or written past
 * its end. Everything that was written reads back, before and after a reload. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fixture.h"

#define CHUNK 16384
#define BPC 32
#define CHUNKS 512
#define HELD_LIMIT (512 - 128)

static void collect(void *arg, int status)
{
	*(int *)arg = status;
}

/* Overwrites chunk c (whole, or a few blocks of it) with fresh data; updates the model
 * on success. */
static int overwrite(struct mem_dev *d, struct spdk_reduce_vol *vol, uint8_t *model, uint64_t c,
		     uint64_t *s)
{
	uint8_t buf[CHUNK];
	uint64_t first = rng_next(s) % 3 == 0 ? rng_next(s) % BPC : 0;
	uint64_t len = first ? 1 + rng_next(s) % (BPC - first) : BPC;
	fill_data(buf, (size_t)len * 512, rng_next(s));
	buf[0] |= 1; /* never all zeros: that would empty the chunk and free its map */
	int rc = h_write(d, vol, buf, c * BPC + first, len);
	if (rc == 0) {
		memcpy(model + c * CHUNK + first * 512, buf, (size_t)len * 512);
	}
	return rc;
}

static int verify(struct mem_dev *d, struct spdk_reduce_vol *vol, const uint8_t *model)
{
	uint8_t got[CHUNK];
	int mismatches = 0;
	for (uint64_t c = 0; c < CHUNKS; c++) {
		CHECK_EQ(h_read(d, vol, got, c * BPC, BPC), 0);
		mismatches += memcmp(got, model + c * CHUNK, CHUNK) != 0;
	}
	return mismatches;
}

TEST(g1_undersized_pm)
{
	struct mem_dev d;
	struct loaded_fixture lf;
	struct spdk_reduce_vol *vol = NULL;
	uint8_t chunk[CHUNK];
	uint8_t held[CHUNKS] = {0};
	int enospc = 0, ok = 0;
	uint64_t s = 77;

	if (fixture_open(&g_fixtures[0], &d, deferred, &lf)) {
		return;
	}
	CHECK_EQ(lf.pm_size, 28672);
	REQUIRE_EQ(h_load(&d, &vol), 0, out);
	/* 166 chunks hold data; 218 of the 346 fresh ones can be written, then -ENOSPC. */
	for (uint64_t c = 0; c < CHUNKS; c++) {
		fill_random(chunk, sizeof(chunk), rng_next(&s));
		uint64_t units = h_units(vol);
		int rc = h_write(&d, vol, chunk, c * BPC, BPC);
		if (rc == 0) {
			memcpy(lf.expected + c * CHUNK, chunk, CHUNK);
			held[c] = 1;
			ok++;
		} else {
			CHECK_EQ(rc, -ENOSPC);
			CHECK_EQ(h_units(vol), units);
			enospc++;
		}
	}
	CHECK_EQ(ok, HELD_LIMIT);
	CHECK_EQ(enospc, CHUNKS - HELD_LIMIT);
	struct reduce_vol_check_report r;
	CHECK_EQ(h_check(&d, vol, &r), 0);
	CHECK_EQ(r.chunks_in_use, HELD_LIMIT);
	/* Every chunk holding data overwritten again and again, whole and partial; fresh
	 * ones stay -ENOSPC. */
	for (int round = 0; round < SCALE(4, 1); round++) {
		int failed = 0;
		for (uint64_t c = 0; c < CHUNKS; c++) {
			int rc = overwrite(&d, vol, lf.expected, c, &s);
			if (held[c]) {
				failed += rc != 0;
			} else {
				CHECK_EQ(rc, -ENOSPC);
			}
		}
		CHECK_EQ(failed, 0);
	}
	/* Several at once (in DEFERRED mode all in flight): overwrites succeed, fresh
	 * writes fail, each on its own. */
	int status[16];
	struct iovec iov[16];
	uint8_t *bufs = malloc(16 * CHUNK);
	uint64_t targets[16];
	int n = 0;
	for (uint64_t c = 0; c < CHUNKS && n < 16; c += 7) {
		if (held[c] == (n < 8)) {
			targets[n] = c;
			fill_random(bufs + n * CHUNK, CHUNK, 900 + c);
			iov[n] = (struct iovec){bufs + n * CHUNK, CHUNK};
			status[n] = 1;
			spdk_reduce_vol_writev(vol, &iov[n], 1, c * BPC, BPC, collect, &status[n]);
			n++;
		}
	}
	mem_dev_poll_all(&d);
	CHECK_EQ(n, 16);
	for (int i = 0; i < n; i++) {
		if (i < 8) {
			CHECK_EQ(status[i], 0);
			memcpy(lf.expected + targets[i] * CHUNK, bufs + i * CHUNK, CHUNK);
		} else {
			CHECK_EQ(status[i], -ENOSPC);
		}
	}
	free(bufs);
	CHECK_EQ(file_size(lf.pm_path), 28672);
	CHECK_EQ(verify(&d, vol, lf.expected), 0);
	CHECK_EQ(h_check(&d, vol, &r), 0);
	CHECK_EQ(r.chunks_in_use, HELD_LIMIT);
	CHECK_EQ(r.io_units_referenced, h_units(vol));
	CHECK_EQ(h_unload(&d, vol), 0);
	vol = NULL;
	CHECK_EQ(file_size(lf.pm_path), 28672);
	/* After a reload: the same data; still -ENOSPC for a fresh chunk, overwrites work. */
	REQUIRE_EQ(h_load(&d, &vol), 0, out);
	CHECK_EQ(verify(&d, vol, lf.expected), 0);
	for (uint64_t c = 0; c < CHUNKS; c++) {
		if (!held[c]) {
			CHECK_EQ(h_write(&d, vol, chunk, c * BPC, BPC), -ENOSPC);
			break;
		}
	}
	for (uint64_t c = 0; c < CHUNKS; c += 5) {
		if (held[c]) {
			CHECK_EQ(overwrite(&d, vol, lf.expected, c, &s), 0);
		}
	}
	CHECK_EQ(verify(&d, vol, lf.expected), 0);
	CHECK_EQ(h_unload(&d, vol), 0);
	vol = NULL;
	CHECK_EQ(file_size(lf.pm_path), 28672);
out:
	if (vol) {
		CHECK_EQ(h_unload(&d, vol), 0);
	}
	fixture_close(&d, &lf);
}

/* Fixture g1's pm file has the original's size, 28672 bytes: room for 512 chunk maps
 * where the fixed formula would have 640. Writing every chunk of the volume uses them
 * all; from then on a write that needs a chunk map beyond the end of the file fails
 * with -ENOSPC, holding nothing, and the file is never grown or written past its end.
 * Everything that was written reads back, before and after a reload. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fixture.h"

#define CHUNK 16384
#define BPC 32

static void collect(void *arg, int status)
{
	*(int *)arg = status;
}

TEST(g1_undersized_pm)
{
	struct mem_dev d;
	struct loaded_fixture lf;
	struct spdk_reduce_vol *vol = NULL;
	uint8_t chunk[CHUNK], got[CHUNK];
	int enospc = 0, ok = 0;
	uint64_t s = 77;

	if (fixture_open(&g_fixtures[0], &d, deferred, &lf)) {
		return;
	}
	CHECK_EQ(lf.pm_size, 28672);
	REQUIRE_EQ(h_load(&d, &vol), 0, out);
	/* 166 chunks in use; 346 fresh ones to write take the other 346 maps. The 512th map
	 * is the last: after that nothing can be written, not even an overwrite (it needs a
	 * new map before the old one is freed). */
	for (uint64_t c = 0; c < 512; c++) {
		fill_random(chunk, sizeof(chunk), rng_next(&s));
		uint64_t units = h_units(vol);
		int rc = h_write(&d, vol, chunk, c * BPC, BPC);
		if (rc == 0) {
			memcpy(lf.expected + c * CHUNK, chunk, CHUNK);
			ok++;
		} else {
			CHECK_EQ(rc, -ENOSPC);
			CHECK_EQ(h_units(vol), units);
			enospc++;
		}
	}
	CHECK(enospc > 0);
	CHECK(ok >= 346);
	/* Full of chunk maps: whole, partial, and fresh-chunk writes all -ENOSPC. */
	memset(chunk, 1, sizeof(chunk));
	CHECK_EQ(h_write(&d, vol, chunk, 0, BPC), -ENOSPC);
	CHECK_EQ(h_write(&d, vol, chunk, 5, 1), -ENOSPC);
	CHECK_EQ(h_write(&d, vol, chunk, 511 * BPC + 31, 1), -ENOSPC);
	/* Several at once (in DEFERRED mode all in flight): each fails alone. */
	int status[8];
	struct iovec iov[8];
	for (int i = 0; i < 8; i++) {
		iov[i] = (struct iovec){chunk, CHUNK};
		status[i] = 1;
		spdk_reduce_vol_writev(vol, &iov[i], 1, (uint64_t)i * 60 * BPC, BPC, collect,
				       &status[i]);
	}
	mem_dev_poll_all(&d);
	for (int i = 0; i < 8; i++) {
		CHECK_EQ(status[i], -ENOSPC);
	}
	CHECK_EQ(file_size(lf.pm_path), 28672);
	int mismatches = 0;
	for (uint64_t c = 0; c < 512; c++) {
		CHECK_EQ(h_read(&d, vol, got, c * BPC, BPC), 0);
		mismatches += memcmp(got, lf.expected + c * CHUNK, CHUNK) != 0;
	}
	CHECK_EQ(mismatches, 0);
	struct reduce_vol_check_report r;
	CHECK_EQ(h_check(&d, vol, &r), 0);
	CHECK_EQ(r.chunks_in_use, 512);
	CHECK_EQ(r.io_units_referenced, h_units(vol));
	CHECK_EQ(h_unload(&d, vol), 0);
	vol = NULL;
	CHECK_EQ(file_size(lf.pm_path), 28672);
	/* After a reload: the same data, and still -ENOSPC. */
	REQUIRE_EQ(h_load(&d, &vol), 0, out);
	for (uint64_t c = 0; c < 512; c++) {
		CHECK_EQ(h_read(&d, vol, got, c * BPC, BPC), 0);
		mismatches += memcmp(got, lf.expected + c * CHUNK, CHUNK) != 0;
	}
	CHECK_EQ(mismatches, 0);
	CHECK_EQ(h_write(&d, vol, chunk, 7 * BPC, BPC), -ENOSPC);
	CHECK_EQ(h_unload(&d, vol), 0);
	vol = NULL;
	CHECK_EQ(file_size(lf.pm_path), 28672);
out:
	if (vol) {
		CHECK_EQ(h_unload(&d, vol), 0);
	}
	fixture_close(&d, &lf);
}

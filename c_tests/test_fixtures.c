/* Volumes written by the original libreduce: each loads with the built-in zstd codec,
 * reads back exactly expected.img (whole chunks, and pieces over several iovecs),
 * passes the checker, takes new writes (over old chunks and into fresh ones, whole and
 * partial), and after a reload reads back the updated content. */
#include <stdlib.h>
#include <string.h>

#include "fixture.h"

static void fixture_run(const struct fixture *fx, int deferred)
{
	struct mem_dev d;
	struct loaded_fixture lf;
	struct spdk_reduce_vol *vol = NULL;
	int before = g_test_failures;

	if (fixture_open(fx, &d, deferred, &lf)) {
		return;
	}
	REQUIRE_EQ(h_load(&d, &vol), 0, out);
	const struct spdk_reduce_vol_params p = *spdk_reduce_vol_get_params(vol);
	CHECK_EQ(p.backing_io_unit_size, fx->io_unit);
	CHECK_EQ(p.chunk_size, fx->chunk);
	CHECK_EQ(p.logical_block_size, fx->lbs);
	CHECK_EQ(p.vol_size, fx->vol_size);
	CHECK_EQ(lf.expected_len, fx->vol_size);
	CHECK_EQ(h_units(vol), fx->io_units_in_use);
	uint64_t bpc = p.chunk_size / p.logical_block_size, chunks = p.vol_size / p.chunk_size;
	uint8_t *got = malloc(p.chunk_size);
	int mismatches = 0;
	for (uint64_t c = 0; c < chunks; c++) {
		memset(got, 0xCC, p.chunk_size);
		CHECK_EQ(h_read(&d, vol, got, c * bpc, bpc), 0);
		mismatches += memcmp(got, lf.expected + c * p.chunk_size, p.chunk_size) != 0;
	}
	CHECK_EQ(mismatches, 0);
	/* In pieces: three iovecs cut at odd bytes, ranges of 1..bpc blocks. */
	uint64_t rng = 31;
	for (uint64_t c = 0; c < chunks; c += 3) {
		uint64_t first = rng_next(&rng) % bpc, n = 1 + rng_next(&rng) % (bpc - first);
		size_t len = n * p.logical_block_size, a = rng_next(&rng) % (len + 1);
		size_t b = a + rng_next(&rng) % (len - a + 1);
		struct iovec iov[3] = {{got, a}, {got + a, b - a}, {got + b, len - b}};
		CHECK_EQ(h_io(&d, vol, 0, iov, 3, c * bpc + first, n), 0);
		mismatches += memcmp(got, lf.expected + (c * bpc + first) * p.logical_block_size,
				     len) != 0;
	}
	CHECK_EQ(mismatches, 0);
	struct reduce_vol_check_report r;
	CHECK_EQ(h_check(&d, vol, &r), 0);
	CHECK_EQ(r.chunks_in_use, fx->chunks_written);
	CHECK_EQ(r.chunks_read, r.chunks_in_use);
	CHECK_EQ(r.io_units_referenced, fx->io_units_in_use);

	/* New writes: whole chunks every 37 chunks, and partial writes every 41. The pm
	 * file is the original's (undersized) one, with room for 512 chunk maps: plenty. */
	for (uint64_t c = 0; c < chunks; c += 37) {
		fill_data(lf.expected + c * p.chunk_size, p.chunk_size, c);
		CHECK_EQ(h_write(&d, vol, lf.expected + c * p.chunk_size, c * bpc, bpc), 0);
	}
	for (uint64_t c = 1; c < chunks; c += 41) {
		uint64_t off = c * bpc + 1;
		fill_data(lf.expected + off * p.logical_block_size, 2 * p.logical_block_size, c + 7);
		CHECK_EQ(h_write(&d, vol, lf.expected + off * p.logical_block_size, off, 2), 0);
	}
	CHECK_EQ(h_unload(&d, vol), 0);
	vol = NULL;
	CHECK_EQ(file_size(lf.pm_path), lf.pm_size);
	REQUIRE_EQ(h_load(&d, &vol), 0, out_free);
	for (uint64_t c = 0; c < chunks; c++) {
		CHECK_EQ(h_read(&d, vol, got, c * bpc, bpc), 0);
		mismatches += memcmp(got, lf.expected + c * p.chunk_size, p.chunk_size) != 0;
	}
	CHECK_EQ(mismatches, 0);
	CHECK_EQ(h_check(&d, vol, &r), 0);
	CHECK_EQ(r.io_units_referenced, h_units(vol));
	CHECK_EQ(h_unload(&d, vol), 0);
	vol = NULL;
	CHECK_EQ(file_size(lf.pm_path), lf.pm_size);
out_free:
	free(got);
out:
	if (vol) {
		CHECK_EQ(h_unload(&d, vol), 0);
	}
	if (g_test_failures != before) {
		fprintf(stderr, "    (fixture %s)\n", fx->name);
	}
	fixture_close(&d, &lf);
}

TEST(fixtures_load_read_write)
{
	for (size_t i = 0; i < sizeof(g_fixtures) / sizeof(g_fixtures[0]); i++) {
		fixture_run(&g_fixtures[i], deferred);
	}
}

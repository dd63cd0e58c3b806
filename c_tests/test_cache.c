/* The decompressed-chunk cache through the C ABI, in both modes, against a model of the
 * volume: 4 KiB reads, or 4 KiB writes, of a chunk read and decompress it once (counted
 * at the device); writes, unmaps and failed writes between reads are seen;
 * reduce_vol_set_cache_chunks with 0 caches nothing, and refuses a NULL volume. */
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define CHUNKS 8
#define CHUNK DEF_CHUNK
#define BPC DEF_BPC
#define PIECE (4096 / DEF_BLOCKLEN) /* logical blocks in a 4 KiB read */

/* Reads chunks [first, first + n) 4 KiB at a time and compares each piece with the
 * model; returns the decompressions it took (and the device reads, in *reads). */
static uint64_t read_pieces(struct mem_dev *d, struct spdk_reduce_vol *vol, const uint8_t *model,
			    uint64_t first, uint64_t n, uint64_t *reads)
{
	uint8_t got[4096];
	uint64_t dec = d->count[OP_DECOMPRESS], rd = d->count[OP_READ];
	for (uint64_t b = first * BPC; b < (first + n) * BPC; b += PIECE) {
		memset(got, 0xA5, sizeof(got));
		CHECK_EQ(h_read(d, vol, got, b, PIECE), 0);
		if (memcmp(got, model + b * DEF_BLOCKLEN, sizeof(got)) != 0) {
			fprintf(stderr, "    [%s] block %llu differs from the model\n", g_test_mode,
				(unsigned long long)b);
			g_test_failures++;
		}
	}
	if (reads) {
		*reads = d->count[OP_READ] - rd;
	}
	return d->count[OP_DECOMPRESS] - dec;
}

static uint64_t cache_hits(struct spdk_reduce_vol *vol)
{
	struct reduce_vol_stats st;
	memset(&st, 0xEE, sizeof(st));
	CHECK_EQ(reduce_vol_get_stats(vol, &st, sizeof(st)), 0);
	return st.cache_hits;
}

/* Opens a volume of CHUNKS chunks (rig_open's result), writes text to chunks 0..3 (and
 * `model`), then empties the cache (by resizing it): the writes left their chunks there. */
static int open_with_four_chunks(struct mem_dev *d, struct spdk_reduce_vol_params *p, char *dir,
				 size_t dir_len, int deferred, struct spdk_reduce_vol **vol,
				 uint8_t *model)
{
	int rc = rig_open(d, p, dir, dir_len, CHUNKS, deferred, vol);
	if (rc) {
		return rc;
	}
	for (uint64_t c = 0; c < 4; c++) {
		fill_text(model + c * CHUNK, CHUNK, c);
		CHECK_EQ(h_write(d, *vol, model + c * CHUNK, c * BPC, BPC), 0);
	}
	CHECK_EQ(reduce_vol_set_cache_chunks(*vol, 8), 0);
	return 0;
}

TEST(cache_reads_each_chunk_once_and_never_stale)
{
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	struct spdk_reduce_vol *vol = NULL;
	char dir[64];
	uint8_t *model = calloc(CHUNKS, CHUNK);
	REQUIRE_EQ(open_with_four_chunks(&d, &p, dir, sizeof(dir), deferred, &vol, model), 0, out);

	/* Sequential 4 KiB reads: one device read and one decompress a chunk. */
	uint64_t reads = 0;
	CHECK_EQ(read_pieces(&d, vol, model, 0, 4, &reads), 4);
	CHECK_EQ(reads, 4);
	CHECK_EQ(cache_hits(vol), 4 * (CHUNK / 4096 - 1));

	/* A partial write merges into the cached chunk, and the reads after it see it. */
	uint8_t part[1024];
	fill_text(part, sizeof(part), 99);
	memcpy(model + CHUNK + 3 * DEF_BLOCKLEN, part, sizeof(part));
	CHECK_EQ(h_write(&d, vol, part, BPC + 3, 2), 0);
	read_pieces(&d, vol, model, 1, 1, NULL);
	/* A partial unmap and a whole one. */
	memset(model + 2 * CHUNK + 8 * DEF_BLOCKLEN, 0, 8 * DEF_BLOCKLEN);
	CHECK_EQ(h_unmap(&d, vol, 2 * BPC + 8, 8), 0);
	read_pieces(&d, vol, model, 2, 1, NULL);
	memset(model + 3 * CHUNK, 0, CHUNK);
	CHECK_EQ(h_unmap(&d, vol, 3 * BPC, BPC), 0);
	read_pieces(&d, vol, model, 3, 1, NULL);

	/* A write the device fails leaves the old data; the same write done, the new. */
	uint8_t other[CHUNK];
	fill_text(other, sizeof(other), 7);
	read_pieces(&d, vol, model, 0, 1, NULL);
	mem_dev_fail_next(&d, OP_WRITE, -EIO);
	CHECK_EQ(h_write(&d, vol, other, 0, BPC), -EIO);
	read_pieces(&d, vol, model, 0, 1, NULL);
	memcpy(model, other, CHUNK);
	CHECK_EQ(h_write(&d, vol, other, 0, BPC), 0);
	read_pieces(&d, vol, model, 0, 1, NULL);

	/* Size 0: every piece reads and decompresses its chunk. */
	CHECK_EQ(reduce_vol_set_cache_chunks(vol, 0), 0);
	CHECK_EQ(read_pieces(&d, vol, model, 0, 2, NULL), 2 * (CHUNK / 4096));
	CHECK_EQ(reduce_vol_set_cache_chunks(vol, 8), 0);
	CHECK_EQ(read_pieces(&d, vol, model, 0, 2, NULL), 2);
	CHECK_EQ(reduce_vol_set_cache_chunks(NULL, 8), -EINVAL);
out:
	rig_close(&d, vol, dir);
	free(model);
}

TEST(cache_sequential_4k_writes_read_each_chunk_once)
{
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	struct spdk_reduce_vol *vol = NULL;
	char dir[64];
	uint8_t *model = calloc(CHUNKS, CHUNK);
	REQUIRE_EQ(open_with_four_chunks(&d, &p, dir, sizeof(dir), deferred, &vol, model), 0, out);

	/* Each 4 KiB write merges into what the one before left in the cache: only the
	 * first of a chunk reads and decompresses it. */
	uint64_t dec = d.count[OP_DECOMPRESS], rd = d.count[OP_READ];
	for (uint64_t b = 0; b < 4 * BPC; b += PIECE) {
		fill_text(model + b * DEF_BLOCKLEN, 4096, 50 + b);
		CHECK_EQ(h_write(&d, vol, model + b * DEF_BLOCKLEN, b, PIECE), 0);
	}
	CHECK_EQ(d.count[OP_DECOMPRESS] - dec, 4);
	CHECK_EQ(d.count[OP_READ] - rd, 4);
	/* The last write's chunk is there for reads. */
	uint64_t reads = 0;
	CHECK_EQ(read_pieces(&d, vol, model, 0, 4, &reads), 0);
	CHECK_EQ(reads, 0);

	/* A 4 KiB write the device fails: the old data, read from the device. */
	uint8_t part[4096];
	fill_text(part, sizeof(part), 77);
	mem_dev_fail_next(&d, OP_WRITE, -EIO);
	CHECK_EQ(h_write(&d, vol, part, PIECE, PIECE), -EIO);
	CHECK_EQ(read_pieces(&d, vol, model, 0, 1, &reads), 1);
	CHECK_EQ(reads, 1);

	/* A partial unmap merges zeros into the cached chunk; no read. */
	memset(model + CHUNK + 8 * DEF_BLOCKLEN, 0, 8 * DEF_BLOCKLEN);
	rd = d.count[OP_READ];
	CHECK_EQ(h_unmap(&d, vol, BPC + 8, 8), 0);
	CHECK_EQ(d.count[OP_READ] - rd, 0);
	CHECK_EQ(read_pieces(&d, vol, model, 1, 1, &reads), 0);
	CHECK_EQ(reads, 0);

	/* Size 0: every 4 KiB write reads and decompresses its chunk. */
	CHECK_EQ(reduce_vol_set_cache_chunks(vol, 0), 0);
	dec = d.count[OP_DECOMPRESS];
	for (uint64_t b = 2 * BPC; b < 3 * BPC; b += PIECE) {
		fill_text(model + b * DEF_BLOCKLEN, 4096, 90 + b);
		CHECK_EQ(h_write(&d, vol, model + b * DEF_BLOCKLEN, b, PIECE), 0);
	}
	CHECK_EQ(d.count[OP_DECOMPRESS] - dec, CHUNK / 4096);

	/* Everything is on the device too. */
	CHECK_EQ(read_pieces(&d, vol, model, 0, CHUNKS, NULL), 4 * (CHUNK / 4096));
out:
	rig_close(&d, vol, dir);
	free(model);
}

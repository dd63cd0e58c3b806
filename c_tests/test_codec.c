/* The built-in codecs from C: reduce_backing_dev_set_codec (algorithms, levels,
 * refusals), LZ4 and leveled zstd volumes written, read and reloaded in both completion
 * modes, the compression recorded in the superblock (comp_level u32 @48, comp_algo u8
 * @52, where later SPDK keeps them) and reported by spdk_reduce_vol_get_info, the
 * params struct handed out with its padding zeroed, and LZ4 blocks exchanged with the
 * reference LZ4 library (liblz4, what SPDK's software accel module calls) when the
 * system has it. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define CHUNKS 32
#define BPC DEF_BPC
#define CHUNK DEF_CHUNK

struct log {
	int errors;
	char all[4096];
};

static void capture(void *ctx, int level, const char *msg)
{
	struct log *l = ctx;
	size_t used = strlen(l->all);
	l->errors += level == REDUCE_LOG_ERROR;
	snprintf(l->all + used, sizeof(l->all) - used, "%s\n", msg);
}

/* set_codec refuses with -EINVAL, logs why (mentioning `word`), and leaves the device
 * as it was. */
static void check_refused(struct spdk_reduce_backing_dev *dev, const char *algo, int level,
			  const char *word)
{
	struct log l = {0};
	struct spdk_reduce_backing_dev before;
	if (dev) {
		before = *dev;
	}
	reduce_set_log_fn(capture, &l);
	CHECK_EQ(reduce_backing_dev_set_codec(dev, algo, level), -EINVAL);
	reduce_set_log_fn(NULL, NULL);
	CHECK_EQ(l.errors, 1);
	CHECK(strstr(l.all, "reduce_backing_dev_set_codec") != NULL);
	CHECK(strstr(l.all, word) != NULL);
	if (dev) {
		CHECK(memcmp(dev, &before, sizeof(before)) == 0);
	}
	if (l.errors != 1 || !strstr(l.all, word)) {
		fprintf(stderr, "    %s %d: log: %s", algo ? algo : "(NULL)", level, l.all);
	}
}

TEST_ONCE(codec_set_codec_choices_and_refusals)
{
	(void)deferred;
	struct mem_dev d;
	mem_dev_init(&d, DEF_BLOCKLEN, 8, IMMEDIATE);
	struct spdk_reduce_backing_dev *dev = &d.dev;

	CHECK_EQ(reduce_backing_dev_set_codec(dev, "lz4", 0), 0);
	CHECK(dev->compress == reduce_lz4_compress);
	CHECK(dev->decompress == reduce_lz4_decompress);
	CHECK_EQ(reduce_backing_dev_set_codec(dev, "lz4", 1), 0);
	CHECK(dev->compress == reduce_lz4_compress);

	/* Level 1 (and 0, the default) is the exported zstd function; every other level
	 * has its own, all sharing the one decompressor. */
	CHECK_EQ(reduce_backing_dev_set_codec(dev, "zstd", 0), 0);
	CHECK(dev->compress == reduce_zstd_compress);
	CHECK(dev->decompress == reduce_zstd_decompress);
	CHECK_EQ(reduce_backing_dev_set_codec(dev, "zstd", 1), 0);
	CHECK(dev->compress == reduce_zstd_compress);
	reduce_backing_codec_fn seen[23] = {0};
	for (int level = 1; level <= 22; level++) {
		CHECK_EQ(reduce_backing_dev_set_codec(dev, "zstd", level), 0);
		CHECK(dev->decompress == reduce_zstd_decompress);
		seen[level] = dev->compress;
		for (int other = 1; other < level; other++) {
			CHECK(seen[other] != seen[level]);
		}
	}
	/* The rest of the device is untouched. */
	CHECK_EQ(dev->blocklen, DEF_BLOCKLEN);
	CHECK_EQ(dev->blockcnt, 8);
	CHECK(dev->readv != NULL && dev->writev != NULL && dev->unmap != NULL);

	check_refused(NULL, "zstd", 1, "dev is NULL");
	check_refused(dev, NULL, 1, "algo is NULL");
	check_refused(dev, "gzip", 1, "gzip");
	check_refused(dev, "ZSTD", 1, "ZSTD");
	check_refused(dev, "", 0, "unknown");
	check_refused(dev, "zstd", -1, "-1");
	check_refused(dev, "zstd", 23, "23");
	check_refused(dev, "lz4", 2, "lz4 level 2");
	check_refused(dev, "lz4", -5, "lz4 level -5");
	mem_dev_free(&d);
}

/* Bytes 48..56 of the device: comp_level (little-endian u32), comp_algo, 3 zeros. */
static void check_recorded(struct mem_dev *d, uint32_t level, uint8_t algo)
{
	uint8_t want[8] = {(uint8_t)level, (uint8_t)(level >> 8), (uint8_t)(level >> 16),
			   (uint8_t)(level >> 24), algo, 0, 0, 0};
	CHECK(memcmp(d->image + 48, want, 8) == 0);
	if (memcmp(d->image + 48, want, 8) != 0) {
		fprintf(stderr, "    superblock @48: %02x %02x %02x %02x %02x\n", d->image[48],
			d->image[49], d->image[50], d->image[51], d->image[52]);
	}
}

static void check_info(struct spdk_reduce_vol *vol, uint32_t level, uint32_t algo)
{
	const struct spdk_reduce_vol_info *info = spdk_reduce_vol_get_info(vol);
	CHECK(info != NULL);
	if (info) {
		CHECK_EQ(info->comp_level, level);
		CHECK_EQ(info->comp_algo, algo);
	}
}

/* Writes a mix of data (whole chunks, partial ones, incompressible ones), reads it back,
 * reloads and reads it back again, then checks the volume. */
static void round_trip(struct mem_dev *d, struct spdk_reduce_vol **vol, uint32_t level,
		       uint32_t algo, uint64_t seed)
{
	uint8_t *want = calloc(CHUNKS, CHUNK), *got = malloc(CHUNK);
	for (uint64_t c = 0; c < CHUNKS; c += 3) {
		if (c % 9 == 6) {
			fill_random(want + c * CHUNK, CHUNK, seed + c);
		} else {
			fill_data(want + c * CHUNK, CHUNK, seed + c);
		}
		CHECK_EQ(h_write(d, *vol, want + c * CHUNK, c * BPC, BPC), 0);
	}
	/* Partial writes into written and fresh chunks. */
	fill_data(want + 3 * CHUNK + 7 * 512, 5 * 512, seed + 100);
	CHECK_EQ(h_write(d, *vol, want + 3 * CHUNK + 7 * 512, 3 * BPC + 7, 5), 0);
	fill_data(want + 4 * CHUNK + 30 * 512, 2 * 512, seed + 101);
	CHECK_EQ(h_write(d, *vol, want + 4 * CHUNK + 30 * 512, 4 * BPC + 30, 2), 0);
	for (int pass = 0; pass < 2; pass++) {
		for (uint64_t c = 0; c < CHUNKS; c++) {
			memset(got, 0xEE, CHUNK);
			CHECK_EQ(h_read(d, *vol, got, c * BPC, BPC), 0);
			CHECK(memcmp(got, want + c * CHUNK, CHUNK) == 0);
		}
		check_info(*vol, level, algo);
		struct reduce_vol_check_report r;
		CHECK_EQ(h_check(d, *vol, &r), 0);
		CHECK_EQ(r.problems, 0);
		if (pass == 0) {
			CHECK_EQ(h_unload(d, *vol), 0);
			*vol = NULL;
			REQUIRE_EQ(h_load(d, vol), 0, out);
		}
	}
	/* Compressible data took fewer io units than chunks' worth. */
	CHECK(spdk_reduce_vol_get_info(*vol)->allocated_io_units < (CHUNKS / 3 + 2) * 4);
out:
	free(want);
	free(got);
}

static int open_with(struct mem_dev *d, char *dir, size_t dir_len, int deferred,
		     const char *algo, int level, struct spdk_reduce_vol **vol)
{
	struct spdk_reduce_vol_params p;
	make_tmpdir(dir, dir_len);
	mem_dev_init(d, DEF_BLOCKLEN, blockcnt_for_chunks(CHUNKS), deferred);
	default_params(&p);
	CHECK_EQ(reduce_backing_dev_set_codec(&d->dev, algo, level), 0);
	return h_init(d, &p, dir, vol);
}

TEST(codec_lz4_volume_round_trip)
{
	struct mem_dev d;
	struct spdk_reduce_vol *vol = NULL;
	char dir[64];
	REQUIRE_EQ(open_with(&d, dir, sizeof(dir), deferred, "lz4", 0, &vol), 0, out);
	check_recorded(&d, 1, REDUCE_COMP_ALGO_LZ4);
	check_info(vol, 1, REDUCE_COMP_ALGO_LZ4);
	round_trip(&d, &vol, 1, REDUCE_COMP_ALGO_LZ4, 40);
	check_recorded(&d, 1, REDUCE_COMP_ALGO_LZ4);
out:
	rig_close(&d, vol, dir);
}

TEST(codec_zstd_levels_recorded)
{
	int levels[] = {3, 19};
	for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
		struct mem_dev d;
		struct spdk_reduce_vol *vol = NULL;
		char dir[64];
		REQUIRE_EQ(open_with(&d, dir, sizeof(dir), deferred, "zstd", levels[i], &vol), 0,
			   next);
		check_recorded(&d, (uint32_t)levels[i], REDUCE_COMP_ALGO_ZSTD);
		round_trip(&d, &vol, (uint32_t)levels[i], REDUCE_COMP_ALGO_ZSTD, 50 + i);
	next:
		rig_close(&d, vol, dir);
	}
}

/* What init records for the device's compress member: the exported functions assigned
 * directly are recognised too; the caller's own codec (the harness's wrapper) records
 * zeros. */
TEST(codec_recorded_from_the_compress_member)
{
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	struct spdk_reduce_vol *vol = NULL;
	char dir[64];

	REQUIRE_EQ(rig_open(&d, &p, dir, sizeof(dir), CHUNKS, deferred, &vol), 0, out);
	check_recorded(&d, 0, 0);
	check_info(vol, 0, REDUCE_COMP_ALGO_DEFLATE);
	rig_close(&d, vol, dir);
	vol = NULL;

	const struct {
		reduce_backing_codec_fn compress, decompress;
		uint32_t level, algo;
	} direct[] = {
		{reduce_zstd_compress, reduce_zstd_decompress, 1, REDUCE_COMP_ALGO_ZSTD},
		{reduce_lz4_compress, reduce_lz4_decompress, 1, REDUCE_COMP_ALGO_LZ4},
	};
	for (size_t i = 0; i < 2; i++) {
		make_tmpdir(dir, sizeof(dir));
		mem_dev_init(&d, DEF_BLOCKLEN, blockcnt_for_chunks(CHUNKS), deferred);
		default_params(&p);
		d.dev.compress = direct[i].compress;
		d.dev.decompress = direct[i].decompress;
		REQUIRE_EQ(h_init(&d, &p, dir, &vol), 0, out);
		check_recorded(&d, direct[i].level, (uint8_t)direct[i].algo);
		check_info(vol, direct[i].level, direct[i].algo);
		/* The params the caller gave are the 2019 struct: untouched beyond it. */
		CHECK_EQ(p.vol_size, (uint64_t)CHUNKS * CHUNK);
		rig_close(&d, vol, dir);
		vol = NULL;
	}
	return;
out:
	rig_close(&d, vol, dir);
}

/* spdk_reduce_vol_get_params: all 40 bytes defined, the padding @28 zeros; they equal
 * the params in the superblock (@8, where the padding is written as zeros). */
TEST(codec_params_struct_fully_defined)
{
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	struct spdk_reduce_vol *vol = NULL;
	char dir[64];

	REQUIRE_EQ(rig_open(&d, &p, dir, sizeof(dir), CHUNKS, deferred, &vol), 0, out);
	for (int loaded = 0; loaded < 2; loaded++) {
		const struct spdk_reduce_vol_params *gp = spdk_reduce_vol_get_params(vol);
		REQUIRE_EQ(gp != NULL, 1, out);
		struct spdk_reduce_vol_params want;
		memset(&want, 0, sizeof(want));
		memcpy(&want.uuid, &p.uuid, sizeof(want.uuid));
		want.backing_io_unit_size = DEF_IO_UNIT;
		want.logical_block_size = DEF_BLOCKLEN;
		want.chunk_size = DEF_CHUNK;
		want.vol_size = (uint64_t)CHUNKS * CHUNK;
		CHECK_EQ(sizeof(*gp), 40);
		CHECK(memcmp(gp, &want, sizeof(want)) == 0);
		CHECK(memcmp(gp, d.image + 8, 40) == 0);
		static const uint8_t zeros[4];
		CHECK(memcmp((const uint8_t *)gp + 28, zeros, 4) == 0);
		if (!loaded) {
			CHECK_EQ(h_unload(&d, vol), 0);
			vol = NULL;
			REQUIRE_EQ(h_load(&d, &vol), 0, out);
		}
	}
out:
	rig_close(&d, vol, dir);
}

/* ---- the reference LZ4 library, when the system has it ---- */

typedef int (*lz4_compress_fn)(const char *src, char *dst, int src_size, int dst_cap,
			       int acceleration);
typedef int (*lz4_decompress_fn)(const char *src, char *dst, int src_size, int dst_cap);

static struct {
	void *handle;
	lz4_compress_fn compress_fast;
	lz4_decompress_fn decompress_safe;
} g_lz4;

static int reference_lz4(void)
{
	if (!g_lz4.handle) {
		g_lz4.handle = dlopen("liblz4.so.1", RTLD_NOW | RTLD_LOCAL);
		if (!g_lz4.handle) {
			return 0;
		}
		g_lz4.compress_fast = (lz4_compress_fn)dlsym(g_lz4.handle, "LZ4_compress_fast");
		g_lz4.decompress_safe =
			(lz4_decompress_fn)dlsym(g_lz4.handle, "LZ4_decompress_safe");
	}
	return g_lz4.compress_fast && g_lz4.decompress_safe;
}

/* The library passes one iovec each way (checked). */
static void ref_compress(struct spdk_reduce_backing_dev *dev, struct iovec *src, int srccnt,
			 struct iovec *dst, int dstcnt, struct spdk_reduce_vol_cb_args *args)
{
	(void)dev;
	CHECK(srccnt == 1 && dstcnt == 1);
	int n = g_lz4.compress_fast(src->iov_base, dst->iov_base, (int)src->iov_len,
				    (int)dst->iov_len, 1);
	args->cb_fn(args->cb_arg, n > 0 ? n : -ENOSPC);
}

static void ref_decompress(struct spdk_reduce_backing_dev *dev, struct iovec *src,
			   int srccnt, struct iovec *dst, int dstcnt,
			   struct spdk_reduce_vol_cb_args *args)
{
	(void)dev;
	CHECK(srccnt == 1 && dstcnt == 1);
	int n = g_lz4.decompress_safe(src->iov_base, dst->iov_base, (int)src->iov_len,
				      (int)dst->iov_len);
	args->cb_fn(args->cb_arg, n >= 0 ? n : -EIO);
}

static void store_status(void *arg, int status)
{
	*(int *)arg = status;
}

/* One built-in codec call on single buffers; its status. */
static int call(reduce_backing_codec_fn fn, void *src, size_t src_len, void *dst,
		size_t dst_len)
{
	struct iovec s = {src, src_len}, d = {dst, dst_len};
	int status = 1 << 30;
	struct spdk_reduce_vol_cb_args args = {.cb_fn = store_status, .cb_arg = &status};
	fn(NULL, &s, 1, &d, 1, &args);
	return status;
}

TEST_ONCE(codec_lz4_blocks_match_the_reference_library)
{
	(void)deferred;
	if (!reference_lz4()) {
		printf("    (liblz4.so.1 not found: the reference comparison is skipped)\n");
		return;
	}
	uint8_t *plain = malloc(CHUNK), *block = malloc(CHUNK), *back = malloc(CHUNK);
	for (uint64_t seed = 0; seed < 20; seed++) {
		fill_data(plain, CHUNK, seed);
		/* Ours, read by the reference decoder. */
		int n = call(reduce_lz4_compress, plain, CHUNK, block, CHUNK);
		if (n < 0) {
			CHECK_EQ(n, -ENOSPC); /* incompressible: stored raw by the volume */
			continue;
		}
		memset(back, 0, CHUNK);
		CHECK_EQ(g_lz4.decompress_safe((char *)block, (char *)back, n, CHUNK), CHUNK);
		CHECK(memcmp(back, plain, CHUNK) == 0);
		/* The reference encoder's, read by ours. */
		n = g_lz4.compress_fast((char *)plain, (char *)block, CHUNK, CHUNK, 1);
		CHECK(n > 0);
		memset(back, 0, CHUNK);
		CHECK_EQ(call(reduce_lz4_decompress, block, (size_t)n, back, CHUNK), CHUNK);
		CHECK(memcmp(back, plain, CHUNK) == 0);
		/* One byte short is not a block. */
		CHECK_EQ(call(reduce_lz4_decompress, block, (size_t)n - 1, back, CHUNK), -EIO);
	}
	free(plain);
	free(block);
	free(back);
}

/* A volume written with the reference LZ4 (as later SPDK's software LZ4 writes it)
 * reads back with the built-in codec, and the other way round. */
TEST(codec_lz4_volumes_move_between_implementations)
{
	if (!reference_lz4()) {
		printf("    (liblz4.so.1 not found: skipped)\n");
		return;
	}
	for (int ours_first = 0; ours_first < 2; ours_first++) {
		struct mem_dev d;
		struct spdk_reduce_vol_params p;
		struct spdk_reduce_vol *vol = NULL;
		char dir[64];
		uint8_t *want = malloc(CHUNK * 4), *got = malloc(CHUNK);
		make_tmpdir(dir, sizeof(dir));
		mem_dev_init(&d, DEF_BLOCKLEN, blockcnt_for_chunks(CHUNKS), deferred);
		default_params(&p);
		if (ours_first) {
			CHECK_EQ(reduce_backing_dev_set_codec(&d.dev, "lz4", 1), 0);
		} else {
			d.dev.compress = ref_compress;
			d.dev.decompress = ref_decompress;
		}
		REQUIRE_EQ(h_init(&d, &p, dir, &vol), 0, next);
		for (uint64_t c = 0; c < 4; c++) {
			fill_data(want + c * CHUNK, CHUNK, 70 + c);
			CHECK_EQ(h_write(&d, vol, want + c * CHUNK, c * BPC, BPC), 0);
		}
		CHECK(spdk_reduce_vol_get_info(vol)->allocated_io_units < 16);
		CHECK_EQ(h_unload(&d, vol), 0);
		vol = NULL;
		if (ours_first) {
			d.dev.compress = ref_compress;
			d.dev.decompress = ref_decompress;
		} else {
			CHECK_EQ(reduce_backing_dev_set_codec(&d.dev, "lz4", 0), 0);
		}
		REQUIRE_EQ(h_load(&d, &vol), 0, next);
		for (uint64_t c = 0; c < 4; c++) {
			CHECK_EQ(h_read(&d, vol, got, c * BPC, BPC), 0);
			CHECK(memcmp(got, want + c * CHUNK, CHUNK) == 0);
		}
		/* A partial write decompresses the old chunk with the other implementation. */
		fill_data(want + 2 * CHUNK + 512, 512, 99);
		CHECK_EQ(h_write(&d, vol, want + 2 * CHUNK + 512, 2 * BPC + 1, 1), 0);
		CHECK_EQ(h_read(&d, vol, got, 2 * BPC, BPC), 0);
		CHECK(memcmp(got, want + 2 * CHUNK, CHUNK) == 0);
	next:
		rig_close(&d, vol, dir);
		free(want);
		free(got);
	}
}

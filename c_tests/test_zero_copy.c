/* Zero copy from C: with the built-in codec functions assigned to the device, a read or
 * write of a whole chunk whose iovec covers it in one piece is decompressed straight
 * into the caller's buffer, or compressed straight from it; other shapes go through the
 * volume's buffers. Every shape gives the same bytes, with the built-ins (which run
 * inside the call) and with the harness's codec (which completes later in DEFERRED
 * mode); a failed decompress into the caller's buffer fails the read with -EIO. */
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define CHUNKS 16
#define BPC DEF_BPC
#define CHUNK DEF_CHUNK

/* Chunk `c`'s content: compressible, incompressible (stored raw), or zeros. */
static void content(uint8_t *buf, size_t len, uint64_t seed)
{
	switch (seed % 3) {
	case 0:
		fill_data(buf, len, seed);
		break;
	case 1:
		fill_random(buf, len, seed);
		break;
	default:
		memset(buf, 0, len);
	}
}

/* `len` bytes of `buf` as iovecs of shape `shape`: one, three uneven, one byte then the
 * rest. Returns the count. */
static int cut(uint8_t *buf, size_t len, int shape, struct iovec *iov)
{
	switch (shape) {
	case 0:
		iov[0] = (struct iovec){buf, len};
		return 1;
	case 1:
		iov[0] = (struct iovec){buf, 1000};
		iov[1] = (struct iovec){buf + 1000, len / 2 - 1000};
		iov[2] = (struct iovec){buf + len / 2, len - len / 2};
		return 3;
	default:
		iov[0] = (struct iovec){buf, 1};
		iov[1] = (struct iovec){buf + 1, len - 1};
		return 2;
	}
}

/* Whole chunks, one and two a request, written and read back through every shape. */
static void round_trips(struct mem_dev *d, struct spdk_reduce_vol *vol)
{
	uint8_t *data = malloc(2 * CHUNK), *back = malloc(2 * CHUNK);
	struct iovec iov[3];
	uint64_t chunk = 0;
	for (uint64_t seed = 1; seed <= 6; seed++) {
		for (uint64_t chunks = 1; chunks <= 2; chunks++) {
			size_t len = chunks * CHUNK;
			content(data, CHUNK, seed);
			content(data + CHUNK, CHUNK, seed + 7);
			for (int wshape = 0; wshape < 3; wshape++) {
				int n = cut(data, len, wshape, iov);
				CHECK_EQ(h_io(d, vol, 1, iov, n, chunk * BPC, chunks * BPC), 0);
				for (int rshape = 0; rshape < 3; rshape++) {
					memset(back, 0xA5, len);
					n = cut(back, len, rshape, iov);
					CHECK_EQ(h_io(d, vol, 0, iov, n, chunk * BPC, chunks * BPC), 0);
					CHECK(memcmp(back, data, len) == 0);
				}
				chunk = (chunk + chunks) % (CHUNKS - 1);
			}
		}
	}
	free(data);
	free(back);
}

TEST(zero_copy_builtin_codec_any_iovecs)
{
	const struct {
		reduce_backing_codec_fn compress, decompress;
	} builtins[] = {
		{reduce_zstd_compress, reduce_zstd_decompress},
		{reduce_lz4_compress, reduce_lz4_decompress},
	};
	for (size_t i = 0; i < 2; i++) {
		struct mem_dev d;
		struct spdk_reduce_vol_params p;
		struct spdk_reduce_vol *vol = NULL;
		char dir[64];
		make_tmpdir(dir, sizeof(dir));
		mem_dev_init(&d, DEF_BLOCKLEN, blockcnt_for_chunks(CHUNKS), deferred);
		default_params(&p);
		d.dev.compress = builtins[i].compress;
		d.dev.decompress = builtins[i].decompress;
		REQUIRE_EQ(h_init(&d, &p, dir, &vol), 0, next);
		round_trips(&d, vol);
		/* And after a reload, through a fresh volume. */
		REQUIRE_EQ(h_unload(&d, vol), 0, next);
		vol = NULL;
		REQUIRE_EQ(h_load(&d, &vol), 0, next);
		round_trips(&d, vol);
	next:
		rig_close(&d, vol, dir);
	}
}

/* The harness's codec (the caller's own, completing later in DEFERRED mode) takes the
 * volume's buffers whatever the shape. */
TEST(zero_copy_callers_codec_any_iovecs)
{
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	struct spdk_reduce_vol *vol = NULL;
	char dir[64];
	REQUIRE_EQ(rig_open(&d, &p, dir, sizeof(dir), CHUNKS, deferred, &vol), 0, out);
	uint64_t before = d.count[OP_COMPRESS];
	round_trips(&d, vol);
	CHECK(d.count[OP_COMPRESS] > before);
out:
	rig_close(&d, vol, dir);
}

/* A compress that "compresses" any chunk into 100 bytes of garbage: stored with a
 * checksum that matches, so only the decompress finds it wrong. */
static void garbage_compress(struct spdk_reduce_backing_dev *dev, struct iovec *src, int srccnt,
			     struct iovec *dst, int dstcnt, struct spdk_reduce_vol_cb_args *args)
{
	(void)dev;
	(void)src;
	(void)srccnt;
	(void)dstcnt;
	memset(dst[0].iov_base, 0xAB, 100);
	args->cb_fn(args->cb_arg, 100);
}

TEST(zero_copy_failed_decompress_is_eio)
{
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	struct spdk_reduce_vol *vol = NULL;
	char dir[64];
	uint8_t *data = malloc(CHUNK), *back = malloc(CHUNK);
	make_tmpdir(dir, sizeof(dir));
	mem_dev_init(&d, DEF_BLOCKLEN, blockcnt_for_chunks(CHUNKS), deferred);
	default_params(&p);
	d.dev.compress = garbage_compress;
	d.dev.decompress = reduce_zstd_decompress;
	REQUIRE_EQ(h_init(&d, &p, dir, &vol), 0, out);
	fill_data(data, CHUNK, 5);
	REQUIRE_EQ(h_write(&d, vol, data, BPC, BPC), 0, out);
	/* The write left its content in the cache (the caller's compress needs it in our
	 * buffer): off, so every read decompresses the garbage. */
	REQUIRE_EQ(reduce_vol_set_cache_chunks(vol, 0), 0, out);
	/* The whole chunk into one iovec (straight into it), in pieces, and one block. */
	struct iovec iov[3];
	for (int shape = 0; shape < 3; shape++) {
		int n = cut(back, CHUNK, shape, iov);
		CHECK_EQ(h_io(&d, vol, 0, iov, n, BPC, BPC), -EIO);
	}
	CHECK_EQ(h_read(&d, vol, back, BPC + 3, 1), -EIO);
	struct reduce_vol_stats st;
	CHECK_EQ(reduce_vol_get_stats(vol, &st, sizeof(st)), 0);
	CHECK_EQ(st.errors, 4);
out:
	rig_close(&d, vol, dir);
	free(data);
	free(back);
}

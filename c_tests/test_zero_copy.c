/* Zero copy from C: a read or write of a whole chunk whose iovec covers it in one piece
 * is decompressed straight into the caller's buffer, or compressed straight from it,
 * with the built-in codec functions assigned to the device (called inside the volume)
 * and with the caller's own (the harness's, completing later in DEFERRED mode, which
 * then gets the caller's buffer in its iovecs); other shapes go through the volume's
 * buffers. Every shape gives the same bytes; a failed decompress into the caller's
 * buffer fails the read with -EIO. A chunk stored raw (incompressible) that a request
 * reads or writes whole, in one iovec, moves straight between the device and the
 * caller's buffer, whatever the codec. */
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
	/* The built-in decompress (inside the call), then the harness's (the caller's own). */
	for (int own = 0; own < 2; own++) {
		make_tmpdir(dir, sizeof(dir));
		mem_dev_init(&d, DEF_BLOCKLEN, blockcnt_for_chunks(CHUNKS), deferred);
		default_params(&p);
		d.dev.compress = garbage_compress;
		if (!own) {
			d.dev.decompress = reduce_zstd_decompress;
		}
		REQUIRE_EQ(h_init(&d, &p, dir, &vol), 0, next);
		fill_data(data, CHUNK, 5);
		/* In pieces: the caller's compress reads our buffer, and the content goes to
		 * the cache. */
		struct iovec iov[3];
		int n = cut(data, CHUNK, 1, iov);
		REQUIRE_EQ(h_io(&d, vol, 1, iov, n, BPC, BPC), 0, next);
		/* Cache off, so every read decompresses the garbage. */
		REQUIRE_EQ(reduce_vol_set_cache_chunks(vol, 0), 0, next);
		/* The whole chunk into one iovec (straight into it), in pieces, and one block. */
		for (int shape = 0; shape < 3; shape++) {
			n = cut(back, CHUNK, shape, iov);
			CHECK_EQ(h_io(&d, vol, 0, iov, n, BPC, BPC), -EIO);
		}
		CHECK_EQ(h_read(&d, vol, back, BPC + 3, 1), -EIO);
		struct reduce_vol_stats st;
		CHECK_EQ(reduce_vol_get_stats(vol, &st, sizeof(st)), 0);
		CHECK_EQ(st.errors, 4);
	next:
		rig_close(&d, vol, dir);
		vol = NULL;
	}
	free(data);
	free(back);
}

/* ---- chunks stored raw: the device works in the caller's buffer ---- */

/* Every readv and writev iovec the device is given, and (after spy_codec) every
 * compress source and decompress destination, between spy_reset() calls. */
#define SPY_MAX 64
enum spy_kind { SPY_READ, SPY_WRITE, SPY_COMPRESS_SRC, SPY_DECOMPRESS_DST };
static struct {
	reduce_backing_io_fn readv, writev;            /* the harness's own */
	reduce_backing_codec_fn compress, decompress; /* ditto */
	size_t n;
	struct {
		enum spy_kind kind;
		const uint8_t *base;
		size_t len;
		uint64_t lba;
	} calls[SPY_MAX];
} g_spy;

static void spy_record(enum spy_kind kind, const struct iovec *iov, int iovcnt, uint64_t lba)
{
	for (int i = 0; i < iovcnt; i++) {
		if (g_spy.n < SPY_MAX) {
			g_spy.calls[g_spy.n].kind = kind;
			g_spy.calls[g_spy.n].base = iov[i].iov_base;
			g_spy.calls[g_spy.n].len = iov[i].iov_len;
			g_spy.calls[g_spy.n].lba = lba;
		}
		g_spy.n++;
	}
}

static void spy_readv(struct spdk_reduce_backing_dev *dev, struct iovec *iov, int iovcnt,
		      uint64_t lba, uint32_t lba_count, struct spdk_reduce_vol_cb_args *args)
{
	spy_record(SPY_READ, iov, iovcnt, lba);
	g_spy.readv(dev, iov, iovcnt, lba, lba_count, args);
}

static void spy_writev(struct spdk_reduce_backing_dev *dev, struct iovec *iov, int iovcnt,
		       uint64_t lba, uint32_t lba_count, struct spdk_reduce_vol_cb_args *args)
{
	spy_record(SPY_WRITE, iov, iovcnt, lba);
	g_spy.writev(dev, iov, iovcnt, lba, lba_count, args);
}

static void spy_compress(struct spdk_reduce_backing_dev *dev, struct iovec *src, int srccnt,
			 struct iovec *dst, int dstcnt, struct spdk_reduce_vol_cb_args *args)
{
	spy_record(SPY_COMPRESS_SRC, src, srccnt, 0);
	g_spy.compress(dev, src, srccnt, dst, dstcnt, args);
}

static void spy_decompress(struct spdk_reduce_backing_dev *dev, struct iovec *src, int srccnt,
			   struct iovec *dst, int dstcnt, struct spdk_reduce_vol_cb_args *args)
{
	spy_record(SPY_DECOMPRESS_DST, dst, dstcnt, 0);
	g_spy.decompress(dev, src, srccnt, dst, dstcnt, args);
}

static void spy_on(struct mem_dev *d)
{
	g_spy.readv = d->dev.readv;
	g_spy.writev = d->dev.writev;
	d->dev.readv = spy_readv;
	d->dev.writev = spy_writev;
}

/* Spies on the device's codec too, before the volume takes its members: for the
 * harness's own codec only, since a spy in front of a built-in makes it the caller's. */
static void spy_codec(struct mem_dev *d)
{
	g_spy.compress = d->dev.compress;
	g_spy.decompress = d->dev.decompress;
	d->dev.compress = spy_compress;
	d->dev.decompress = spy_decompress;
}

static void spy_reset(void)
{
	g_spy.n = 0;
}

/* How the device saw `buf` (`len` bytes) in the calls of `kind` since the reset: 1
 * when those calls' iovecs were all within it and covered `len` bytes, 0 when none
 * touched it, -1 for anything else (or no call). */
static int spy_used(enum spy_kind kind, const uint8_t *buf, size_t len)
{
	size_t inside = 0, outside = 0;
	CHECK(g_spy.n <= SPY_MAX);
	for (size_t i = 0; i < g_spy.n && i < SPY_MAX; i++) {
		if (g_spy.calls[i].kind != kind) {
			continue;
		}
		const uint8_t *b = g_spy.calls[i].base;
		if (b >= buf && b + g_spy.calls[i].len <= buf + len) {
			inside += g_spy.calls[i].len;
		} else if (b + g_spy.calls[i].len <= buf || b >= buf + len) {
			outside += g_spy.calls[i].len;
		} else {
			return -1;
		}
	}
	if (inside == len) {
		return 1;
	}
	return inside == 0 && outside > 0 ? 0 : -1;
}

/* A device with the spy, the codec given (NULL: the harness's own, spied on too), no
 * cache (so that every read goes to the device). */
static int raw_rig(struct mem_dev *d, char *dir, size_t dir_len, int deferred,
		   reduce_backing_codec_fn compress, reduce_backing_codec_fn decompress,
		   struct spdk_reduce_vol **vol)
{
	struct spdk_reduce_vol_params p;
	make_tmpdir(dir, dir_len);
	mem_dev_init(d, DEF_BLOCKLEN, blockcnt_for_chunks(CHUNKS), deferred);
	default_params(&p);
	if (compress) {
		d->dev.compress = compress;
		d->dev.decompress = decompress;
	} else {
		spy_codec(d);
	}
	spy_on(d);
	int rc = h_init(d, &p, dir, vol);
	if (rc == 0) {
		rc = reduce_vol_set_cache_chunks(*vol, 0);
	}
	return rc;
}

/* Writes `data` (one chunk) to `chunk` through iovecs of `shape`, then reads it back
 * into `back` through every shape: the spy's calls of kind `from` (for the write) and
 * `into` (for each read) saw the caller's buffer exactly when it was one iovec. */
static void shapes_round_trip(struct mem_dev *d, struct spdk_reduce_vol *vol, uint64_t chunk,
			      uint8_t *data, uint8_t *back, int shape, enum spy_kind from,
			      enum spy_kind into)
{
	struct iovec iov[3];
	spy_reset();
	int n = cut(data, CHUNK, shape, iov);
	CHECK_EQ(h_io(d, vol, 1, iov, n, chunk * BPC, BPC), 0);
	CHECK_EQ(spy_used(from, data, CHUNK), shape == 0);
	for (int rshape = 0; rshape < 3; rshape++) {
		memset(back, 0xA5, CHUNK);
		spy_reset();
		n = cut(back, CHUNK, rshape, iov);
		CHECK_EQ(h_io(d, vol, 0, iov, n, chunk * BPC, BPC), 0);
		CHECK_EQ(spy_used(into, back, CHUNK), rshape == 0);
		CHECK(memcmp(back, data, CHUNK) == 0);
	}
}

/* Unloads `*vol` and loads it again (cache off), then reads every chunk back whole,
 * straight into one iovec, against `shadow`; the checker finds nothing. */
static void reload_and_verify(struct mem_dev *d, struct spdk_reduce_vol **vol,
			      const uint8_t *shadow)
{
	int rc = h_unload(d, *vol);
	CHECK_EQ(rc, 0);
	if (rc) {
		return;
	}
	*vol = NULL;
	rc = h_load(d, vol);
	CHECK_EQ(rc, 0);
	if (rc) {
		return;
	}
	CHECK_EQ(reduce_vol_set_cache_chunks(*vol, 0), 0);
	uint8_t *back = malloc(CHUNK);
	for (uint64_t chunk = 0; chunk < CHUNKS; chunk++) {
		memset(back, 0xA5, CHUNK);
		CHECK_EQ(h_read(d, *vol, back, chunk * BPC, BPC), 0);
		CHECK(memcmp(back, shadow + chunk * CHUNK, CHUNK) == 0);
	}
	free(back);
	struct reduce_vol_check_report r;
	CHECK_EQ(h_check(d, *vol, &r), 0);
	CHECK_EQ(r.problems, 0);
}

/* Chunks of random bytes (stored raw) written and read whole through every shape: in
 * one iovec the device gets the caller's own buffer (with the built-in codec or the
 * caller's own, which compressed from it too), in several our buffers; the bytes match
 * the shadow copy either way, and again after a reload. */
TEST(zero_copy_raw_chunks_use_the_callers_buffer)
{
	for (int builtin = 0; builtin < 2; builtin++) {
		struct mem_dev d;
		struct spdk_reduce_vol *vol = NULL;
		char dir[64];
		uint8_t *shadow = calloc(CHUNKS, CHUNK), *data = malloc(CHUNK),
			*back = malloc(CHUNK);
		REQUIRE_EQ(raw_rig(&d, dir, sizeof(dir), deferred,
				   builtin ? reduce_zstd_compress : NULL,
				   builtin ? reduce_zstd_decompress : NULL, &vol),
			   0, next);
		for (int shape = 0; shape < 3; shape++) {
			uint64_t chunk = 2 + (uint64_t)shape;
			fill_random(data, CHUNK, 40 + (uint64_t)shape);
			memcpy(shadow + chunk * CHUNK, data, CHUNK);
			shapes_round_trip(&d, vol, chunk, data, back, shape, SPY_WRITE, SPY_READ);
		}
		/* Two raw chunks in one request and one iovec: each goes straight. */
		uint8_t *two = malloc(2 * CHUNK);
		fill_random(two, 2 * CHUNK, 77);
		memcpy(shadow + 8 * CHUNK, two, 2 * CHUNK);
		spy_reset();
		CHECK_EQ(h_write(&d, vol, two, 8 * BPC, 2 * BPC), 0);
		CHECK_EQ(spy_used(SPY_WRITE, two, 2 * CHUNK), 1);
		memset(two, 0, 2 * CHUNK);
		spy_reset();
		CHECK_EQ(h_read(&d, vol, two, 8 * BPC, 2 * BPC), 0);
		CHECK_EQ(spy_used(SPY_READ, two, 2 * CHUNK), 1);
		CHECK(memcmp(two, shadow + 8 * CHUNK, 2 * CHUNK) == 0);
		free(two);
		reload_and_verify(&d, &vol, shadow);
	next:
		rig_close(&d, vol, dir);
		free(shadow);
		free(data);
		free(back);
	}
}

/* A raw chunk whose bytes on the device are corrupted reads as -EIO, straight into one
 * iovec (its checksum is checked in the caller's buffer) or in pieces; the chunks next
 * to it still read right. */
TEST(zero_copy_raw_corrupted_chunk_is_eio)
{
	struct mem_dev d;
	struct spdk_reduce_vol *vol = NULL;
	char dir[64];
	uint8_t *data = malloc(CHUNK), *other = malloc(CHUNK), *back = malloc(CHUNK);
	struct iovec iov[3];
	REQUIRE_EQ(raw_rig(&d, dir, sizeof(dir), deferred, reduce_lz4_compress,
			   reduce_lz4_decompress, &vol),
		   0, out);
	fill_random(other, CHUNK, 8);
	REQUIRE_EQ(h_write(&d, vol, other, 4 * BPC, BPC), 0, out);
	fill_random(data, CHUNK, 9);
	spy_reset();
	REQUIRE_EQ(h_write(&d, vol, data, 5 * BPC, BPC), 0, out);
	REQUIRE_EQ(spy_used(SPY_WRITE, data, CHUNK), 1, out);
	/* A byte in the middle of the chunk's first run of blocks. */
	d.image[g_spy.calls[0].lba * DEF_BLOCKLEN + 100] ^= 0x5A;
	for (int shape = 0; shape < 3; shape++) {
		spy_reset();
		int n = cut(back, CHUNK, shape, iov);
		CHECK_EQ(h_io(&d, vol, 0, iov, n, 5 * BPC, BPC), -EIO);
		CHECK_EQ(spy_used(SPY_READ, back, CHUNK), shape == 0);
	}
	CHECK_EQ(h_read(&d, vol, back, 4 * BPC, BPC), 0);
	CHECK(memcmp(back, other, CHUNK) == 0);
	/* Rewritten, it reads right again. */
	REQUIRE_EQ(h_write(&d, vol, data, 5 * BPC, BPC), 0, out);
	CHECK_EQ(h_read(&d, vol, back, 5 * BPC, BPC), 0);
	CHECK(memcmp(back, data, CHUNK) == 0);
	struct reduce_vol_stats st;
	CHECK_EQ(reduce_vol_get_stats(vol, &st, sizeof(st)), 0);
	CHECK_EQ(st.errors, 3);
out:
	rig_close(&d, vol, dir);
	free(data);
	free(other);
	free(back);
}

/* Every completion of the device (and, with `own_codec`, of the harness's codec)
 * delivered twice, each caller's buffer freed as soon as its request completed: the
 * second delivery (in DEFERRED mode after the free) is ignored and touches nothing of
 * the caller's (ASan and valgrind would see it). The data is random bytes (stored raw)
 * with the built-in codec, compressible with the caller's own. */
static void duplicates_touch_nothing(int deferred, int own_codec)
{
	struct mem_dev d;
	struct spdk_reduce_vol *vol = NULL;
	char dir[64];
	uint8_t *shadow = malloc(4 * CHUNK);
	REQUIRE_EQ(raw_rig(&d, dir, sizeof(dir), deferred, own_codec ? NULL : reduce_zstd_compress,
			   own_codec ? NULL : reduce_zstd_decompress, &vol),
		   0, out);
	enum spy_kind into = own_codec ? SPY_DECOMPRESS_DST : SPY_READ,
		      from = own_codec ? SPY_COMPRESS_SRC : SPY_WRITE;
	d.twice[OP_READ] = d.twice[OP_WRITE] = 1;
	d.twice[OP_COMPRESS] = d.twice[OP_DECOMPRESS] = own_codec;
	for (uint64_t chunk = 0; chunk < 4; chunk++) {
		uint8_t *data = malloc(CHUNK);
		if (own_codec) {
			fill_text(data, CHUNK, chunk);
		} else {
			fill_random(data, CHUNK, 90 + chunk);
		}
		memcpy(shadow + chunk * CHUNK, data, CHUNK);
		spy_reset();
		CHECK_EQ(h_write(&d, vol, data, chunk * BPC, BPC), 0);
		CHECK_EQ(spy_used(from, data, CHUNK), 1);
		free(data);
	}
	for (uint64_t chunk = 0; chunk < 4; chunk++) {
		uint8_t *back = malloc(CHUNK);
		spy_reset();
		CHECK_EQ(h_read(&d, vol, back, chunk * BPC, BPC), 0);
		CHECK_EQ(spy_used(into, back, CHUNK), 1);
		CHECK(memcmp(back, shadow + chunk * CHUNK, CHUNK) == 0);
		free(back);
	}
	mem_dev_poll_all(&d);
	CHECK(d.duplicates > 0);
	memset(d.twice, 0, sizeof(d.twice));
	uint8_t *back = malloc(4 * CHUNK);
	CHECK_EQ(h_read(&d, vol, back, 0, 4 * BPC), 0);
	CHECK(memcmp(back, shadow, 4 * CHUNK) == 0);
	free(back);
out:
	rig_close(&d, vol, dir);
	free(shadow);
}

TEST(zero_copy_raw_duplicate_completions_touch_nothing)
{
	duplicates_touch_nothing(deferred, 0);
}

TEST(zero_copy_callers_codec_duplicate_completions_touch_nothing)
{
	duplicates_touch_nothing(deferred, 1);
}

/* The caller's own codec (the harness's, completing later in DEFERRED mode) works in the
 * caller's buffer: a whole chunk in one iovec is compressed straight from it and
 * decompressed straight into it; in several iovecs, through ours. Stored raw, such a
 * chunk is then written from the caller's buffer too; zeros are neither compressed nor
 * written. The bytes match the shadow copy in every shape, and after a reload. */
TEST(zero_copy_callers_codec_uses_the_callers_buffer)
{
	struct mem_dev d;
	struct spdk_reduce_vol *vol = NULL;
	char dir[64];
	uint8_t *shadow = calloc(CHUNKS, CHUNK), *data = malloc(CHUNK), *back = malloc(CHUNK);
	REQUIRE_EQ(raw_rig(&d, dir, sizeof(dir), deferred, NULL, NULL, &vol), 0, out);
	for (int shape = 0; shape < 3; shape++) {
		uint64_t chunk = (uint64_t)shape;
		fill_text(data, CHUNK, (uint64_t)shape);
		memcpy(shadow + chunk * CHUNK, data, CHUNK);
		shapes_round_trip(&d, vol, chunk, data, back, shape, SPY_COMPRESS_SRC,
				  SPY_DECOMPRESS_DST);
	}
	/* Incompressible: compressed from the caller's buffer, then written from it. */
	fill_random(data, CHUNK, 61);
	memcpy(shadow + 4 * CHUNK, data, CHUNK);
	spy_reset();
	CHECK_EQ(h_write(&d, vol, data, 4 * BPC, BPC), 0);
	CHECK_EQ(spy_used(SPY_COMPRESS_SRC, data, CHUNK), 1);
	CHECK_EQ(spy_used(SPY_WRITE, data, CHUNK), 1);
	/* Zeros over a chunk that held data: no codec call, no device write. */
	memset(data, 0, CHUNK);
	memset(shadow + 1 * CHUNK, 0, CHUNK);
	spy_reset();
	CHECK_EQ(h_write(&d, vol, data, 1 * BPC, BPC), 0);
	CHECK_EQ(g_spy.n, 0);
	reload_and_verify(&d, &vol, shadow);
out:
	rig_close(&d, vol, dir);
	free(shadow);
	free(data);
	free(back);
}

/* A program written for the 2019 libreduce API, as an SPDK application of that time
 * would be: its own backing device, its own codec (a byte run-length coder), the
 * original functions only, and an SPDK-style poll loop delivering completions later.
 * It uses nothing of this library beyond that API, and is built with -Wall -Wextra
 * -Werror against include/spdk/reduce.h: it must compile and pass unchanged.
 *
 * Output ends with "api2019: N passed, M failed". */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "spdk/reduce.h"

#define BLOCKLEN 512
#define CHUNK 16384
#define CHUNKS 16
#define BPC (CHUNK / BLOCKLEN)

static int g_passed, g_failed;

#define EXPECT(cond)                                                                        \
	do {                                                                                \
		if (cond) {                                                                 \
			g_passed++;                                                         \
		} else {                                                                    \
			g_failed++;                                                         \
			fprintf(stderr, "api2019: %s:%d: %s failed\n", __FILE__, __LINE__,   \
				#cond);                                                     \
		}                                                                           \
	} while (0)

/* ---- the backing device: memory, completions queued and delivered by poll() ---- */

struct op {
	struct op *next;
	int status;
	struct spdk_reduce_vol_cb_args *args;
};

struct my_dev {
	struct spdk_reduce_backing_dev backing; /* first: the library passes this pointer */
	uint8_t *blocks;
	struct op *head, **tail;
};

static void queue(struct my_dev *d, struct spdk_reduce_vol_cb_args *args, int status)
{
	struct op *op = malloc(sizeof(*op));
	if (!op) {
		abort();
	}
	op->next = NULL;
	op->status = status;
	op->args = args;
	*d->tail = op;
	d->tail = &op->next;
}

static int poll_once(struct my_dev *d)
{
	struct op *op = d->head;
	if (!op) {
		return 0;
	}
	d->head = op->next;
	if (!d->head) {
		d->tail = &d->head;
	}
	op->args->cb_fn(op->args->cb_arg, op->status);
	free(op);
	return 1;
}

static void copy_blocks(struct my_dev *d, struct iovec *iov, int iovcnt, uint64_t lba,
			int to_device)
{
	uint8_t *at = d->blocks + lba * BLOCKLEN;
	for (int i = 0; i < iovcnt; i++) {
		if (to_device) {
			memcpy(at, iov[i].iov_base, iov[i].iov_len);
		} else {
			memcpy(iov[i].iov_base, at, iov[i].iov_len);
		}
		at += iov[i].iov_len;
	}
}

static void dev_readv(struct spdk_reduce_backing_dev *dev, struct iovec *iov, int iovcnt,
		      uint64_t lba, uint32_t lba_count, struct spdk_reduce_vol_cb_args *args)
{
	(void)lba_count;
	copy_blocks((struct my_dev *)dev, iov, iovcnt, lba, 0);
	queue((struct my_dev *)dev, args, 0);
}

static void dev_writev(struct spdk_reduce_backing_dev *dev, struct iovec *iov, int iovcnt,
		       uint64_t lba, uint32_t lba_count, struct spdk_reduce_vol_cb_args *args)
{
	(void)lba_count;
	copy_blocks((struct my_dev *)dev, iov, iovcnt, lba, 1);
	queue((struct my_dev *)dev, args, 0);
}

static void dev_unmap(struct spdk_reduce_backing_dev *dev, uint64_t lba, uint32_t lba_count,
		      struct spdk_reduce_vol_cb_args *args)
{
	memset(((struct my_dev *)dev)->blocks + lba * BLOCKLEN, 0,
	       (size_t)lba_count * BLOCKLEN);
	queue((struct my_dev *)dev, args, 0);
}

/* ---- the codec: (count, byte) pairs; fails with -ENOSPC when it does not fit ---- */

static size_t gather(struct iovec *iov, int iovcnt, uint8_t *out, size_t cap)
{
	size_t n = 0;
	for (int i = 0; i < iovcnt && n < cap; i++) {
		size_t take = iov[i].iov_len < cap - n ? iov[i].iov_len : cap - n;
		memcpy(out + n, iov[i].iov_base, take);
		n += take;
	}
	return n;
}

static int scatter(struct iovec *iov, int iovcnt, const uint8_t *in, size_t len)
{
	size_t done = 0;
	for (int i = 0; i < iovcnt && done < len; i++) {
		size_t put = iov[i].iov_len < len - done ? iov[i].iov_len : len - done;
		memcpy(iov[i].iov_base, in + done, put);
		done += put;
	}
	return done == len ? (int)len : -ENOSPC;
}

static void dev_compress(struct spdk_reduce_backing_dev *dev, struct iovec *src, int srccnt,
			 struct iovec *dst, int dstcnt, struct spdk_reduce_vol_cb_args *args)
{
	static uint8_t in[CHUNK], out[2 * CHUNK];
	size_t n = gather(src, srccnt, in, sizeof(in)), o = 0;
	for (size_t i = 0; i < n;) {
		size_t run = 1;
		while (i + run < n && run < 255 && in[i + run] == in[i]) {
			run++;
		}
		out[o++] = (uint8_t)run;
		out[o++] = in[i];
		i += run;
	}
	queue((struct my_dev *)dev, args, scatter(dst, dstcnt, out, o));
}

static void dev_decompress(struct spdk_reduce_backing_dev *dev, struct iovec *src,
			   int srccnt, struct iovec *dst, int dstcnt,
			   struct spdk_reduce_vol_cb_args *args)
{
	static uint8_t in[CHUNK], out[CHUNK];
	size_t n = gather(src, srccnt, in, sizeof(in)), o = 0;
	int status = 0;
	for (size_t i = 0; i + 1 < n && status == 0; i += 2) {
		if (o + in[i] > sizeof(out)) {
			status = -EIO;
			break;
		}
		memset(out + o, in[i + 1], in[i]);
		o += in[i];
	}
	queue((struct my_dev *)dev, args, status ? status : scatter(dst, dstcnt, out, o));
}

/* ---- the application ---- */

struct wait {
	int done;
	int status;
	struct spdk_reduce_vol *vol;
};

static void with_handle(void *arg, struct spdk_reduce_vol *vol, int reduce_errno)
{
	struct wait *w = arg;
	w->vol = vol;
	w->status = reduce_errno;
	w->done = 1;
}

static void without_handle(void *arg, int reduce_errno)
{
	struct wait *w = arg;
	w->status = reduce_errno;
	w->done = 1;
}

static int run_until_done(struct my_dev *d, struct wait *w)
{
	while (!w->done) {
		if (!poll_once(d)) {
			fprintf(stderr, "api2019: a completion never came\n");
			return -ETIMEDOUT;
		}
	}
	return w->status;
}

static int io(struct my_dev *d, struct spdk_reduce_vol *vol, int write, void *buf,
	      uint64_t offset, uint64_t length)
{
	struct wait w = {0};
	/* Two iovecs, to take the scatter-gather path. */
	size_t half = (size_t)length * BLOCKLEN / 2;
	struct iovec iov[2] = {{buf, half}, {(uint8_t *)buf + half, (size_t)length * BLOCKLEN - half}};
	if (write) {
		spdk_reduce_vol_writev(vol, iov, 2, offset, length, without_handle, &w);
	} else {
		spdk_reduce_vol_readv(vol, iov, 2, offset, length, without_handle, &w);
	}
	return run_until_done(d, &w);
}

int main(void)
{
	struct my_dev d;
	struct spdk_reduce_vol_params params;
	struct wait w;
	char dir[] = "/tmp/api2019.XXXXXX";
	static uint8_t data[CHUNKS][CHUNK], back[CHUNK];

	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	memset(&d, 0, sizeof(d));
	d.backing.readv = dev_readv;
	d.backing.writev = dev_writev;
	d.backing.unmap = dev_unmap;
	d.backing.compress = dev_compress;
	d.backing.decompress = dev_decompress;
	d.backing.blocklen = BLOCKLEN;
	d.backing.blockcnt = (uint64_t)(CHUNKS + 128) * BPC;
	d.blocks = calloc(d.backing.blockcnt, BLOCKLEN);
	d.tail = &d.head;
	if (!d.blocks) {
		return 1;
	}

	memset(&params, 0, sizeof(params));
	params.backing_io_unit_size = 4096;
	params.logical_block_size = BLOCKLEN;
	params.chunk_size = CHUNK;
	memset(&w, 0, sizeof(w));
	spdk_reduce_vol_init(&params, &d.backing, dir, with_handle, &w);
	EXPECT(run_until_done(&d, &w) == 0 && w.vol != NULL);
	if (!w.vol) {
		return 1;
	}
	struct spdk_reduce_vol *vol = w.vol;
	EXPECT(params.vol_size == (uint64_t)CHUNKS * CHUNK);
	EXPECT(spdk_reduce_vol_get_params(vol)->chunk_size == CHUNK);
	EXPECT(memcmp(spdk_reduce_vol_get_uuid(vol), &params.uuid, sizeof(params.uuid)) == 0);
	/* print_info writes to stderr: keep the output readable. */
	int saved = dup(2), null = open("/dev/null", O_WRONLY);
	if (saved >= 0 && null >= 0) {
		dup2(null, 2);
		spdk_reduce_vol_print_info(vol);
		dup2(saved, 2);
	}
	if (saved >= 0) {
		close(saved);
	}
	if (null >= 0) {
		close(null);
	}

	/* Runs of bytes (compressible), and every 4th chunk noise (stored raw). */
	uint64_t x = 88172645463325252ULL;
	for (int c = 0; c < CHUNKS; c++) {
		for (int i = 0; i < CHUNK; i++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			data[c][i] = c % 4 == 3 ? (uint8_t)x : (uint8_t)(c + i / 1000);
		}
		EXPECT(io(&d, vol, 1, data[c], (uint64_t)c * BPC, BPC) == 0);
	}
	/* A partial write into chunk 2: a read-modify-write. */
	memset(data[2] + 3 * BLOCKLEN, 0xAB, 2 * BLOCKLEN);
	EXPECT(io(&d, vol, 1, data[2] + 3 * BLOCKLEN, 2 * BPC + 3, 2) == 0);
	for (int c = 0; c < CHUNKS; c++) {
		EXPECT(io(&d, vol, 0, back, (uint64_t)c * BPC, BPC) == 0);
		EXPECT(memcmp(back, data[c], CHUNK) == 0);
	}

	memset(&w, 0, sizeof(w));
	spdk_reduce_vol_unload(vol, without_handle, &w);
	EXPECT(run_until_done(&d, &w) == 0);

	memset(&w, 0, sizeof(w));
	spdk_reduce_vol_load(&d.backing, with_handle, &w);
	EXPECT(run_until_done(&d, &w) == 0 && w.vol != NULL);
	vol = w.vol;
	if (vol) {
		for (int c = 0; c < CHUNKS; c++) {
			EXPECT(io(&d, vol, 0, back, (uint64_t)c * BPC, BPC) == 0);
			EXPECT(memcmp(back, data[c], CHUNK) == 0);
		}
		memset(&w, 0, sizeof(w));
		spdk_reduce_vol_unload(vol, without_handle, &w);
		EXPECT(run_until_done(&d, &w) == 0);
	}

	memset(&w, 0, sizeof(w));
	spdk_reduce_vol_destroy(&d.backing, without_handle, &w);
	EXPECT(run_until_done(&d, &w) == 0);
	EXPECT(rmdir(dir) == 0); /* the pm file is gone */
	EXPECT(memcmp(d.blocks, "SPDKREDU", 8) != 0);
	free(d.blocks);

	printf("api2019: %d passed, %d failed\n", g_passed, g_failed);
	return g_failed ? 1 : 0;
}

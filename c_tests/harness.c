#define _GNU_SOURCE
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int g_test_failures;

struct pending {
	struct pending *next;
	void (*cb_fn)(void *, int);
	void *cb_arg;
	int status;
};

static void enqueue(struct mem_dev *d, struct spdk_reduce_vol_cb_args *args, int status)
{
	struct pending *p = calloc(1, sizeof(*p));
	if (!p) {
		abort();
	}
	p->cb_fn = args->cb_fn;
	p->cb_arg = args->cb_arg;
	p->status = status;
	if (d->tail) {
		d->tail->next = p;
	} else {
		d->head = p;
	}
	d->tail = p;
}

static void complete(struct mem_dev *d, struct spdk_reduce_vol_cb_args *args, int status)
{
	if (d->deferred) {
		enqueue(d, args, status);
	} else {
		args->cb_fn(args->cb_arg, status);
	}
}

/* The injected error for this operation, or 0. */
static int injected(struct mem_dev *d, enum mem_op kind)
{
	d->count[kind]++;
	if (d->fail_at[kind] == d->count[kind]) {
		d->fail_at[kind] = 0;
		return d->fail_errno[kind];
	}
	return 0;
}

static void block_io(struct spdk_reduce_backing_dev *dev, struct iovec *iov, int iovcnt,
		     uint64_t lba, uint32_t lba_count, struct spdk_reduce_vol_cb_args *args,
		     int write)
{
	struct mem_dev *d = container_of(dev, struct mem_dev, dev);
	int err = injected(d, write ? OP_WRITE : OP_READ);
	size_t off = lba * dev->blocklen, total = 0;
	if (err == 0 && lba + lba_count > dev->blockcnt) {
		err = -EIO;
	}
	for (int i = 0; i < iovcnt && err == 0; i++) {
		total += iov[i].iov_len;
	}
	if (err == 0 && total != (size_t)lba_count * dev->blocklen) {
		err = -EINVAL;
	}
	for (int i = 0; i < iovcnt && err == 0; i++) {
		if (write) {
			memcpy(d->image + off, iov[i].iov_base, iov[i].iov_len);
		} else {
			memcpy(iov[i].iov_base, d->image + off, iov[i].iov_len);
		}
		off += iov[i].iov_len;
	}
	complete(d, args, err);
}

static void dev_readv(struct spdk_reduce_backing_dev *dev, struct iovec *iov, int iovcnt,
		      uint64_t lba, uint32_t lba_count, struct spdk_reduce_vol_cb_args *args)
{
	block_io(dev, iov, iovcnt, lba, lba_count, args, 0);
}

static void dev_writev(struct spdk_reduce_backing_dev *dev, struct iovec *iov, int iovcnt,
		       uint64_t lba, uint32_t lba_count, struct spdk_reduce_vol_cb_args *args)
{
	block_io(dev, iov, iovcnt, lba, lba_count, args, 1);
}

static void dev_unmap(struct spdk_reduce_backing_dev *dev, uint64_t lba, uint32_t lba_count,
		      struct spdk_reduce_vol_cb_args *args)
{
	struct mem_dev *d = container_of(dev, struct mem_dev, dev);
	memset(d->image + lba * dev->blocklen, 0, (size_t)lba_count * dev->blocklen);
	complete(d, args, 0);
}

static void store_status(void *arg, int status)
{
	*(int *)arg = status;
}

/* The built-in zstd, run at once into a private completion; ours is then delivered
 * in the device's mode. */
static void codec(struct spdk_reduce_backing_dev *dev, struct iovec *src, int srccnt,
		  struct iovec *dst, int dstcnt, struct spdk_reduce_vol_cb_args *args, int compress)
{
	struct mem_dev *d = container_of(dev, struct mem_dev, dev);
	int err = injected(d, compress ? OP_COMPRESS : OP_DECOMPRESS);
	int status = -1;
	struct spdk_reduce_vol_cb_args mine = {.cb_fn = store_status, .cb_arg = &status};
	if (err) {
		complete(d, args, err);
		return;
	}
	if (compress) {
		reduce_zstd_compress(dev, src, srccnt, dst, dstcnt, &mine);
	} else {
		reduce_zstd_decompress(dev, src, srccnt, dst, dstcnt, &mine);
	}
	complete(d, args, status);
}

static void dev_compress(struct spdk_reduce_backing_dev *dev, struct iovec *src, int srccnt,
			 struct iovec *dst, int dstcnt, struct spdk_reduce_vol_cb_args *args)
{
	codec(dev, src, srccnt, dst, dstcnt, args, 1);
}

static void dev_decompress(struct spdk_reduce_backing_dev *dev, struct iovec *src, int srccnt,
			   struct iovec *dst, int dstcnt, struct spdk_reduce_vol_cb_args *args)
{
	codec(dev, src, srccnt, dst, dstcnt, args, 0);
}

void mem_dev_init(struct mem_dev *d, uint32_t blocklen, uint64_t blockcnt, int deferred)
{
	memset(d, 0, sizeof(*d));
	d->dev.readv = dev_readv;
	d->dev.writev = dev_writev;
	d->dev.unmap = dev_unmap;
	d->dev.compress = dev_compress;
	d->dev.decompress = dev_decompress;
	d->dev.blocklen = blocklen;
	d->dev.blockcnt = blockcnt;
	d->image = calloc(blockcnt, blocklen);
	d->deferred = deferred;
	if (!d->image) {
		abort();
	}
}

void mem_dev_free(struct mem_dev *d)
{
	mem_dev_poll_all(d);
	free(d->image);
	d->image = NULL;
}

int mem_dev_poll(struct mem_dev *d)
{
	struct pending *p = d->head;
	if (!p) {
		return 0;
	}
	d->head = p->next;
	if (!d->head) {
		d->tail = NULL;
	}
	p->cb_fn(p->cb_arg, p->status);
	free(p);
	return 1;
}

void mem_dev_poll_all(struct mem_dev *d)
{
	while (mem_dev_poll(d)) {
	}
}

size_t mem_dev_pending(const struct mem_dev *d)
{
	size_t n = 0;
	for (const struct pending *p = d->head; p; p = p->next) {
		n++;
	}
	return n;
}

void mem_dev_fail_next(struct mem_dev *d, enum mem_op kind, int err)
{
	d->fail_at[kind] = d->count[kind] + 1;
	d->fail_errno[kind] = err;
}

int poll_until(struct mem_dev *d, const int *flag)
{
	while (!*flag) {
		if (!mem_dev_poll(d)) {
			fprintf(stderr, "    completion never arrived\n");
			g_test_failures++;
			return -1;
		}
	}
	return 0;
}

struct wait {
	int done;
	int status;
	struct spdk_reduce_vol *vol;
	struct reduce_vol_check_report report;
};

static void with_handle_done(void *arg, struct spdk_reduce_vol *vol, int status)
{
	struct wait *w = arg;
	w->vol = vol;
	w->status = status;
	w->done = 1;
}

static void op_done(void *arg, int status)
{
	struct wait *w = arg;
	w->status = status;
	w->done = 1;
}

static void check_done(void *arg, int status, const struct reduce_vol_check_report *r)
{
	struct wait *w = arg;
	w->report = *r;
	w->status = status;
	w->done = 1;
}

static int finish(struct mem_dev *d, struct wait *w)
{
	return poll_until(d, &w->done) ? -ETIMEDOUT : w->status;
}

int h_init(struct mem_dev *d, struct spdk_reduce_vol_params *p, const char *dir,
	   struct spdk_reduce_vol **vol)
{
	struct wait w = {0};
	spdk_reduce_vol_init(p, &d->dev, dir, with_handle_done, &w);
	int rc = finish(d, &w);
	*vol = w.vol;
	return rc;
}

int h_load(struct mem_dev *d, struct spdk_reduce_vol **vol)
{
	struct wait w = {0};
	spdk_reduce_vol_load(&d->dev, with_handle_done, &w);
	int rc = finish(d, &w);
	*vol = w.vol;
	return rc;
}

int h_unload(struct mem_dev *d, struct spdk_reduce_vol *vol)
{
	struct wait w = {0};
	spdk_reduce_vol_unload(vol, op_done, &w);
	return finish(d, &w);
}

int h_destroy(struct mem_dev *d)
{
	struct wait w = {0};
	spdk_reduce_vol_destroy(&d->dev, op_done, &w);
	return finish(d, &w);
}

int h_io(struct mem_dev *d, struct spdk_reduce_vol *vol, int write, struct iovec *iov,
	 int iovcnt, uint64_t offset, uint64_t length)
{
	struct wait w = {0};
	if (write) {
		spdk_reduce_vol_writev(vol, iov, iovcnt, offset, length, op_done, &w);
	} else {
		spdk_reduce_vol_readv(vol, iov, iovcnt, offset, length, op_done, &w);
	}
	return finish(d, &w);
}

int h_write(struct mem_dev *d, struct spdk_reduce_vol *vol, const void *buf, uint64_t offset,
	    uint64_t length)
{
	uint32_t lbs = spdk_reduce_vol_get_params(vol)->logical_block_size;
	struct iovec iov = {.iov_base = (void *)buf, .iov_len = length * lbs};
	return h_io(d, vol, 1, &iov, 1, offset, length);
}

int h_read(struct mem_dev *d, struct spdk_reduce_vol *vol, void *buf, uint64_t offset,
	   uint64_t length)
{
	uint32_t lbs = spdk_reduce_vol_get_params(vol)->logical_block_size;
	struct iovec iov = {.iov_base = buf, .iov_len = length * lbs};
	return h_io(d, vol, 0, &iov, 1, offset, length);
}

int h_check(struct mem_dev *d, struct spdk_reduce_vol *vol, struct reduce_vol_check_report *r)
{
	struct wait w = {0};
	reduce_vol_check(vol, check_done, &w);
	int rc = finish(d, &w);
	if (r) {
		*r = w.report;
	}
	return rc;
}

int rig_open(struct mem_dev *d, struct spdk_reduce_vol_params *p, char *dir, size_t dir_len,
	     uint64_t chunks, int deferred, struct spdk_reduce_vol **vol)
{
	make_tmpdir(dir, dir_len);
	mem_dev_init(d, 512, blockcnt_for_chunks(chunks), deferred);
	default_params(p);
	return h_init(d, p, dir, vol);
}

uint64_t rng_next(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545F4914F6CDD1DULL;
}

void fill_data(void *buf, size_t len, uint64_t seed)
{
	uint8_t *b = buf;
	uint64_t s = seed * 0x9E3779B97F4A7C15ULL | 1;
	static const char *words[] = {"reduce ", "chunk ", "volume ", "io unit ", "spdk "};
	switch (rng_next(&s) % 4) {
	case 0: /* incompressible */
		for (size_t i = 0; i < len; i++) {
			b[i] = (uint8_t)rng_next(&s);
		}
		break;
	case 1: /* text */
		for (size_t i = 0; i < len;) {
			const char *w = words[rng_next(&s) % 5];
			for (size_t k = 0; w[k] && i < len; k++) {
				b[i++] = (uint8_t)w[k];
			}
		}
		break;
	case 2: /* runs */
		for (size_t i = 0; i < len;) {
			size_t run = 1 + rng_next(&s) % 300;
			uint8_t v = (uint8_t)rng_next(&s);
			for (size_t k = 0; k < run && i < len; k++) {
				b[i++] = v;
			}
		}
		break;
	default: /* half random */
		memset(b, 0, len);
		for (size_t i = 0; i < len / 2; i++) {
			b[i] = (uint8_t)rng_next(&s);
		}
	}
}

void make_tmpdir(char *out, size_t len)
{
	snprintf(out, len, "/tmp/reduce-ctest-XXXXXX");
	if (!mkdtemp(out)) {
		perror("mkdtemp");
		abort();
	}
}

void remove_tree(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char path[4096];
	if (!d) {
		return;
	}
	while ((e = readdir(d))) {
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
			snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
			unlink(path);
		}
	}
	closedir(d);
	rmdir(dir);
}

int count_files(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;
	if (!d) {
		return -1;
	}
	while ((e = readdir(d))) {
		n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
	}
	closedir(d);
	return n;
}

int small_scale(void)
{
	const char *s = getenv("REDUCE_TEST_SCALE");
	return s && strcmp(s, "small") == 0;
}

void default_params(struct spdk_reduce_vol_params *p)
{
	memset(p, 0, sizeof(*p));
	p->backing_io_unit_size = 4096;
	p->logical_block_size = 512;
	p->chunk_size = 16384;
}

uint64_t blockcnt_for_chunks(uint64_t chunks)
{
	return (chunks + 128) * (16384 / 512);
}

#define _GNU_SOURCE
#include "harness.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int g_test_failures;
const char *g_test_mode = "";

/* One queued operation. In DEFERRED mode the work is done when it is delivered, through
 * the pointers the library passed (its iovec arrays and its cb_args). */
struct pending {
	struct pending *next;
	enum mem_op kind;
	struct iovec *iov, *dst;
	int iovcnt, dstcnt;
	uint64_t lba;
	uint32_t lba_count;
	struct spdk_reduce_vol_cb_args *args;
	int injected;
	int status; /* the injected status, or an echo's */
	/* A second delivery (see twice[] in harness.h): calls echo_fn(echo_arg, status). */
	spdk_reduce_dev_cpl echo_fn;
	void *echo_arg;
};

static void protocol_error(struct mem_dev *d, const char *what, uint64_t a, uint64_t b)
{
	fprintf(stderr, "    [%s] backing device: %s (%llu, %llu)\n", g_test_mode, what,
		(unsigned long long)a, (unsigned long long)b);
	d->protocol_errors++;
	g_test_failures++;
}

static size_t iov_total(struct mem_dev *d, const struct iovec *iov, int iovcnt)
{
	size_t total = 0;
	if (!iov || iovcnt <= 0) {
		protocol_error(d, "empty iovec array", (uint64_t)(uintptr_t)iov, (uint64_t)iovcnt);
		return 0;
	}
	for (int i = 0; i < iovcnt; i++) {
		if (!iov[i].iov_base && iov[i].iov_len) {
			protocol_error(d, "NULL iov_base", (uint64_t)i, iov[i].iov_len);
		}
		total += iov[i].iov_len;
	}
	return total;
}

static int block_io(struct mem_dev *d, const struct pending *p)
{
	uint64_t blocklen = d->dev.blocklen;
	if (p->lba_count == 0 || p->lba + p->lba_count > d->dev.blockcnt) {
		protocol_error(d, "block range outside the device", p->lba, p->lba_count);
		return -EIO;
	}
	if (p->kind == OP_UNMAP) {
		memset(d->image + p->lba * blocklen, 0, (size_t)p->lba_count * blocklen);
		return 0;
	}
	size_t total = iov_total(d, p->iov, p->iovcnt);
	if (total != (size_t)p->lba_count * blocklen) {
		protocol_error(d, "iovec bytes != lba_count * blocklen", total, p->lba_count);
		return -EIO;
	}
	size_t off = p->lba * blocklen;
	for (int i = 0; i < p->iovcnt; i++) {
		if (p->kind == OP_WRITE) {
			memcpy(d->image + off, p->iov[i].iov_base, p->iov[i].iov_len);
		} else {
			memcpy(p->iov[i].iov_base, d->image + off, p->iov[i].iov_len);
		}
		off += p->iov[i].iov_len;
	}
	return 0;
}

static void store_status(void *arg, int status)
{
	int *s = arg;
	s[0] = status;
	s[1] = 1;
}

/* The built-in zstd, called into a private completion. */
static int codec(struct mem_dev *d, const struct pending *p)
{
	int res[2] = {-EIO, 0};
	struct spdk_reduce_vol_cb_args mine = {.cb_fn = store_status, .cb_arg = res};
	size_t src = iov_total(d, p->iov, p->iovcnt), dst = iov_total(d, p->dst, p->dstcnt);
	if (d->chunk_size) {
		if (p->kind == OP_COMPRESS && src != d->chunk_size) {
			protocol_error(d, "compress source is not one chunk", src, d->chunk_size);
		}
		if (p->kind == OP_DECOMPRESS && (src == 0 || src > d->chunk_size)) {
			protocol_error(d, "decompress source size", src, d->chunk_size);
		}
		if (dst != d->chunk_size) {
			protocol_error(d, "codec destination is not one chunk", dst, d->chunk_size);
		}
	}
	if (p->kind == OP_COMPRESS) {
		reduce_zstd_compress(&d->dev, p->iov, p->iovcnt, p->dst, p->dstcnt, &mine);
	} else {
		reduce_zstd_decompress(&d->dev, p->iov, p->iovcnt, p->dst, p->dstcnt, &mine);
	}
	if (!res[1]) {
		protocol_error(d, "built-in codec did not complete inside the call", p->kind, 0);
	}
	return res[0];
}

static void enqueue(struct mem_dev *d, const struct pending *p);

static void run(struct mem_dev *d, struct pending *p)
{
	int status;
	if (p->echo_fn) {
		d->duplicates++;
		p->echo_fn(p->echo_arg, p->status);
		return;
	}
	if (p->injected) {
		status = p->status;
	} else if (p->kind == OP_COMPRESS || p->kind == OP_DECOMPRESS) {
		status = codec(d, p);
	} else {
		status = block_io(d, p);
	}
	struct pending echo = {.kind = p->kind, .status = status, .echo_fn = p->args->cb_fn,
			       .echo_arg = p->args->cb_arg};
	p->args->cb_fn(p->args->cb_arg, status);
	if (d->twice[p->kind] && !d->deferred) {
		d->duplicates++;
		p->args->cb_fn(p->args->cb_arg, status);
	} else if (d->twice[p->kind]) {
		enqueue(d, &echo);
	}
}

static void submit(struct mem_dev *d, struct pending *p)
{
	d->count[p->kind]++;
	if (d->fail_at[p->kind] && d->fail_at[p->kind] == d->count[p->kind]) {
		d->fail_at[p->kind] = 0;
		p->injected = 1;
		p->status = d->fail_status[p->kind];
	}
	if (!p->args || !p->args->cb_fn) {
		protocol_error(d, "operation without a completion", p->kind, 0);
		return;
	}
	if (!d->deferred) {
		run(d, p);
		return;
	}
	enqueue(d, p);
}

static void enqueue(struct mem_dev *d, const struct pending *p)
{
	struct pending *q = malloc(sizeof(*q));
	if (!q) {
		abort();
	}
	*q = *p;
	q->next = NULL;
	if (d->tail) {
		d->tail->next = q;
	} else {
		d->head = q;
	}
	d->tail = q;
	if (++d->pending > d->max_pending) {
		d->max_pending = d->pending;
	}
}

static void dev_readv(struct spdk_reduce_backing_dev *dev, struct iovec *iov, int iovcnt,
		      uint64_t lba, uint32_t lba_count, struct spdk_reduce_vol_cb_args *args)
{
	struct pending p = {.kind = OP_READ, .iov = iov, .iovcnt = iovcnt, .lba = lba,
			    .lba_count = lba_count, .args = args};
	submit(container_of(dev, struct mem_dev, dev), &p);
}

static void dev_writev(struct spdk_reduce_backing_dev *dev, struct iovec *iov, int iovcnt,
		       uint64_t lba, uint32_t lba_count, struct spdk_reduce_vol_cb_args *args)
{
	struct pending p = {.kind = OP_WRITE, .iov = iov, .iovcnt = iovcnt, .lba = lba,
			    .lba_count = lba_count, .args = args};
	submit(container_of(dev, struct mem_dev, dev), &p);
}

static void dev_unmap(struct spdk_reduce_backing_dev *dev, uint64_t lba, uint32_t lba_count,
		      struct spdk_reduce_vol_cb_args *args)
{
	struct pending p = {.kind = OP_UNMAP, .lba = lba, .lba_count = lba_count, .args = args};
	submit(container_of(dev, struct mem_dev, dev), &p);
}

static void dev_compress(struct spdk_reduce_backing_dev *dev, struct iovec *src, int srccnt,
			 struct iovec *dst, int dstcnt, struct spdk_reduce_vol_cb_args *args)
{
	struct pending p = {.kind = OP_COMPRESS, .iov = src, .iovcnt = srccnt, .dst = dst,
			    .dstcnt = dstcnt, .args = args};
	submit(container_of(dev, struct mem_dev, dev), &p);
}

static void dev_decompress(struct spdk_reduce_backing_dev *dev, struct iovec *src, int srccnt,
			   struct iovec *dst, int dstcnt, struct spdk_reduce_vol_cb_args *args)
{
	struct pending p = {.kind = OP_DECOMPRESS, .iov = src, .iovcnt = srccnt, .dst = dst,
			    .dstcnt = dstcnt, .args = args};
	submit(container_of(dev, struct mem_dev, dev), &p);
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
	d->image = calloc(blockcnt ? blockcnt : 1, blocklen ? blocklen : 1);
	d->deferred = deferred;
	if (!d->image) {
		abort();
	}
}

void mem_dev_free(struct mem_dev *d)
{
	if (d->head) {
		fprintf(stderr, "    [%s] %zu completions still queued at the end\n", g_test_mode,
			d->pending);
		g_test_failures++;
	}
	while (d->head) {
		struct pending *p = d->head;
		d->head = p->next;
		free(p);
	}
	d->tail = NULL;
	d->pending = 0;
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
	d->pending--;
	run(d, p);
	free(p);
	return 1;
}

void mem_dev_poll_all(struct mem_dev *d)
{
	for (uint64_t n = 0; mem_dev_poll(d); n++) {
		if (n == POLL_CAP) {
			fprintf(stderr, "    [%s] poll_all: still busy after %llu completions\n",
				g_test_mode, (unsigned long long)n);
			g_test_failures++;
			return;
		}
	}
}

void mem_dev_fail_nth(struct mem_dev *d, enum mem_op kind, uint64_t nth, int status)
{
	d->fail_at[kind] = d->count[kind] + nth;
	d->fail_status[kind] = status;
}

void mem_dev_fail_next(struct mem_dev *d, enum mem_op kind, int status)
{
	mem_dev_fail_nth(d, kind, 1, status);
}

int poll_until(struct mem_dev *d, const int *flag)
{
	for (uint64_t n = 0; !*flag; n++) {
		if (n == POLL_CAP) {
			fprintf(stderr, "    [%s] completion still missing after %llu polls\n",
				g_test_mode, (unsigned long long)n);
			g_test_failures++;
			return -1;
		}
		if (!mem_dev_poll(d)) {
			fprintf(stderr, "    [%s] completion never arrived (nothing left to poll)\n",
				g_test_mode);
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
	if (w->done) {
		fprintf(stderr, "    [%s] callback called twice\n", g_test_mode);
		g_test_failures++;
	}
	w->vol = vol;
	w->status = status;
	w->done = 1;
}

static void op_done(void *arg, int status)
{
	struct wait *w = arg;
	if (w->done) {
		fprintf(stderr, "    [%s] callback called twice\n", g_test_mode);
		g_test_failures++;
	}
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

static int handle_result(struct mem_dev *d, struct wait *w, struct spdk_reduce_vol **vol)
{
	int rc = finish(d, w);
	*vol = w->vol;
	if (rc == 0 && !w->vol) {
		fprintf(stderr, "    [%s] success with a NULL volume\n", g_test_mode);
		g_test_failures++;
	}
	if (rc != 0 && w->vol) {
		fprintf(stderr, "    [%s] failure %d with a volume\n", g_test_mode, rc);
		g_test_failures++;
	}
	if (rc == 0 && w->vol) {
		d->chunk_size = spdk_reduce_vol_get_params(w->vol)->chunk_size;
	}
	return rc;
}

int h_init(struct mem_dev *d, struct spdk_reduce_vol_params *p, const char *dir,
	   struct spdk_reduce_vol **vol)
{
	struct wait w = {0};
	spdk_reduce_vol_init(p, &d->dev, dir, with_handle_done, &w);
	return handle_result(d, &w, vol);
}

int h_load(struct mem_dev *d, struct spdk_reduce_vol **vol)
{
	struct wait w = {0};
	spdk_reduce_vol_load(&d->dev, with_handle_done, &w);
	return handle_result(d, &w, vol);
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

int h_unmap(struct mem_dev *d, struct spdk_reduce_vol *vol, uint64_t offset, uint64_t length)
{
	struct wait w = {0};
	spdk_reduce_vol_unmap(vol, offset, length, op_done, &w);
	return finish(d, &w);
}

int h_check(struct mem_dev *d, struct spdk_reduce_vol *vol, struct reduce_vol_check_report *r)
{
	struct wait w = {0};
	reduce_vol_check(vol, check_done, &w);
	int rc = finish(d, &w);
	if (r) {
		*r = w.report;
	}
	if (rc != 0 && !r) {
		fprintf(stderr, "    [%s] reduce_vol_check: %d: %s\n", g_test_mode, rc,
			w.report.first_problem);
	}
	return rc;
}

uint64_t h_units(struct spdk_reduce_vol *vol)
{
	const struct spdk_reduce_vol_info *info = spdk_reduce_vol_get_info(vol);
	const struct spdk_reduce_vol_params *p = spdk_reduce_vol_get_params(vol);
	if (!info || !p) {
		return UINT64_MAX;
	}
	/* allocated_io_units counts the metadata's io units too, as later SPDK does. */
	uint64_t metadata = (8192 + p->backing_io_unit_size - 1) / p->backing_io_unit_size;
	return info->allocated_io_units - metadata;
}

int rig_open(struct mem_dev *d, struct spdk_reduce_vol_params *p, char *dir, size_t dir_len,
	     uint64_t chunks, int deferred, struct spdk_reduce_vol **vol)
{
	make_tmpdir(dir, dir_len);
	mem_dev_init(d, DEF_BLOCKLEN, blockcnt_for_chunks(chunks), deferred);
	default_params(p);
	return h_init(d, p, dir, vol);
}

void rig_close(struct mem_dev *d, struct spdk_reduce_vol *vol, const char *dir)
{
	if (vol) {
		mem_dev_poll_all(d);
		CHECK_EQ(h_unload(d, vol), 0);
	}
	mem_dev_free(d);
	remove_tree(dir);
}

uint64_t rng_next(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545F4914F6CDD1DULL;
}

void fill_random(void *buf, size_t len, uint64_t seed)
{
	uint8_t *b = buf;
	uint64_t s = seed * 0x9E3779B97F4A7C15ULL | 1;
	size_t i = 0;
	for (; i + 8 <= len; i += 8) {
		uint64_t v = rng_next(&s);
		memcpy(b + i, &v, 8);
	}
	for (; i < len; i++) {
		b[i] = (uint8_t)rng_next(&s);
	}
}

void fill_text(void *buf, size_t len, uint64_t seed)
{
	uint8_t *b = buf;
	for (size_t i = 0; i < len; i++) {
		b[i] = (uint8_t)('a' + (i / 37 + seed) % 26);
	}
}

void fill_data(void *buf, size_t len, uint64_t seed)
{
	uint8_t *b = buf;
	uint64_t s = seed * 0x9E3779B97F4A7C15ULL | 1;
	static const char *words[] = {"reduce ", "chunk ", "volume ", "io unit ", "spdk "};
	switch (rng_next(&s) % 5) {
	case 0: /* incompressible */
		fill_random(buf, len, seed + 1);
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
	case 3: /* zeros */
		memset(b, 0, len);
		break;
	default: /* half random */
		memset(b, 0, len);
		fill_random(b, len / 2, seed + 2);
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
			if (unlink(path) != 0) {
				remove_tree(path);
			}
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

long file_size(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

int small_scale(void)
{
	const char *s = getenv("REDUCE_TEST_SCALE");
	return s && strcmp(s, "small") == 0;
}

void default_params(struct spdk_reduce_vol_params *p)
{
	memset(p, 0, sizeof(*p));
	p->backing_io_unit_size = DEF_IO_UNIT;
	p->logical_block_size = DEF_BLOCKLEN;
	p->chunk_size = DEF_CHUNK;
}

uint64_t blockcnt_for_chunks(uint64_t chunks)
{
	return (chunks + 128) * (DEF_CHUNK / DEF_BLOCKLEN);
}

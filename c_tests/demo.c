/* reduce demo: an SPDK-style poll-mode program.
 *
 * The backing device is a real file. Its operations run at submission (pread/pwrite)
 * and their completions are queued, then delivered from the main loop by a poller, a
 * few per turn, as an SPDK bdev's would be. The built-in zstd codec compresses.
 *
 * The demo gathers a corpus of real files from this machine (the directories given on
 * the command line, or a default list), writes it to a new volume, reads it back and
 * verifies it, unloads, loads again, verifies again, prints the compression ratio and
 * throughput, then destroys the volume and removes its files. Its files go in a fresh
 * directory under $TMPDIR (default /tmp).
 *
 * Usage: demo [DIR...] */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "spdk/reduce.h"

#define CHUNK (16 * 1024)
#define BLOCK 4096
#define QUEUE_DEPTH 32
#define POLL_BATCH 8 /* completions the poller delivers per loop turn */
#define CORPUS_MAX (64u << 20)

#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

struct completion {
	struct completion *next;
	void (*cb_fn)(void *, int);
	void *cb_arg;
	int status;
};

struct file_dev {
	struct spdk_reduce_backing_dev dev;
	int fd;
	struct completion *head, *tail;
};

/* ---- the backing device: a file, completions from the poll loop ---- */

static void defer(struct file_dev *f, struct spdk_reduce_vol_cb_args *args, int status)
{
	struct completion *c = malloc(sizeof(*c));
	if (!c) {
		args->cb_fn(args->cb_arg, -ENOMEM);
		return;
	}
	*c = (struct completion){NULL, args->cb_fn, args->cb_arg, status};
	if (f->tail) {
		f->tail->next = c;
	} else {
		f->head = c;
	}
	f->tail = c;
}

/* The poller: delivers at most `max` queued completions, oldest first, and returns how
 * many it delivered. A completion may submit new operations; they queue behind. */
static int poll_dev(struct file_dev *f, int max)
{
	int n = 0;
	while (f->head && n < max) {
		struct completion *c = f->head;
		f->head = c->next;
		if (!f->head) {
			f->tail = NULL;
		}
		c->cb_fn(c->cb_arg, c->status);
		free(c);
		n++;
	}
	return n;
}

static void file_io(struct spdk_reduce_backing_dev *dev, struct iovec *iov, int iovcnt,
		    uint64_t lba, uint32_t lba_count, struct spdk_reduce_vol_cb_args *args,
		    int write)
{
	struct file_dev *f = container_of(dev, struct file_dev, dev);
	off_t off = (off_t)(lba * dev->blocklen); /* lba and lba_count count blocklen units */
	ssize_t want = (ssize_t)lba_count * dev->blocklen;
	ssize_t n = write ? pwritev(f->fd, iov, iovcnt, off) : preadv(f->fd, iov, iovcnt, off);
	defer(f, args, n == want ? 0 : (n < 0 ? -errno : -EIO));
}

static void file_readv(struct spdk_reduce_backing_dev *dev, struct iovec *iov, int iovcnt,
		       uint64_t lba, uint32_t lba_count, struct spdk_reduce_vol_cb_args *args)
{
	file_io(dev, iov, iovcnt, lba, lba_count, args, 0);
}

static void file_writev(struct spdk_reduce_backing_dev *dev, struct iovec *iov, int iovcnt,
			uint64_t lba, uint32_t lba_count, struct spdk_reduce_vol_cb_args *args)
{
	file_io(dev, iov, iovcnt, lba, lba_count, args, 1);
}

static void file_unmap(struct spdk_reduce_backing_dev *dev, uint64_t lba, uint32_t lba_count,
		       struct spdk_reduce_vol_cb_args *args)
{
	(void)lba;
	(void)lba_count;
	defer(container_of(dev, struct file_dev, dev), args, 0);
}

/* ---- the corpus: real files from this machine ---- */

static uint8_t *g_corpus;
static size_t g_corpus_len, g_files;

static int add_file(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)ftw;
	if (type != FTW_F || !S_ISREG(st->st_mode) || st->st_size == 0) {
		return 0;
	}
	size_t room = CORPUS_MAX - g_corpus_len;
	int fd = open(path, O_RDONLY);
	if (fd < 0) {
		return 0;
	}
	ssize_t n = read(fd, g_corpus + g_corpus_len, (size_t)st->st_size < room ? (size_t)st->st_size : room);
	close(fd);
	if (n > 0) {
		g_corpus_len += (size_t)n;
		g_files++;
	}
	return g_corpus_len >= CORPUS_MAX ? 1 : 0;
}

/* Reads files from each directory in turn until CORPUS_MAX bytes; says what it took. */
static void gather_corpus(const char *const *dirs, int ndirs)
{
	printf("corpus (up to %u MiB of files):\n", CORPUS_MAX >> 20);
	for (int i = 0; i < ndirs && g_corpus_len < CORPUS_MAX; i++) {
		size_t files = g_files, bytes = g_corpus_len;
		if (nftw(dirs[i], add_file, 32, FTW_PHYS) == -1) {
			printf("  %-28s not readable: %s\n", dirs[i], strerror(errno));
			continue;
		}
		printf("  %-28s %6zu files  %6.1f MiB\n", dirs[i], g_files - files,
		       (double)(g_corpus_len - bytes) / (1 << 20));
	}
}

/* ---- the workload ---- */

struct run {
	struct spdk_reduce_vol *vol;
	int write;
	uint64_t next, chunks, done, in_flight, errors, mismatches;
	uint8_t *bufs; /* one chunk buffer per queue slot */
	struct iovec iov[QUEUE_DEPTH];
};

struct slot_req {
	struct run *run;
	int slot;
	uint64_t chunk;
};

static struct slot_req g_reqs[QUEUE_DEPTH];

static void submit(struct run *r, int slot);

static void io_done(void *arg, int status)
{
	struct slot_req *q = arg;
	struct run *r = q->run;
	if (status) {
		r->errors++;
	} else if (!r->write &&
		   memcmp(r->bufs + (size_t)q->slot * CHUNK, g_corpus + q->chunk * CHUNK, CHUNK)) {
		r->mismatches++;
	}
	r->done++;
	r->in_flight--;
	if (r->next < r->chunks) {
		submit(r, q->slot); /* from inside the completion, as SPDK apps do */
	}
}

static void submit(struct run *r, int slot)
{
	struct slot_req *q = &g_reqs[slot];
	uint8_t *buf = r->bufs + (size_t)slot * CHUNK;
	*q = (struct slot_req){r, slot, r->next++};
	r->iov[slot] = (struct iovec){buf, CHUNK};
	r->in_flight++;
	/* offset and length count logical blocks (BLOCK bytes here) */
	if (r->write) {
		memcpy(buf, g_corpus + q->chunk * CHUNK, CHUNK);
		spdk_reduce_vol_writev(r->vol, &r->iov[slot], 1, q->chunk * (CHUNK / BLOCK),
				       CHUNK / BLOCK, io_done, q);
	} else {
		spdk_reduce_vol_readv(r->vol, &r->iov[slot], 1, q->chunk * (CHUNK / BLOCK),
				      CHUNK / BLOCK, io_done, q);
	}
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One pass over the corpus, QUEUE_DEPTH requests in flight: the main loop polls the
 * device, whose completions submit the next requests, and prints a progress line at
 * every quarter. Returns 0, or -1 on an error or a mismatch. */
static int pass(struct file_dev *f, struct spdk_reduce_vol *vol, int write, uint64_t chunks,
		const char *what)
{
	struct run r = {.vol = vol, .write = write, .chunks = chunks};
	r.bufs = malloc((size_t)QUEUE_DEPTH * CHUNK);
	if (!r.bufs) {
		return -1;
	}
	double start = now();
	int shown = 0;
	for (int s = 0; s < QUEUE_DEPTH && r.next < chunks; s++) {
		submit(&r, s);
	}
	while (r.in_flight) {
		if (!poll_dev(f, POLL_BATCH)) {
			fprintf(stderr, "%s: %llu requests never completed\n", what,
				(unsigned long long)r.in_flight);
			free(r.bufs);
			return -1;
		}
		int quarter = (int)(4 * r.done / chunks);
		if (quarter > shown) {
			shown = quarter;
			printf("  %-16s %3d%%  %6llu/%llu chunks  %7.1f MB/s\n", what, 25 * quarter,
			       (unsigned long long)r.done, (unsigned long long)chunks,
			       (double)r.done * CHUNK / (now() - start) / 1e6);
			fflush(stdout);
		}
	}
	if (r.errors || r.mismatches) {
		printf("  %-16s %llu errors, %llu chunks differ\n", what,
		       (unsigned long long)r.errors, (unsigned long long)r.mismatches);
	} else if (!write) {
		printf("  %-16s every chunk matches the corpus\n", what);
	}
	free(r.bufs);
	return r.errors || r.mismatches ? -1 : 0;
}

/* ---- init, load, unload, destroy: start, then poll until the callback ran ---- */

struct wait {
	int done, status;
	struct spdk_reduce_vol *vol;
};

static void handle_done(void *arg, struct spdk_reduce_vol *vol, int status)
{
	struct wait *w = arg;
	*w = (struct wait){1, status, vol};
}

static void op_done(void *arg, int status)
{
	struct wait *w = arg;
	w->done = 1;
	w->status = status;
}

static int wait_for(struct file_dev *f, struct wait *w)
{
	while (!w->done) {
		if (!poll_dev(f, POLL_BATCH)) {
			fprintf(stderr, "a completion never arrived\n");
			return -ETIMEDOUT;
		}
	}
	return w->status;
}

/* Removes the demo's directory and whatever a failed run left in it. */
static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	(void)type;
	(void)ftw;
	remove(path);
	return 0;
}

int main(int argc, char **argv)
{
	static const char *const default_dirs[] = {"/usr/share/doc", "/usr/include",
						   "/usr/lib/x86_64-linux-gnu", "/usr/share",
						   "/usr/lib"};
	const char *const *dirs = argc > 1 ? (const char *const *)argv + 1 : default_dirs;
	int ndirs = argc > 1 ? argc - 1 : (int)(sizeof(default_dirs) / sizeof(default_dirs[0]));
	const char *tmp = getenv("TMPDIR");
	char dir[4096], path[4200];
	struct file_dev f = {.fd = -1};
	struct wait w = {0};
	int rc = 1;

	g_corpus = malloc(CORPUS_MAX);
	if (!g_corpus) {
		return 1;
	}
	gather_corpus(dirs, ndirs);
	uint64_t chunks = (g_corpus_len + CHUNK - 1) / CHUNK;
	memset(g_corpus + g_corpus_len, 0, chunks * CHUNK - g_corpus_len);
	printf("  total: %zu files, %.1f MiB (%llu chunks of 16 KiB)\n", g_files,
	       (double)g_corpus_len / (1 << 20), (unsigned long long)chunks);
	if (chunks == 0) {
		fprintf(stderr, "no files to make a corpus of\n");
		free(g_corpus);
		return 1;
	}
	snprintf(dir, sizeof(dir), "%s/reduce-demo-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(dir)) {
		fprintf(stderr, "cannot make a directory in %s: %s\n", tmp && *tmp ? tmp : "/tmp",
			strerror(errno));
		free(g_corpus);
		return 1;
	}
	snprintf(path, sizeof(path), "%s/backing.img", dir);
	f.fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
	f.dev = (struct spdk_reduce_backing_dev){
		.readv = file_readv, .writev = file_writev, .unmap = file_unmap,
		.compress = reduce_zstd_compress, .decompress = reduce_zstd_decompress,
		.blocklen = BLOCK, .blockcnt = (chunks + 128) * (CHUNK / BLOCK),
	};
	if (f.fd < 0 || ftruncate(f.fd, (off_t)(f.dev.blockcnt * BLOCK))) {
		perror("backing file");
		goto out;
	}
	struct spdk_reduce_vol_params params = {
		.backing_io_unit_size = BLOCK, .logical_block_size = BLOCK, .chunk_size = CHUNK};
	spdk_reduce_vol_init(&params, &f.dev, dir, handle_done, &w);
	if (wait_for(&f, &w)) {
		fprintf(stderr, "init failed: %s\n", strerror(-w.status));
		goto out;
	}
	struct spdk_reduce_vol *vol = w.vol;
	printf("volume: %.1f MiB on %s\n        pm file %s\n", (double)params.vol_size / (1 << 20),
	       path, spdk_reduce_vol_get_pm_path(vol));

	if (pass(&f, vol, 1, chunks, "write") || pass(&f, vol, 0, chunks, "read + verify")) {
		goto out;
	}
	struct reduce_vol_stats st;
	reduce_vol_get_stats(vol, &st, sizeof(st));
	uint64_t units = st.io_units_in_use;
	printf("compression: %.1f MiB stored in %.1f MiB of io units, ratio %.2f\n",
	       (double)chunks * CHUNK / (1 << 20), (double)units * BLOCK / (1 << 20),
	       (double)chunks * CHUNK / ((double)units * BLOCK));

	w = (struct wait){0};
	spdk_reduce_vol_unload(vol, op_done, &w);
	if (wait_for(&f, &w)) {
		goto out;
	}
	printf("unloaded; loading again\n");
	w = (struct wait){0};
	spdk_reduce_vol_load(&f.dev, handle_done, &w);
	if (wait_for(&f, &w)) {
		fprintf(stderr, "load failed: %s\n", strerror(-w.status));
		goto out;
	}
	vol = w.vol;
	if (pass(&f, vol, 0, chunks, "reload + verify")) {
		goto out;
	}
	w = (struct wait){0};
	spdk_reduce_vol_unload(vol, op_done, &w);
	if (wait_for(&f, &w)) {
		goto out;
	}
	w = (struct wait){0};
	spdk_reduce_vol_destroy(&f.dev, op_done, &w);
	if (wait_for(&f, &w)) {
		goto out;
	}
	printf("destroyed the volume; all data verified twice\n");
	rc = 0;
out:
	if (f.fd >= 0) {
		close(f.fd);
	}
	/* The backing file, and the pm file if a failed run left it. */
	nftw(dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
	free(g_corpus);
	if (rc) {
		fprintf(stderr, "demo FAILED\n");
	}
	return rc;
}

/* make bench: the speed of reduce through its C ABI, as ratios to the codec alone.
 *
 * A poll-mode program in the manner of SPDK: an in-memory backing device that completes
 * either inside the call ("inline") or from the poll loop ("deferred"), the built-in
 * zstd codec (reduce_zstd_*, level 1), 16 KiB chunks, 4 KiB io units and logical
 * blocks, a 256 MiB volume, its pm file on tmpfs, and a 64 MiB corpus of real files
 * from this machine. New requests are submitted from inside completions, qd1 or qd32.
 *
 * lib/codec is the library's throughput divided by the throughput of the minimal codec
 * work for the same operations, done with the same calls in the same process: for a
 * whole-chunk write, compressing the chunk; for a partial write (read-modify-write),
 * decompressing the stored chunk and compressing the merged one; for a read,
 * decompressing the chunk once (a sequential 4K read: once per chunk, for four reads);
 * for whole-chunk writes of random bytes, compressing the chunk in full, without the
 * built-in codec's early-abort probe (given room for any frame, it does not probe), so
 * that row shows what the probe saves. 1.0 means the library costs nothing beyond the codec. Codec-only runs and library
 * runs alternate, each figure is the median of several runs with the min-max spread,
 * so the machine's noise shows as spread rather than as a result.
 *
 * Also: the codec pool (reduce_codec_pool_*) against the single-thread codec limit and
 * the inline codec; heap held by an idle volume; init and load of a 1 TiB volume on a
 * sparse file; writes with the pm file on a disk-backed file system (the whole corpus,
 * then at qd32 its chunks zstd shrinks and those stored raw apart), and what one
 * persisted page costs there through a shared mapping and msync against the private
 * mapping, pwrite and fdatasync the library uses.
 *
 * Environment: BENCH_QUICK=1 (fewer, shorter runs), BENCH_RUNS=n, BENCH_POOL_THREADS=n
 * (1), BENCH_DISK_DIR (a disk-backed directory for the pm file; /var/tmp),
 * BENCH_SCALE_DIR (for the 1 TiB sparse backing file; /var/tmp), BENCH_CLOCK=wall (time
 * single-thread runs by the wall clock too), BENCH_ONLY (sections to run, of main, pool,
 * disk, scale), BENCH_CODEC=own (the in-memory device's compress and decompress are
 * functions of this program that call reduce_zstd_*, as a caller's own codec would be:
 * the library cannot call them directly, and hands them its iovecs). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <linux/magic.h>
#include <malloc.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "spdk/reduce.h"

#define CHUNK 16384u
#define BLOCK 4096u
#define BPC (CHUNK / BLOCK)
#define VOL_CHUNKS 16384ull /* 256 MiB */
#define CORPUS_MAX (64u << 20)
#define CORPUS_CHUNKS (CORPUS_MAX / CHUNK)
#define REGION_CHUNKS 4096ull /* the zero and random regions, after the corpus */
#define RANDOM_CHUNKS 1024u   /* distinct random chunks (16 MiB) */
#define MAX_QD 32
#define RING (1u << 16)
#define MAX_RUNS 15
#define TMPFS_DIR "/dev/shm"
#define STALL_SECONDS 30.0

#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

static double clock_seconds(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double now(void)
{
	return clock_seconds(CLOCK_MONOTONIC);
}

/* The clock runs are timed with: the process's CPU time where all the work is on this
 * thread (the machine's other load then shows less), wall time where threads work
 * together (the codec pool) or the work waits for a disk. */
static clockid_t g_clock = CLOCK_MONOTONIC;

static double tick(void)
{
	return clock_seconds(g_clock);
}

static void die(const char *what, int err)
{
	fprintf(stderr, "bench: %s: %s\n", what, err ? strerror(err) : "failed");
	exit(1);
}

static uint64_t mix(uint64_t x)
{
	x += 0x9E3779B97F4A7C15ull;
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
	x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
	return x ^ (x >> 31);
}

/* Whether BENCH_ONLY (a list of sections: main, pool, disk, scale) includes `section`;
 * without it, every section runs. */
static int wanted(const char *section)
{
	const char *only = getenv("BENCH_ONLY");
	return !only || !*only || strstr(only, section) != NULL;
}

static int env_int(const char *name, int fallback)
{
	const char *v = getenv(name);
	return v && *v ? atoi(v) : fallback;
}

/* ---- the in-memory backing device ---- */

struct cpl {
	spdk_reduce_dev_cpl cb_fn;
	void *cb_arg;
	int status;
};

struct mem_dev {
	struct spdk_reduce_backing_dev dev;
	uint8_t *image;
	int deferred;
	struct cpl *ring;
	uint64_t head, tail;
};

static void dev_complete(struct mem_dev *m, struct spdk_reduce_vol_cb_args *args, int status)
{
	if (!m->deferred) {
		args->cb_fn(args->cb_arg, status);
		return;
	}
	if (m->tail - m->head == RING) {
		die("device completion ring full", 0);
	}
	m->ring[m->tail++ & (RING - 1)] = (struct cpl){args->cb_fn, args->cb_arg, status};
}

/* Delivers what was queued when the poll began (completions may queue more). */
static int dev_poll(struct mem_dev *m)
{
	uint64_t end = m->tail;
	int n = 0;
	while (m->head < end) {
		struct cpl c = m->ring[m->head++ & (RING - 1)];
		c.cb_fn(c.cb_arg, c.status);
		n++;
	}
	return n;
}

static void mem_rw(struct spdk_reduce_backing_dev *dev, struct iovec *iov, int iovcnt,
		   uint64_t lba, uint32_t lba_count, struct spdk_reduce_vol_cb_args *args, int write)
{
	struct mem_dev *m = container_of(dev, struct mem_dev, dev);
	if (lba + lba_count > dev->blockcnt) {
		dev_complete(m, args, -EIO);
		return;
	}
	uint8_t *at = m->image + lba * dev->blocklen;
	for (int i = 0; i < iovcnt; i++) {
		if (write) {
			memcpy(at, iov[i].iov_base, iov[i].iov_len);
		} else {
			memcpy(iov[i].iov_base, at, iov[i].iov_len);
		}
		at += iov[i].iov_len;
	}
	dev_complete(m, args, 0);
}

static void mem_readv(struct spdk_reduce_backing_dev *dev, struct iovec *iov, int iovcnt,
		      uint64_t lba, uint32_t lba_count, struct spdk_reduce_vol_cb_args *args)
{
	mem_rw(dev, iov, iovcnt, lba, lba_count, args, 0);
}

static void mem_writev(struct spdk_reduce_backing_dev *dev, struct iovec *iov, int iovcnt,
		       uint64_t lba, uint32_t lba_count, struct spdk_reduce_vol_cb_args *args)
{
	mem_rw(dev, iov, iovcnt, lba, lba_count, args, 1);
}

static void mem_unmap(struct spdk_reduce_backing_dev *dev, uint64_t lba, uint32_t lba_count,
		      struct spdk_reduce_vol_cb_args *args)
{
	(void)lba;
	(void)lba_count;
	dev_complete(container_of(dev, struct mem_dev, dev), args, 0);
}

/* BENCH_CODEC=own: the codec members are these, which the library sees as a caller's
 * own codec (the same work, called through the members with iovecs). */
static int g_own_codec;

static void own_compress(struct spdk_reduce_backing_dev *dev, struct iovec *src, int srccnt,
			 struct iovec *dst, int dstcnt, struct spdk_reduce_vol_cb_args *args)
{
	reduce_zstd_compress(dev, src, srccnt, dst, dstcnt, args);
}

static void own_decompress(struct spdk_reduce_backing_dev *dev, struct iovec *src, int srccnt,
			   struct iovec *dst, int dstcnt, struct spdk_reduce_vol_cb_args *args)
{
	reduce_zstd_decompress(dev, src, srccnt, dst, dstcnt, args);
}

static void mem_dev_init(struct mem_dev *m, int deferred)
{
	memset(m, 0, sizeof(*m));
	m->dev = (struct spdk_reduce_backing_dev){
		.readv = mem_readv,
		.writev = mem_writev,
		.unmap = mem_unmap,
		.compress = g_own_codec ? own_compress : reduce_zstd_compress,
		.decompress = g_own_codec ? own_decompress : reduce_zstd_decompress,
		.blocklen = BLOCK,
		.blockcnt = (VOL_CHUNKS + 128) * BPC,
	};
	/* calloc: untouched pages cost nothing until written, as on a fresh device. */
	m->image = calloc(m->dev.blockcnt, BLOCK);
	m->ring = malloc(RING * sizeof(*m->ring));
	m->deferred = deferred;
	if (!m->image || !m->ring) {
		die("device memory", ENOMEM);
	}
}

static void mem_dev_free(struct mem_dev *m)
{
	free(m->image);
	free(m->ring);
}

/* ---- the corpus: real files from this machine ---- */

static uint8_t *g_corpus, *g_random, *g_zeros;
static size_t g_corpus_len, g_files, g_source_bytes[8];
static int g_source;

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
	size_t want = (size_t)st->st_size < room ? (size_t)st->st_size : room;
	ssize_t n = read(fd, g_corpus + g_corpus_len, want);
	close(fd);
	if (n > 0) {
		g_corpus_len += (size_t)n;
		g_source_bytes[g_source] += (size_t)n;
		g_files++;
	}
	return g_corpus_len >= CORPUS_MAX ? 1 : 0;
}

static const char *g_sources[] = {"/usr/share/doc", "/usr/include", "/usr/lib/x86_64-linux-gnu",
				  "/usr/share", "/usr/lib", "/usr/bin"};
#define SOURCES (sizeof(g_sources) / sizeof(g_sources[0]))

static void load_corpus(void)
{
	g_corpus = calloc(1, CORPUS_MAX);
	g_random = malloc((size_t)RANDOM_CHUNKS * CHUNK);
	g_zeros = calloc(1, CHUNK);
	if (!g_corpus || !g_random || !g_zeros) {
		die("corpus memory", ENOMEM);
	}
	for (g_source = 0; g_source < (int)SOURCES && g_corpus_len < CORPUS_MAX; g_source++) {
		nftw(g_sources[g_source], add_file, 32, FTW_PHYS);
	}
	uint64_t s = 42;
	for (size_t i = 0; i < (size_t)RANDOM_CHUNKS * CHUNK; i += 8) {
		uint64_t v = mix(s++);
		memcpy(g_random + i, &v, 8);
	}
}

/* ---- the codec, called as the library calls it ---- */

static void store_status(void *arg, int status)
{
	*(int *)arg = status;
}

/* Room for any zstd frame of a chunk (ZSTD_COMPRESSBOUND): with more room than the
 * input, reduce_zstd_compress skips its early-abort probe and compresses in full. */
#define FULL_ROOM (CHUNK + CHUNK / 256 + 512)

static int codec_call(struct spdk_reduce_backing_dev *dev, int compress, const void *src,
		      size_t src_len, void *dst, size_t dst_len)
{
	int status = -EINPROGRESS;
	struct iovec s = {(void *)src, src_len}, d = {dst, dst_len};
	struct spdk_reduce_vol_cb_args args = {store_status, &status};
	if (compress) {
		reduce_zstd_compress(dev, &s, 1, &d, 1, &args);
	} else {
		reduce_zstd_decompress(dev, &s, 1, &d, 1, &args);
	}
	return status;
}

/* Bytes the format stores for a chunk compressed to `status`: whole io units, or the
 * whole chunk when that saves none (or compression failed). */
static uint64_t stored_bytes(int status)
{
	uint64_t padded = status > 0 ? ((uint64_t)status + BLOCK - 1) / BLOCK * BLOCK : CHUNK;
	return padded < CHUNK ? padded : CHUNK;
}

/* The corpus compressed once: the stored form the read baselines decompress. */
static uint8_t *g_frames;
static int g_frame_len[CORPUS_CHUNKS];
static uint64_t g_frame_bytes, g_stored_bytes;
/* The disk section's parts of the corpus: the chunks zstd shrinks by an io unit or more,
 * and those stored raw. */
enum part { P_SHRUNK, P_RAW, PARTS };
/* The corpus chunks of each part (enum part), in order; and the part SEQ16W writes
 * (PARTS: the whole corpus), set by `run_disk` only. */
static uint32_t g_part_chunks[PARTS][CORPUS_CHUNKS], g_part_len[PARTS];
static enum part g_part = PARTS;
/* Corpus chunks the codec refused (the early-abort probe, or no room for the frame),
 * and the bytes the probe costs: what they take stored raw beyond what compressing
 * them in full would store. */
static uint64_t g_probe_refused;
static int64_t g_probe_cost;

static void compress_corpus(struct spdk_reduce_backing_dev *dev)
{
	g_frames = malloc((size_t)CORPUS_CHUNKS * CHUNK);
	if (!g_frames) {
		die("frame memory", ENOMEM);
	}
	for (uint32_t c = 0; c < CORPUS_CHUNKS; c++) {
		int n = codec_call(dev, 1, g_corpus + (size_t)c * CHUNK, CHUNK,
				   g_frames + (size_t)c * CHUNK, CHUNK);
		/* What compressing in full would store: the early-abort probe's cost. */
		static uint8_t full[FULL_ROOM];
		int f = codec_call(dev, 1, g_corpus + (size_t)c * CHUNK, CHUNK, full, FULL_ROOM);
		g_probe_refused += n == -ENOSPC;
		g_probe_cost += (int64_t)stored_bytes(n) - (int64_t)stored_bytes(f);
		g_frame_len[c] = n > 0 && stored_bytes(n) < CHUNK ? n : 0; /* 0: stored raw */
		enum part part = g_frame_len[c] ? P_SHRUNK : P_RAW;
		g_part_chunks[part][g_part_len[part]++] = c;
		g_frame_bytes += n > 0 ? (uint64_t)n : CHUNK;
		g_stored_bytes += stored_bytes(n);
	}
}

/* ---- workloads ---- */

enum wl { SEQ16W, SEQ4W, RAND4W, RAND4R, SEQ4R, RAND16R, ZERO16W, RANDOM16W, WL_COUNT };
enum region { R_CORPUS, R_ZERO, R_RANDOM, R_NONE };

struct workload {
	const char *name;
	int write;
	uint32_t blocks; /* per request */
	enum region region;
};

static const struct workload g_wl[WL_COUNT] = {
	[SEQ16W] = {"sequential 16K writes", 1, BPC, R_CORPUS},
	[SEQ4W] = {"sequential 4K writes", 1, 1, R_CORPUS},
	[RAND4W] = {"random 4K writes (read-modify-write)", 1, 1, R_CORPUS},
	[RAND4R] = {"random 4K reads", 0, 1, R_NONE},
	[SEQ4R] = {"sequential 4K reads", 0, 1, R_NONE},
	[RAND16R] = {"random 16K reads", 0, BPC, R_NONE},
	[ZERO16W] = {"whole-chunk writes of zeros", 1, BPC, R_ZERO},
	[RANDOM16W] = {"whole-chunk writes of random bytes", 1, BPC, R_RANDOM},
};

/* Operations per run, from calibration (see `calibrate`). */
static uint64_t g_ops[WL_COUNT];

static uint64_t wl_ops(enum wl w)
{
	return g_ops[w];
}

/* Operation `i` of a run of `w` with `seed`: its first block and, for writes, the
 * data. Both the codec-only and the library runs take their operations from here. */
static uint64_t op_at(enum wl w, uint64_t i, uint64_t seed, const uint8_t **data)
{
	uint64_t corpus_blocks = (uint64_t)CORPUS_CHUNKS * BPC, b;
	switch (w) {
	case SEQ16W:
		b = (g_part == PARTS ? i % CORPUS_CHUNKS
				     : g_part_chunks[g_part][i % g_part_len[g_part]]) *
		    BPC;
		break;
	case SEQ4W:
	case SEQ4R:
		b = i % corpus_blocks;
		break;
	case RAND4W:
	case RAND4R:
		b = mix(seed * 1000003 + i) % corpus_blocks;
		break;
	case RAND16R:
		b = mix(seed * 1000003 + i) % CORPUS_CHUNKS * BPC;
		break;
	case ZERO16W:
		*data = g_zeros;
		return (CORPUS_CHUNKS + i % REGION_CHUNKS) * BPC;
	case RANDOM16W:
		*data = g_random + (size_t)(i % RANDOM_CHUNKS) * CHUNK;
		return (CORPUS_CHUNKS + REGION_CHUNKS + i % REGION_CHUNKS) * BPC;
	default:
		abort();
	}
	/* The corpus region holds the corpus: writes put back what is there, so the
	 * stored state (and the baselines' frames) stay those of the corpus. */
	*data = g_corpus + b * BLOCK;
	return b;
}

/* ---- codec-only runs ---- */

static uint8_t g_plain[CHUNK], g_packed[FULL_ROOM];

/* The chunk's stored form decompressed (a raw chunk is copied). */
static void unpack(struct spdk_reduce_backing_dev *dev, uint64_t c)
{
	if (g_frame_len[c]) {
		if (codec_call(dev, 0, g_frames + c * CHUNK, (size_t)g_frame_len[c], g_plain, CHUNK) !=
		    (int)CHUNK) {
			die("baseline decompress", 0);
		}
	} else {
		memcpy(g_plain, g_corpus + c * CHUNK, CHUNK);
	}
}

struct sample {
	double secs;
	double cores; /* library runs: CPU time ÷ wall time (threads at work) */
	uint64_t bytes;  /* logical bytes the operations moved */
	uint64_t stored; /* codec runs of writes: bytes the format would store */
	uint64_t chunks; /* ... for this many compressed chunks */
};

static struct sample codec_ops(struct spdk_reduce_backing_dev *dev, enum wl w, uint64_t seed,
			       uint64_t ops)
{
	struct sample s = {0};
	double t0 = tick();
	for (uint64_t i = 0; i < ops; i++) {
		const uint8_t *data;
		uint64_t b = op_at(w, i, seed, &data), c = b / BPC;
		int n;
		switch (w) {
		case SEQ16W:
		case ZERO16W:
		case RANDOM16W:
			/* Random bytes are compressed in full: the row shows what the
			 * library's early abort saves. */
			n = codec_call(dev, 1, data, CHUNK, g_packed, w == RANDOM16W ? FULL_ROOM : CHUNK);
			s.stored += stored_bytes(n);
			s.chunks++;
			break;
		case SEQ4W:
		case RAND4W:
			unpack(dev, c);
			memcpy(g_plain + b % BPC * BLOCK, data, BLOCK);
			n = codec_call(dev, 1, g_plain, CHUNK, g_packed, CHUNK);
			s.stored += stored_bytes(n);
			s.chunks++;
			break;
		case SEQ4R:
			if (b % BPC == 0) {
				unpack(dev, c);
			}
			break;
		default:
			unpack(dev, c);
		}
	}
	s.secs = tick() - t0;
	s.bytes = ops * g_wl[w].blocks * BLOCK;
	return s;
}

static struct sample codec_run(struct spdk_reduce_backing_dev *dev, enum wl w, uint64_t seed)
{
	return codec_ops(dev, w, seed, wl_ops(w));
}

/* Sizes each workload's runs to take about `target` seconds of codec work. */
static void calibrate(struct spdk_reduce_backing_dev *dev, double target)
{
	for (int w = 0; w < WL_COUNT; w++) {
		uint64_t ops = 64;
		struct sample s;
		while ((s = codec_ops(dev, (enum wl)w, 1, ops)).secs < 0.02) {
			ops *= 2;
		}
		double n = target / (s.secs / (double)ops);
		g_ops[w] = n < 64 ? 64 : n > 4e6 ? 4000000 : (uint64_t)n / BPC * BPC;
	}
}

/* ---- library runs ---- */

struct runner;

struct req {
	struct runner *r;
	struct iovec iov;
	uint8_t *buf;
};

struct runner {
	struct spdk_reduce_vol *vol;
	enum wl w;
	uint64_t seed, ops, next, done, in_flight;
	int errors;
	struct req reqs[MAX_QD];
};

static void issue(struct runner *r, struct req *q);

static void req_done(void *arg, int status)
{
	struct req *q = arg;
	struct runner *r = q->r;
	if (status) {
		if (!r->errors++) {
			fprintf(stderr, "bench: %s: request failed: %s\n", g_wl[r->w].name,
				strerror(-status));
		}
	}
	r->done++;
	r->in_flight--;
	if (r->next < r->ops) {
		issue(r, q); /* from inside the completion, as SPDK applications do */
	}
}

static void issue(struct runner *r, struct req *q)
{
	const uint8_t *data = NULL;
	uint64_t b = op_at(r->w, r->next++, r->seed, &data);
	uint32_t blocks = g_wl[r->w].blocks;
	r->in_flight++;
	if (g_wl[r->w].write) {
		q->iov = (struct iovec){(void *)data, (size_t)blocks * BLOCK};
		spdk_reduce_vol_writev(r->vol, &q->iov, 1, b, blocks, req_done, q);
	} else {
		q->iov = (struct iovec){q->buf, (size_t)blocks * BLOCK};
		spdk_reduce_vol_readv(r->vol, &q->iov, 1, b, blocks, req_done, q);
	}
}

/* One poll-loop round: the codec pool, then the device. */
static int poll_once(struct mem_dev *m, struct reduce_codec_pool *pool)
{
	int n = pool ? reduce_codec_pool_poll(pool) : 0;
	return n + (m->deferred ? dev_poll(m) : 0);
}

static uint8_t *g_read_bufs;

/* `ops` operations of `w`, `qd` in flight, polling the device and the pool. */
static struct sample lib_ops(struct mem_dev *m, struct reduce_codec_pool *pool,
			     struct spdk_reduce_vol *vol, enum wl w, int qd, uint64_t seed,
			     uint64_t ops)
{
	struct runner r = {.vol = vol, .w = w, .seed = seed, .ops = ops};
	for (int s = 0; s < qd; s++) {
		r.reqs[s] = (struct req){&r, {0}, g_read_bufs + (size_t)s * CHUNK};
	}
	double t0 = tick(), wall0 = now(), progress = wall0;
	double cpu0 = clock_seconds(CLOCK_PROCESS_CPUTIME_ID);
	uint64_t seen = 0;
	for (int s = 0; s < qd && r.next < r.ops; s++) {
		issue(&r, &r.reqs[s]);
	}
	while (r.in_flight) {
		poll_once(m, pool);
		if (r.done != seen) {
			seen = r.done;
			progress = now();
		} else if (now() - progress > STALL_SECONDS) {
			fprintf(stderr, "bench: %s: %llu requests stalled\n", g_wl[w].name,
				(unsigned long long)r.in_flight);
			exit(1);
		}
	}
	if (r.errors) {
		fprintf(stderr, "bench: %s: %d requests failed\n", g_wl[w].name, r.errors);
		exit(1);
	}
	double cpu = clock_seconds(CLOCK_PROCESS_CPUTIME_ID) - cpu0;
	return (struct sample){.secs = tick() - t0,
			       .cores = cpu / (now() - wall0),
			       .bytes = r.ops * g_wl[w].blocks * BLOCK};
}

static struct sample lib_run(struct mem_dev *m, struct reduce_codec_pool *pool,
			     struct spdk_reduce_vol *vol, enum wl w, int qd, uint64_t seed)
{
	return lib_ops(m, pool, vol, w, qd, seed, wl_ops(w));
}

/* Writes the whole corpus into the corpus region. */
static struct sample fill(struct mem_dev *m, struct reduce_codec_pool *pool,
			  struct spdk_reduce_vol *vol)
{
	return lib_ops(m, pool, vol, SEQ16W, MAX_QD, 0, CORPUS_CHUNKS);
}

/* ---- volumes ---- */

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

static int wait_for(struct mem_dev *m, struct reduce_codec_pool *pool, struct wait *w)
{
	double t0 = now();
	while (!w->done) {
		if (!poll_once(m, pool) && now() - t0 > STALL_SECONDS) {
			return -ETIMEDOUT;
		}
	}
	return w->status;
}

struct volume {
	struct mem_dev m;
	struct reduce_codec_pool *pool;
	struct spdk_reduce_vol *vol;
	char dir[128];
	size_t heap_before; /* heap in use before init */
};

/* Bytes held by the heap now (mallinfo2: in-use arena bytes plus mmapped blocks). */
static size_t heap_bytes(void)
{
	struct mallinfo2 mi = mallinfo2();
	return mi.uordblks + mi.hblkhd;
}

static void volume_open(struct volume *v, int deferred, const char *parent,
			struct reduce_codec_pool *pool)
{
	struct wait w = {0};
	struct spdk_reduce_vol_params params = {
		.backing_io_unit_size = BLOCK, .logical_block_size = BLOCK, .chunk_size = CHUNK};
	mem_dev_init(&v->m, deferred);
	v->pool = pool;
	if (pool && reduce_codec_pool_attach(pool, &v->m.dev)) {
		die("reduce_codec_pool_attach", 0);
	}
	snprintf(v->dir, sizeof(v->dir), "%s/reduce-bench-XXXXXX", parent);
	if (!mkdtemp(v->dir)) {
		die(v->dir, errno);
	}
	v->heap_before = heap_bytes();
	spdk_reduce_vol_init(&params, &v->m.dev, v->dir, handle_done, &w);
	if (wait_for(&v->m, pool, &w)) {
		die("spdk_reduce_vol_init", -w.status);
	}
	v->vol = w.vol;
}

static void volume_close(struct volume *v)
{
	struct wait w = {0};
	char pm[4200];
	snprintf(pm, sizeof(pm), "%s", spdk_reduce_vol_get_pm_path(v->vol));
	spdk_reduce_vol_unload(v->vol, op_done, &w);
	if (wait_for(&v->m, v->pool, &w)) {
		die("spdk_reduce_vol_unload", -w.status);
	}
	unlink(pm);
	rmdir(v->dir);
	mem_dev_free(&v->m);
}

static uint64_t allocated(struct volume *v)
{
	return spdk_reduce_vol_get_info(v->vol)->allocated_io_units;
}

/* Reads the corpus region back (untimed) and compares. */
static void verify(struct volume *v, const char *what)
{
	uint8_t *buf = malloc(CHUNK);
	uint64_t bad = 0;
	for (uint64_t c = 0; c < CORPUS_CHUNKS; c++) {
		struct wait w = {0};
		struct iovec iov = {buf, CHUNK};
		spdk_reduce_vol_readv(v->vol, &iov, 1, c * BPC, BPC, op_done, &w);
		if (wait_for(&v->m, v->pool, &w) || memcmp(buf, g_corpus + c * CHUNK, CHUNK)) {
			bad++;
		}
	}
	free(buf);
	if (bad) {
		fprintf(stderr, "bench: %s: %llu chunks read back wrong\n", what,
			(unsigned long long)bad);
		exit(1);
	}
}

/* ---- statistics ---- */

struct series {
	int n;
	double v[MAX_RUNS];
};

static void add(struct series *s, double x)
{
	if (s->n < MAX_RUNS) {
		s->v[s->n++] = x;
	}
}

static int by_value(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double median(const struct series *s)
{
	double v[MAX_RUNS];
	memcpy(v, s->v, sizeof(double) * (size_t)s->n);
	qsort(v, (size_t)s->n, sizeof(double), by_value);
	return s->n % 2 ? v[s->n / 2] : (v[s->n / 2 - 1] + v[s->n / 2]) / 2;
}

static double lo(const struct series *s)
{
	double m = s->v[0];
	for (int i = 1; i < s->n; i++) {
		m = s->v[i] < m ? s->v[i] : m;
	}
	return m;
}

static double hi(const struct series *s)
{
	double m = s->v[0];
	for (int i = 1; i < s->n; i++) {
		m = s->v[i] > m ? s->v[i] : m;
	}
	return m;
}

/* "median (min–max)" with `prec` decimals. */
static const char *fmt(const struct series *s, int prec, char *out, size_t len)
{
	if (!s->n) {
		snprintf(out, len, "—");
	} else {
		snprintf(out, len, "%.*f (%.*f–%.*f)", prec, median(s), prec, lo(s), prec, hi(s));
	}
	return out;
}

static double mbps(struct sample s)
{
	return (double)s.bytes / s.secs / 1e6;
}

/* ---- the measurements ---- */

enum { M_INLINE, M_DEFERRED, MODES };
static const char *g_mode_name[MODES] = {"inline", "deferred"};
static const int g_qds[2] = {1, 32};

struct cell {
	struct series mbps, vs_codec;
};

static struct cell g_main[WL_COUNT][2][MODES];
static double g_lib_ratio[WL_COUNT], g_codec_ratio[WL_COUNT];

/* The pool section: sequential 16K writes and random 16K reads. */
static const enum wl g_pool_wl[2] = {SEQ16W, RAND16R};
struct pool_cell {
	struct series mbps, vs_codec, vs_inline, cores, per_cpu;
};
static struct pool_cell g_pool[2][2][MODES];

/* pm on disk ÷ on tmpfs, and MB/s on disk: the whole corpus at qd1 and qd32, then each
 * part at qd32. */
static struct series g_disk[2 + PARTS], g_disk_mbps[2 + PARTS];
static clockid_t g_main_clock = CLOCK_PROCESS_CPUTIME_ID;
static double g_target;
static double g_heap_init_kib, g_heap_idle_kib;
static int g_heap_measured;
static int g_runs, g_pool_threads;

/* Logical bytes and stored bytes of each write region, for the ratios. */
static uint64_t g_region_units[3];

static void note_ratio(struct volume *v, enum wl w)
{
	enum region r = g_wl[w].region;
	uint64_t others = 0, chunks = r == R_CORPUS ? CORPUS_CHUNKS
				   : wl_ops(w) < REGION_CHUNKS ? wl_ops(w) : REGION_CHUNKS;
	/* The corpus region holds the whole corpus: compare with the codec on all of it. */
	if (r == R_CORPUS) {
		g_codec_ratio[w] = (double)CORPUS_CHUNKS * CHUNK / (double)g_stored_bytes;
	}
	for (int i = 0; i < 3; i++) {
		others += i == (int)r ? 0 : g_region_units[i];
	}
	g_region_units[r] = allocated(v) - others;
	g_lib_ratio[w] = g_region_units[r] ? (double)chunks * CHUNK / ((double)g_region_units[r] * BLOCK)
					   : INFINITY;
}

static void run_mode(int mode, struct reduce_codec_pool *pool)
{
	struct volume lib, pooled;
	int deferred = mode == M_DEFERRED;
	g_clock = g_main_clock;
	volume_open(&lib, deferred, TMPFS_DIR, NULL);
	if (mode == M_INLINE) {
		g_heap_init_kib = (double)(heap_bytes() - lib.heap_before) / 1024;
	}
	/* The whole corpus, written once before anything is timed. */
	struct sample filled = fill(&lib.m, NULL, lib.vol);
	memset(g_region_units, 0, sizeof(g_region_units));
	g_region_units[R_CORPUS] = allocated(&lib);
	printf("  %s: corpus written at %.0f MB/s; running", g_mode_name[mode], mbps(filled));
	fflush(stdout);

	for (int w = 0; w < WL_COUNT && wanted("main"); w++) {
		for (int q = 0; q < 2; q++) {
			struct cell *c = &g_main[w][q][mode];
			for (int run = 0; run < g_runs; run++) {
				uint64_t seed = (uint64_t)run * 7919 + (uint64_t)w * 31 + (uint64_t)q;
				struct sample cs = codec_run(&lib.m.dev, (enum wl)w, seed);
				struct sample ls = lib_run(&lib.m, NULL, lib.vol, (enum wl)w, g_qds[q], seed);
				add(&c->mbps, mbps(ls));
				add(&c->vs_codec, mbps(ls) / mbps(cs));
				if (cs.chunks && g_wl[w].region != R_CORPUS) {
					g_codec_ratio[w] = (double)cs.chunks * CHUNK / (double)cs.stored;
				}
			}
			if (g_wl[w].write) {
				note_ratio(&lib, (enum wl)w);
			}
		}
		printf(".");
		fflush(stdout);
	}
	if (mode == M_INLINE) {
		g_heap_idle_kib = (double)(heap_bytes() - lib.heap_before) / 1024;
		g_heap_measured = 1;
	}
	verify(&lib, "inline codec volume");
	if (!wanted("pool")) {
		printf(" verified\n");
		volume_close(&lib);
		return;
	}

	/* The pool: a second volume with the pool as its codec, the corpus written. The
	 * threads work together: wall time. */
	g_clock = CLOCK_MONOTONIC;
	volume_open(&pooled, deferred, TMPFS_DIR, pool);
	fill(&pooled.m, pool, pooled.vol);
	for (int p = 0; p < 2; p++) {
		enum wl w = g_pool_wl[p];
		for (int q = 0; q < 2; q++) {
			struct pool_cell *c = &g_pool[p][q][mode];
			for (int run = 0; run < g_runs; run++) {
				uint64_t seed = (uint64_t)run * 104729 + (uint64_t)p * 13 + (uint64_t)q;
				struct sample cs = codec_run(&lib.m.dev, w, seed);
				struct sample ls = lib_run(&lib.m, NULL, lib.vol, w, g_qds[q], seed);
				struct sample ps = lib_run(&pooled.m, pool, pooled.vol, w, g_qds[q], seed);
				add(&c->mbps, mbps(ps));
				add(&c->vs_codec, mbps(ps) / mbps(cs));
				add(&c->vs_inline, mbps(ps) / mbps(ls));
				add(&c->cores, ps.cores);
				/* Bytes per CPU-second against the inline codec's: what the pool
				 * costs beyond the codec, whatever cores the machine lent it. */
				add(&c->per_cpu, mbps(ps) / ps.cores / (mbps(ls) / ls.cores));
			}
		}
		printf(".");
		fflush(stdout);
	}
	verify(&pooled, "codec pool volume");
	printf(" verified\n");
	volume_close(&pooled);
	volume_close(&lib);
}

/* Writes with the pm file on a disk-backed file system against tmpfs. */
static const char *g_disk_dir;

/* What one persist of a page costs on the disk, both ways (microseconds, medians): a
 * store into a shared mapping and msync, as the library persisted before, and a store
 * into a private mapping then pwrite and fdatasync, as it does now (src/pm/file.rs). */
static struct series g_flush[2];

static void measure_flushes(void)
{
	char path[4200];
	snprintf(path, sizeof(path), "%s/reduce-bench-flush-XXXXXX", g_disk_dir);
	int fd = mkstemp(path);
	const size_t pages = 64, len = pages * 4096;
	if (fd < 0 || ftruncate(fd, (off_t)len) || fdatasync(fd)) {
		die("flush test file", errno);
	}
	for (int way = 0; way < 2; way++) {
		uint8_t *map = mmap(NULL, len, PROT_READ | PROT_WRITE,
				    way ? MAP_PRIVATE : MAP_SHARED, fd, 0);
		if (map == MAP_FAILED) {
			die("mapping the flush test file", errno);
		}
		for (int run = 0; run < g_runs; run++) {
			const int n = 50;
			double t0 = now();
			for (int i = 0; i < n; i++) {
				size_t at = (size_t)((run * n + i) % (int)pages) * 4096;
				map[at] = (uint8_t)i;
				int failed = way ? pwrite(fd, map + at, 4096, (off_t)at) != 4096 ||
							   fdatasync(fd)
						 : msync(map + at, 4096, MS_SYNC);
				if (failed) {
					die("flushing the flush test file", errno);
				}
			}
			add(&g_flush[way], (now() - t0) / n * 1e6);
		}
		munmap(map, len);
	}
	close(fd);
	unlink(path);
}

/* Sequential 16K writes of the corpus part `g_part` at `qd`, alternating between the
 * volume with its pm file on tmpfs and the one on the disk, into series `k`. */
static void disk_series(struct volume *mem, struct volume *disk, int qd, int k)
{
	/* Runs of about the target length on the disk (it may be far slower). */
	struct sample probe = lib_ops(&disk->m, NULL, disk->vol, SEQ16W, qd, 0, 32);
	double n = g_target / (probe.secs / 32);
	uint64_t ops = n < 32 ? 32 : n > (double)wl_ops(SEQ16W) ? wl_ops(SEQ16W) : (uint64_t)n;
	for (int run = 0; run < g_runs; run++) {
		struct sample t = lib_ops(&mem->m, NULL, mem->vol, SEQ16W, qd, run, ops);
		struct sample d = lib_ops(&disk->m, NULL, disk->vol, SEQ16W, qd, run, ops);
		add(&g_disk[k], mbps(d) / mbps(t));
		add(&g_disk_mbps[k], mbps(d));
	}
}

static void run_disk(void)
{
	struct volume mem, disk;
	g_clock = CLOCK_MONOTONIC; /* the disk's waits count */
	volume_open(&mem, 1, TMPFS_DIR, NULL);
	volume_open(&disk, 1, g_disk_dir, NULL);
	for (int q = 0; q < 2; q++) {
		disk_series(&mem, &disk, g_qds[q], q);
	}
	/* The parts apart: a chunk stored raw costs the volume a few µs, one zstd shrinks
	 * tens, so the two ordered flushes of a group weigh differently on each. A corpus
	 * may have no chunk of a part (its row then shows none). */
	for (g_part = 0; g_part < PARTS; g_part++) {
		if (g_part_len[g_part]) {
			disk_series(&mem, &disk, MAX_QD, 2 + g_part);
		}
	}
	g_part = PARTS;
	volume_close(&disk);
	volume_close(&mem);
	measure_flushes();
}

/* ---- scale: a 1 TiB volume on a sparse file, in a fresh process ---- */

struct file_dev {
	struct spdk_reduce_backing_dev dev;
	int fd;
};

static void file_rw(struct spdk_reduce_backing_dev *dev, struct iovec *iov, int iovcnt,
		    uint64_t lba, uint32_t lba_count, struct spdk_reduce_vol_cb_args *args, int write)
{
	struct file_dev *f = container_of(dev, struct file_dev, dev);
	off_t off = (off_t)(lba * dev->blocklen);
	ssize_t want = (ssize_t)lba_count * dev->blocklen;
	ssize_t n = write ? pwritev(f->fd, iov, iovcnt, off) : preadv(f->fd, iov, iovcnt, off);
	args->cb_fn(args->cb_arg, n == want ? 0 : (n < 0 ? -errno : -EIO));
}

static void file_readv(struct spdk_reduce_backing_dev *dev, struct iovec *iov, int iovcnt,
		       uint64_t lba, uint32_t lba_count, struct spdk_reduce_vol_cb_args *args)
{
	file_rw(dev, iov, iovcnt, lba, lba_count, args, 0);
}

static void file_writev(struct spdk_reduce_backing_dev *dev, struct iovec *iov, int iovcnt,
			uint64_t lba, uint32_t lba_count, struct spdk_reduce_vol_cb_args *args)
{
	file_rw(dev, iov, iovcnt, lba, lba_count, args, 1);
}

static void file_unmap(struct spdk_reduce_backing_dev *dev, uint64_t lba, uint32_t lba_count,
		       struct spdk_reduce_vol_cb_args *args)
{
	(void)dev;
	(void)lba;
	(void)lba_count;
	args->cb_fn(args->cb_arg, 0);
}

/* Seconds to write `bytes` of 0xFF into a new file in TMPFS_DIR, 1 MiB per pwrite, as
 * init fills the pm file: what the machine's fresh memory costs (a first touch of pages
 * the host has taken back is slow), the floor under init. -1 on error. */
static double raw_fill(long long bytes)
{
	char path[4200];
	size_t piece = 1 << 20;
	uint8_t *buf = malloc(piece);
	snprintf(path, sizeof(path), "%s/reduce-bench-fill-XXXXXX", TMPFS_DIR);
	int fd = mkstemp(path);
	double t0 = now(), secs = -1;
	if (fd >= 0 && buf) {
		memset(buf, 0xFF, piece);
		long long at = 0;
		while (at < bytes && pwrite(fd, buf, piece, at) == (ssize_t)piece) {
			at += (long long)piece;
		}
		secs = at >= bytes ? now() - t0 : -1;
	}
	if (fd >= 0) {
		close(fd);
		unlink(path);
	}
	free(buf);
	return secs;
}

/* The child: prints "init_s rss_kib heap_kib load_s pm_bytes fill_before_s fill_after_s",
 * or an error. */
static int scale_child(const char *dir)
{
	char path[4200], pm[4200];
	const uint64_t tib = 1ull << 40;
	struct file_dev f = {0};
	struct wait w = {0};
	struct spdk_reduce_vol_params params = {
		.backing_io_unit_size = BLOCK, .logical_block_size = BLOCK, .chunk_size = CHUNK};
	struct rusage ru;
	snprintf(path, sizeof(path), "%s/reduce-bench-1tib-XXXXXX", dir);
	f.fd = mkstemp(path);
	f.dev = (struct spdk_reduce_backing_dev){
		.readv = file_readv, .writev = file_writev, .unmap = file_unmap,
		.compress = reduce_zstd_compress, .decompress = reduce_zstd_decompress,
		.blocklen = BLOCK, .blockcnt = (tib / CHUNK + 128) * BPC,
	};
	if (f.fd < 0 || ftruncate(f.fd, (off_t)(f.dev.blockcnt * BLOCK))) {
		printf("error %s\n", strerror(errno));
		return 1;
	}
	/* The pm file of a 1 TiB volume is 3 GiB: the raw fill of that size, before init
	 * and after (pages just freed are quicker to get back). */
	double fill_before = raw_fill(3ll << 30);
	size_t heap0 = heap_bytes();
	double t0 = now();
	spdk_reduce_vol_init(&params, &f.dev, TMPFS_DIR, handle_done, &w);
	double init_s = now() - t0;
	if (!w.done || w.status) {
		printf("error init %s\n", strerror(-w.status));
		unlink(path);
		return 1;
	}
	size_t heap = heap_bytes() - heap0;
	getrusage(RUSAGE_SELF, &ru);
	snprintf(pm, sizeof(pm), "%s", spdk_reduce_vol_get_pm_path(w.vol));
	struct stat st = {0};
	stat(pm, &st);
	struct spdk_reduce_vol *vol = w.vol;
	w = (struct wait){0};
	spdk_reduce_vol_unload(vol, op_done, &w);
	w = (struct wait){0};
	t0 = now();
	spdk_reduce_vol_load(&f.dev, handle_done, &w);
	double load_s = now() - t0;
	int rc = !w.done || w.status;
	if (!rc) {
		vol = w.vol;
		w = (struct wait){0};
		spdk_reduce_vol_unload(vol, op_done, &w);
	}
	unlink(pm);
	if (!rc) {
		printf("%.3f %ld %.0f %.3f %lld %.3f %.3f\n", init_s, ru.ru_maxrss, (double)heap / 1024,
		       load_s, (long long)st.st_size, fill_before, raw_fill(st.st_size));
	} else {
		printf("error load %s\n", strerror(-w.status));
	}
	unlink(path);
	close(f.fd);
	return rc;
}

struct scale {
	int ok;
	double init_s, heap_kib, load_s, fill_before_s, fill_after_s;
	long rss_kib;
	long long pm_bytes;
	char error[256];
};

static struct scale run_scale(const char *self, const char *dir)
{
	struct scale s = {0};
	char cmd[4400];
	snprintf(cmd, sizeof(cmd), "'%s' --scale-child '%s'", self, dir);
	FILE *p = popen(cmd, "r");
	if (!p) {
		snprintf(s.error, sizeof(s.error), "cannot start: %s", strerror(errno));
		return s;
	}
	char line[512] = "";
	if (!fgets(line, sizeof(line), p)) {
		snprintf(line, sizeof(line), "no output (killed?)");
	}
	int status = pclose(p);
	s.ok = sscanf(line, "%lf %ld %lf %lf %lld %lf %lf", &s.init_s, &s.rss_kib, &s.heap_kib,
		      &s.load_s, &s.pm_bytes, &s.fill_before_s, &s.fill_after_s) == 7 &&
	       status == 0;
	if (!s.ok) {
		line[strcspn(line, "\n")] = 0;
		snprintf(s.error, sizeof(s.error), "%s (exit status %d)", line, status);
	}
	return s;
}

/* ---- report ---- */

static void cpu_model(char *out, size_t len)
{
	FILE *f = fopen("/proc/cpuinfo", "r");
	char line[512];
	snprintf(out, len, "unknown CPU");
	while (f && fgets(line, sizeof(line), f)) {
		char *colon = strchr(line, ':');
		if (!strncmp(line, "model name", 10) && colon) {
			colon[strcspn(colon, "\n")] = 0;
			snprintf(out, len, "%s", colon + 2);
			break;
		}
	}
	if (f) {
		fclose(f);
	}
}

/* The 1-minute load average: how busy the machine was besides. */
static void loadavg(char *out, size_t len)
{
	FILE *f = fopen("/proc/loadavg", "r");
	snprintf(out, len, "?");
	if (f && fscanf(f, "%63s", out) != 1) {
		snprintf(out, len, "?");
	}
	if (f) {
		fclose(f);
	}
}

static const char *fs_name(const char *dir)
{
	struct statfs fs;
	if (statfs(dir, &fs)) {
		return "unknown file system";
	}
	switch (fs.f_type) {
	case TMPFS_MAGIC:
		return "tmpfs";
	case EXT4_SUPER_MAGIC:
		return "ext4";
	case XFS_SUPER_MAGIC:
		return "xfs";
	case BTRFS_SUPER_MAGIC:
		return "btrfs";
	case OVERLAYFS_SUPER_MAGIC:
		return "overlayfs";
	default:
		return "other file system";
	}
}

static void print_tables(const struct scale *sc)
{
	char a[64], b[64], c[64], d[64];
	if (!g_main[0][0][0].mbps.n) {
		goto pool;
	}
	printf("\n| workload | qd | MB/s, inline completion | lib/codec, inline | MB/s, deferred "
	       "completion | lib/codec, deferred | compression ratio, lib / codec |\n");
	printf("|---|---|---|---|---|---|---|\n");
	for (int w = 0; w < WL_COUNT; w++) {
		for (int q = 0; q < 2; q++) {
			char ratio[64] = "—";
			if (g_wl[w].write) {
				snprintf(ratio, sizeof(ratio), "%.2f / %.2f", g_lib_ratio[w],
					 g_codec_ratio[w]);
			}
			printf("| %s | %d | %s | %s | %s | %s | %s |\n", g_wl[w].name, g_qds[q],
			       fmt(&g_main[w][q][M_INLINE].mbps, 0, a, sizeof(a)),
			       fmt(&g_main[w][q][M_INLINE].vs_codec, 2, b, sizeof(b)),
			       fmt(&g_main[w][q][M_DEFERRED].mbps, 0, c, sizeof(c)),
			       fmt(&g_main[w][q][M_DEFERRED].vs_codec, 2, d, sizeof(d)), ratio);
		}
	}
pool:
	if (!g_pool[0][0][0].mbps.n) {
		goto scale;
	}
	printf("\n| codec pool, %d worker%s + the poller | qd | MB/s, inline / deferred completion "
	       "| × single-thread codec, inline / deferred | × inline codec, inline / deferred "
	       "| cores busy, inline / deferred | MB per CPU-second ÷ inline codec's, inline / "
	       "deferred |\n",
	       g_pool_threads, g_pool_threads == 1 ? "" : "s");
	printf("|---|---|---|---|---|---|---|\n");
	for (int p = 0; p < 2; p++) {
		for (int q = 0; q < 2; q++) {
			struct pool_cell *i = &g_pool[p][q][M_INLINE], *e = &g_pool[p][q][M_DEFERRED];
			char f[64], g[64], h[64], k[64], l[64], o[64];
			printf("| %s | %d | %s / %s | %s / %s | %s / %s | %s / %s | %s / %s |\n",
			       g_wl[g_pool_wl[p]].name, g_qds[q], fmt(&i->mbps, 0, a, sizeof(a)),
			       fmt(&e->mbps, 0, b, sizeof(b)), fmt(&i->vs_codec, 2, c, sizeof(c)),
			       fmt(&e->vs_codec, 2, d, sizeof(d)), fmt(&i->vs_inline, 2, f, sizeof(f)),
			       fmt(&e->vs_inline, 2, g, sizeof(g)), fmt(&i->cores, 1, h, sizeof(h)),
			       fmt(&e->cores, 1, k, sizeof(k)), fmt(&i->per_cpu, 2, l, sizeof(l)),
			       fmt(&e->per_cpu, 2, o, sizeof(o)));
		}
	}
	/* The pool needs the machine's cores: say when it did not get them. */
	double least = 1e9;
	for (int p = 0; p < 2; p++) {
		for (int m = 0; m < MODES; m++) {
			least = fmin(least, median(&g_pool[p][1][m].cores));
		}
	}
	if (least < 0.9 * (g_pool_threads + 1)) {
		printf("\nThe pool's qd32 runs had as few as %.1f cores busy of the %d they could use: "
		       "the machine was busy with other work, and the pool's figures understate it.\n",
		       least, g_pool_threads + 1);
	}
scale:
	printf("\n| scale | |\n|---|---|\n");
	if (g_heap_measured) {
		printf("| heap held by an idle 256 MiB volume (mallinfo2 in-use + mmapped, delta) | "
		       "%.0f KiB after init, %.0f KiB after the runs |\n",
		       g_heap_init_kib, g_heap_idle_kib);
	}
	if (sc->ok) {
		printf("| init of a 1 TiB volume, sparse backing file, pm file %.1f GiB on tmpfs | "
		       "%.2f s, peak RSS of the process %.1f MiB |\n",
		       (double)sc->pm_bytes / (1 << 30), sc->init_s, (double)sc->rss_kib / 1024);
		printf("| writing that many bytes of 0xFF into a new tmpfs file alone (the floor: "
		       "fresh memory), before / after init | %.2f s / %.2f s |\n",
		       sc->fill_before_s, sc->fill_after_s);
		printf("| load of that volume | %.3f s |\n", sc->load_s);
		printf("| heap held by the idle 1 TiB volume | %.1f MiB |\n", sc->heap_kib / 1024);
	} else {
		printf("| 1 TiB volume | %s |\n", sc->error[0] ? sc->error : "skipped");
	}
	if (g_disk[0].n) {
		printf("| sequential 16K writes, pm file on %s (%s) ÷ on tmpfs, deferred, qd1 / qd32 "
		       "| %s / %s (%s / %s MB/s) |\n",
		       fs_name(g_disk_dir), g_disk_dir, fmt(&g_disk[0], 3, a, sizeof(a)),
		       fmt(&g_disk[1], 3, b, sizeof(b)), fmt(&g_disk_mbps[0], 1, c, sizeof(c)),
		       fmt(&g_disk_mbps[1], 1, d, sizeof(d)));
		printf("| the same at qd32, the %u corpus chunks zstd shrinks by an io unit or more / "
		       "the %u stored raw | %s / %s (%s / %s MB/s) |\n",
		       g_part_len[P_SHRUNK], g_part_len[P_RAW],
		       fmt(&g_disk[2 + P_SHRUNK], 3, a, sizeof(a)),
		       fmt(&g_disk[2 + P_RAW], 3, b, sizeof(b)),
		       fmt(&g_disk_mbps[2 + P_SHRUNK], 1, c, sizeof(c)),
		       fmt(&g_disk_mbps[2 + P_RAW], 1, d, sizeof(d)));
		printf("| one page persisted on %s: store into a shared mapping + msync / store "
		       "into a private mapping + pwrite + fdatasync (µs) | %s / %s |\n",
		       fs_name(g_disk_dir), fmt(&g_flush[0], 0, a, sizeof(a)),
		       fmt(&g_flush[1], 0, b, sizeof(b)));
	}
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "--scale-child")) {
		return scale_child(argv[2]);
	}
	int quick = env_int("BENCH_QUICK", 0);
	const char *clock_name = getenv("BENCH_CLOCK");
	if (clock_name && !strcmp(clock_name, "wall")) {
		g_main_clock = CLOCK_MONOTONIC;
	}
	g_target = quick ? 0.06 : 0.25;
	g_runs = env_int("BENCH_RUNS", quick ? 3 : 5);
	g_runs = g_runs < 1 ? 1 : g_runs > MAX_RUNS ? MAX_RUNS : g_runs;
	g_pool_threads = env_int("BENCH_POOL_THREADS", 1);
	g_disk_dir = getenv("BENCH_DISK_DIR") ? getenv("BENCH_DISK_DIR") : "/var/tmp";
	g_own_codec = getenv("BENCH_CODEC") && !strcmp(getenv("BENCH_CODEC"), "own");
	const char *scale_dir = getenv("BENCH_SCALE_DIR") ? getenv("BENCH_SCALE_DIR") : "/var/tmp";
	char cpu[256], load_start[64];
	cpu_model(cpu, sizeof(cpu));
	loadavg(load_start, sizeof(load_start));
	double start = now();

	load_corpus();
	g_read_bufs = malloc((size_t)MAX_QD * CHUNK);
	struct mem_dev probe;
	mem_dev_init(&probe, 0);
	compress_corpus(&probe.dev);
	g_clock = g_main_clock;
	calibrate(&probe.dev, g_target);
	printf("reduce bench: %ld cores, %s; %d runs per figure%s\n", sysconf(_SC_NPROCESSORS_ONLN),
	       cpu, g_runs, quick ? " (BENCH_QUICK: shorter runs)" : "");
	printf("corpus: %zu files, %.1f MiB, from", g_files, (double)g_corpus_len / (1 << 20));
	for (size_t i = 0; i < SOURCES; i++) {
		if (g_source_bytes[i]) {
			printf(" %s (%.1f MiB)", g_sources[i], (double)g_source_bytes[i] / (1 << 20));
		}
	}
	uint64_t print = 0;
	for (size_t i = 0; i < CORPUS_MAX; i += 8) {
		uint64_t v;
		memcpy(&v, g_corpus + i, 8);
		print = mix(print ^ v);
	}
	/* Files come and go (package installs): the fingerprint says whether two runs
	 * compressed the same bytes. */
	printf("\n  fingerprint %016llx; zstd level 1 alone: ratio %.2f (%.2f in whole 4 KiB io "
	       "units)\n",
	       (unsigned long long)print,
	       (double)CORPUS_CHUNKS * CHUNK / (double)g_frame_bytes,
	       (double)CORPUS_CHUNKS * CHUNK / (double)g_stored_bytes);
	printf("  early abort: %llu of %u chunks refused by the codec (stored raw, as are %llu "
	       "more it shrinks by less than an io unit); compressing them in full would "
	       "save %lld io units (%.4f %% of the stored bytes)\n",
	       (unsigned long long)g_probe_refused, CORPUS_CHUNKS,
	       (unsigned long long)(g_part_len[P_RAW] - g_probe_refused),
	       (long long)(g_probe_cost / BLOCK),
	       100.0 * (double)g_probe_cost / (double)g_stored_bytes);
	if (g_corpus_len < CORPUS_MAX) {
		printf("  (short of 64 MiB: the rest is zeros)\n");
	}
	printf("volume: 256 MiB, 16 KiB chunks, 4 KiB io units and blocks, pm file on %s\n",
	       TMPFS_DIR);
	printf("codec members: %s\n",
	       g_own_codec ? "the program's own functions calling reduce_zstd_* (BENCH_CODEC=own)"
			   : "reduce_zstd_compress / reduce_zstd_decompress (BENCH_CODEC=own: "
			     "the program's own)");
	printf("runs of about %.2f s of codec work, timed by %s (pool and disk runs: wall "
	       "clock)\n",
	       g_target, g_main_clock == CLOCK_MONOTONIC ? "the wall clock"
						    : "the process's CPU time (BENCH_CLOCK=wall: "
						      "wall clock)");
	mem_dev_free(&probe);

	struct reduce_codec_pool *pool = reduce_codec_pool_create("zstd", 1, (unsigned)g_pool_threads);
	if (!pool) {
		die("reduce_codec_pool_create", 0);
	}
	for (int mode = 0; mode < MODES && (wanted("main") || wanted("pool")); mode++) {
		run_mode(mode, pool);
	}
	reduce_codec_pool_destroy(pool);
	if (!wanted("disk")) {
	} else if (!strcmp(fs_name(g_disk_dir), "tmpfs")) {
		printf("  BENCH_DISK_DIR %s is tmpfs: no disk-backed pm file measured\n", g_disk_dir);
	} else {
		printf("  pm file on %s (%s) ...\n", g_disk_dir, fs_name(g_disk_dir));
		run_disk();
	}
	struct scale sc = {0};
	if (wanted("scale")) {
		printf("  1 TiB volume on a sparse file in %s ...\n", scale_dir);
		fflush(stdout);
		/* popen runs a shell: name this program by its real path. */
		char self[4096];
		ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
		self[n > 0 ? n : 0] = 0;
		sc = run_scale(self, scale_dir);
	}
	print_tables(&sc);
	char load_end[64];
	loadavg(load_end, sizeof(load_end));
	printf("\n(%.0f s; load average %s at the start, %s at the end)\n", now() - start,
	       load_start, load_end);
	free(g_read_bufs);
	free(g_frames);
	free(g_corpus);
	free(g_random);
	free(g_zeros);
	return 0;
}

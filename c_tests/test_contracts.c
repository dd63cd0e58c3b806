/* The completion contract and what a hostile caller can do with a few lines of C:
 * completions delivered twice, calls and completions from a second thread, an iovec
 * array on a callback's stack, a map entry scribbled in the pm file while the volume is
 * loaded, and a full volume whose pm file has the original's smaller size. Each is
 * ignored, refused or served as reduce.h says, never a crash. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define CHUNK DEF_CHUNK
#define BPC DEF_BPC

struct log {
	int errors, warnings;
	char last[512];
	int thread_mentions; /* messages naming a thread */
};

static void capture(void *ctx, int level, const char *msg)
{
	struct log *l = ctx;
	l->errors += level == REDUCE_LOG_ERROR;
	l->warnings += level == REDUCE_LOG_WARN;
	l->thread_mentions += strstr(msg, "thread") != NULL;
	snprintf(l->last, sizeof(l->last), "%s", msg);
}

struct done {
	int status;
	int calls;
	pthread_t thread;
};

static void collect_status(void *arg, int status)
{
	*(int *)arg = status;
}

static void done_fn(void *arg, int status)
{
	struct done *w = arg;
	w->status = status;
	w->calls++;
	w->thread = pthread_self();
}

/* ---------------------------------------------------------------- duplicates */

/* Every completion of every kind delivered twice: IMMEDIATE calls through the same
 * args right after the first call, DEFERRED calls the saved cb_fn/cb_arg later, after
 * other operations. Each second delivery is ignored with a warning; the data is right
 * and the volume is consistent. */
TEST(contracts_duplicate_completions)
{
	enum { N = 24 };
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	struct spdk_reduce_vol *vol = NULL;
	struct log l = {0};
	char dir[64];
	uint8_t *model = calloc(N, CHUNK), buf[CHUNK], got[CHUNK];
	uint64_t s = 5;

	REQUIRE_EQ(rig_open(&d, &p, dir, sizeof(dir), N, deferred, &vol), 0, out);
	reduce_set_log_fn(capture, &l);
	for (int k = 0; k < OP_KINDS; k++) {
		d.twice[k] = 1;
	}
	for (int i = 0; i < 4 * N; i++) {
		uint64_t c = rng_next(&s) % N;
		uint64_t first = i % 3 ? rng_next(&s) % BPC : 0;
		uint64_t len = first ? 1 + rng_next(&s) % (BPC - first) : BPC;
		if (rng_next(&s) % 3) {
			fill_data(buf, (size_t)len * 512, rng_next(&s));
			CHECK_EQ(h_write(&d, vol, buf, c * BPC + first, len), 0);
			memcpy(model + c * CHUNK + first * 512, buf, (size_t)len * 512);
		} else {
			CHECK_EQ(h_read(&d, vol, got, c * BPC + first, len), 0);
			CHECK(memcmp(got, model + c * CHUNK + first * 512, (size_t)len * 512) == 0);
		}
	}
	mem_dev_poll_all(&d);
	CHECK(d.duplicates > 4 * N);
	CHECK_EQ((uint64_t)l.warnings, d.duplicates);
	CHECK_EQ(l.errors, 0);
	for (int k = 0; k < OP_KINDS; k++) {
		d.twice[k] = 0;
	}
	for (int c = 0; c < N; c++) {
		CHECK_EQ(h_read(&d, vol, got, (uint64_t)c * BPC, BPC), 0);
		CHECK(memcmp(got, model + (size_t)c * CHUNK, CHUNK) == 0);
	}
	CHECK_EQ(h_check(&d, vol, NULL), 0);
out:
	reduce_set_log_fn(NULL, NULL);
	rig_close(&d, vol, dir);
	free(model);
}

/* ---------------------------------------------------------------- threads */

struct foreign_calls {
	struct spdk_reduce_vol *vol;
	uint8_t *buf;
	struct done read, write, unload, check;
	int check_status, cache_status;
	pthread_t check_thread;
	const struct spdk_reduce_vol_info *info;
};

static void check_fn(void *arg, int status, const struct reduce_vol_check_report *r)
{
	struct foreign_calls *f = arg;
	(void)r;
	f->check_status = status;
	f->check_thread = pthread_self();
}

static void *call_from_elsewhere(void *arg)
{
	struct foreign_calls *f = arg;
	struct iovec iov = {f->buf, CHUNK};
	spdk_reduce_vol_readv(f->vol, &iov, 1, 0, BPC, done_fn, &f->read);
	spdk_reduce_vol_writev(f->vol, &iov, 1, BPC, BPC, done_fn, &f->write);
	spdk_reduce_vol_unload(f->vol, done_fn, &f->unload);
	reduce_vol_check(f->vol, check_fn, f);
	f->info = spdk_reduce_vol_get_info(f->vol);
	f->cache_status = reduce_vol_set_cache_chunks(f->vol, 0);
	spdk_reduce_vol_print_info(f->vol);
	return NULL;
}

/* A volume belongs to the thread that loaded it: calls from another thread are refused
 * with -EPERM, through the callback, on the calling thread, and logged. The volume is
 * untouched and goes on serving its own thread. */
TEST(contracts_calls_from_another_thread)
{
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	struct spdk_reduce_vol *vol = NULL;
	struct log l = {0};
	char dir[64];
	uint8_t data[CHUNK], got[CHUNK];
	pthread_t t;

	REQUIRE_EQ(rig_open(&d, &p, dir, sizeof(dir), 8, deferred, &vol), 0, out);
	fill_data(data, CHUNK, 3);
	CHECK_EQ(h_write(&d, vol, data, 0, BPC), 0);
	uint64_t ops = d.count[OP_READ] + d.count[OP_WRITE];
	struct foreign_calls f = {.vol = vol, .buf = got, .check_status = 1};
	reduce_set_log_fn(capture, &l);
	REQUIRE_EQ(pthread_create(&t, NULL, call_from_elsewhere, &f), 0, out);
	pthread_join(t, NULL);
	struct done *each[] = {&f.read, &f.write, &f.unload};
	for (int i = 0; i < 3; i++) {
		CHECK_EQ(each[i]->calls, 1);
		CHECK_EQ(each[i]->status, -EPERM);
		CHECK(pthread_equal(each[i]->thread, t));
	}
	CHECK_EQ(f.check_status, -EPERM);
	CHECK(pthread_equal(f.check_thread, t));
	CHECK(f.info == NULL);
	CHECK_EQ(f.cache_status, -EPERM);
	CHECK_EQ(l.errors, 7);
	CHECK_EQ(l.thread_mentions, 7);
	mem_dev_poll_all(&d);
	CHECK_EQ(d.count[OP_READ] + d.count[OP_WRITE], ops);
	/* Still loaded and served on its own thread. */
	CHECK_EQ(h_read(&d, vol, got, 0, BPC), 0);
	CHECK(memcmp(got, data, CHUNK) == 0);
	CHECK(spdk_reduce_vol_get_info(vol) != NULL);
out:
	reduce_set_log_fn(NULL, NULL);
	rig_close(&d, vol, dir);
}

/* While g_hold is set, a writev that does its transfer at once and keeps the
 * completion: the test delivers it, first from another thread, then from the volume's.
 * Otherwise the harness's. */
static struct spdk_reduce_vol_cb_args *g_held[8];
static int g_nheld, g_hold;
static reduce_backing_io_fn g_plain_writev;

static void holding_writev(struct spdk_reduce_backing_dev *dev, struct iovec *iov, int iovcnt,
			   uint64_t lba, uint32_t lba_count, struct spdk_reduce_vol_cb_args *args)
{
	struct mem_dev *d = container_of(dev, struct mem_dev, dev);
	if (!g_hold) {
		g_plain_writev(dev, iov, iovcnt, lba, lba_count, args);
		return;
	}
	uint8_t *at = d->image + lba * dev->blocklen;
	for (int i = 0; i < iovcnt; i++) {
		memcpy(at, iov[i].iov_base, iov[i].iov_len);
		at += iov[i].iov_len;
	}
	(void)lba_count;
	if (g_nheld < 8) {
		g_held[g_nheld++] = args;
	}
}

static void *complete_held(void *arg)
{
	(void)arg;
	for (int i = 0; i < g_nheld; i++) {
		g_held[i]->cb_fn(g_held[i]->cb_arg, 0);
	}
	return NULL;
}

/* A device completion arriving on a thread other than the volume's cannot touch the
 * volume safely: it is logged and ignored, and the operation stays in flight until it
 * is completed on the right thread. */
TEST(contracts_completion_from_another_thread)
{
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	struct spdk_reduce_vol *vol = NULL;
	struct log l = {0};
	char dir[64];
	uint8_t data[CHUNK], got[CHUNK];
	struct done w = {0};
	pthread_t t;

	/* The device's functions are taken at init: the holding one goes in first. */
	make_tmpdir(dir, sizeof(dir));
	mem_dev_init(&d, DEF_BLOCKLEN, blockcnt_for_chunks(8), deferred);
	g_plain_writev = d.dev.writev;
	d.dev.writev = holding_writev;
	g_hold = 0;
	default_params(&p);
	REQUIRE_EQ(h_init(&d, &p, dir, &vol), 0, out);
	fill_random(data, CHUNK, 9);
	g_nheld = 0;
	g_hold = 1;
	struct iovec iov = {data, CHUNK};
	spdk_reduce_vol_writev(vol, &iov, 1, 2 * BPC, BPC, done_fn, &w);
	mem_dev_poll_all(&d); /* the compress, in DEFERRED mode */
	REQUIRE_EQ(g_nheld, 1, out);
	reduce_set_log_fn(capture, &l);
	REQUIRE_EQ(pthread_create(&t, NULL, complete_held, NULL), 0, out);
	pthread_join(t, NULL);
	CHECK_EQ(w.calls, 0);
	CHECK_EQ(l.errors, 1);
	CHECK_EQ(l.thread_mentions, 1);
	/* Unload is refused while the write is in flight. */
	CHECK_EQ(h_unload(&d, vol), -EBUSY);
	g_hold = 0;
	complete_held(NULL);
	CHECK_EQ(w.calls, 1);
	CHECK_EQ(w.status, 0);
	CHECK(pthread_equal(w.thread, pthread_self()));
	CHECK_EQ(h_read(&d, vol, got, 2 * BPC, BPC), 0);
	CHECK(memcmp(got, data, CHUNK) == 0);
out:
	reduce_set_log_fn(NULL, NULL);
	rig_close(&d, vol, dir);
}

/* ---------------------------------------------------------------- iovec arrays */

struct resubmit {
	struct spdk_reduce_vol *vol;
	uint8_t *a, *b, *decoy;
	struct done first, second, third;
};

/* Submits two writes with an iovec array on this callback's stack (the second waits
 * behind the first, same chunk), then tramples the array before returning, as the
 * stack would be. */
static void resubmit_fn(void *arg, int status)
{
	struct resubmit *r = arg;
	struct iovec iov[3] = {
		{r->a, 4096}, {r->a + 4096, 8192}, {r->a + 12288, 4096}};
	struct iovec iov2[2] = {{r->b, 512}, {r->b + 512, 1536}};
	r->first.status = status;
	r->first.calls++;
	spdk_reduce_vol_writev(r->vol, iov, 3, 5 * BPC, BPC, done_fn, &r->second);
	spdk_reduce_vol_writev(r->vol, iov2, 2, 5 * BPC + 4, 4, done_fn, &r->third);
	for (int i = 0; i < 3; i++) {
		iov[i] = (struct iovec){r->decoy, 4096};
	}
	for (int i = 0; i < 2; i++) {
		iov2[i] = (struct iovec){r->decoy, 1024};
	}
	__asm__ volatile("" : : "r"(iov), "r"(iov2) : "memory");
}

/* The iovec array is read during the call only: a request that must wait works from a
 * copy, so an array on the stack of the callback that submitted it may go. */
TEST(contracts_iovec_array_copied)
{
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	struct spdk_reduce_vol *vol = NULL;
	char dir[64];
	static uint8_t a[CHUNK], b[2048], decoy[4096], first[CHUNK], want[CHUNK], got[CHUNK];
	struct resubmit r = {.a = a, .b = b, .decoy = decoy};

	REQUIRE_EQ(rig_open(&d, &p, dir, sizeof(dir), 8, deferred, &vol), 0, out);
	r.vol = vol;
	fill_data(a, sizeof(a), 21);
	fill_data(b, sizeof(b), 22);
	memset(decoy, 0xEE, sizeof(decoy));
	fill_data(first, sizeof(first), 23);
	struct iovec iov = {first, CHUNK};
	spdk_reduce_vol_writev(vol, &iov, 1, 0, BPC, resubmit_fn, &r);
	mem_dev_poll_all(&d);
	CHECK_EQ(r.first.calls, 1);
	CHECK_EQ(r.second.calls, 1);
	CHECK_EQ(r.third.calls, 1);
	CHECK_EQ(r.first.status + r.second.status + r.third.status, 0);
	memcpy(want, a, CHUNK);
	memcpy(want + 4 * 512, b, sizeof(b));
	CHECK_EQ(h_read(&d, vol, got, 5 * BPC, BPC), 0);
	CHECK(memcmp(got, want, CHUNK) == 0);
out:
	rig_close(&d, vol, dir);
}

/* ---------------------------------------------------------------- map entries */

static uint64_t pm_u64(int fd, uint64_t offset)
{
	uint64_t v = 0;
	CHECK_EQ(pread(fd, &v, 8, (off_t)offset), 8);
	return v;
}

static void pm_set(int fd, uint64_t offset, uint64_t v)
{
	CHECK_EQ(pwrite(fd, &v, 8, (off_t)offset), 8);
}

/* A logical map entry scribbled in the pm file while the volume is loaded: pointing
 * beyond the file, or at a free chunk map that still holds an older version of the
 * chunk (valid checksum and all). Reads and read-modify-writes fail with -EIO, never
 * returning another chunk map's bytes; a whole-chunk write replaces the entry and frees
 * nothing it cannot vouch for. */
TEST(contracts_scribbled_map_entry)
{
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	struct spdk_reduce_vol *vol = NULL;
	char dir[64], path[256];
	uint8_t v1[CHUNK], v2[CHUNK], got[CHUNK];
	int fd = -1;
	/* pm layout: superblock, then the logical map, u64 per chunk. */
	const uint64_t entry = 4096;

	REQUIRE_EQ(rig_open(&d, &p, dir, sizeof(dir), 16, deferred, &vol), 0, out);
	snprintf(path, sizeof(path), "%s", spdk_reduce_vol_get_pm_path(vol));
	fd = open(path, O_RDWR);
	REQUIRE_EQ(fd >= 0, 1, out);
	fill_data(v1, CHUNK, 1);
	fill_data(v2, CHUNK, 2);
	for (uint64_t c = 1; c <= 3; c++) {
		CHECK_EQ(h_write(&d, vol, v1, c * BPC, BPC), 0);
	}
	uint64_t old2 = pm_u64(fd, entry + 2 * 8);
	CHECK_EQ(h_write(&d, vol, v2, 2 * BPC, BPC), 0); /* chunk map old2 is free now */
	uint64_t now1 = pm_u64(fd, entry + 8), now2 = pm_u64(fd, entry + 2 * 8);
	CHECK(old2 != now2);

	pm_set(fd, entry + 8, 0x7fffffffULL);
	pm_set(fd, entry + 2 * 8, old2);
	for (uint64_t c = 1; c <= 2; c++) {
		memset(got, 0x5A, sizeof(got));
		CHECK_EQ(h_read(&d, vol, got, c * BPC, BPC), -EIO);
		CHECK_EQ(h_write(&d, vol, v2, c * BPC + 3, 2), -EIO);
	}
	/* A whole-chunk write over a scribbled entry replaces it. */
	pm_set(fd, entry + 3 * 8, 1ULL << 40);
	CHECK_EQ(h_write(&d, vol, v2, 3 * BPC, BPC), 0);
	CHECK_EQ(h_read(&d, vol, got, 3 * BPC, BPC), 0);
	CHECK(memcmp(got, v2, CHUNK) == 0);
	/* Put the others back: they read as they were, and a reload finds it all clean. */
	pm_set(fd, entry + 8, now1);
	pm_set(fd, entry + 2 * 8, now2);
	CHECK_EQ(h_read(&d, vol, got, 1 * BPC, BPC), 0);
	CHECK(memcmp(got, v1, CHUNK) == 0);
	CHECK_EQ(h_read(&d, vol, got, 2 * BPC, BPC), 0);
	CHECK(memcmp(got, v2, CHUNK) == 0);
	CHECK_EQ(h_unload(&d, vol), 0);
	vol = NULL;
	REQUIRE_EQ(h_load(&d, &vol), 0, out);
	CHECK_EQ(h_check(&d, vol, NULL), 0);
out:
	if (fd >= 0) {
		close(fd);
	}
	rig_close(&d, vol, dir);
}

/* ---------------------------------------------------------------- space */

/* Chunk maps in a pm file of the original's size (its chunk-map region counted without
 * each entry's 8-byte header), and the chunks that may hold data in it: as many as
 * leave a spare map for each of them, up to 128. */
static uint64_t original_maps(uint64_t chunks, uint64_t iou_per_chunk, long *pm_size)
{
	uint64_t stride = 8 + 8 * iou_per_chunk;
	uint64_t map_off = 4096 + (chunks * 8 + 63) / 64 * 64;
	*pm_size = (long)(map_off + ((chunks + 128) * (stride - 8) + 63) / 64 * 64);
	return ((uint64_t)*pm_size - map_off) / stride;
}

/* A volume with small io units (512 bytes, 8 to a 4 KiB chunk) whose pm file has the
 * original's size: fresh chunks fill it to -ENOSPC, then every chunk holding data is
 * overwritten many times, many at once, and every overwrite succeeds. */
TEST(contracts_overwrites_after_enospc)
{
	enum { N = 256, CH = 4096, B = CH / 512 };
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	struct spdk_reduce_vol *vol = NULL;
	char dir[64], path[256];
	uint8_t *model = calloc(N, CH), *bufs = malloc((size_t)N * CH), got[CH];
	int *status = calloc(N, sizeof(int));
	struct iovec *iov = calloc(N, sizeof(*iov));
	long pm_size;
	uint64_t maps = original_maps(N, CH / 512, &pm_size), held = 0;
	while ((held + 1) + ((held + 1) < 128 ? held + 1 : 128) <= maps) {
		held++;
	}

	make_tmpdir(dir, sizeof(dir));
	mem_dev_init(&d, 512, (N + 128) * B, deferred);
	default_params(&p);
	p.backing_io_unit_size = 512;
	p.chunk_size = CH;
	REQUIRE_EQ(h_init(&d, &p, dir, &vol), 0, out);
	snprintf(path, sizeof(path), "%s", spdk_reduce_vol_get_pm_path(vol));
	CHECK_EQ(h_unload(&d, vol), 0);
	vol = NULL;
	REQUIRE_EQ(truncate(path, pm_size), 0, out);
	REQUIRE_EQ(h_load(&d, &vol), 0, out);
	int ok = 0, enospc = 0;
	for (uint64_t c = 0; c < N; c++) {
		fill_random(model + c * CH, CH, c + 1);
		int rc = h_write(&d, vol, model + c * CH, c * B, B);
		if (rc == 0) {
			ok++;
		} else {
			CHECK_EQ(rc, -ENOSPC);
			memset(model + c * CH, 0, CH);
			enospc++;
		}
	}
	CHECK_EQ((uint64_t)ok, held);
	CHECK_EQ(ok + enospc, N);
	for (int round = 0; round < SCALE(6, 2); round++) {
		for (uint64_t c = 0; c < N; c++) {
			fill_data(bufs + c * CH, CH, (uint64_t)round * 1000 + c);
			bufs[c * CH] |= 1; /* never all zeros: that would free the chunk */
			iov[c] = (struct iovec){bufs + c * CH, CH};
			status[c] = 1;
			spdk_reduce_vol_writev(vol, &iov[c], 1, c * B, B, collect_status, &status[c]);
		}
		mem_dev_poll_all(&d);
		int failed = 0;
		for (uint64_t c = 0; c < N; c++) {
			if (c < held) {
				failed += status[c] != 0;
				memcpy(model + c * CH, bufs + c * CH, CH);
			} else {
				CHECK_EQ(status[c], -ENOSPC);
			}
		}
		CHECK_EQ(failed, 0);
	}
	int mismatches = 0;
	for (uint64_t c = 0; c < N; c++) {
		CHECK_EQ(h_read(&d, vol, got, c * B, B), 0);
		mismatches += memcmp(got, model + c * CH, CH) != 0;
	}
	CHECK_EQ(mismatches, 0);
	CHECK_EQ(h_check(&d, vol, NULL), 0);
	CHECK_EQ(file_size(path), pm_size);
out:
	rig_close(&d, vol, dir);
	free(model);
	free(bufs);
	free(status);
	free(iov);
}

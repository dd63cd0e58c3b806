/* The codec pool (reduce_codec_pool_*) as the codec of a volume: random reads and
 * writes against a shadow of the volume with many requests in flight, driven by a poll
 * loop over the pool and the device, every completion on the polling thread; destroy
 * with work in flight (every completion delivered inside destroy, the device detached
 * afterwards, as documented); and the refusals of bad arguments, each logged. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"

#define POOL_CHUNKS 48
#define POOL_SECONDS 60

static double seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One round of the application's poll loop: the pool, then the device. */
static int poll_both(struct reduce_codec_pool *pool, struct mem_dev *d)
{
	int n = reduce_codec_pool_poll(pool);
	CHECK(n >= 0);
	return n + mem_dev_poll(d);
}

/* Polls until *flag is set. The pool's workers may be busy while nothing is ready, so
 * this waits on a clock, not on an empty queue. */
static int pool_wait(struct reduce_codec_pool *pool, struct mem_dev *d, const int *flag)
{
	double deadline = seconds() + POOL_SECONDS;
	while (!*flag) {
		if (!poll_both(pool, d) && seconds() > deadline) {
			fprintf(stderr, "    [%s] completion never arrived\n", g_test_mode);
			g_test_failures++;
			return -1;
		}
	}
	return 0;
}

struct pool_req {
	struct iovec iov[3];
	int iovcnt;
	uint8_t *buf, *expect;
	size_t len;
	int write;
	uint64_t offset;
	int *in_flight, *errors, *wrong_thread;
	pthread_t poller;
};

static void pool_req_done(void *arg, int status)
{
	struct pool_req *r = arg;
	if (!pthread_equal(pthread_self(), r->poller)) {
		(*r->wrong_thread)++;
	}
	if (status != 0) {
		fprintf(stderr, "    %s at block %llu: %d\n", r->write ? "write" : "read",
			(unsigned long long)r->offset, status);
		(*r->errors)++;
	} else if (!r->write && memcmp(r->buf, r->expect, r->len) != 0) {
		fprintf(stderr, "    read at block %llu: wrong data\n", (unsigned long long)r->offset);
		(*r->errors)++;
	}
	(*r->in_flight)--;
	free(r->buf);
	free(r->expect);
	free(r);
}

struct sync_io {
	int done, status;
};

static void sync_done(void *arg, int status)
{
	struct sync_io *s = arg;
	s->status = status;
	s->done = 1;
}

static int pool_io(struct reduce_codec_pool *pool, struct mem_dev *d,
		   struct spdk_reduce_vol *vol, int write, void *buf, uint64_t offset,
		   uint64_t length)
{
	struct sync_io s = {0};
	struct iovec iov = {.iov_base = buf, .iov_len = length * DEF_BLOCKLEN};
	if (write) {
		spdk_reduce_vol_writev(vol, &iov, 1, offset, length, sync_done, &s);
	} else {
		spdk_reduce_vol_readv(vol, &iov, 1, offset, length, sync_done, &s);
	}
	return pool_wait(pool, d, &s.done) ? -ETIMEDOUT : s.status;
}

static void check_done(void *arg, int status, const struct reduce_vol_check_report *report)
{
	if (status) {
		fprintf(stderr, "    [%s] reduce_vol_check: %d: %s\n", g_test_mode, status,
			report->first_problem);
	}
	sync_done(arg, status);
}

/* The checker, which reads every chunk back through the pool. */
static int pool_check(struct reduce_codec_pool *pool, struct mem_dev *d,
		      struct spdk_reduce_vol *vol)
{
	struct sync_io s = {0};
	reduce_vol_check(vol, check_done, &s);
	return pool_wait(pool, d, &s.done) ? -ETIMEDOUT : s.status;
}

/* Reads the whole volume through the pool and compares it with `model`. */
static void pool_verify(struct reduce_codec_pool *pool, struct mem_dev *d,
			struct spdk_reduce_vol *vol, const uint8_t *model, uint64_t chunks)
{
	uint8_t *got = malloc(DEF_CHUNK);
	int mismatches = 0;
	for (uint64_t c = 0; c < chunks; c++) {
		CHECK_EQ(pool_io(pool, d, vol, 0, got, c * DEF_BPC, DEF_BPC), 0);
		mismatches += memcmp(got, model + c * DEF_CHUNK, DEF_CHUNK) != 0;
	}
	CHECK_EQ(mismatches, 0);
	free(got);
}

/* One shadow run with a pool of `algo` at `level`, whose superblock must record
 * `algo_id` at `recorded`. */
static void pool_shadow(int deferred, const char *algo, int level, uint32_t algo_id,
			uint32_t recorded)
{
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	struct spdk_reduce_vol *vol = NULL;
	char dir[64];
	uint8_t *model = calloc(POOL_CHUNKS, DEF_CHUNK);
	uint64_t rng = 99 + (uint64_t)deferred;
	int in_flight = 0, errors = 0, wrong_thread = 0, most = 0, before = g_test_failures;
	int ops = SCALE(1500, 200);
	struct reduce_codec_pool *pool = reduce_codec_pool_create(algo, level, 1);

	REQUIRE_EQ(pool != NULL, 1, out);
	make_tmpdir(dir, sizeof(dir));
	mem_dev_init(&d, DEF_BLOCKLEN, blockcnt_for_chunks(POOL_CHUNKS), deferred);
	CHECK_EQ(reduce_codec_pool_attach(pool, &d.dev), 0);
	default_params(&p);
	REQUIRE_EQ(h_init(&d, &p, dir, &vol), 0, close);
	/* Every read goes through the pool: a cached one would complete inside the call,
	 * and this run wants many in flight. */
	CHECK_EQ(reduce_vol_set_cache_chunks(vol, 0), 0);
	CHECK_EQ(spdk_reduce_vol_get_info(vol)->comp_algo, algo_id);
	CHECK_EQ(spdk_reduce_vol_get_info(vol)->comp_level, recorded);

	for (int op = 0; op < ops; op++) {
		uint64_t chunk = rng_next(&rng) % 4 == 0 ? rng_next(&rng) % 3
							 : rng_next(&rng) % POOL_CHUNKS;
		uint64_t first = rng_next(&rng) % 3 == 0 ? 0 : rng_next(&rng) % DEF_BPC;
		uint64_t blocks = first == 0 && rng_next(&rng) % 2 ? DEF_BPC
				  : 1 + rng_next(&rng) % (DEF_BPC - first);
		struct pool_req *r = calloc(1, sizeof(*r));
		r->offset = chunk * DEF_BPC + first;
		r->len = blocks * DEF_BLOCKLEN;
		r->buf = malloc(r->len);
		r->expect = malloc(r->len);
		r->write = rng_next(&rng) % 2;
		r->in_flight = &in_flight;
		r->errors = &errors;
		r->wrong_thread = &wrong_thread;
		r->poller = pthread_self();
		uint8_t *shadow = model + r->offset * DEF_BLOCKLEN;
		if (r->write) {
			fill_data(r->buf, r->len, rng_next(&rng));
			memcpy(shadow, r->buf, r->len);
		} else {
			memset(r->buf, 0xA5, r->len);
			memcpy(r->expect, shadow, r->len);
		}
		/* Up to 3 iovecs cut at arbitrary bytes. */
		size_t a = rng_next(&rng) % (r->len + 1), b = rng_next(&rng) % (r->len + 1);
		if (a > b) {
			size_t t = a;
			a = b;
			b = t;
		}
		r->iov[0] = (struct iovec){r->buf, a};
		r->iov[1] = (struct iovec){r->buf + a, b - a};
		r->iov[2] = (struct iovec){r->buf + b, r->len - b};
		r->iovcnt = 3;
		in_flight++;
		most = in_flight > most ? in_flight : most;
		if (r->write) {
			spdk_reduce_vol_writev(vol, r->iov, r->iovcnt, r->offset, blocks,
					       pool_req_done, r);
		} else {
			spdk_reduce_vol_readv(vol, r->iov, r->iovcnt, r->offset, blocks,
					      pool_req_done, r);
		}
		/* Bursts of up to 64 in flight, then some polling. */
		if (in_flight >= 64 || rng_next(&rng) % 16 == 0) {
			for (uint64_t k = rng_next(&rng) % 64; k > 0; k--) {
				poll_both(pool, &d);
			}
		}
		if (op == ops / 2) {
			double deadline = seconds() + POOL_SECONDS;
			while (in_flight && seconds() < deadline) {
				poll_both(pool, &d);
			}
			CHECK_EQ(in_flight, 0);
			CHECK_EQ(h_unload(&d, vol), 0);
			vol = NULL;
			REQUIRE_EQ(h_load(&d, &vol), 0, close);
			CHECK_EQ(reduce_vol_set_cache_chunks(vol, 0), 0);
		}
	}
	double deadline = seconds() + POOL_SECONDS;
	while (in_flight && seconds() < deadline) {
		poll_both(pool, &d);
	}
	CHECK_EQ(in_flight, 0);
	CHECK_EQ(errors, 0);
	CHECK_EQ(wrong_thread, 0);
	CHECK(most > 32);
	CHECK_EQ(pool_check(pool, &d, vol), 0);
	pool_verify(pool, &d, vol, model, POOL_CHUNKS);
close:
	if (g_test_failures != before) {
		fprintf(stderr, "    (pool of %s at level %d)\n", algo, level);
	}
	rig_close(&d, vol, dir);
	reduce_codec_pool_destroy(pool);
out:
	free(model);
}

TEST(pool_shadow_random_io)
{
	pool_shadow(deferred, "zstd", 3, REDUCE_COMP_ALGO_ZSTD, 3);
	pool_shadow(deferred, "lz4", 0, REDUCE_COMP_ALGO_LZ4, 1);
}

struct counted {
	int done, failed;
	pthread_t poller;
	int wrong_thread;
};

static void counted_done(void *arg, int status)
{
	struct counted *c = arg;
	c->done++;
	c->failed += status != 0;
	c->wrong_thread += !pthread_equal(pthread_self(), c->poller);
}

/* Destroy with work in flight: every codec completion comes back inside destroy, so
 * the writes all finish (in DEFERRED mode their device completions follow from the
 * device's poll); the data is intact. Afterwards the device is detached: a write is
 * stored raw (compress fails with -ENODEV), a compressed chunk cannot be read (-EIO),
 * and once the members point at the built-in codec again everything reads back. */
TEST(pool_destroy_with_work_in_flight)
{
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	struct spdk_reduce_vol *vol = NULL;
	char dir[64];
	enum { WRITES = 40 };
	uint8_t *data = malloc((size_t)WRITES * DEF_CHUNK), *got = malloc(DEF_CHUNK);
	struct iovec iov[WRITES];
	struct counted c = {.poller = pthread_self()};
	struct reduce_codec_pool *pool = reduce_codec_pool_create("zstd", 3, 2);

	REQUIRE_EQ(pool != NULL, 1, out);
	make_tmpdir(dir, sizeof(dir));
	mem_dev_init(&d, DEF_BLOCKLEN, blockcnt_for_chunks(WRITES + 1), deferred);
	CHECK_EQ(reduce_codec_pool_attach(pool, &d.dev), 0);
	default_params(&p);
	REQUIRE_EQ(h_init(&d, &p, dir, &vol), 0, close);
	for (int i = 0; i < WRITES; i++) {
		memset(data + (size_t)i * DEF_CHUNK, 'a' + i % 26, DEF_CHUNK);
		snprintf((char *)data + (size_t)i * DEF_CHUNK, 32, "chunk %d", i);
		iov[i] = (struct iovec){data + (size_t)i * DEF_CHUNK, DEF_CHUNK};
		spdk_reduce_vol_writev(vol, &iov[i], 1, (uint64_t)i * DEF_BPC, DEF_BPC,
				       counted_done, &c);
	}
	CHECK(c.done < WRITES);
	reduce_codec_pool_destroy(pool);
	pool = NULL;
	mem_dev_poll_all(&d);
	CHECK_EQ(c.done, WRITES);
	CHECK_EQ(c.failed, 0);
	CHECK_EQ(c.wrong_thread, 0);
	/* Compressed: well under one io unit per chunk. */
	CHECK_EQ(h_units(vol), WRITES);

	/* Detached: writes still succeed, stored raw; a compressed chunk fails to read. */
	memset(got, 'z', DEF_CHUNK);
	CHECK_EQ(h_write(&d, vol, got, (uint64_t)WRITES * DEF_BPC, DEF_BPC), 0);
	CHECK_EQ(h_units(vol), WRITES + DEF_CHUNK / DEF_IO_UNIT);
	/* The writes left chunks in the cache: off, so the read needs a decompress. */
	CHECK_EQ(reduce_vol_set_cache_chunks(vol, 0), 0);
	CHECK_EQ(h_read(&d, vol, got, 0, DEF_BPC), -EIO);
	CHECK_EQ(h_unload(&d, vol), 0);
	vol = NULL;

	d.dev.compress = reduce_zstd_compress;
	d.dev.decompress = reduce_zstd_decompress;
	REQUIRE_EQ(h_load(&d, &vol), 0, close);
	int mismatches = 0;
	for (int i = 0; i < WRITES; i++) {
		CHECK_EQ(h_read(&d, vol, got, (uint64_t)i * DEF_BPC, DEF_BPC), 0);
		mismatches += memcmp(got, data + (size_t)i * DEF_CHUNK, DEF_CHUNK) != 0;
	}
	CHECK_EQ(mismatches, 0);
	CHECK_EQ(h_read(&d, vol, got, (uint64_t)WRITES * DEF_BPC, DEF_BPC), 0);
	CHECK_EQ(got[DEF_CHUNK - 1], 'z');
close:
	rig_close(&d, vol, dir);
	reduce_codec_pool_destroy(pool);
out:
	free(data);
	free(got);
}

struct log_count {
	int errors;
	char last[512];
};

static void count_log(void *ctx, int level, const char *msg)
{
	struct log_count *l = ctx;
	l->errors += level == REDUCE_LOG_ERROR;
	snprintf(l->last, sizeof(l->last), "%s", msg);
}

/* A refusal: the call's result, and one logged error naming `word`. */
#define CHECK_REFUSED(call, expect, word)                                                   \
	do {                                                                                \
		int _before = l.errors;                                                     \
		CHECK((call) == (expect));                                                  \
		CHECK_EQ(l.errors, _before + 1);                                            \
		if (!strcasestr(l.last, (word))) {                                          \
			fprintf(stderr, "    log: \"%s\" lacks \"%s\"\n", l.last, (word));   \
			g_test_failures++;                                                  \
		}                                                                           \
	} while (0)

TEST_ONCE(pool_refuses_bad_arguments)
{
	struct log_count l = {0};
	struct mem_dev d;
	(void)deferred;
	reduce_set_log_fn(count_log, &l);
	mem_dev_init(&d, DEF_BLOCKLEN, blockcnt_for_chunks(4), IMMEDIATE);

	CHECK_REFUSED(reduce_codec_pool_create(NULL, 1, 1), NULL, "algo");
	CHECK_REFUSED(reduce_codec_pool_create("gzip", 1, 1), NULL, "gzip");
	CHECK_REFUSED(reduce_codec_pool_create("", 1, 1), NULL, "algo");
	CHECK_REFUSED(reduce_codec_pool_create("zstd", 23, 1), NULL, "level");
	CHECK_REFUSED(reduce_codec_pool_create("zstd", -1, 1), NULL, "level");
	CHECK_REFUSED(reduce_codec_pool_create("lz4", 2, 1), NULL, "lz4 level");
	CHECK_REFUSED(reduce_codec_pool_create("zstd", 1, 0), NULL, "threads");
	CHECK_REFUSED(reduce_codec_pool_create("zstd", 1, (unsigned)-1), NULL, "threads");

	struct reduce_codec_pool *a = reduce_codec_pool_create("zstd", 1, 1);
	struct reduce_codec_pool *b = reduce_codec_pool_create("zstd", 19, 1);
	CHECK(a != NULL && b != NULL);
	CHECK_REFUSED(reduce_codec_pool_attach(NULL, &d.dev), -EINVAL, "pool");
	CHECK_REFUSED(reduce_codec_pool_attach(a, NULL), -EINVAL, "dev");
	CHECK_EQ(reduce_codec_pool_attach(a, &d.dev), 0);
	CHECK_EQ(reduce_codec_pool_attach(a, &d.dev), 0);
	CHECK_REFUSED(reduce_codec_pool_attach(b, &d.dev), -EBUSY, "another pool");
	CHECK_REFUSED(reduce_codec_pool_poll(NULL), -EINVAL, "pool");
	CHECK_EQ(reduce_codec_pool_poll(a), 0);

	/* Bad iovecs through an attached member complete at once with -EINVAL. */
	int res[2] = {0, 0};
	struct sync_io s = {0};
	struct spdk_reduce_vol_cb_args args = {.cb_fn = sync_done, .cb_arg = &s};
	struct iovec ok = {.iov_base = res, .iov_len = sizeof(res)};
	CHECK_REFUSED((d.dev.compress(&d.dev, NULL, 1, &ok, 1, &args), s.status), -EINVAL, "src");
	CHECK_EQ(s.done, 1);

	/* After destroy, the device is detached: its members fail with -ENODEV. */
	reduce_codec_pool_destroy(a);
	s = (struct sync_io){0};
	CHECK_REFUSED((d.dev.decompress(&d.dev, &ok, 1, &ok, 1, &args), s.status), -ENODEV,
		      "no codec pool");
	CHECK_EQ(s.done, 1);
	/* Free to attach elsewhere now. */
	CHECK_EQ(reduce_codec_pool_attach(b, &d.dev), 0);
	reduce_codec_pool_destroy(b);
	CHECK_REFUSED((reduce_codec_pool_destroy(NULL), 0), 0, "pool");
	reduce_set_log_fn(NULL, NULL);
	mem_dev_free(&d);
}

struct destroyer {
	struct reduce_codec_pool *pool; /* NULL once destroyed */
	int done, failed;
};

static void destroy_on_first(void *arg, int status)
{
	struct destroyer *x = arg;
	x->done++;
	x->failed += status != 0;
	if (x->pool) {
		struct reduce_codec_pool *pool = x->pool;
		x->pool = NULL;
		reduce_codec_pool_destroy(pool);
	}
}

/* Destroy from inside a completion (in IMMEDIATE mode it runs inside the pool's poll;
 * in DEFERRED mode inside the device's): the other operations in flight still finish,
 * and the pool is freed once the poll returns (ASan and valgrind see any use after). */
TEST(pool_destroy_from_a_completion)
{
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	struct spdk_reduce_vol *vol = NULL;
	char dir[64];
	enum { WRITES = 16 };
	uint8_t *data = malloc((size_t)WRITES * DEF_CHUNK), *got = malloc(DEF_CHUNK);
	struct iovec iov[WRITES];
	struct destroyer x = {.pool = reduce_codec_pool_create("zstd", 1, 1)};

	REQUIRE_EQ(x.pool != NULL, 1, out);
	make_tmpdir(dir, sizeof(dir));
	mem_dev_init(&d, DEF_BLOCKLEN, blockcnt_for_chunks(WRITES), deferred);
	CHECK_EQ(reduce_codec_pool_attach(x.pool, &d.dev), 0);
	default_params(&p);
	REQUIRE_EQ(h_init(&d, &p, dir, &vol), 0, close);
	for (int i = 0; i < WRITES; i++) {
		fill_data(data + (size_t)i * DEF_CHUNK, DEF_CHUNK, 500 + (uint64_t)i);
		iov[i] = (struct iovec){data + (size_t)i * DEF_CHUNK, DEF_CHUNK};
		spdk_reduce_vol_writev(vol, &iov[i], 1, (uint64_t)i * DEF_BPC, DEF_BPC,
				       destroy_on_first, &x);
	}
	double deadline = seconds() + POOL_SECONDS;
	while (x.done < WRITES && seconds() < deadline) {
		if (x.pool) {
			CHECK(reduce_codec_pool_poll(x.pool) >= 0);
		}
		mem_dev_poll(&d);
	}
	CHECK(x.pool == NULL);
	CHECK_EQ(x.done, WRITES);
	CHECK_EQ(x.failed, 0);
	/* Back to the built-in codec: everything reads back. */
	mem_dev_poll_all(&d);
	CHECK_EQ(h_unload(&d, vol), 0);
	vol = NULL;
	d.dev.compress = reduce_zstd_compress;
	d.dev.decompress = reduce_zstd_decompress;
	REQUIRE_EQ(h_load(&d, &vol), 0, close);
	int mismatches = 0;
	for (int i = 0; i < WRITES; i++) {
		CHECK_EQ(h_read(&d, vol, got, (uint64_t)i * DEF_BPC, DEF_BPC), 0);
		mismatches += memcmp(got, data + (size_t)i * DEF_CHUNK, DEF_CHUNK) != 0;
	}
	CHECK_EQ(mismatches, 0);
close:
	rig_close(&d, vol, dir);
	reduce_codec_pool_destroy(x.pool);
out:
	free(data);
	free(got);
}

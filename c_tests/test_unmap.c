/* The calls later SPDK added and ours beside them, against a shadow byte array of the
 * volume: spdk_reduce_vol_unmap of whole, partial and multi-chunk ranges; readv and
 * writev across chunk boundaries with iovecs cut at arbitrary bytes, many in flight;
 * chunks of zeros that take no space; reduce_vol_get_stats and
 * spdk_reduce_vol_get_info against what was written. Every test runs in both modes. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define CHUNKS 16
#define CHUNK DEF_CHUNK
#define BPC DEF_BPC
#define IOU_PER_CHUNK (DEF_CHUNK / DEF_IO_UNIT)
#define META_UNITS 2 /* 8 KiB of metadata in 4 KiB io units */

static void collect(void *arg, int status)
{
	int *s = arg;
	s[0] = status;
	s[1] = 1;
}

static struct reduce_vol_stats stats(struct spdk_reduce_vol *vol)
{
	struct reduce_vol_stats st;
	memset(&st, 0xEE, sizeof(st));
	CHECK_EQ(reduce_vol_get_stats(vol, &st, sizeof(st)), 0);
	return st;
}

/* Chunks of the model that hold anything but zeros: those the volume must store. */
static uint64_t nonzero_chunks(const uint8_t *model, uint64_t chunks)
{
	uint64_t n = 0;
	for (uint64_t c = 0; c < chunks; c++) {
		for (size_t i = 0; i < CHUNK; i++) {
			if (model[c * CHUNK + i]) {
				n++;
				break;
			}
		}
	}
	return n;
}

/* Reads the whole volume, in pieces across chunks, and compares it with the model; the
 * statistics must count exactly the chunks that hold data. */
static void verify(struct mem_dev *d, struct spdk_reduce_vol *vol, const uint8_t *model,
		   uint64_t chunks)
{
	uint8_t *got = malloc(3 * CHUNK);
	for (uint64_t b = 0; b < chunks * BPC; b += 3 * BPC - 7) {
		uint64_t n = b + 3 * BPC > chunks * BPC ? chunks * BPC - b : 3 * BPC;
		memset(got, 0xA5, n * 512);
		CHECK_EQ(h_read(d, vol, got, b, n), 0);
		if (memcmp(got, model + b * 512, n * 512) != 0) {
			fprintf(stderr, "    [%s] blocks %llu+%llu differ from the model\n", g_test_mode,
				(unsigned long long)b, (unsigned long long)n);
			g_test_failures++;
		}
	}
	free(got);
	struct reduce_vol_stats st = stats(vol);
	CHECK_EQ(st.chunks_in_use, nonzero_chunks(model, chunks));
	CHECK_EQ(st.io_units_in_use + META_UNITS, spdk_reduce_vol_get_info(vol)->allocated_io_units);
	CHECK_EQ(st.io_units_in_use + st.io_units_free + META_UNITS,
		 (uint64_t)(CHUNKS + 128) * IOU_PER_CHUNK); /* every volume here has CHUNKS */
}

/* Fills every chunk: incompressible (stored raw) when `c % 3 == 0`, else text. */
static void fill(struct mem_dev *d, struct spdk_reduce_vol *vol, uint8_t *model,
		 uint64_t chunks, uint64_t seed)
{
	for (uint64_t c = 0; c < chunks; c++) {
		uint8_t *m = model + c * CHUNK;
		if (c % 3 == 0) {
			fill_random(m, CHUNK, seed + c);
		} else {
			for (size_t i = 0; i < CHUNK; i++) {
				m[i] = (uint8_t)("unmapped chunks read as zeros "[(i + c + seed) % 30]);
			}
		}
		CHECK_EQ(h_write(d, vol, m, c * BPC, BPC), 0);
	}
}

TEST(unmap_whole_partial_and_multi_chunk_ranges)
{
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	struct spdk_reduce_vol *vol = NULL;
	char dir[64];
	uint8_t *model = calloc(CHUNKS, CHUNK);

	REQUIRE_EQ(rig_open(&d, &p, dir, sizeof(dir), CHUNKS, deferred, &vol), 0, out);
	d.chunk_size = CHUNK;
	fill(&d, vol, model, CHUNKS, 1);
	verify(&d, vol, model, CHUNKS);
	static const struct {
		const char *what;
		uint64_t offset, length;
		int whole_chunks; /* chunks the range empties whole */
	} cases[] = {
	    {"one whole chunk", 2 * BPC, BPC, 1},
	    {"part of a chunk", 4 * BPC + 3, 7, 0},
	    {"the head of that chunk", 4 * BPC, 3, 0},
	    {"and its tail: it is empty now", 4 * BPC + 10, BPC - 10, 0},
	    {"partial, whole, whole, partial", 5 * BPC + 17, 3 * BPC + 1, 2},
	    {"whole chunks", 10 * BPC, 3 * BPC, 3},
	    {"a chunk already empty", 2 * BPC, BPC, 0},
	    {"one block", 14 * BPC + 31, 1, 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int failures = g_test_failures;
		uint64_t unmaps = d.count[OP_UNMAP];
		uint64_t in_use = stats(vol).chunks_in_use;
		CHECK_EQ(h_unmap(&d, vol, cases[i].offset, cases[i].length), 0);
		memset(model + cases[i].offset * 512, 0, cases[i].length * 512);
		verify(&d, vol, model, CHUNKS);
		if (cases[i].whole_chunks) {
			CHECK(d.count[OP_UNMAP] > unmaps); /* the device heard of the io units */
			CHECK(stats(vol).chunks_in_use <= in_use - (uint64_t)cases[i].whole_chunks);
		}
		if (g_test_failures != failures) {
			fprintf(stderr, "    (case %zu: %s)\n", i, cases[i].what);
		}
	}
	/* Chunk 4 went in three partial unmaps: empty now, and the device heard of it. */
	CHECK_EQ(nonzero_chunks(model + 4 * CHUNK, 1), 0);
	/* The whole volume, then it fills again. */
	CHECK_EQ(h_unmap(&d, vol, 0, CHUNKS * BPC), 0);
	memset(model, 0, (size_t)CHUNKS * CHUNK);
	verify(&d, vol, model, CHUNKS);
	CHECK_EQ(stats(vol).io_units_in_use, 0);
	CHECK_EQ(spdk_reduce_vol_get_info(vol)->allocated_io_units, META_UNITS);
	fill(&d, vol, model, CHUNKS, 2);
	CHECK_EQ(h_check(&d, vol, NULL), 0);
	CHECK_EQ(h_unload(&d, vol), 0);
	vol = NULL;
	REQUIRE_EQ(h_load(&d, &vol), 0, out);
	verify(&d, vol, model, CHUNKS);
	CHECK_EQ(d.protocol_errors, 0);
out:
	rig_close(&d, vol, dir);
	free(model);
}

/* An unmapped chunk is nothing but an empty logical map entry (all ones), which the
 * original library reads as zeros too. */
TEST(unmapped_chunks_are_empty_logical_map_entries)
{
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	struct spdk_reduce_vol *vol = NULL;
	char dir[64], path[256];
	uint8_t *model = calloc(CHUNKS, CHUNK);

	REQUIRE_EQ(rig_open(&d, &p, dir, sizeof(dir), CHUNKS, deferred, &vol), 0, out);
	fill(&d, vol, model, 4, 3);
	CHECK_EQ(h_unmap(&d, vol, BPC, 2 * BPC), 0);
	snprintf(path, sizeof(path), "%s", spdk_reduce_vol_get_pm_path(vol));
	CHECK_EQ(h_unload(&d, vol), 0);
	vol = NULL;
	int fd = open(path, O_RDONLY);
	REQUIRE_EQ(fd >= 0, 1, out);
	uint64_t entries[4];
	CHECK_EQ(pread(fd, entries, sizeof(entries), 4096), (ssize_t)sizeof(entries));
	close(fd);
	CHECK(entries[0] != UINT64_MAX);
	CHECK_EQ(entries[1], UINT64_MAX);
	CHECK_EQ(entries[2], UINT64_MAX);
	CHECK(entries[3] != UINT64_MAX);
	REQUIRE_EQ(h_load(&d, &vol), 0, out);
	memset(model + CHUNK, 0, 2 * CHUNK);
	verify(&d, vol, model, 4);
out:
	rig_close(&d, vol, dir);
	free(model);
}

struct req {
	struct iovec iov[8];
	int iovcnt;
	uint8_t *buf, *expect;
	size_t len;
	int kind; /* 0 read, 1 write, 2 unmap */
	uint64_t offset, length, seq;
	uint64_t *completed; /* sequence numbers in completion order */
	size_t *n_completed;
	int *errors;
};

static void req_done(void *arg, int status)
{
	struct req *r = arg;
	static const char *names[] = {"read", "write", "unmap"};
	if (status != 0) {
		fprintf(stderr, "    [%s] %s of blocks %llu+%llu: %d\n", g_test_mode, names[r->kind],
			(unsigned long long)r->offset, (unsigned long long)r->length, status);
		(*r->errors)++;
	} else if (r->kind == 0 && memcmp(r->buf, r->expect, r->len) != 0) {
		fprintf(stderr, "    [%s] read of blocks %llu+%llu (%d iovecs): wrong data\n",
			g_test_mode, (unsigned long long)r->offset, (unsigned long long)r->length,
			r->iovcnt);
		(*r->errors)++;
	}
	r->completed[(*r->n_completed)++] = r->seq;
}

/* Random reads, writes and unmaps over up to four chunks at any block offset, with 1 to 8
 * iovecs cut at arbitrary bytes, submitted in batches (all in flight in DEFERRED mode).
 * The model is updated at submission, and reads capture it then: requests that share a
 * chunk run in submission order. Overlapping requests must also complete in that
 * order. */
TEST(crossing_readv_writev_and_unmap_with_odd_iovecs)
{
	enum { N = CHUNKS, BATCH = 48 };
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	struct spdk_reduce_vol *vol = NULL;
	char dir[64];
	uint8_t *model = calloc(N, CHUNK);
	uint64_t rng = 77 + (uint64_t)deferred, completed[BATCH];
	size_t n_completed;
	int errors = 0, overtaken = 0;
	struct req reqs[BATCH];

	REQUIRE_EQ(rig_open(&d, &p, dir, sizeof(dir), N, deferred, &vol), 0, out);
	d.chunk_size = CHUNK;
	for (int round = 0; round < SCALE(40, 6); round++) {
		n_completed = 0;
		for (int i = 0; i < BATCH; i++) {
			struct req *r = &reqs[i];
			memset(r, 0, sizeof(*r));
			r->length = 1 + rng_next(&rng) % (4 * BPC);
			r->offset = rng_next(&rng) % (N * BPC - r->length + 1);
			r->len = r->length * 512;
			r->kind = (int)(rng_next(&rng) % 10);
			r->kind = r->kind < 4 ? 0 : r->kind < 8 ? 1 : 2;
			r->seq = (uint64_t)i;
			r->completed = completed;
			r->n_completed = &n_completed;
			r->errors = &errors;
			uint8_t *shadow = model + r->offset * 512;
			if (r->kind == 2) {
				memset(shadow, 0, r->len);
				spdk_reduce_vol_unmap(vol, r->offset, r->length, req_done, r);
				continue;
			}
			r->buf = malloc(r->len);
			if (r->kind == 1) {
				fill_data(r->buf, r->len, rng_next(&rng));
				memcpy(shadow, r->buf, r->len);
			} else {
				memset(r->buf, 0xA5, r->len);
				r->expect = malloc(r->len);
				memcpy(r->expect, shadow, r->len);
			}
			r->iovcnt = 1 + (int)(rng_next(&rng) % 8);
			size_t cuts[9] = {0};
			cuts[r->iovcnt] = r->len;
			for (int k = 1; k < r->iovcnt; k++) {
				cuts[k] = rng_next(&rng) % (r->len + 1);
			}
			for (int k = 1; k < r->iovcnt; k++) {
				for (int m = k + 1; m < r->iovcnt; m++) {
					if (cuts[m] < cuts[k]) {
						size_t t = cuts[k];
						cuts[k] = cuts[m];
						cuts[m] = t;
					}
				}
			}
			for (int k = 0; k < r->iovcnt; k++) {
				r->iov[k] = (struct iovec){r->buf + cuts[k], cuts[k + 1] - cuts[k]};
			}
			if (r->kind == 1) {
				spdk_reduce_vol_writev(vol, r->iov, r->iovcnt, r->offset, r->length,
						       req_done, r);
			} else {
				spdk_reduce_vol_readv(vol, r->iov, r->iovcnt, r->offset, r->length,
						      req_done, r);
			}
		}
		mem_dev_poll_all(&d);
		CHECK_EQ(n_completed, BATCH);
		/* Requests that share a chunk completed in submission order. */
		size_t pos[BATCH];
		for (size_t k = 0; k < n_completed; k++) {
			pos[completed[k]] = k;
			overtaken += k > 0 && completed[k] < completed[k - 1];
		}
		for (int i = 0; i < BATCH; i++) {
			for (int j = i + 1; j < BATCH; j++) {
				uint64_t a0 = reqs[i].offset / BPC,
					 a1 = (reqs[i].offset + reqs[i].length - 1) / BPC;
				uint64_t b0 = reqs[j].offset / BPC,
					 b1 = (reqs[j].offset + reqs[j].length - 1) / BPC;
				if (a0 <= b1 && b0 <= a1 && pos[i] > pos[j]) {
					CHECK(!"overlapping requests completed out of order");
				}
			}
			free(reqs[i].buf);
			free(reqs[i].expect);
		}
		if (round % 10 == 9) {
			verify(&d, vol, model, N);
		}
	}
	CHECK_EQ(errors, 0);
	if (deferred) {
		CHECK(overtaken > 0); /* requests that share no chunk did not wait */
	}
	CHECK_EQ(h_check(&d, vol, NULL), 0);
	CHECK_EQ(h_unload(&d, vol), 0);
	vol = NULL;
	REQUIRE_EQ(h_load(&d, &vol), 0, out);
	verify(&d, vol, model, N);
	CHECK_EQ(d.protocol_errors, 0);
out:
	rig_close(&d, vol, dir);
	free(model);
}

TEST(zero_chunks_take_no_space)
{
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	struct spdk_reduce_vol *vol = NULL;
	char dir[64];
	uint8_t *zeros = calloc(4, CHUNK), *model = calloc(CHUNKS, CHUNK);

	REQUIRE_EQ(rig_open(&d, &p, dir, sizeof(dir), CHUNKS, deferred, &vol), 0, out);
	/* Zeros into empty chunks: nothing compressed, written or allocated. */
	uint64_t writes = d.count[OP_WRITE], compressions = d.count[OP_COMPRESS];
	CHECK_EQ(h_write(&d, vol, zeros, 0, BPC), 0);
	CHECK_EQ(h_write(&d, vol, zeros, 3 * BPC + 7, 2 * BPC), 0);
	CHECK_EQ(d.count[OP_WRITE], writes);
	CHECK_EQ(d.count[OP_COMPRESS], compressions);
	CHECK_EQ(stats(vol).chunks_in_use, 0);
	/* Data, then zeros over it (whole, and across chunks): the space comes back. */
	fill(&d, vol, model, 6, 4);
	struct reduce_vol_stats before = stats(vol);
	CHECK_EQ(before.chunks_in_use, 6);
	uint64_t unmaps = d.count[OP_UNMAP];
	CHECK_EQ(h_write(&d, vol, zeros, 0, BPC), 0);
	CHECK_EQ(h_write(&d, vol, zeros, 2 * BPC, 3 * BPC), 0);
	memset(model, 0, CHUNK);
	memset(model + 2 * CHUNK, 0, 3 * CHUNK);
	verify(&d, vol, model, CHUNKS);
	CHECK_EQ(stats(vol).chunks_in_use, 2);
	CHECK(d.count[OP_UNMAP] > unmaps);
	CHECK_EQ(h_check(&d, vol, NULL), 0);
out:
	rig_close(&d, vol, dir);
	free(zeros);
	free(model);
}

static int warnings_about_unmap;

static void log_fn(void *ctx, int level, const char *msg)
{
	(void)ctx;
	if (level == REDUCE_LOG_WARN && strstr(msg, "unmap")) {
		warnings_about_unmap++;
	}
}

TEST(unmap_errors)
{
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	struct spdk_reduce_vol *vol = NULL;
	char dir[64];
	uint8_t *model = calloc(CHUNKS, CHUNK);

	REQUIRE_EQ(rig_open(&d, &p, dir, sizeof(dir), CHUNKS, deferred, &vol), 0, out);
	fill(&d, vol, model, 3, 5);
	uint64_t blocks = CHUNKS * BPC;
	CHECK_EQ(h_unmap(&d, vol, 5, 0), 0);
	CHECK_EQ(h_unmap(&d, vol, blocks, 0), 0);
	CHECK_EQ(h_unmap(&d, vol, blocks, 1), -EINVAL);
	CHECK_EQ(h_unmap(&d, vol, blocks - 1, 2), -EINVAL);
	CHECK_EQ(h_unmap(&d, vol, UINT64_MAX, 1), -EINVAL);
	CHECK_EQ(h_unmap(&d, vol, 1, UINT64_MAX), -EINVAL);
	int s[2] = {1, 0};
	spdk_reduce_vol_unmap(NULL, 0, 1, collect, s);
	CHECK_EQ(s[0], -EINVAL);
	spdk_reduce_vol_unmap(vol, 0, 1, NULL, NULL); /* nothing to tell: nothing done */
	mem_dev_poll_all(&d);
	verify(&d, vol, model, CHUNKS);
	/* The device failing its unmap costs nothing but a warning: the chunk is empty,
	 * its io units free again. */
	reduce_set_log_fn(log_fn, NULL);
	warnings_about_unmap = 0;
	mem_dev_fail_next(&d, OP_UNMAP, -EIO);
	CHECK_EQ(h_unmap(&d, vol, BPC, BPC), 0);
	reduce_set_log_fn(NULL, NULL);
	CHECK_EQ(warnings_about_unmap, 1);
	memset(model + CHUNK, 0, CHUNK);
	verify(&d, vol, model, CHUNKS);
	CHECK_EQ(h_check(&d, vol, NULL), 0);
	struct reduce_vol_stats st = stats(vol);
	CHECK_EQ(st.unmaps, 7); /* the refused ones too, not the one without a volume */
	CHECK_EQ(st.errors, 4);
out:
	rig_close(&d, vol, dir);
	free(model);
}

TEST(stats_against_what_was_written)
{
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	struct spdk_reduce_vol *vol = NULL;
	char dir[64];
	uint8_t *model = calloc(CHUNKS, CHUNK), buf[CHUNK];

	REQUIRE_EQ(rig_open(&d, &p, dir, sizeof(dir), CHUNKS, deferred, &vol), 0, out);
	struct reduce_vol_stats st = stats(vol);
	CHECK_EQ(st.chunks_in_use, 0);
	CHECK_EQ(st.io_units_free, (CHUNKS + 128) * IOU_PER_CHUNK - META_UNITS);
	CHECK_EQ(st.reads + st.writes + st.unmaps + st.errors + st.stored_bytes, 0);
	CHECK_EQ(spdk_reduce_vol_get_info(vol)->allocated_io_units, META_UNITS);

	/* 9 chunks: 3 incompressible (raw, 4 io units each), 6 of text (1 io unit each). */
	fill(&d, vol, model, 9, 6);
	st = stats(vol);
	CHECK_EQ(st.chunks_in_use, 9);
	CHECK_EQ(st.chunks_raw, 3);
	CHECK_EQ(st.io_units_in_use, 3 * 4 + 6);
	CHECK(st.stored_bytes > 3 * CHUNK && st.stored_bytes < 3 * CHUNK + 6 * DEF_IO_UNIT);
	CHECK_EQ(st.io_units_free, (CHUNKS + 128) * IOU_PER_CHUNK - META_UNITS - st.io_units_in_use);
	CHECK_EQ(spdk_reduce_vol_get_info(vol)->allocated_io_units, META_UNITS + 3 * 4 + 6);
	CHECK_EQ(st.writes, 9);

	/* Requests, the failed ones counted too; the checker's reads are not. */
	CHECK_EQ(h_read(&d, vol, buf, BPC - 3, 8), 0);
	CHECK_EQ(h_read(&d, vol, buf, CHUNKS * BPC, 1), -EINVAL);
	CHECK_EQ(h_unmap(&d, vol, 0, BPC), 0); /* a raw chunk */
	CHECK_EQ(h_write(&d, vol, buf, 0, 0), 0);
	CHECK_EQ(h_check(&d, vol, NULL), 0);
	st = stats(vol);
	CHECK_EQ(st.reads, 2);
	CHECK_EQ(st.writes, 10);
	CHECK_EQ(st.unmaps, 1);
	CHECK_EQ(st.errors, 1);
	CHECK_EQ(st.chunks_in_use, 8);
	CHECK_EQ(st.chunks_raw, 2);
	CHECK_EQ(st.io_units_in_use, 2 * 4 + 6);

	/* The struct can grow at its end: a shorter one gets its members, a longer one
	 * zeros past ours. */
	uint64_t shorter[3] = {7, 7, 7};
	CHECK_EQ(reduce_vol_get_stats(vol, (struct reduce_vol_stats *)shorter, 2 * sizeof(uint64_t)),
		 0);
	CHECK_EQ(shorter[0], 8);
	CHECK_EQ(shorter[1], 2);
	CHECK_EQ(shorter[2], 7);
	uint64_t longer[sizeof(struct reduce_vol_stats) / 8 + 2];
	memset(longer, 0xEE, sizeof(longer));
	CHECK_EQ(reduce_vol_get_stats(vol, (struct reduce_vol_stats *)longer, sizeof(longer)), 0);
	CHECK_EQ(longer[0], 8);
	CHECK_EQ(longer[sizeof(longer) / 8 - 1], 0);
	CHECK_EQ(longer[sizeof(longer) / 8 - 2], 0);
	CHECK_EQ(reduce_vol_get_stats(vol, NULL, 0), 0);
	CHECK_EQ(reduce_vol_get_stats(vol, NULL, sizeof(st)), -EINVAL);
	CHECK_EQ(reduce_vol_get_stats(NULL, &st, sizeof(st)), -EINVAL);

	/* print_info includes them (to stderr: keep the test output readable). */
	fflush(stderr);
	int saved = dup(2), null = open("/dev/null", O_WRONLY);
	if (saved >= 0 && null >= 0) {
		dup2(null, 2);
		spdk_reduce_vol_print_info(vol);
		fflush(stderr);
		dup2(saved, 2);
	}
	close(null);
	close(saved);

	/* After a reload: the same space, request counts from zero. */
	struct reduce_vol_stats old = stats(vol);
	CHECK_EQ(h_unload(&d, vol), 0);
	vol = NULL;
	REQUIRE_EQ(h_load(&d, &vol), 0, out);
	st = stats(vol);
	CHECK_EQ(st.chunks_in_use, old.chunks_in_use);
	CHECK_EQ(st.chunks_raw, old.chunks_raw);
	CHECK_EQ(st.io_units_in_use, old.io_units_in_use);
	CHECK_EQ(st.io_units_free, old.io_units_free);
	CHECK_EQ(st.stored_bytes, old.stored_bytes);
	CHECK_EQ(st.reads + st.writes + st.unmaps + st.errors, 0);
out:
	rig_close(&d, vol, dir);
	free(model);
}

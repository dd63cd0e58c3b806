/* Volumes written by the original libreduce (tests/fixtures, decompressed by make into
 * build/fixtures): they load, read back exactly their expected content, take new
 * writes, and — for g1, whose pm file has the original's smaller size — fail with
 * -ENOSPC, never writing past the end of the file, once its chunk maps run out. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "harness.h"
#include "tests.h"

#ifndef FIXTURE_DIR
#define FIXTURE_DIR "build/fixtures"
#endif

struct fixture {
	const char *name;
	uint32_t blocklen;
};

static const struct fixture fixtures[] = {
	{"g1-bl512-io4k-c16k-lb512", 512},
	{"g2-bl4k-io4k-c16k-lb4k", 4096},
	{"g3-bl512-io16k-c64k-lb4k", 512},
};

static uint8_t *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	if (!f) {
		fprintf(stderr, "    cannot open %s (run through make)\n", path);
		return NULL;
	}
	fseek(f, 0, SEEK_END);
	*len = (size_t)ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc(*len ? *len : 1);
	if (fread(buf, 1, *len, f) != *len) {
		free(buf);
		buf = NULL;
	}
	fclose(f);
	return buf;
}

/* Loads fixture `fx` on `d`: its pm file copied into `dir`, and the device's path
 * region pointed at the copy (the stored path is the original writer's). */
static int load_fixture(const struct fixture *fx, struct mem_dev *d, int deferred,
			const char *dir, char *pm_path, size_t pm_len, uint8_t **expected,
			size_t *expected_len)
{
	char path[512];
	size_t len, pm_size;
	snprintf(path, sizeof(path), "%s/%s/backing.img", FIXTURE_DIR, fx->name);
	uint8_t *image = slurp(path, &len);
	snprintf(path, sizeof(path), "%s/%s/pm", FIXTURE_DIR, fx->name);
	uint8_t *pm = slurp(path, &pm_size);
	snprintf(path, sizeof(path), "%s/%s/expected.img", FIXTURE_DIR, fx->name);
	*expected = slurp(path, expected_len);
	if (!image || !pm || !*expected) {
		free(image);
		free(pm);
		return -1;
	}
	const char *stored = (const char *)image + 4096;
	const char *uuid = strrchr(stored, '/');
	snprintf(pm_path, pm_len, "%s%s", dir, uuid ? uuid : "/pm");
	FILE *f = fopen(pm_path, "wb");
	CHECK(f && fwrite(pm, 1, pm_size, f) == pm_size);
	if (f) {
		fclose(f);
	}
	mem_dev_init(d, fx->blocklen, len / fx->blocklen, deferred);
	memcpy(d->image, image, len);
	memset(d->image + 4096, 0, 4096);
	memcpy(d->image + 4096, pm_path, strlen(pm_path) + 1);
	free(image);
	free(pm);
	return 0;
}

void test_fixtures(int deferred)
{
	char dir[64], pm_path[256];
	for (size_t i = 0; i < sizeof(fixtures) / sizeof(fixtures[0]); i++) {
		const struct fixture *fx = &fixtures[i];
		struct mem_dev d;
		struct spdk_reduce_vol *vol = NULL;
		uint8_t *expected;
		size_t expected_len;
		make_tmpdir(dir, sizeof(dir));
		if (load_fixture(fx, &d, deferred, dir, pm_path, sizeof(pm_path), &expected,
				 &expected_len)) {
			CHECK(!"fixture files present");
			remove_tree(dir);
			continue;
		}
		CHECK_EQ(h_load(&d, &vol), 0);
		if (!vol) {
			goto next;
		}
		/* A copy: the handle's params go with the handle at unload. */
		const struct spdk_reduce_vol_params params = *spdk_reduce_vol_get_params(vol);
		const struct spdk_reduce_vol_params *p = &params;
		CHECK_EQ(p->vol_size, expected_len);
		uint64_t bpc = p->chunk_size / p->logical_block_size;
		uint64_t chunks = p->vol_size / p->chunk_size;
		uint8_t *got = malloc(p->chunk_size);
		int mismatches = 0;
		for (uint64_t c = 0; c < chunks; c++) {
			CHECK_EQ(h_read(&d, vol, got, c * bpc, bpc), 0);
			mismatches += memcmp(got, expected + c * p->chunk_size, p->chunk_size) != 0;
		}
		CHECK_EQ(mismatches, 0);
		struct reduce_vol_check_report r;
		CHECK_EQ(h_check(&d, vol, &r), 0);
		CHECK_EQ(r.chunks_read, r.chunks_in_use);
		/* New writes over old chunks and into unwritten ones, then a reload. */
		for (uint64_t c = 0; c < 8; c++) {
			fill_data(expected + c * 37 * p->chunk_size, p->chunk_size, c);
			CHECK_EQ(h_write(&d, vol, expected + c * 37 * p->chunk_size, c * 37 * bpc, bpc),
				 0);
		}
		CHECK_EQ(h_unload(&d, vol), 0);
		CHECK_EQ(h_load(&d, &vol), 0);
		for (uint64_t c = 0; c < chunks && vol; c += 1) {
			CHECK_EQ(h_read(&d, vol, got, c * bpc, bpc), 0);
			mismatches += memcmp(got, expected + c * p->chunk_size, p->chunk_size) != 0;
		}
		CHECK_EQ(mismatches, 0);
		if (vol) {
			CHECK_EQ(h_unload(&d, vol), 0);
		}
		free(got);
	next:
		free(expected);
		mem_dev_free(&d);
		remove_tree(dir);
	}
}

void test_undersized_pm(int deferred)
{
	char dir[64], pm_path[256];
	struct mem_dev d;
	struct spdk_reduce_vol *vol = NULL;
	uint8_t *expected, chunk[16384], got[16384];
	size_t expected_len;
	struct stat before, after;
	int enospc = 0, ok = 0;

	make_tmpdir(dir, sizeof(dir));
	if (load_fixture(&fixtures[0], &d, deferred, dir, pm_path, sizeof(pm_path), &expected,
			 &expected_len)) {
		CHECK(!"fixture files present");
		remove_tree(dir);
		return;
	}
	CHECK_EQ(stat(pm_path, &before), 0);
	CHECK_EQ(before.st_size, 28672);
	CHECK_EQ(h_load(&d, &vol), 0);
	/* 512 chunks and room for 512 chunk maps: writing every chunk uses them all, and
	 * the next overwrite has nowhere to put its new chunk map. */
	uint64_t s = 77;
	for (uint64_t c = 0; c < 512 && vol; c++) {
		for (size_t i = 0; i < sizeof(chunk); i++) {
			chunk[i] = (uint8_t)rng_next(&s);
		}
		int rc = h_write(&d, vol, chunk, c * 32, 32);
		if (rc == 0) {
			memcpy(expected + c * 16384, chunk, 16384);
			ok++;
		} else {
			CHECK_EQ(rc, -ENOSPC);
			enospc++;
		}
	}
	CHECK(enospc > 0);
	CHECK(ok > 0);
	if (vol) {
		memset(chunk, 1, sizeof(chunk));
		CHECK_EQ(h_write(&d, vol, chunk, 0, 32), -ENOSPC);
		CHECK_EQ(h_write(&d, vol, chunk, 5, 1), -ENOSPC);
		int mismatches = 0;
		for (uint64_t c = 0; c < 512; c++) {
			CHECK_EQ(h_read(&d, vol, got, c * 32, 32), 0);
			mismatches += memcmp(got, expected + c * 16384, 16384) != 0;
		}
		CHECK_EQ(mismatches, 0);
		CHECK_EQ(h_check(&d, vol, NULL), 0);
		CHECK_EQ(h_unload(&d, vol), 0);
	}
	CHECK_EQ(stat(pm_path, &after), 0);
	CHECK_EQ(after.st_size, before.st_size);
	free(expected);
	mem_dev_free(&d);
	remove_tree(dir);
}

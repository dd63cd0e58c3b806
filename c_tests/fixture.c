#define _GNU_SOURCE
#include "fixture.h"

#include <stdlib.h>
#include <string.h>

const struct fixture g_fixtures[3] = {
	{"g1-bl512-io4k-c16k-lb512", 512, 20480, 4096, 16384, 512, 8388608, 166, 349},
	{"g2-bl4k-io4k-c16k-lb4k", 4096, 2560, 4096, 16384, 4096, 8388608, 166, 377},
	{"g3-bl512-io16k-c64k-lb4k", 512, 81920, 16384, 65536, 4096, 33554432, 166, 366},
};

static uint8_t *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	if (!f) {
		fprintf(stderr, "    cannot open %s (run through make: it decompresses them)\n",
			path);
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

int fixture_open(const struct fixture *fx, struct mem_dev *d, int deferred,
		 struct loaded_fixture *lf)
{
	char path[512];
	size_t len = 0, pm_size = 0;
	memset(lf, 0, sizeof(*lf));
	snprintf(path, sizeof(path), "%s/%s/backing.img", FIXTURE_DIR, fx->name);
	uint8_t *image = slurp(path, &len);
	snprintf(path, sizeof(path), "%s/%s/pm", FIXTURE_DIR, fx->name);
	uint8_t *pm = slurp(path, &pm_size);
	snprintf(path, sizeof(path), "%s/%s/expected.img", FIXTURE_DIR, fx->name);
	lf->expected = slurp(path, &lf->expected_len);
	if (!image || !pm || !lf->expected || len != fx->blockcnt * fx->blocklen) {
		CHECK(!"fixture files present and of the manifest's size");
		free(image);
		free(pm);
		free(lf->expected);
		lf->expected = NULL;
		return -1;
	}
	make_tmpdir(lf->dir, sizeof(lf->dir));
	/* The stored path is /reduce-fixtures/<uuid>: keep the name, change the dir. */
	const char *stored = (const char *)image + 4096;
	CHECK(strncmp(stored, "/reduce-fixtures/", 17) == 0);
	const char *uuid = strrchr(stored, '/');
	snprintf(lf->pm_path, sizeof(lf->pm_path), "%s%s", lf->dir, uuid ? uuid : "/pm");
	FILE *f = fopen(lf->pm_path, "wb");
	CHECK(f && fwrite(pm, 1, pm_size, f) == pm_size);
	if (f) {
		fclose(f);
	}
	lf->pm_size = (long)pm_size;
	mem_dev_init(d, fx->blocklen, fx->blockcnt, deferred);
	memcpy(d->image, image, len);
	memset(d->image + 4096, 0, 4096);
	memcpy(d->image + 4096, lf->pm_path, strlen(lf->pm_path) + 1);
	free(image);
	free(pm);
	return 0;
}

void fixture_close(struct mem_dev *d, struct loaded_fixture *lf)
{
	free(lf->expected);
	lf->expected = NULL;
	mem_dev_free(d);
	remove_tree(lf->dir);
}

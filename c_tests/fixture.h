/* Volumes written by the original libreduce (tests/fixtures, decompressed by make into
 * build/fixtures/<name>/{backing.img,pm,expected.img}). */
#ifndef REDUCE_C_TESTS_FIXTURE_H
#define REDUCE_C_TESTS_FIXTURE_H

#include "harness.h"

#ifndef FIXTURE_DIR
#define FIXTURE_DIR "build/fixtures"
#endif

/* The geometries of tests/fixtures/README.md (and each manifest.json). */
struct fixture {
	const char *name;
	uint32_t blocklen;
	uint64_t blockcnt;
	uint32_t io_unit, chunk, lbs;
	uint64_t vol_size;
	uint64_t chunks_written, io_units_in_use;
};

extern const struct fixture g_fixtures[3];

struct loaded_fixture {
	char dir[64];       /* temp dir holding the pm copy */
	char pm_path[256];  /* the pm copy, named <uuid> as stored */
	uint8_t *expected;  /* vol_size bytes */
	size_t expected_len;
	long pm_size;
};

/* Serves a copy of the fixture's backing image on `d` (whose path region is rewritten
 * to point at a copy of the pm file in a fresh temp dir). 0 or -1 (files missing). */
int fixture_open(const struct fixture *fx, struct mem_dev *d, int deferred,
		 struct loaded_fixture *lf);
void fixture_close(struct mem_dev *d, struct loaded_fixture *lf);

#endif

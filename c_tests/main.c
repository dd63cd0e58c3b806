/* The C test runner. Tests register themselves with TEST()/TEST_ONCE() (harness.h);
 * each TEST runs in IMMEDIATE and then DEFERRED completion mode. An argument selects
 * the tests whose name contains it. Ends with exactly "N passed, M failed" and exits
 * nonzero when M > 0. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"

#define MAX_TESTS 128

static struct {
	const char *name;
	test_fn fn;
	int both;
} g_tests[MAX_TESTS];
static int g_ntests;

void register_test(const char *name, test_fn fn, int both_modes)
{
	if (g_ntests == MAX_TESTS) {
		fprintf(stderr, "too many tests\n");
		abort();
	}
	g_tests[g_ntests].name = name;
	g_tests[g_ntests].fn = fn;
	g_tests[g_ntests].both = both_modes;
	g_ntests++;
}

static int by_name(const void *a, const void *b)
{
	const char *x = *(const char *const *)a, *y = *(const char *const *)b;
	return strcmp(x, y);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	int passed = 0, failed = 0;
	/* Constructors run in link order: sort by name (the struct starts with it) so the
	 * order is stable. */
	qsort(g_tests, (size_t)g_ntests, sizeof(g_tests[0]), by_name);
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int i = 0; i < g_ntests; i++) {
		if (argc > 1 && !strstr(g_tests[i].name, argv[1])) {
			continue;
		}
		for (int deferred = 0; deferred < (g_tests[i].both ? 2 : 1); deferred++) {
			int before = g_test_failures;
			const char *mode = !g_tests[i].both ? "" : deferred ? "deferred" : "immediate";
			g_test_mode = mode;
			double start = now();
			g_tests[i].fn(deferred);
			int ok = g_test_failures == before;
			fflush(stderr);
			printf("%-32s %-9s %-4s (%.2fs)\n", g_tests[i].name, mode, ok ? "ok" : "FAIL",
			       now() - start);
			ok ? passed++ : failed++;
		}
	}
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}

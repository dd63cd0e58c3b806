/* The C test runner: each test in both completion modes; ends with "N passed, M failed". */
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "tests.h"

struct test {
	const char *name;
	test_fn fn;
};

#define ENTRY(name) {#name, name},
static const struct test tests[] = {REDUCE_TESTS(ENTRY)};

int main(int argc, char **argv)
{
	int passed = 0, failed = 0;
	for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {
		if (argc > 1 && !strstr(tests[i].name, argv[1])) {
			continue;
		}
		for (int deferred = 0; deferred < 2; deferred++) {
			int before = g_test_failures;
			tests[i].fn(deferred);
			int ok = g_test_failures == before;
			printf("%-28s %-9s %s\n", tests[i].name, deferred ? "deferred" : "immediate",
			       ok ? "ok" : "FAIL");
			fflush(stdout);
			ok ? passed++ : failed++;
		}
	}
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}

/* The C tests, listed once for the runner. */
#ifndef REDUCE_C_TESTS_TESTS_H
#define REDUCE_C_TESTS_TESTS_H

#include <errno.h>

#define REDUCE_TESTS(X)                   \
	X(test_persistence)               \
	X(test_shadow)                    \
	X(test_chain)                     \
	X(test_many_at_once)              \
	X(test_unload_from_callback)      \
	X(test_init_einval)               \
	X(test_init_os_errors)            \
	X(test_load_errors)               \
	X(test_io_einval)                 \
	X(test_volume_full)               \
	X(test_backing_errors)            \
	X(test_unload_busy)               \
	X(test_fixtures)                  \
	X(test_undersized_pm)

#define DECLARE(name) void name(int deferred);
REDUCE_TESTS(DECLARE)
#undef DECLARE

#endif

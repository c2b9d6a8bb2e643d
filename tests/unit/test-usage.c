/*++
 * NAME
 *	test-usage 1
 * SUMMARY
 *	unit tests: tn_usage_parse_thresholds (tenant_quota_warning)
 *--*/
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "tn-usage.h"

struct thr_case {
	const char *text;
	int n;			/* -1: refused */
	unsigned out[TN_USAGE_THRESHOLDS_MAX];
};

static void test_parse_thresholds(void **state)
{
	static const struct thr_case cases[] = {
		{ "80 95 100", 3, { 80, 95, 100 } },
		{ "", 0, { 0 } },
		{ "   ", 0, { 0 } },
		{ "100,80 95", 3, { 80, 95, 100 } },
		{ "90 90 50", 2, { 50, 90 } },
		{ "1 1000", 2, { 1, 1000 } },
		{ "1 2 3 4 5 6 7 8", 8, { 1, 2, 3, 4, 5, 6, 7, 8 } },
		{ "1 2 3 4 5 6 7 8 9", -1, { 0 } },
		{ "0", -1, { 0 } },
		{ "1001", -1, { 0 } },
		{ "80%", -1, { 0 } },
		{ "-5", -1, { 0 } },
		{ "eighty", -1, { 0 } },
		{ "99999999999999999999", -1, { 0 } },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		unsigned out[TN_USAGE_THRESHOLDS_MAX] = { 0 };
		const char *error = NULL;
		int n = tn_usage_parse_thresholds(cases[i].text, out, &error);

		assert_int_equal(n, cases[i].n);
		if (n < 0) {
			assert_non_null(error);
			continue;
		}
		assert_memory_equal(out, cases[i].out, (size_t)n * sizeof(out[0]));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_thresholds),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

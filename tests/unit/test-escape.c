/*++
 * NAME
 *	test-escape 1
 * SUMMARY
 *	unit tests: RFC 4515 / RFC 4514 escaping, address normalisation
 *--*/
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "tn-escape.h"
#include "tn-mem.h"

struct esc_case {
	const char *in;
	size_t len;
	const char *out;
};

static void test_filter_value(void **state)
{
	static const struct esc_case cases[] = {
		{ "alice@acme.example", 18, "alice@acme.example" },
		{ "*", 1, "\\2a" },
		{ "a*b(c)d\\e", 9, "a\\2ab\\28c\\29d\\5ce" },
		{ "nul\0x", 5, "nul\\00x" },
		{ "*)(objectClass=*", 16, "\\2a\\29\\28objectClass=\\2a" },
		{ "caf\xc3\xa9", 5, "caf\\c3\\a9" },
		{ "cr\r\nlf", 6, "cr\\0d\\0alf" },
		{ "", 0, "" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *out = tn_escape_filter_value(cases[i].in, cases[i].len);

		assert_string_equal(out, cases[i].out);
		tn_mem_free(&out);
	}
}

static void test_dn_value(void **state)
{
	static const struct esc_case cases[] = {
		{ "acme", 4, "acme" },
		{ "a,b", 3, "a\\,b" },
		{ "a+b=c", 5, "a\\+b\\=c" },
		{ "#x", 2, "\\#x" },
		{ " lead", 5, "\\ lead" },
		{ "trail ", 6, "trail\\ " },
		{ "q\"<>;\\", 6, "q\\\"\\<\\>\\;\\\\" },
		{ "n\0ul", 4, "n\\00ul" },
		{ "mid dle", 7, "mid dle" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *out = tn_escape_dn_value(cases[i].in, cases[i].len);

		assert_string_equal(out, cases[i].out);
		tn_mem_free(&out);
	}
}

struct addr_case {
	const char *in;
	size_t len;
	const char *out;	/* NULL: rejected */
};

static void test_address_normalize(void **state)
{
	char longlocal[80], longaddr[300];
	const char *why;
	char *out;

	memset(longlocal, 'a', 65);
	strcpy(longlocal + 65, "@x.example");
	memset(longaddr, 'b', 250);
	strcpy(longaddr + 250, "@x.example");
	const struct addr_case cases[] = {
		{ "Alice@ACME.example", 18, "alice@acme.example" },
		{ "a*b@acme.example", 16, "a*b@acme.example" },
		{ "\"odd\"@acme.example", 18, "\"odd\"@acme.example" },
		{ "noat", 4, NULL },
		{ "@acme.example", 13, NULL },
		{ "alice@", 6, NULL },
		{ "a@b@c", 5, NULL },
		{ "al ice@acme.example", 19, NULL },
		{ "al\0ice@acme.example", 19, NULL },
		{ "alice@ac\0me.example", 19, NULL },
		{ "caf\xc3\xa9@acme.example", 18, NULL },
		{ "alice@acme.example\r\n", 20, NULL },
		{ longlocal, strlen(longlocal), NULL },
		{ longaddr, strlen(longaddr), NULL },
		{ "", 0, NULL },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int ret = tn_address_normalize(cases[i].in, cases[i].len, &out, &why);

		if (cases[i].out == NULL) {
			assert_int_equal(ret, -1);
			assert_non_null(why);
		} else {
			assert_int_equal(ret, 0);
			assert_string_equal(out, cases[i].out);
			tn_mem_free(&out);
		}
	}
}

static void test_domain_normalize(void **state)
{
	const char *why;
	char *out;

	assert_int_equal(tn_domain_normalize("ACME.Example", 12, &out, &why), 0);
	assert_string_equal(out, "acme.example");
	tn_mem_free(&out);
	assert_int_equal(tn_domain_normalize("", 0, &out, &why), -1);
	assert_int_equal(tn_domain_normalize("a b", 3, &out, &why), -1);
	assert_int_equal(tn_domain_normalize("a@b", 3, &out, &why), -1);
	assert_int_equal(tn_domain_normalize("\xff", 1, &out, &why), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_filter_value),
		cmocka_unit_test(test_dn_value),
		cmocka_unit_test(test_address_normalize),
		cmocka_unit_test(test_domain_normalize),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

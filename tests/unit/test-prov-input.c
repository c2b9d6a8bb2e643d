/*++
 * NAME
 *	test-prov-input 1
 * SUMMARY
 *	unit tests: provisioning input checks, password hashes, cursors,
 *	times, and the status table that maps onto HTTP
 *--*/
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <crypt.h>
#include <cmocka.h>

#include <jansson.h>

#include "tn-mem.h"
#include "tn-prov-input.h"
#include "tn-prov.h"

struct check_case {
	const char *in;
	const char *out;	/* NULL: refused */
};

typedef int check_fn(const char *in, char **out_r, const char **why_r);

static void run_cases(check_fn *fn, const struct check_case *cases, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const char *why = NULL;
		char *out = NULL;
		int ret = fn(cases[i].in, &out, &why);

		if (cases[i].out == NULL) {
			if (ret != -1)
				fail_msg("accepted: \"%s\"", cases[i].in);
			assert_non_null(why);
			assert_null(out);
		} else {
			if (ret != 0)
				fail_msg("refused: \"%s\": %s", cases[i].in, why);
			assert_string_equal(out, cases[i].out);
			tn_mem_free(&out);
		}
	}
}

static void test_tenant_id(void **state)
{
	static const struct check_case cases[] = {
		{ "acme", "acme" }, { "ACME", "acme" }, { "a-1", "a-1" }, { "7", "7" },
		{ "x123456789012345678901234567890123456789012345678901234567890ab",
		  "x123456789012345678901234567890123456789012345678901234567890ab" },
		{ "x123456789012345678901234567890123456789012345678901234567890abc", NULL },
		{ "", NULL }, { "-a", NULL }, { "a_b", NULL }, { "a.b", NULL },
		{ "a b", NULL }, { "*", NULL }, { "a,b", NULL }, { "a=b", NULL },
		{ "caf\xc3\xa9", NULL }, { "a)(x", NULL },
	};

	run_cases(tn_prov_input_tenant_id, cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_domain(void **state)
{
	static const struct check_case cases[] = {
		{ "acme.example", "acme.example" }, { "ACME.Example", "acme.example" },
		{ "a-b.c-d.example", "a-b.c-d.example" },
		{ "xn--caf-dma.example", "xn--caf-dma.example" },
		{ "nodot", NULL }, { "", NULL }, { ".example", NULL }, { "a..example", NULL },
		{ "example.", NULL }, { "-a.example", NULL }, { "a-.example", NULL },
		{ "a_b.example", NULL }, { "*.example", NULL }, { "a,b.example", NULL },
		{ "a b.example", NULL }, { "caf\xc3\xa9.example", NULL }, { "a@b.example", NULL },
		{ "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.example", NULL },
	};

	run_cases(tn_prov_input_domain, cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_address(void **state)
{
	static const struct check_case cases[] = {
		{ "Alice@ACME.example", "alice@acme.example" },
		{ "a.b+c@x.example", "a.b+c@x.example" },
		{ "st*r@x.example", "st*r@x.example" },
		{ "o'neil=x#y@x.example", "o'neil=x#y@x.example" },
		{ "a@b.c", "a@b.c" },
		{ "a", NULL }, { "@x.example", NULL }, { "a@", NULL }, { "a@b@x.example", NULL },
		{ ".a@x.example", NULL }, { "a.@x.example", NULL }, { "a..b@x.example", NULL },
		{ "a(b)@x.example", NULL }, { "a,b@x.example", NULL }, { "a\\b@x.example", NULL },
		{ "a b@x.example", NULL }, { "\"a\"@x.example", NULL }, { "a;b@x.example", NULL },
		{ "a<b>@x.example", NULL }, { "a@x", NULL }, { "a@*.example", NULL },
		{ "a@x.example)(mail=*", NULL }, { "\xc3\xa9@x.example", NULL },
		{ "a\r\n@x.example", NULL },
		{ "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@x.example",
		  NULL },
	};

	run_cases(tn_prov_input_address, cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_text(void **state)
{
	static const struct { const char *in; size_t len, max; int ret; } cases[] = {
		{ "Alice", 5, 10, 0 },
		{ "caf\xc3\xa9 \xe2\x98\x83 \xf0\x9f\x98\x80", 14, 100, 0 },
		{ "*)(x=*", 6, 10, 0 },
		{ "", 0, 10, -1 },
		{ "12345678901", 11, 10, -1 },
		{ "a\nb", 3, 10, -1 }, { "a\rb", 3, 10, -1 }, { "a\tb", 3, 10, -1 },
		{ "a\0b", 3, 10, -1 }, { "\x7f", 1, 10, -1 },
		{ "\xff", 1, 10, -1 },			/* never in UTF-8 */
		{ "\xc3", 1, 10, -1 },			/* truncated */
		{ "\xc3\x28", 2, 10, -1 },		/* bad continuation */
		{ "\xc0\xaf", 2, 10, -1 },		/* overlong '/' */
		{ "\xe0\x80\xaf", 3, 10, -1 },		/* overlong */
		{ "\xed\xa0\x80", 3, 10, -1 },		/* surrogate */
		{ "\xf4\x90\x80\x80", 4, 10, -1 },	/* above U+10FFFF */
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *why = NULL;

		if (tn_prov_input_text(cases[i].in, cases[i].len, cases[i].max, &why) !=
		    cases[i].ret)
			fail_msg("case %zu", i);
		if (cases[i].ret < 0)
			assert_non_null(why);
	}
}

static void test_name_and_host(void **state)
{
	static const char *const names_ok[] = { "pool-a", "P1", "a.b_c-d", NULL };
	static const char *const names_bad[] = { "", "-a", "a b", "a,b", "a*",
		"x12345678901234567890123456789012345678901234567890123456789012345", NULL };
	static const char *const hosts_ok[] = { "store1.example", "store1.example:24",
		"10.0.0.1", "10.0.0.1:2424", "localhost", NULL };
	static const char *const hosts_bad[] = { "", "Store1.example", "a b", "a:0",
		"a:65536", "a:x", "a:", ":24", "a,b", "a_b.example", "a..b", NULL };
	const char *why;

	for (size_t i = 0; names_ok[i] != NULL; i++)
		assert_int_equal(tn_prov_input_name(names_ok[i], &why), 0);
	for (size_t i = 0; names_bad[i] != NULL; i++)
		if (tn_prov_input_name(names_bad[i], &why) != -1)
			fail_msg("name accepted: %s", names_bad[i]);
	for (size_t i = 0; hosts_ok[i] != NULL; i++)
		if (tn_prov_input_host(hosts_ok[i], &why) != 0)
			fail_msg("host refused: %s: %s", hosts_ok[i], why);
	for (size_t i = 0; hosts_bad[i] != NULL; i++)
		if (tn_prov_input_host(hosts_bad[i], &why) != -1)
			fail_msg("host accepted: %s", hosts_bad[i]);
}

/* --- passwords ------------------------------------------------------------ */

static void test_hash_password_format(void **state)
{
	static const char crypt64[] =
		"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
	const char *prefix = "{SHA512-CRYPT}$6$rounds=5000$", *why = NULL;
	char *h = tn_prov_input_hash_password("secret", 5000, &why);
	char *h2 = tn_prov_input_hash_password("secret", 5000, &why);
	const char *salt, *end;

	assert_non_null(h);
	assert_true(strncmp(h, prefix, strlen(prefix)) == 0);
	salt = h + strlen(prefix);
	end = strchr(salt, '$');
	assert_non_null(end);
	assert_int_equal(end - salt, TN_PROV_SALT_CHARS);
	assert_int_equal(strspn(salt, crypt64), TN_PROV_SALT_CHARS);
	assert_int_equal(strlen(end + 1), 86);
	assert_int_equal(tn_prov_input_check_hash(h, &why), 0);	/* its own form */
	/* fresh salt each time */
	assert_string_not_equal(h, h2);
	tn_mem_free(&h);
	tn_mem_free(&h2);
}

static void test_hash_password_verifies(void **state)
{
	const char *why = NULL;
	char *h = tn_prov_input_hash_password("p\xc3\xa4ss word", 1000, &why);
	struct crypt_data *cd = calloc(1, sizeof(*cd));
	const char *stored = h + strlen("{SHA512-CRYPT}");

	/* crypt(3) of the same password with the stored setting gives it back */
	assert_string_equal(crypt_r("p\xc3\xa4ss word", stored, cd), stored);
	assert_string_not_equal(crypt_r("pass word", stored, cd), stored);
	free(cd);
	tn_mem_free(&h);
}

static void test_hash_password_refuses(void **state)
{
	const char *why = NULL;

	assert_null(tn_prov_input_hash_password("", 5000, &why));
	assert_null(tn_prov_input_hash_password("a\nb", 5000, &why));
	assert_null(tn_prov_input_hash_password("x", 999, &why));
	assert_non_null(why);
}

static void test_check_hash(void **state)
{
	static const char *const good[] = {
		"{SHA512-CRYPT}$6$88m4k0tATuRGvuni$SAF4VkbAUnyo0wxU6sk3KswVZ46Ul3Iftd6xgAANKEoD4J"
		"M1roE6gGgaeBHwhKS1rw9Q7bXaJv1X44tIOe5pS.",
		"{SHA512-CRYPT}$6$rounds=5000$r.DUf8B45FSaUiLL$4MB5yMX.A4P/0v0TXmcMIa/sBnHfciqX2"
		"jyjGbmlGmhh3o1uHFeFhUZg.F2yMHR7UiM5IHeQIgXz0HiyWrZEt0",
		"{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$wVJD6LNs3cshhg7AjwDkFA$DHQFO28UgL3IugLo"
		"0sxgsUhuiaNwYhxTe806zxlsTTM",
		"{BLF-CRYPT}$2y$05$Xpvi4T7SGodvrlAKGZDpwuOHsFgRLYvbfCTPb9A5vb4YkGsfhFnZO",
		NULL,
	};
	static const char *const bad[] = {
		"", "secret", "{PLAIN}secret", "{CRYPT}abc", "{SSHA}abcd", "{MD5-CRYPT}$1$x$y",
		"{sha512-crypt}$6$88m4k0tATuRGvuni$SAF4VkbAUnyo0wxU6sk3KswVZ46Ul3Iftd6xgAANKEoD4J"
		"M1roE6gGgaeBHwhKS1rw9Q7bXaJv1X44tIOe5pS.",
		"{SHA512-CRYPT}$6$short$abc",
		"{SHA512-CRYPT}$6$88m4k0tATuRGvuni$SAF4VkbAUnyo0wxU6sk3KswVZ46Ul3Iftd6xgAANKEoD4J"
		"M1roE6gGgaeBHwhKS1rw9Q7bXaJv1X44tIOe5pS.\n",
		"{SHA512-CRYPT}$5$88m4k0tATuRGvuni$SAF4VkbAUnyo0wxU6sk3KswVZ46Ul3Iftd6xgAANKEoD4J"
		"M1roE6gGgaeBHwhKS1rw9Q7bXaJv1X44tIOe5pS.",
		"{ARGON2ID}$argon2i$v=19$m=65536,t=3,p=1$wVJD6LNs3cshhg7AjwDkFA$DHQFO28UgL3IugLo"
		"0sxgsUhuiaNwYhxTe806zxlsTTM",
		"{BLF-CRYPT}$2y$03$Xpvi4T7SGodvrlAKGZDpwuOHsFgRLYvbfCTPb9A5vb4YkGsfhFnZO",
		"{BLF-CRYPT}$2y$05$short",
		NULL,
	};
	const char *why;

	for (size_t i = 0; good[i] != NULL; i++)
		if (tn_prov_input_check_hash(good[i], &why) != 0)
			fail_msg("refused: %s: %s", good[i], why);
	for (size_t i = 0; bad[i] != NULL; i++)
		if (tn_prov_input_check_hash(bad[i], &why) != -1)
			fail_msg("accepted: %s", bad[i]);
}

/* --- cursors ----------------------------------------------------------------- */

static void test_cursor_round_trip(void **state)
{
	/* keys of every length mod 3, and ones that need JSON escaping */
	static const char *const keys[] = { "a@b.example", "ab@b.example", "abc@b.example",
		"q\"uote\\@x.example", "", "caf\xc3\xa9", NULL };

	for (size_t i = 0; keys[i] != NULL; i++) {
		char *c = tn_prov_input_cursor_encode(keys[i], "mailbox|acme||"), *key = NULL;
		const char *why;

		assert_int_equal(strspn(c, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
					"0123456789-_"), strlen(c));
		assert_int_equal(tn_prov_input_cursor_decode(c, "mailbox|acme||", &key, &why), 0);
		assert_string_equal(key, keys[i]);
		tn_mem_free(&key);
		assert_int_equal(tn_prov_input_cursor_decode(c, "mailbox|other||", &key, &why), -1);
		assert_null(key);
		tn_mem_free(&c);
	}
}

static void test_cursor_malformed(void **state)
{
	static const char *const bad[] = { "", "!", "a", "abcde", "====", "eyJ",
		"eyJhIjoxfQ",		/* {"a":1} */
		"eyJhIjoieCJ9",		/* {"a":"x"}: no query */
		"bnVsbA",		/* null */
		NULL };
	const char *why;
	char *key = NULL, *huge = malloc(5000);

	for (size_t i = 0; bad[i] != NULL; i++) {
		if (tn_prov_input_cursor_decode(bad[i], "q", &key, &why) != -1)
			fail_msg("accepted: %s", bad[i]);
		assert_null(key);
	}
	memset(huge, 'A', 4999);
	huge[4999] = '\0';
	assert_int_equal(tn_prov_input_cursor_decode(huge, "q", &key, &why), -1);
	free(huge);
}

/* --- times --------------------------------------------------------------------- */

static void test_times(void **state)
{
	int64_t ms = INT64_C(1772443877245);	/* 2026-03-02T09:31:17.245Z */
	char *g = tn_prov_input_gentime(ms), *r = tn_prov_input_rfc3339(ms);
	int64_t back;

	assert_string_equal(g, "20260302093117.245Z");
	assert_string_equal(r, "2026-03-02T09:31:17.245Z");
	assert_int_equal(tn_prov_input_parse_gentime(g, &back), 0);
	assert_true(back == ms);
	assert_int_equal(tn_prov_input_parse_gentime("20260302093117Z", &back), 0);
	assert_true(back == ms - 245);
	assert_int_equal(tn_prov_input_parse_gentime("20260302093117.2Z", &back), 0);
	assert_true(back == ms - 45);
	assert_int_equal(tn_prov_input_parse_gentime("20260302093117.245123Z", &back), 0);
	assert_true(back == ms);
	assert_int_equal(tn_prov_input_parse_gentime("20260302093117.Z", &back), -1);
	assert_int_equal(tn_prov_input_parse_gentime("20260302093117+0100", &back), -1);
	assert_int_equal(tn_prov_input_parse_gentime("2026030209311Z", &back), -1);
	assert_int_equal(tn_prov_input_parse_gentime("", &back), -1);
	tn_mem_free(&g);
	tn_mem_free(&r);
}

/* --- the status table ------------------------------------------------------------ */

static void test_statuses_map_onto_http(void **state)
{
	static const struct { enum tn_prov_status st; int http; const char *name; } map[] = {
		{ TN_PROV_OK, 200, "ok" }, { TN_PROV_CREATED, 201, "created" },
		{ TN_PROV_BAD_INPUT, 400, "bad_input" }, { TN_PROV_FORBIDDEN, 403, "forbidden" },
		{ TN_PROV_NOT_FOUND, 404, "not_found" }, { TN_PROV_CONFLICT, 409, "conflict" },
		{ TN_PROV_PRECONDITION, 412, "precondition_failed" },
		{ TN_PROV_UNPROCESSABLE, 422, "unprocessable" },
		{ TN_PROV_TEMPFAIL, 503, "tempfail" }, { TN_PROV_EVENT_FAILED, 503, "event_failed" },
		{ TN_PROV_EVENT_LOST, 500, "event_lost" }, { TN_PROV_INTERNAL, 500, "internal" },
	};
	enum tn_prov_kind kind;

	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
		assert_int_equal(tn_prov_status_http(map[i].st), map[i].http);
		assert_string_equal(tn_prov_status_name(map[i].st), map[i].name);
	}
	for (int k = TN_PROV_TENANT; k <= TN_PROV_ALIAS; k++) {
		assert_int_equal(tn_prov_kind_parse(tn_prov_kind_name(k), &kind), 0);
		assert_int_equal(kind, k);
	}
	assert_int_equal(tn_prov_kind_parse("user", &kind), -1);
}

static void test_result_json(void **state)
{
	struct tn_prov_result res = { 0 };
	json_t *j;

	res.status = TN_PROV_BAD_INPUT;
	res.field = tn_mem_strdup("quota_bytes");
	res.message = tn_mem_strdup("quota_bytes: must be an integer");
	j = tn_prov_result_json(&res);
	assert_string_equal(json_string_value(json_object_get(j, "status")), "bad_input");
	assert_int_equal(json_integer_value(json_object_get(j, "http")), 400);
	assert_string_equal(json_string_value(json_object_get(j, "field")), "quota_bytes");
	assert_null(json_object_get(j, "object"));
	assert_null(json_object_get(j, "event_id"));
	json_decref(j);
	tn_prov_result_clear(&res);
	assert_null(res.field);
	assert_int_equal(res.status, TN_PROV_OK);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tenant_id),
		cmocka_unit_test(test_domain),
		cmocka_unit_test(test_address),
		cmocka_unit_test(test_text),
		cmocka_unit_test(test_name_and_host),
		cmocka_unit_test(test_hash_password_format),
		cmocka_unit_test(test_hash_password_verifies),
		cmocka_unit_test(test_hash_password_refuses),
		cmocka_unit_test(test_check_hash),
		cmocka_unit_test(test_cursor_round_trip),
		cmocka_unit_test(test_cursor_malformed),
		cmocka_unit_test(test_times),
		cmocka_unit_test(test_statuses_map_onto_http),
		cmocka_unit_test(test_result_json),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

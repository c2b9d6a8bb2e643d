/*++
 * NAME
 *	test-mapd-policy 1
 * SUMMARY
 *	unit tests: tn-mapd's netstring parser, requests, key classes, answers
 *--*/
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "mapd-policy.h"
#include "tn-mem.h"
#include "tn-record.h"

#define MAX 4096

struct ns_case {
	const char *in;
	size_t len;
	enum tn_mapd_parse rc;
	const char *payload;	/* PARSE_OK */
	size_t used;		/* PARSE_OK */
};

static void test_netstring(void **state)
{
	static const struct ns_case cases[] = {
		{ "3:abc,", 6, TN_MAPD_PARSE_OK, "abc", 6 },
		{ "0:,", 3, TN_MAPD_PARSE_OK, "", 3 },
		{ "3:abc,4:more", 12, TN_MAPD_PARSE_OK, "abc", 6 },	/* pipelined */
		{ "", 0, TN_MAPD_PARSE_MORE, NULL, 0 },
		{ "1", 1, TN_MAPD_PARSE_MORE, NULL, 0 },
		{ "12", 2, TN_MAPD_PARSE_MORE, NULL, 0 },
		{ "3:", 2, TN_MAPD_PARSE_MORE, NULL, 0 },
		{ "3:abc", 5, TN_MAPD_PARSE_MORE, NULL, 0 },
		{ "3:abcd", 6, TN_MAPD_PARSE_ERROR, NULL, 0 },		/* no ',' */
		{ ":abc,", 5, TN_MAPD_PARSE_ERROR, NULL, 0 },		/* no length */
		{ "x:abc,", 6, TN_MAPD_PARSE_ERROR, NULL, 0 },
		{ "-1:a,", 5, TN_MAPD_PARSE_ERROR, NULL, 0 },
		{ " 3:abc,", 7, TN_MAPD_PARSE_ERROR, NULL, 0 },
		{ "4097:", 5, TN_MAPD_PARSE_ERROR, NULL, 0 },		/* over the limit */
		{ "4097", 4, TN_MAPD_PARSE_ERROR, NULL, 0 },		/* known before ':' */
		{ "99999999999999999999:", 21, TN_MAPD_PARSE_ERROR, NULL, 0 },
		{ "000003:abc,", 11, TN_MAPD_PARSE_OK, "abc", 11 },
		{ "3:a\0c,", 6, TN_MAPD_PARSE_OK, "a\0c", 6 },
		{ "GET / HTTP/1.0\r\n", 16, TN_MAPD_PARSE_ERROR, NULL, 0 },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *payload = NULL, *why = NULL;
		size_t plen = 0, used = 0;
		enum tn_mapd_parse rc = tn_mapd_netstring_parse(cases[i].in, cases[i].len, MAX,
								&payload, &plen, &used, &why);

		if (rc != cases[i].rc)
			fail_msg("case %zu (%s): rc %d, expected %d", i, cases[i].in, rc,
				 cases[i].rc);
		if (rc == TN_MAPD_PARSE_ERROR)
			assert_non_null(why);
		if (rc != TN_MAPD_PARSE_OK)
			continue;
		assert_int_equal(used, cases[i].used);
		assert_int_equal(plen, used - (strchr(cases[i].in, ':') - cases[i].in) - 2);
		assert_memory_equal(payload, cases[i].payload, plen);
	}
}

static void test_netstring_limit_exact(void **state)
{
	char buf[64];
	const char *payload, *why;
	size_t plen, used;

	(void)state;
	memset(buf, 'a', sizeof(buf));
	memcpy(buf, "10:", 3);
	buf[13] = ',';
	assert_int_equal(tn_mapd_netstring_parse(buf, 14, 10, &payload, &plen, &used, &why),
			 TN_MAPD_PARSE_OK);
	assert_int_equal(plen, 10);
	assert_int_equal(tn_mapd_netstring_parse(buf, 14, 9, &payload, &plen, &used, &why),
			 TN_MAPD_PARSE_ERROR);
}

static void test_request_split(void **state)
{
	enum tn_mapd_map map;
	const char *key, *why;
	size_t klen;

	(void)state;
	assert_int_equal(tn_mapd_request_split("domains acme.example", 20, &map, &key, &klen,
					       &why), 0);
	assert_int_equal(map, TN_MAPD_DOMAINS);
	assert_int_equal(klen, 12);
	assert_memory_equal(key, "acme.example", 12);
	assert_int_equal(tn_mapd_request_split("mailboxes a@b", 13, &map, &key, &klen, &why), 0);
	assert_int_equal(map, TN_MAPD_MAILBOXES);
	assert_int_equal(tn_mapd_request_split("aliases a@b", 11, &map, &key, &klen, &why), 0);
	assert_int_equal(map, TN_MAPD_ALIASES);
	assert_int_equal(tn_mapd_request_split("senders a@b", 11, &map, &key, &klen, &why), 0);
	assert_int_equal(map, TN_MAPD_SENDERS);
	/* an empty key is a key (not ours) */
	assert_int_equal(tn_mapd_request_split("senders ", 8, &map, &key, &klen, &why), 0);
	assert_int_equal(klen, 0);
	/* a key with a space keeps it */
	assert_int_equal(tn_mapd_request_split("aliases a b@c", 13, &map, &key, &klen, &why), 0);
	assert_int_equal(klen, 5);
	assert_int_equal(tn_mapd_request_split("domain acme.example", 19, &map, &key, &klen,
					       &why), -1);
	assert_int_equal(tn_mapd_request_split("domainsx a", 10, &map, &key, &klen, &why), -1);
	assert_int_equal(tn_mapd_request_split("domains", 7, &map, &key, &klen, &why), -1);
	assert_int_equal(tn_mapd_request_split("", 0, &map, &key, &klen, &why), -1);
	assert_int_equal(tn_mapd_request_split("dom\0ins a", 9, &map, &key, &klen, &why), -1);
}

struct key_case {
	enum tn_mapd_map map;
	const char *key;
	size_t len;		/* 0: strlen */
	bool valid;
};

static void test_key_classes(void **state)
{
	static char longlocal[80], longaddr[300], longlabel[80];
	const struct key_case cases[] = {
		{ TN_MAPD_DOMAINS, "acme.example", 0, true },
		{ TN_MAPD_DOMAINS, "ACME.Example", 0, true },
		{ TN_MAPD_DOMAINS, "xn--caf-dma.example", 0, true },
		{ TN_MAPD_DOMAINS, "localhost", 0, false },	/* one label: never hosted */
		{ TN_MAPD_DOMAINS, "alice", 0, false },
		{ TN_MAPD_MAILBOXES, "alice@localhost", 0, false },
		{ TN_MAPD_DOMAINS, "a@acme.example", 0, false },
		{ TN_MAPD_DOMAINS, "@acme.example", 0, false },
		{ TN_MAPD_DOMAINS, ".acme.example", 0, false },
		{ TN_MAPD_DOMAINS, "acme..example", 0, false },
		{ TN_MAPD_DOMAINS, "acme.example.", 0, false },
		{ TN_MAPD_DOMAINS, "", 0, false },
		{ TN_MAPD_DOMAINS, "*", 0, false },
		{ TN_MAPD_DOMAINS, "acme.example)(x=*", 0, false },
		{ TN_MAPD_DOMAINS, "caf\xc3\xa9.example", 0, false },
		{ TN_MAPD_DOMAINS, "[127.0.0.1]", 0, false },
		{ TN_MAPD_DOMAINS, longlabel, 0, false },
		{ TN_MAPD_MAILBOXES, "alice@acme.example", 0, true },
		{ TN_MAPD_MAILBOXES, "Alice.Smith+tag@acme.example", 0, true },
		{ TN_MAPD_MAILBOXES, "o'brien@acme.example", 0, true },
		{ TN_MAPD_MAILBOXES, "a*b@acme.example", 0, true },	/* atext: escaped later */
		{ TN_MAPD_MAILBOXES, "alice", 0, false },		/* Postfix's local probe */
		{ TN_MAPD_MAILBOXES, "@acme.example", 0, false },	/* catch-all probe */
		{ TN_MAPD_MAILBOXES, "alice@", 0, false },
		{ TN_MAPD_MAILBOXES, "a@b@acme.example", 0, false },
		{ TN_MAPD_MAILBOXES, ".alice@acme.example", 0, false },
		{ TN_MAPD_MAILBOXES, "al..ice@acme.example", 0, false },
		{ TN_MAPD_MAILBOXES, "alice.@acme.example", 0, false },
		{ TN_MAPD_MAILBOXES, "a b@acme.example", 0, false },
		{ TN_MAPD_ALIASES, "a(b)@acme.example", 0, false },
		{ TN_MAPD_ALIASES, "a\\2a@acme.example", 0, false },
		{ TN_MAPD_ALIASES, "a,b@acme.example", 0, false },
		{ TN_MAPD_ALIASES, "a\"b@acme.example", 0, false },
		{ TN_MAPD_ALIASES, "a\r\nb@acme.example", 0, false },
		{ TN_MAPD_ALIASES, "a\0b@acme.example", 17, false },
		{ TN_MAPD_ALIASES, "alice@acme.example\0", 19, false },
		{ TN_MAPD_ALIASES, "caf\xc3\xa9@acme.example", 0, false },
		{ TN_MAPD_SENDERS, "alice@[127.0.0.1]", 0, false },
		{ TN_MAPD_SENDERS, longlocal, 0, false },
		{ TN_MAPD_SENDERS, longaddr, 0, false },
		{ TN_MAPD_SENDERS, "", 0, false },
	};

	(void)state;
	memset(longlocal, 'a', 65);
	strcpy(longlocal + 65, "@acme.example");
	memset(longaddr, 'a', 60);
	longaddr[60] = '@';
	for (int i = 61; i < 290; i++)
		longaddr[i] = (i % 10 == 0) ? '.' : 'b';
	strcpy(longaddr + 290, ".example");
	memset(longlabel, 'a', 64);
	strcpy(longlabel + 64, ".example");
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *why = NULL;
		size_t len = cases[i].len ? cases[i].len : strlen(cases[i].key);
		bool valid = tn_mapd_key_valid(cases[i].map, cases[i].key, len, &why);

		if (valid != cases[i].valid)
			fail_msg("case %zu (%s %s): %s, expected %s", i,
				 tn_mapd_map_name(cases[i].map), cases[i].key,
				 valid ? "valid" : why, cases[i].valid ? "valid" : "invalid");
	}
	/* 64 is the longest label, 64 the longest local part */
	memset(longlabel, 'a', 63);
	strcpy(longlabel + 63, ".example");
	assert_true(tn_mapd_domain_valid(longlabel, strlen(longlabel)));
	memset(longlocal, 'a', 64);
	strcpy(longlocal + 64, "@acme.example");
	assert_true(tn_mapd_key_valid(TN_MAPD_SENDERS, longlocal, strlen(longlocal),
				      &(const char *){ NULL }));
}

static struct tn_account *account(enum tn_account_kind kind, const char *address,
				  const char *const *targets)
{
	struct tn_account *a = tn_mem_calloc(1, sizeof(*a));

	a->kind = kind;
	a->address = address != NULL ? tn_mem_strdup(address) : NULL;
	a->domain = tn_mem_strdup("acme.example");
	a->tenant = tn_mem_strdup("acme");
	for (size_t i = 0; targets != NULL && targets[i] != NULL; i++)
		tn_account_add_target(a, targets[i]);
	return a;
}

static void expect(enum tn_mapd_map map, const struct tn_account *acct,
		   enum tn_mapd_answer want, const char *value)
{
	char *v = NULL;
	enum tn_mapd_answer got = tn_mapd_answer(map, acct, &v);

	assert_int_equal(got, want);
	if (value == NULL)
		assert_null(v);
	else
		assert_string_equal(v, value);
	tn_mem_free(&v);
}

static void test_answers(void **state)
{
	static const char *const three[] = {
		"alice@acme.example", "bob@acme.example", "partner@external.example", NULL,
	};
	struct tn_account *mbx = account(TN_ACCOUNT_MAILBOX, "alice@acme.example", NULL);
	struct tn_account *alias = account(TN_ACCOUNT_ALIAS, "team@acme.example", three);
	struct tn_account *empty = account(TN_ACCOUNT_ALIAS, "void@acme.example", NULL);
	struct tn_account *dom = account(TN_ACCOUNT_DOMAIN, NULL, NULL);

	(void)state;
	mbx->status = TN_STATUS_SUSPENDED;
	dom->status = TN_STATUS_SUSPENDED;
	expect(TN_MAPD_DOMAINS, dom, TN_MAPD_ANSWER_OK, "acme");
	expect(TN_MAPD_MAILBOXES, mbx, TN_MAPD_ANSWER_OK, "alice@acme.example");
	expect(TN_MAPD_MAILBOXES, alias, TN_MAPD_ANSWER_NOTFOUND, NULL);
	expect(TN_MAPD_ALIASES, mbx, TN_MAPD_ANSWER_NOTFOUND, NULL);
	expect(TN_MAPD_ALIASES, alias, TN_MAPD_ANSWER_OK,
	       "alice@acme.example,bob@acme.example,partner@external.example");
	expect(TN_MAPD_ALIASES, empty, TN_MAPD_ANSWER_NOTFOUND, NULL);
	expect(TN_MAPD_SENDERS, mbx, TN_MAPD_ANSWER_OK, "alice@acme.example");
	expect(TN_MAPD_SENDERS, alias, TN_MAPD_ANSWER_OWNERS, NULL);
	expect(TN_MAPD_SENDERS, empty, TN_MAPD_ANSWER_NOTFOUND, NULL);
	tn_account_free(&mbx);
	tn_account_free(&alias);
	tn_account_free(&empty);
	tn_account_free(&dom);
}

static void test_join_and_reply(void **state)
{
	static char big[2000];
	const char *items[60];
	size_t len;
	char *s;

	(void)state;
	s = tn_mapd_reply("OK", "a@b,c@d", &len);
	assert_string_equal(s, "10:OK a@b,c@d,");
	assert_int_equal(len, 14);
	tn_mem_free(&s);
	s = tn_mapd_reply("NOTFOUND", "", &len);
	assert_string_equal(s, "9:NOTFOUND ,");
	tn_mem_free(&s);
	memset(big, 'x', sizeof(big) - 1);
	for (size_t i = 0; i < 60; i++)
		items[i] = big;
	/* 60 x 2000 bytes is more than a Postfix reply may hold */
	assert_null(tn_mapd_join(items, 60));
	s = tn_mapd_join(items, 40);
	assert_non_null(s);
	assert_int_equal(strlen(s), 40 * 1999 + 39);
	tn_mem_free(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_netstring),
		cmocka_unit_test(test_netstring_limit_exact),
		cmocka_unit_test(test_request_split),
		cmocka_unit_test(test_key_classes),
		cmocka_unit_test(test_answers),
		cmocka_unit_test(test_join_and_reply),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

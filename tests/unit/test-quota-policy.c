/*++
 * NAME
 *	test-quota-policy 1
 * SUMMARY
 *	unit tests: tn-quota-milter's decisions (milters/quota-policy.c)
 * DESCRIPTION
 *	Golden cases: each row is a recipient (lookup results, account,
 *	usage, declared size, settings) and the one line the milter's
 *	answer must format to: "<code> <enhanced> <reason> <scope>" for a
 *	refusal, "continue <result>" otherwise. Then end-of-message
 *	cases, SIZE= parsing, the account's flattening and the traffic
 *	counters' hour (milters/quota-redis.c).
 *--*/
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "quota-policy.h"
#include "quota-redis.h"

#define MiB (INT64_C(1024) * 1024)

/* settings */
#define S_DEFAULT 0
#define S_PERM 1		/* over_quota_permanent */
#define S_SUSP_TEMP 2		/* suspended_temporary */
#define S_REDIS_TEMP 4		/* usage_unavailable_tempfail */

struct rcpt_case {
	const char *name;
	unsigned settings;
	enum tn_result lookup, domain;
	enum tn_account_kind kind;
	enum tn_status status;
	int64_t quota, pool, max_size;
	bool usage_known;
	int64_t mbx_bytes, ten_bytes;
	int64_t size;
	const char *expect;
};

#define MBX TN_ACCOUNT_MAILBOX
#define ALIAS TN_ACCOUNT_ALIAS
#define ACTIVE TN_STATUS_ACTIVE
#define SUSP TN_STATUS_SUSPENDED
#define DEL TN_STATUS_DELETED

static const struct rcpt_case rcpt_cases[] = {
	/* the lookup's three states */
	{ "directory down", S_DEFAULT, TN_TEMPFAIL, TN_FOUND, MBX, ACTIVE, 0, 0, 0, true, 0, 0, -1,
	  "451 4.3.0 - -" },
	{ "directory down, even configured permanent", S_PERM, TN_TEMPFAIL, TN_NOTFOUND, MBX,
	  ACTIVE, 0, 0, 0, true, 0, 0, -1, "451 4.3.0 - -" },
	{ "unknown user in our domain", S_DEFAULT, TN_NOTFOUND, TN_FOUND, MBX, ACTIVE, 0, 0, 0,
	  true, 0, 0, -1, "550 5.1.1 unknown_recipient -" },
	{ "not found, domain lookup failed", S_DEFAULT, TN_NOTFOUND, TN_TEMPFAIL, MBX, ACTIVE,
	  0, 0, 0, true, 0, 0, -1, "451 4.3.0 - -" },
	{ "not our domain", S_DEFAULT, TN_NOTFOUND, TN_NOTFOUND, MBX, ACTIVE, 0, 0, 0, true, 0,
	  0, -1, "continue foreign" },
	/* status after the cascade */
	{ "deleted", S_DEFAULT, TN_FOUND, 0, MBX, DEL, 0, 0, 0, true, 0, 0, -1,
	  "550 5.1.1 deleted -" },
	{ "deleted, suspended_temporary set", S_SUSP_TEMP, TN_FOUND, 0, MBX, DEL, 0, 0, 0,
	  true, 0, 0, -1, "550 5.1.1 deleted -" },
	{ "suspended", S_DEFAULT, TN_FOUND, 0, MBX, SUSP, 0, 0, 0, true, 0, 0, -1,
	  "550 5.2.1 suspended -" },
	{ "suspended, temporary", S_SUSP_TEMP, TN_FOUND, 0, MBX, SUSP, 0, 0, 0, true, 0, 0, -1,
	  "450 4.2.1 suspended -" },
	{ "suspended beats over quota", S_DEFAULT, TN_FOUND, 0, MBX, SUSP, MiB, 0, 0, true,
	  5 * MiB, 0, -1, "550 5.2.1 suspended -" },
	{ "suspended alias", S_DEFAULT, TN_FOUND, 0, ALIAS, SUSP, 0, 0, 0, true, 0, 0, -1,
	  "550 5.2.1 suspended -" },
	/* message size */
	{ "too large for the plan", S_DEFAULT, TN_FOUND, 0, MBX, ACTIVE, 0, 0, 10 * MiB, true, 0,
	  0, 10 * MiB + 1, "552 5.3.4 message_too_large -" },
	{ "exactly the plan's size", S_DEFAULT, TN_FOUND, 0, MBX, ACTIVE, 0, 0, 10 * MiB, true,
	  0, 0, 10 * MiB, "continue pass" },
	{ "size unknown, limit set", S_DEFAULT, TN_FOUND, 0, MBX, ACTIVE, 0, 0, 10 * MiB, true,
	  0, 0, -1, "continue pass" },
	{ "too large beats over quota", S_DEFAULT, TN_FOUND, 0, MBX, ACTIVE, MiB, 0, 10, true,
	  5 * MiB, 0, 11, "552 5.3.4 message_too_large -" },
	{ "alias too large", S_DEFAULT, TN_FOUND, 0, ALIAS, ACTIVE, 0, 0, 100, true, 0, 0, 101,
	  "552 5.3.4 message_too_large -" },
	/* mailbox quota */
	{ "mailbox over quota (dave)", S_DEFAULT, TN_FOUND, 0, MBX, ACTIVE, MiB, 10240 * MiB,
	  25 * MiB, true, 5 * MiB, 5 * MiB, -1, "452 4.2.2 over_quota mailbox" },
	{ "mailbox over quota, permanent", S_PERM, TN_FOUND, 0, MBX, ACTIVE, MiB, 0, 0, true,
	  5 * MiB, 0, -1, "552 5.2.2 over_quota mailbox" },
	{ "mailbox exactly full, no SIZE", S_DEFAULT, TN_FOUND, 0, MBX, ACTIVE, 1000, 0, 0, true,
	  1000, 0, -1, "452 4.2.2 over_quota mailbox" },
	{ "mailbox with room, no SIZE", S_DEFAULT, TN_FOUND, 0, MBX, ACTIVE, 1000, 0, 0, true,
	  999, 0, -1, "continue pass" },
	{ "SIZE= fits exactly", S_DEFAULT, TN_FOUND, 0, MBX, ACTIVE, 1000, 0, 0, true, 900, 0,
	  100, "continue pass" },
	{ "SIZE= one byte too many", S_DEFAULT, TN_FOUND, 0, MBX, ACTIVE, 1000, 0, 0, true, 900,
	  0, 101, "452 4.2.2 over_quota mailbox" },
	{ "huge SIZE= does not overflow", S_DEFAULT, TN_FOUND, 0, MBX, ACTIVE, 1000, 0, 0, true,
	  900, 0, INT64_MAX, "452 4.2.2 over_quota mailbox" },
	{ "unlimited mailbox", S_DEFAULT, TN_FOUND, 0, MBX, ACTIVE, 0, 0, 0, true, 5 * MiB, 0,
	  MiB, "continue pass" },
	/* tenant pool */
	{ "tenant pool full", S_DEFAULT, TN_FOUND, 0, MBX, ACTIVE, 0, 10 * MiB, 0, true, 0,
	  10 * MiB, -1, "452 4.2.2 over_quota tenant" },
	{ "tenant pool would overflow", S_DEFAULT, TN_FOUND, 0, MBX, ACTIVE, 10 * MiB, 10 * MiB,
	  0, true, 0, 9 * MiB, 2 * MiB, "452 4.2.2 over_quota tenant" },
	{ "tenant pool, permanent", S_PERM, TN_FOUND, 0, MBX, ACTIVE, 0, 100, 0, true, 0, 100,
	  -1, "552 5.2.2 over_quota tenant" },
	{ "mailbox checked before the pool", S_DEFAULT, TN_FOUND, 0, MBX, ACTIVE, 100, 100, 0,
	  true, 100, 100, -1, "452 4.2.2 over_quota mailbox" },
	{ "both with room", S_DEFAULT, TN_FOUND, 0, MBX, ACTIVE, 100, 1000, 0, true, 10, 500,
	  50, "continue pass" },
	{ "alias: quotas not checked", S_DEFAULT, TN_FOUND, 0, ALIAS, ACTIVE, 100, 100, 0, true,
	  500, 500, -1, "continue pass" },
	/* Redis failed */
	{ "usage unknown: unenforced", S_DEFAULT, TN_FOUND, 0, MBX, ACTIVE, 100, 100, 0, false,
	  0, 0, -1, "continue unenforced" },
	{ "usage unknown: tempfail policy", S_REDIS_TEMP, TN_FOUND, 0, MBX, ACTIVE, 100, 100, 0,
	  false, 0, 0, -1, "451 4.3.0 - -" },
	{ "usage unknown, no quota: pass", S_REDIS_TEMP, TN_FOUND, 0, MBX, ACTIVE, 0, 0, 0,
	  false, 0, 0, -1, "continue pass" },
	{ "usage unknown, still too large", S_DEFAULT, TN_FOUND, 0, MBX, ACTIVE, 100, 0, 10,
	  false, 0, 0, 11, "552 5.3.4 message_too_large -" },
};

static struct quota_policy_settings settings_of(unsigned bits)
{
	struct quota_policy_settings set = {
		.over_quota_permanent = (bits & S_PERM) != 0,
		.suspended_temporary = (bits & S_SUSP_TEMP) != 0,
		.usage_unavailable_tempfail = (bits & S_REDIS_TEMP) != 0,
	};
	return set;
}

static void rcpt_of(const struct rcpt_case *c, struct quota_policy_rcpt *r)
{
	memset(r, 0, sizeof(*r));
	r->address = "rcpt@acme.example";
	r->tenant = "acme";
	r->kind = c->kind;
	r->status = c->status;
	r->quota = c->quota;
	r->tenant_storage = c->pool;
	r->max_size = c->max_size;
	r->usage_known = c->usage_known;
	r->mailbox_bytes = c->mbx_bytes;
	r->tenant_bytes = c->ten_bytes;
}

static void format(const struct quota_policy_decision *d, char *buf, size_t size)
{
	if (!quota_policy_refuses(d))
		snprintf(buf, size, "continue %s", quota_policy_result_name(d->result));
	else
		snprintf(buf, size, "%s %s %s %s", d->rcode, d->xcode,
			 d->reason != NULL ? d->reason : "-", d->scope != NULL ? d->scope : "-");
}

static void test_rcpt_golden(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(rcpt_cases) / sizeof(rcpt_cases[0]); i++) {
		const struct rcpt_case *c = &rcpt_cases[i];
		struct quota_policy_settings set = settings_of(c->settings);
		struct quota_policy_rcpt r;
		struct quota_policy_decision d;
		char got[128];

		rcpt_of(c, &r);
		quota_policy_rcpt(&set, c->lookup, c->domain, c->lookup == TN_FOUND ? &r : NULL,
				  c->size, &d);
		format(&d, got, sizeof(got));
		if (strcmp(got, c->expect) != 0)
			fail_msg("case \"%s\": got \"%s\", expected \"%s\"", c->name, got,
				 c->expect);
		if (quota_policy_refuses(&d))
			assert_non_null(d.text);
	}
}

static void test_over_quota_event_fields(void **state)
{
	struct quota_policy_settings set = settings_of(S_DEFAULT);
	struct quota_policy_rcpt r;
	struct quota_policy_decision d;

	(void)state;
	rcpt_of(&rcpt_cases[16], &r);	/* dave */
	quota_policy_rcpt(&set, TN_FOUND, TN_FOUND, &r, 48213, &d);
	assert_string_equal(d.scope, "mailbox");
	assert_int_equal(d.usage, 5 * MiB);
	assert_int_equal(d.limit, MiB);
	assert_string_equal(d.reason, "over_quota");
}

static void test_needs_usage(void **state)
{
	struct quota_policy_rcpt r = { .kind = MBX, .status = ACTIVE, .quota = 10 };
	bool m, t;

	(void)state;
	assert_true(quota_policy_needs_usage(&r, &m, &t));
	assert_true(m);
	assert_false(t);
	r.quota = 0;
	assert_false(quota_policy_needs_usage(&r, &m, &t));
	r.tenant_storage = 5;
	assert_true(quota_policy_needs_usage(&r, &m, &t));
	assert_false(m);
	assert_true(t);
	r.kind = ALIAS;
	assert_false(quota_policy_needs_usage(&r, &m, &t));
	r.kind = MBX;
	r.status = SUSP;
	assert_false(quota_policy_needs_usage(&r, &m, &t));
}

static void test_eom(void **state)
{
	struct quota_policy_settings set = settings_of(S_DEFAULT), perm = settings_of(S_PERM);
	struct quota_policy_rcpt rs[3];
	struct quota_policy_decision d;
	size_t failing;
	char got[128];

	(void)state;
	memset(rs, 0, sizeof(rs));
	for (int i = 0; i < 3; i++) {
		rs[i].tenant = "acme";
		rs[i].kind = MBX;
		rs[i].usage_known = true;
		rs[i].quota = 1000;
		rs[i].mailbox_bytes = 500;
	}
	/* every recipient has room */
	quota_policy_eom(&set, rs, 3, 400, &d, &failing);
	format(&d, got, sizeof(got));
	assert_string_equal(got, "continue pass");
	assert_int_equal(failing, 0);
	/* one overflows with the real size: accepted, left to the store */
	rs[1].mailbox_bytes = 900;
	quota_policy_eom(&set, rs, 3, 400, &d, &failing);
	format(&d, got, sizeof(got));
	assert_string_equal(got, "continue pass");
	assert_int_equal(failing, 1);
	/* all overflow: the whole message is refused */
	quota_policy_eom(&set, rs, 3, 600, &d, &failing);
	format(&d, got, sizeof(got));
	assert_string_equal(got, "452 4.2.2 over_quota mailbox");
	assert_int_equal(failing, 3);
	quota_policy_eom(&perm, rs, 3, 600, &d, &failing);
	format(&d, got, sizeof(got));
	assert_string_equal(got, "552 5.2.2 over_quota mailbox");
	/* the real size beyond the plan for the only recipient */
	rs[0].max_size = 100;
	rs[0].mailbox_bytes = 0;
	quota_policy_eom(&set, rs, 1, 101, &d, &failing);
	format(&d, got, sizeof(got));
	assert_string_equal(got, "552 5.3.4 message_too_large -");
	/* a foreign recipient is never failing: the message goes */
	rs[1].tenant = NULL;
	quota_policy_eom(&set, rs, 2, 5000, &d, &failing);
	format(&d, got, sizeof(got));
	assert_string_equal(got, "continue pass");
	/* usage unknown at RCPT: nothing to hold against the message */
	rs[0].max_size = 0;
	rs[0].usage_known = false;
	quota_policy_eom(&set, rs, 1, 5000, &d, &failing);
	format(&d, got, sizeof(got));
	assert_string_equal(got, "continue pass");
	/* no recipient at all */
	quota_policy_eom(&set, rs, 0, 5000, &d, &failing);
	assert_false(quota_policy_refuses(&d));
}

static void test_parse_size(void **state)
{
	static char a0[] = "BODY=8BITMIME", a1[] = "SIZE=48213", a2[] = "size=7",
		a3[] = "SIZE=", a4[] = "SIZE=12x", a5[] = "SIZE=-3",
		a6[] = "SIZE=99999999999999999999", a7[] = "SIZE=0";
	char *none[] = { NULL };
	char *one[] = { a0, a1, NULL };
	char *lower[] = { a2, NULL };
	char *bad[][2] = { { a3, NULL }, { a4, NULL }, { a5, NULL }, { a6, NULL } };
	char *zero[] = { a7, NULL };

	(void)state;
	assert_int_equal(quota_policy_parse_size(NULL), -1);
	assert_int_equal(quota_policy_parse_size(none), -1);
	assert_int_equal(quota_policy_parse_size(one), 48213);
	assert_int_equal(quota_policy_parse_size(lower), 7);
	assert_int_equal(quota_policy_parse_size(zero), 0);
	for (size_t i = 0; i < 4; i++)
		assert_int_equal(quota_policy_parse_size(bad[i]), -1);
}

static void test_result_names(void **state)
{
	(void)state;
	for (int i = 0; i < QUOTA_POLICY_RESULTS; i++)
		assert_non_null(quota_policy_result_name((enum quota_policy_result)i));
	assert_string_equal(quota_policy_result_name(QUOTA_POLICY_RESULTS), "invalid");
}

static void test_rcpt_from_account(void **state)
{
	struct tn_account acct = {
		.kind = TN_ACCOUNT_MAILBOX, .address = "dave@acme.example", .tenant = "acme",
		.status = TN_STATUS_SUSPENDED, .quota = { MiB, TN_LEVEL_OBJECT },
		.tenant_storage = { 10 * MiB, TN_LEVEL_TENANT },
		.max_msg_size = { 25 * MiB, TN_LEVEL_TENANT },
	};
	struct quota_policy_rcpt r;

	(void)state;
	quota_policy_rcpt_from_account(&acct, &r);
	assert_ptr_equal(r.address, acct.address);
	assert_ptr_equal(r.tenant, acct.tenant);
	assert_int_equal(r.kind, TN_ACCOUNT_MAILBOX);
	assert_int_equal(r.status, TN_STATUS_SUSPENDED);
	assert_int_equal(r.quota, MiB);
	assert_int_equal(r.tenant_storage, 10 * MiB);
	assert_int_equal(r.max_size, 25 * MiB);
	assert_false(r.usage_known);
}

static void test_traffic_period(void **state)
{
	char buf[11];

	(void)state;
	quota_redis_period(0, buf);
	assert_string_equal(buf, "1970010100");
	quota_redis_period(INT64_C(1795379099), buf);	/* 2026-11-22 20:24:59 UTC */
	assert_string_equal(buf, "2026112220");
	quota_redis_period(INT64_C(1795381199), buf);	/* the hour's last second */
	assert_string_equal(buf, "2026112220");
	quota_redis_period(INT64_C(1795381200), buf);
	assert_string_equal(buf, "2026112221");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rcpt_golden),
		cmocka_unit_test(test_over_quota_event_fields),
		cmocka_unit_test(test_needs_usage),
		cmocka_unit_test(test_eom),
		cmocka_unit_test(test_parse_size),
		cmocka_unit_test(test_result_names),
		cmocka_unit_test(test_rcpt_from_account),
		cmocka_unit_test(test_traffic_period),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

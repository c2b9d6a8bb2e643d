/*++
 * NAME
 *	test-submit-policy 1
 * SUMMARY
 *	unit tests: tn-submit-milter's decisions (milters/submit-policy.c)
 * DESCRIPTION
 *	Golden cases in tables: each row of mail_cases is a MAIL FROM
 *	(login and its lookup, sender and its lookups, SIZE=, settings)
 *	with the answer it must format to, "<code> <enhanced> <reason>"
 *	for a refusal and "continue <result> <how>" otherwise; rcpt_cases
 *	the same for a send-limit reservation's outcome. Then the limits
 *	after the configured defaults, end of message, addresses, SIZE=
 *	and the hour of the traffic counters (milters/submit-redis.c).
 *--*/
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "submit-policy.h"
#include "submit-redis.h"

/* settings bits */
#define S_DEFAULT 0
#define S_NOAUTH 1		/* require_auth off */
#define S_TENDOM 2		/* tenant_domains */
#define S_NONULL 4		/* null_sender_refused */
#define S_SUSP_TEMP 8		/* suspended_temporary */
#define S_REDIS_TEMP 16		/* redis_unavailable_tempfail */

#define F TN_FOUND
#define N TN_NOTFOUND
#define T TN_TEMPFAIL
#define MBX TN_ACCOUNT_MAILBOX
#define ALIAS TN_ACCOUNT_ALIAS
#define ACT TN_STATUS_ACTIVE
#define SUSP TN_STATUS_SUSPENDED
#define DEL TN_STATUS_DELETED

static struct submit_policy_settings settings_of(unsigned bits)
{
	struct submit_policy_settings set = {
		.require_auth = (bits & S_NOAUTH) == 0,
		.tenant_domains = (bits & S_TENDOM) != 0,
		.null_sender_refused = (bits & S_NONULL) != 0,
		.suspended_temporary = (bits & S_SUSP_TEMP) != 0,
		.redis_unavailable_tempfail = (bits & S_REDIS_TEMP) != 0,
	};
	return set;
}

static void format(const struct submit_policy_decision *d, char *buf, size_t size)
{
	if (submit_policy_refuses(d))
		snprintf(buf, size, "%s %s %s", d->rcode, d->xcode,
			 d->reason != NULL ? d->reason : "-");
	else
		snprintf(buf, size, "continue %s %s", submit_policy_result_name(d->result),
			 d->how != NULL ? d->how : "-");
}

static const char *const alice_targets[] = { "alice@acme.example", "bob@acme.example", NULL };
static const char *const other_targets[] = { "bob@acme.example", NULL };

struct mail_case {
	const char *name;
	unsigned set;
	const char *login;
	enum tn_result lres;
	enum tn_account_kind lkind;
	enum tn_status lstatus;
	int64_t max_size, size;
	const char *sender;
	enum tn_result sres;
	enum tn_account_kind skind;
	const char *stenant;
	const char *const *targets;
	enum tn_result dres;
	const char *dtenant;
	const char *expect;
};

#define L(addr) addr, F, MBX, ACT
static const struct mail_case mail_cases[] = {
	{ "own address", 0, L("alice@acme.example"), 0, -1, "alice@acme.example",
	  N, MBX, NULL, NULL, N, NULL, "continue pass own" },
	{ "alias including the login", 0, L("alice@acme.example"), 0, -1, "sales@acme.example",
	  F, ALIAS, "acme", alice_targets, N, NULL, "continue pass alias" },
	{ "alias not including the login", 0, L("alice@acme.example"), 0, -1,
	  "sales@acme.example", F, ALIAS, "acme", other_targets, N, NULL,
	  "553 5.7.1 sender_not_owned" },
	{ "alias of another tenant", 0, L("alice@acme.example"), 0, -1, "info@globex.example",
	  F, ALIAS, "globex", alice_targets, N, NULL, "553 5.7.1 sender_not_owned" },
	{ "another mailbox of the tenant", 0, L("alice@acme.example"), 0, -1,
	  "bob@acme.example", F, MBX, "acme", NULL, N, NULL, "553 5.7.1 sender_not_owned" },
	{ "another mailbox, tenant_domains", S_TENDOM, L("alice@acme.example"), 0, -1,
	  "bob@acme.example", F, MBX, "acme", NULL, N, NULL, "continue pass tenant_domain" },
	{ "other tenant's mailbox, tenant_domains", S_TENDOM, L("alice@acme.example"), 0, -1,
	  "hank@globex.example", F, MBX, "globex", NULL, N, NULL,
	  "553 5.7.1 sender_not_owned" },
	{ "unknown address of the tenant's domain", 0, L("alice@acme.example"), 0, -1,
	  "nobody@acme.example", N, MBX, NULL, NULL, F, "acme", "553 5.7.1 sender_not_owned" },
	{ "same, tenant_domains", S_TENDOM, L("alice@acme.example"), 0, -1,
	  "nobody@acme.example", N, MBX, NULL, NULL, F, "acme", "continue pass tenant_domain" },
	{ "same, domain of another tenant", S_TENDOM, L("alice@acme.example"), 0, -1,
	  "nobody@globex.example", N, MBX, NULL, NULL, F, "globex",
	  "553 5.7.1 sender_not_owned" },
	{ "same, domain lookup tempfail", S_TENDOM, L("alice@acme.example"), 0, -1,
	  "nobody@acme.example", N, MBX, NULL, NULL, T, NULL, "451 4.3.0 -" },
	{ "spoofed external sender", S_TENDOM, L("alice@acme.example"), 0, -1,
	  "ceo@bank.example", N, MBX, NULL, NULL, N, NULL, "553 5.7.1 sender_not_owned" },
	{ "sender lookup tempfail", 0, L("alice@acme.example"), 0, -1, "sales@acme.example",
	  T, MBX, NULL, NULL, N, NULL, "451 4.3.0 -" },
	{ "null sender", 0, L("alice@acme.example"), 0, -1, "", N, MBX, NULL, NULL, N, NULL,
	  "continue pass null" },
	{ "null sender refused", S_NONULL, L("alice@acme.example"), 0, -1, "", N, MBX, NULL,
	  NULL, N, NULL, "553 5.7.1 sender_not_owned" },
	{ "unauthenticated", 0, NULL, N, MBX, ACT, 0, -1, "alice@acme.example", N, MBX, NULL,
	  NULL, N, NULL, "530 5.7.0 -" },
	{ "unauthenticated, empty macro", 0, "", N, MBX, ACT, 0, -1, "alice@acme.example", N,
	  MBX, NULL, NULL, N, NULL, "530 5.7.0 -" },
	{ "unauthenticated allowed", S_NOAUTH, NULL, N, MBX, ACT, 0, -1, "x@y.example", N, MBX,
	  NULL, NULL, N, NULL, "continue unchecked -" },
	{ "login lookup tempfail", 0, "alice@acme.example", T, MBX, ACT, 0, -1,
	  "alice@acme.example", N, MBX, NULL, NULL, N, NULL, "451 4.3.0 -" },
	{ "login unknown", 0, "ghost@acme.example", N, MBX, ACT, 0, -1, "ghost@acme.example",
	  N, MBX, NULL, NULL, N, NULL, "553 5.7.1 sender_not_owned" },
	{ "login is an alias", 0, "sales@acme.example", F, ALIAS, ACT, 0, -1,
	  "sales@acme.example", N, MBX, NULL, NULL, N, NULL, "553 5.7.1 sender_not_owned" },
	{ "login suspended", 0, "carol@acme.example", F, MBX, SUSP, 0, -1, "carol@acme.example",
	  N, MBX, NULL, NULL, N, NULL, "550 5.7.1 -" },
	{ "login suspended, temporary", S_SUSP_TEMP, "carol@acme.example", F, MBX, SUSP, 0, -1,
	  "carol@acme.example", N, MBX, NULL, NULL, N, NULL, "450 4.7.1 -" },
	{ "login deleted, even temporary", S_SUSP_TEMP, "zed@acme.example", F, MBX, DEL, 0, -1,
	  "zed@acme.example", N, MBX, NULL, NULL, N, NULL, "550 5.7.1 -" },
	{ "SIZE= over the plan", 0, "erin@acme-mail.example", F, MBX, ACT, 1000, 1001,
	  "erin@acme-mail.example", N, MBX, NULL, NULL, N, NULL,
	  "552 5.3.4 message_too_large" },
	{ "SIZE= at the plan", 0, "erin@acme-mail.example", F, MBX, ACT, 1000, 1000,
	  "erin@acme-mail.example", N, MBX, NULL, NULL, N, NULL, "continue pass own" },
	{ "SIZE= unlimited plan", 0, "erin@acme-mail.example", F, MBX, ACT, 0, 1 << 30,
	  "erin@acme-mail.example", N, MBX, NULL, NULL, N, NULL, "continue pass own" },
};

static void test_mail_golden(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(mail_cases) / sizeof(mail_cases[0]); i++) {
		const struct mail_case *c = &mail_cases[i];
		struct submit_policy_settings set = settings_of(c->set);
		struct submit_policy_login login = {
			c->login, c->lres, c->lkind, "acme", c->lstatus, c->max_size,
		};
		struct submit_policy_sender sender = {
			c->sender, c->sres, c->skind, c->stenant, c->targets, c->dres, c->dtenant,
		};
		struct submit_policy_decision d;
		char got[128];

		submit_policy_mail(&set, &login, c->sender, &sender, c->size, &d);
		format(&d, got, sizeof(got));
		if (strcmp(got, c->expect) != 0)
			fail_msg("%s: got \"%s\", expected \"%s\"", c->name, got, c->expect);
	}
}

static void test_needs_lookups(void **state)
{
	struct submit_policy_settings set = settings_of(S_DEFAULT), td = settings_of(S_TENDOM);
	struct submit_policy_login login = { "alice@acme.example", F, MBX, "acme", ACT, 0 };
	struct submit_policy_login none = { NULL, N, MBX, NULL, ACT, 0 };
	struct submit_policy_sender s = { "x@acme.example", N, MBX, NULL, NULL, N, NULL };
	struct submit_policy_sender noat = { "x", N, MBX, NULL, NULL, N, NULL };

	(void)state;
	assert_false(submit_policy_needs_sender(&set, &login, "alice@acme.example"));
	assert_false(submit_policy_needs_sender(&set, &login, ""));
	assert_false(submit_policy_needs_sender(&set, &none, "x@acme.example"));
	assert_true(submit_policy_needs_sender(&set, &login, "sales@acme.example"));
	assert_false(submit_policy_needs_domain(&set, &s));
	assert_true(submit_policy_needs_domain(&td, &s));
	assert_false(submit_policy_needs_domain(&td, &noat));
	s.res = F;
	assert_false(submit_policy_needs_domain(&td, &s));
}

struct rcpt_case {
	unsigned set;
	bool redis_failed;
	enum submit_policy_limit limit;
	int64_t value, retry_ms;
	const char *expect, *text;
};

static const struct rcpt_case rcpt_cases[] = {
	{ 0, false, SUBMIT_LIMIT_NONE, 0, 0, "continue pass -", NULL },
	{ 0, true, SUBMIT_LIMIT_NONE, 0, 0, "continue unlimited -", NULL },
	{ S_REDIS_TEMP, true, SUBMIT_LIMIT_NONE, 0, 0, "451 4.3.0 -", NULL },
	{ 0, false, SUBMIT_LIMIT_MAILBOX_MESSAGES, 50, 61000, "450 4.7.1 rate_limited",
	  "Send limit reached (50 messages per hour for this mailbox), try again in 2 minutes" },
	{ 0, false, SUBMIT_LIMIT_TENANT_MESSAGES, 5000, 1, "450 4.7.1 rate_limited",
	  "Send limit reached (5000 messages per hour for this organisation), try again in"
	  " 1 minute" },
	{ 0, false, SUBMIT_LIMIT_MAILBOX_RCPTS, 100, 3600000, "450 4.7.1 rate_limited",
	  "Send limit reached (100 recipients per hour for this mailbox), try again in"
	  " 60 minutes" },
	{ 0, false, SUBMIT_LIMIT_TENANT_RCPTS, 7, -5, "450 4.7.1 rate_limited",
	  "Send limit reached (7 recipients per hour for this organisation), try again in"
	  " 1 minute" },
};

static void test_rcpt_golden(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(rcpt_cases) / sizeof(rcpt_cases[0]); i++) {
		const struct rcpt_case *c = &rcpt_cases[i];
		struct submit_policy_settings set = settings_of(c->set);
		struct submit_policy_decision d;
		char got[128];

		submit_policy_rcpt(&set, c->redis_failed, c->limit, c->value, c->retry_ms, &d);
		format(&d, got, sizeof(got));
		if (strcmp(got, c->expect) != 0)
			fail_msg("rcpt case %zu: got \"%s\", expected \"%s\"", i, got, c->expect);
		if (c->text != NULL)
			assert_string_equal(d.text, c->text);
	}
}

static struct tn_account account(int64_t rate, enum tn_level rate_from, int64_t trate,
				 enum tn_level trate_from)
{
	struct tn_account a;

	memset(&a, 0, sizeof(a));
	a.send_rate = (struct tn_limit){ rate, rate_from };
	a.tenant_send_rate = (struct tn_limit){ trate, trate_from };
	return a;
}

static void test_limits_after_defaults(void **state)
{
	struct submit_policy_settings set = settings_of(S_DEFAULT);
	struct submit_policy_limits l;
	struct tn_account a;

	(void)state;
	set.send_rate = 100;
	set.tenant_send_rate = 1000;
	set.rcpt_rate = 300;
	set.tenant_rcpt_rate = 3000;
	a = account(50, TN_LEVEL_OBJECT, 5000, TN_LEVEL_TENANT);
	submit_policy_limits(&set, &a, &l);
	assert_int_equal(l.value[SUBMIT_LIMIT_MAILBOX_MESSAGES], 50);
	assert_int_equal(l.value[SUBMIT_LIMIT_TENANT_MESSAGES], 5000);
	assert_int_equal(l.value[SUBMIT_LIMIT_MAILBOX_RCPTS], 300);
	assert_int_equal(l.value[SUBMIT_LIMIT_TENANT_RCPTS], 3000);
	/* nothing in the directory: the configured defaults */
	a = account(0, TN_LEVEL_DEFAULT, 0, TN_LEVEL_DEFAULT);
	submit_policy_limits(&set, &a, &l);
	assert_int_equal(l.value[SUBMIT_LIMIT_MAILBOX_MESSAGES], 100);
	assert_int_equal(l.value[SUBMIT_LIMIT_TENANT_MESSAGES], 1000);
	/* an explicit 0 in the directory is unlimited, not the default */
	a = account(0, TN_LEVEL_OBJECT, 0, TN_LEVEL_TENANT);
	submit_policy_limits(&set, &a, &l);
	assert_int_equal(l.value[SUBMIT_LIMIT_MAILBOX_MESSAGES], 0);
	assert_int_equal(l.value[SUBMIT_LIMIT_TENANT_MESSAGES], 0);
	assert_string_equal(submit_policy_limit_scope(SUBMIT_LIMIT_TENANT_RCPTS), "tenant");
	assert_string_equal(submit_policy_limit_scope(SUBMIT_LIMIT_MAILBOX_RCPTS), "mailbox");
	assert_string_equal(submit_policy_limit_unit(SUBMIT_LIMIT_TENANT_MESSAGES), "messages");
}

static void test_login_from_account(void **state)
{
	struct tn_account a;
	struct submit_policy_login l;

	(void)state;
	memset(&a, 0, sizeof(a));
	a.kind = TN_ACCOUNT_MAILBOX;
	a.tenant = "acme";
	a.status = TN_STATUS_SUSPENDED;
	a.max_msg_size = (struct tn_limit){ 1234, TN_LEVEL_TENANT };
	submit_policy_login_from_account(&a, F, "bob@acme.example", &l);
	assert_string_equal(l.tenant, "acme");
	assert_int_equal(l.status, TN_STATUS_SUSPENDED);
	assert_int_equal(l.max_size, 1234);
	submit_policy_login_from_account(NULL, T, "bob@acme.example", &l);
	assert_int_equal(l.res, T);
	assert_null(l.tenant);
}

static void test_eom(void **state)
{
	struct submit_policy_login l = { "erin@acme-mail.example", F, MBX, "acme", ACT, 100 };
	struct submit_policy_decision d;
	char got[128];

	(void)state;
	submit_policy_eom(&l, 100, &d);
	format(&d, got, sizeof(got));
	assert_string_equal(got, "continue pass -");
	submit_policy_eom(&l, 101, &d);
	format(&d, got, sizeof(got));
	assert_string_equal(got, "552 5.3.4 message_too_large");
	l.max_size = 0;
	submit_policy_eom(&l, INT64_MAX, &d);
	assert_false(submit_policy_refuses(&d));
}

static void test_address_and_size(void **state)
{
	char buf[SUBMIT_POLICY_ADDRESS_MAX * 4 + 8];
	char *a1[] = { "SIZE=1000", NULL }, *a2[] = { "BODY=8BITMIME", "size=7", NULL };
	char *a3[] = { "SIZE=-1", NULL }, *a4[] = { "SIZE=12x", NULL }, *a5[] = { NULL };
	char *a6[] = { "SIZE=99999999999999999999999", NULL };

	(void)state;
	submit_policy_address("<Alice@ACME.example>", buf, sizeof(buf));
	assert_string_equal(buf, "alice@acme.example");
	submit_policy_address("<>", buf, sizeof(buf));
	assert_string_equal(buf, "");
	submit_policy_address("bob@acme.example", buf, sizeof(buf));
	assert_string_equal(buf, "bob@acme.example");
	submit_policy_address("<a\r\nb@x>", buf, sizeof(buf));
	assert_null(strchr(buf, '\r'));
	assert_null(strchr(buf, '\n'));
	assert_int_equal(submit_policy_parse_size(a1), 1000);
	assert_int_equal(submit_policy_parse_size(a2), 7);
	assert_int_equal(submit_policy_parse_size(a3), -1);
	assert_int_equal(submit_policy_parse_size(a4), -1);
	assert_int_equal(submit_policy_parse_size(a5), -1);
	assert_int_equal(submit_policy_parse_size(a6), -1);
	assert_int_equal(submit_policy_parse_size(NULL), -1);
}

static void test_traffic_period(void **state)
{
	char buf[11];

	(void)state;
	submit_redis_period(0, buf);
	assert_string_equal(buf, "1970010100");
	submit_redis_period(1795820399, buf);	/* 2026-11-27 22:59:59 UTC */
	assert_string_equal(buf, "2026112722");
	submit_redis_period(1795820400, buf);
	assert_string_equal(buf, "2026112723");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mail_golden),
		cmocka_unit_test(test_needs_lookups),
		cmocka_unit_test(test_rcpt_golden),
		cmocka_unit_test(test_limits_after_defaults),
		cmocka_unit_test(test_login_from_account),
		cmocka_unit_test(test_eom),
		cmocka_unit_test(test_address_and_size),
		cmocka_unit_test(test_traffic_period),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/*++
 * NAME
 *	test-submit-policy 1
 * SUMMARY
 *	unit tests: tn-submit-milter's decisions (milters/submit-policy.c)
 * DESCRIPTION
 *	Golden cases: each line of test-submit-policy.in is a MAIL FROM
 *	(login and its lookup, sender and its lookups, SIZE=, settings)
 *	and the same line of test-submit-policy.ref the answer it must
 *	format to, "<code> <enhanced> <reason>" for a refusal and
 *	"continue <result> <how>" otherwise (TN_GOLDEN_PRINT=1 prints what
 *	the code answers instead of comparing); rcpt_cases, a table, the
 *	same for a send-limit reservation's outcome. Then the limits
 *	after the configured defaults, end of message, addresses, SIZE=
 *	and the hour of the traffic counters (milters/submit-redis.c).
 *--*/
#include <errno.h>
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

/* --- the golden file: test-submit-policy.in -> .ref ------------------------- */

#ifndef TN_SUBMIT_GOLDEN_DIR
#define TN_SUBMIT_GOLDEN_DIR "tests/unit"
#endif

struct golden_word {
	const char *word;
	int value;
};

static const struct golden_word golden_results[] = {
	{ "found", TN_FOUND }, { "notfound", TN_NOTFOUND }, { "tempfail", TN_TEMPFAIL },
	{ "-", TN_NOTFOUND }, { NULL, 0 },
};
static const struct golden_word golden_kinds[] = {
	{ "mailbox", TN_ACCOUNT_MAILBOX }, { "alias", TN_ACCOUNT_ALIAS }, { NULL, 0 },
};
static const struct golden_word golden_statuses[] = {
	{ "active", TN_STATUS_ACTIVE }, { "suspended", TN_STATUS_SUSPENDED },
	{ "deleted", TN_STATUS_DELETED }, { NULL, 0 },
};

static int golden_word(const struct golden_word *words, const char *w, int lineno)
{
	for (; words->word != NULL; words++) {
		if (strcmp(words->word, w) == 0)
			return words->value;
	}
	fail_msg("test-submit-policy.in:%d: unknown word '%s'", lineno, w);
	return 0;
}

static int64_t golden_number(const char *w, int lineno)
{
	char *end;
	long long n;

	if (strcmp(w, "-") == 0)
		return -1;
	n = strtoll(w, &end, 10);
	if (end == w || *end != '\0')
		fail_msg("test-submit-policy.in:%d: not a number '%s'", lineno, w);
	return n;
}

static unsigned golden_settings(const char *w)
{
	return (strstr(w, "noauth") != NULL ? S_NOAUTH : 0) |
		(strstr(w, "tendom") != NULL ? S_TENDOM : 0) |
		(strstr(w, "nonull") != NULL ? S_NONULL : 0) |
		(strstr(w, "susptemp") != NULL ? S_SUSP_TEMP : 0);
}

static const char *golden_string(const char *w)
{
	return strcmp(w, "-") == 0 ? NULL : w;
}

/* A comma list into targets (at most 7, NULL-terminated), "-": none. */
static const char *const *golden_targets(char *w, const char *targets[8])
{
	char *save = NULL;
	size_t n = 0;

	if (strcmp(w, "-") == 0)
		return NULL;
	for (char *t = strtok_r(w, ",", &save); t != NULL && n < 7; t = strtok_r(NULL, ",", &save))
		targets[n++] = t;
	targets[n] = NULL;
	return targets;
}

#define GOLDEN_FIELDS 15

/* One .in line to its "<name>: <answer>" line. */
static void golden_case(char *line, int lineno, char *out, size_t size)
{
	char *f[GOLDEN_FIELDS + 1], *save = NULL, answer[128];
	const char *targets[8], *login, *sender;
	int n = 0;
	struct submit_policy_settings set;
	struct submit_policy_login l = { .tenant = "acme" };
	struct submit_policy_sender sd;
	struct submit_policy_decision d;

	for (char *t = strtok_r(line, " \t\n", &save); t != NULL && n <= GOLDEN_FIELDS;
	     t = strtok_r(NULL, " \t\n", &save))
		f[n++] = t;
	if (n != GOLDEN_FIELDS)
		fail_msg("test-submit-policy.in:%d: %d fields, expected %d", lineno, n,
			 GOLDEN_FIELDS);
	set = settings_of(golden_settings(f[1]));
	login = strcmp(f[2], "empty") == 0 ? "" : golden_string(f[2]);
	l.address = login;
	l.res = (enum tn_result)golden_word(golden_results, f[3], lineno);
	l.kind = (enum tn_account_kind)golden_word(golden_kinds, f[4], lineno);
	l.status = (enum tn_status)golden_word(golden_statuses, f[5], lineno);
	l.max_size = golden_number(f[6], lineno);
	sender = strcmp(f[8], "<>") == 0 ? "" : f[8];
	sd = (struct submit_policy_sender){
		.address = sender,
		.res = (enum tn_result)golden_word(golden_results, f[9], lineno),
		.kind = (enum tn_account_kind)golden_word(golden_kinds, f[10], lineno),
		.tenant = golden_string(f[11]),
		.targets = golden_targets(f[12], targets),
		.domain_res = (enum tn_result)golden_word(golden_results, f[13], lineno),
		.domain_tenant = golden_string(f[14]),
	};
	submit_policy_mail(&set, &l, sender, &sd, golden_number(f[7], lineno), &d);
	if (submit_policy_refuses(&d) && d.text == NULL)
		fail_msg("test-submit-policy.in:%d: a refusal without a text", lineno);
	format(&d, answer, sizeof(answer));
	snprintf(out, size, "%s: %s", f[0], answer);
}

static FILE *golden_open(const char *name)
{
	char path[1024];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", TN_SUBMIT_GOLDEN_DIR, name);
	if ((f = fopen(path, "r")) == NULL)
		fail_msg("%s: %s", path, strerror(errno));
	return f;
}

static void test_mail_golden(void **state)
{
	FILE *in = golden_open("test-submit-policy.in");
	FILE *ref = golden_open("test-submit-policy.ref");
	char line[1024], want[512], got[512];
	bool print = getenv("TN_GOLDEN_PRINT") != NULL;
	int lineno = 0, cases = 0;

	(void)state;
	while (fgets(line, sizeof(line), in) != NULL) {
		lineno++;
		if (line[0] == '#' || strspn(line, " \t\n") == strlen(line))
			continue;
		golden_case(line, lineno, got, sizeof(got));
		cases++;
		if (print) {
			printf("%s\n", got);
			continue;
		}
		if (fgets(want, sizeof(want), ref) == NULL)
			fail_msg("test-submit-policy.ref ends before case %d (%s)", cases, got);
		want[strcspn(want, "\n")] = '\0';
		if (strcmp(got, want) != 0)
			fail_msg("test-submit-policy.in:%d: got \"%s\", test-submit-policy.ref says"
				 " \"%s\"", lineno, got, want);
	}
	if (!print && fgets(want, sizeof(want), ref) != NULL)
		fail_msg("test-submit-policy.ref has more lines than the %d cases", cases);
	assert_true(cases >= 30);
	fclose(in);
	fclose(ref);
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

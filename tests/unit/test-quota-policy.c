/*++
 * NAME
 *	test-quota-policy 1
 * SUMMARY
 *	unit tests: tn-quota-milter's decisions (milters/quota-policy.c)
 * DESCRIPTION
 *	Golden cases: each line of test-quota-policy.in is a recipient
 *	(lookup results, account, usage, declared size, settings) and the
 *	same line of test-quota-policy.ref the answer it must format to:
 *	"<code> <enhanced> <reason> <scope>" for a refusal, "continue
 *	<result>" otherwise (TN_GOLDEN_PRINT=1 prints what the code
 *	answers instead of comparing). Then end-of-message cases, SIZE= parsing, the account's flattening and the traffic
 *	counters' hour (milters/quota-redis.c), and the traffic
 *	counters' batching against a fake sink (milters/quota-traffic.c):
 *	sums per tenant and hour, batches of at most QUOTA_TRAFFIC_BATCH,
 *	a failed batch kept and merged, the pending bound, the flusher
 *	thread and the last flush at destroy.
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

#include "quota-policy.h"
#include "quota-redis.h"
#include "quota-traffic.h"
#include "tn-time.h"

#define MiB (INT64_C(1024) * 1024)

/* settings */
#define S_DEFAULT 0
#define S_PERM 1		/* over_quota_permanent */
#define S_SUSP_TEMP 2		/* suspended_temporary */
#define S_REDIS_TEMP 4		/* usage_unavailable_tempfail */

#define MBX TN_ACCOUNT_MAILBOX
#define ALIAS TN_ACCOUNT_ALIAS
#define ACTIVE TN_STATUS_ACTIVE
#define SUSP TN_STATUS_SUSPENDED

#ifndef TN_QUOTA_GOLDEN_DIR
#define TN_QUOTA_GOLDEN_DIR "tests/unit"
#endif

static struct quota_policy_settings settings_of(unsigned bits)
{
	struct quota_policy_settings set = {
		.over_quota_permanent = (bits & S_PERM) != 0,
		.suspended_temporary = (bits & S_SUSP_TEMP) != 0,
		.usage_unavailable_tempfail = (bits & S_REDIS_TEMP) != 0,
	};
	return set;
}

static void format(const struct quota_policy_decision *d, char *buf, size_t size)
{
	if (!quota_policy_refuses(d))
		snprintf(buf, size, "continue %s", quota_policy_result_name(d->result));
	else
		snprintf(buf, size, "%s %s %s %s", d->rcode, d->xcode,
			 d->reason != NULL ? d->reason : "-", d->scope != NULL ? d->scope : "-");
}

/* --- the golden files: test-quota-policy.in -> .ref --------------------------- */

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
static const struct golden_word golden_usage[] = {
	{ "known", 1 }, { "unknown", 0 }, { NULL, 0 },
};

static int golden_word(const struct golden_word *words, const char *w, int lineno)
{
	for (; words->word != NULL; words++) {
		if (strcmp(words->word, w) == 0)
			return words->value;
	}
	fail_msg("test-quota-policy.in:%d: unknown word '%s'", lineno, w);
	return 0;
}

static int64_t golden_number(const char *w, int lineno)
{
	char *end;
	long long n;

	if (strcmp(w, "-") == 0)
		return -1;
	if (strcmp(w, "max") == 0)
		return INT64_MAX;
	n = strtoll(w, &end, 10);
	if (end == w)
		fail_msg("test-quota-policy.in:%d: not a number '%s'", lineno, w);
	switch (*end) {
	case 'K': return n * 1024;
	case 'M': return n * MiB;
	case 'G': return n * 1024 * MiB;
	case '\0': return n;
	}
	fail_msg("test-quota-policy.in:%d: bad number '%s'", lineno, w);
	return 0;
}

static unsigned golden_settings(const char *w)
{
	return (strstr(w, "perm") != NULL ? S_PERM : 0) |
		(strstr(w, "susptemp") != NULL ? S_SUSP_TEMP : 0) |
		(strstr(w, "redistemp") != NULL ? S_REDIS_TEMP : 0);
}

/* One .in line to its "<name>: <answer>" line. */
static void golden_case(char *line, int lineno, char *out, size_t size)
{
	char *f[14], *save = NULL;
	int n = 0;
	struct quota_policy_settings set;
	struct quota_policy_rcpt r = { .address = "rcpt@acme.example", .tenant = "acme" };
	struct quota_policy_decision d;
	enum tn_result lookup, domain;
	char answer[128];

	for (char *t = strtok_r(line, " \t\n", &save); t != NULL && n < 14;
	     t = strtok_r(NULL, " \t\n", &save))
		f[n++] = t;
	if (n != 13)
		fail_msg("test-quota-policy.in:%d: %d fields, expected 13", lineno, n);
	set = settings_of(golden_settings(f[1]));
	lookup = (enum tn_result)golden_word(golden_results, f[2], lineno);
	domain = (enum tn_result)golden_word(golden_results, f[3], lineno);
	r.kind = (enum tn_account_kind)golden_word(golden_kinds, f[4], lineno);
	r.status = (enum tn_status)golden_word(golden_statuses, f[5], lineno);
	r.quota = golden_number(f[6], lineno);
	r.tenant_storage = golden_number(f[7], lineno);
	r.max_size = golden_number(f[8], lineno);
	r.usage_known = golden_word(golden_usage, f[9], lineno) != 0;
	r.mailbox_bytes = golden_number(f[10], lineno);
	r.tenant_bytes = golden_number(f[11], lineno);
	quota_policy_rcpt(&set, lookup, domain, lookup == TN_FOUND ? &r : NULL,
			  golden_number(f[12], lineno), &d);
	if (quota_policy_refuses(&d) && d.text == NULL)
		fail_msg("test-quota-policy.in:%d: a refusal without a text", lineno);
	format(&d, answer, sizeof(answer));
	snprintf(out, size, "%s: %s", f[0], answer);
}

static FILE *golden_open(const char *name)
{
	char path[1024];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", TN_QUOTA_GOLDEN_DIR, name);
	if ((f = fopen(path, "r")) == NULL)
		fail_msg("%s: %s", path, strerror(errno));
	return f;
}

static void test_rcpt_golden(void **state)
{
	FILE *in = golden_open("test-quota-policy.in"), *ref = golden_open("test-quota-policy.ref");
	char line[512], want[512], got[512];
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
			fail_msg("test-quota-policy.ref ends before case %d (%s)", cases, got);
		want[strcspn(want, "\n")] = '\0';
		if (strcmp(got, want) != 0)
			fail_msg("test-quota-policy.in:%d: got \"%s\", test-quota-policy.ref says "
				 "\"%s\"", lineno, got, want);
	}
	if (!print && fgets(want, sizeof(want), ref) != NULL)
		fail_msg("test-quota-policy.ref has more lines than the %d cases", cases);
	assert_true(cases >= 30);
	fclose(in);
	fclose(ref);
}

static void rcpt_dave(struct quota_policy_rcpt *r)
{
	memset(r, 0, sizeof(*r));
	r->address = "dave@acme.example";
	r->tenant = "acme";
	r->kind = MBX;
	r->status = ACTIVE;
	r->quota = MiB;
	r->tenant_storage = 10240 * MiB;
	r->max_size = 25 * MiB;
	r->usage_known = true;
	r->mailbox_bytes = 5 * MiB;
	r->tenant_bytes = 5 * MiB;
}

static void test_over_quota_event_fields(void **state)
{
	struct quota_policy_settings set = settings_of(S_DEFAULT);
	struct quota_policy_rcpt r;
	struct quota_policy_decision d;

	(void)state;
	rcpt_dave(&r);
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

/* A fake Redis: the sums it was sent, per "tenant@hour". */
struct fake_sink {
	int fail;			/* calls left to fail */
	size_t calls, max_batch;
	char names[600][48];
	int64_t msgs[600], bytes[600];
	size_t n;
};

static int fake_send(void *ctx, const struct quota_traffic_item *items, size_t n)
{
	struct fake_sink *f = ctx;

	f->calls++;
	if (n > f->max_batch)
		f->max_batch = n;
	if (f->fail > 0) {
		f->fail--;
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		char name[48];
		size_t j;

		snprintf(name, sizeof(name), "%s@%lld", items[i].tenant, (long long)items[i].hour);
		for (j = 0; j < f->n && strcmp(f->names[j], name) != 0; j++)
			;
		if (j == f->n) {
			assert_true(f->n < 600);
			strcpy(f->names[f->n++], name);
		}
		f->msgs[j] += items[i].msgs;
		f->bytes[j] += items[i].bytes;
	}
	return 0;
}

static int64_t fake_get(const struct fake_sink *f, const char *name, int64_t *bytes_r)
{
	for (size_t j = 0; j < f->n; j++)
		if (strcmp(f->names[j], name) == 0) {
			if (bytes_r != NULL)
				*bytes_r = f->bytes[j];
			return f->msgs[j];
		}
	return 0;
}

static void test_traffic_sums_and_batches(void **state)
{
	struct fake_sink *f = calloc(1, sizeof(*f));
	struct quota_traffic *qt = quota_traffic_create(fake_send, f, 0);
	const char *two[] = { "acme", "initech" };
	struct quota_traffic_stats st;
	int64_t b = 0;

	(void)state;
	/* three messages in one hour, one in the next: two counters for acme */
	assert_int_equal(quota_traffic_add(qt, two, 2, 100, 7200), 0);
	assert_int_equal(quota_traffic_add(qt, two, 1, 50, 7200 + 3599), 0);
	assert_int_equal(quota_traffic_add(qt, two, 1, 7, 10800), 0);
	quota_traffic_get_stats(qt, &st);
	assert_int_equal(st.pending, 3);
	assert_int_equal(f->calls, 0);		/* nothing is sent while adding */
	assert_int_equal(quota_traffic_flush(qt), 0);
	assert_int_equal(f->calls, 1);
	assert_int_equal(fake_get(f, "acme@7200", &b), 2);
	assert_int_equal(b, 150);
	assert_int_equal(fake_get(f, "initech@7200", &b), 1);
	assert_int_equal(b, 100);
	assert_int_equal(fake_get(f, "acme@10800", &b), 1);
	assert_int_equal(b, 7);
	quota_traffic_get_stats(qt, &st);
	assert_int_equal(st.pending, 0);
	assert_int_equal(st.sent, 3);
	assert_int_equal(quota_traffic_flush(qt), 0);	/* nothing pending: no call */
	assert_int_equal(f->calls, 1);

	/* 600 tenants: batches of at most QUOTA_TRAFFIC_BATCH, all sent */
	for (int i = 0; i < 600; i++) {
		char name[16];
		const char *one[] = { name };

		snprintf(name, sizeof(name), "t%d", i);
		assert_int_equal(quota_traffic_add(qt, one, 1, i, 7200), 0);
	}
	f->calls = 0;
	f->n = 0;
	assert_int_equal(quota_traffic_flush(qt), 0);
	assert_int_equal(f->calls, 3);
	assert_int_equal(f->max_batch, QUOTA_TRAFFIC_BATCH);
	assert_int_equal(f->n, 600);
	assert_int_equal(fake_get(f, "t599@7200", &b), 1);
	assert_int_equal(b, 599);
	quota_traffic_destroy(&qt);
	assert_null(qt);
	free(f);
}

static void test_traffic_failure_keeps_and_merges(void **state)
{
	struct fake_sink *f = calloc(1, sizeof(*f));
	struct quota_traffic *qt = quota_traffic_create(fake_send, f, 0);
	const char *acme[] = { "acme" };
	struct quota_traffic_stats st;
	int64_t b = 0;

	(void)state;
	quota_traffic_add(qt, acme, 1, 10, 3600);
	f->fail = 2;
	assert_int_equal(quota_traffic_flush(qt), -1);	/* Redis down */
	quota_traffic_add(qt, acme, 1, 5, 3600);	/* added meanwhile: merges */
	assert_int_equal(quota_traffic_flush(qt), -1);
	quota_traffic_get_stats(qt, &st);
	assert_int_equal(st.pending, 1);
	assert_int_equal(st.failed_batches, 2);
	assert_int_equal(st.sent, 0);
	assert_int_equal(quota_traffic_flush(qt), 0);	/* back: sent once, summed */
	assert_int_equal(fake_get(f, "acme@3600", &b), 2);
	assert_int_equal(b, 15);
	assert_int_equal(f->n, 1);

	quota_traffic_destroy(&qt);
	free(f);
}

static int fail_second(void *ctx, const struct quota_traffic_item *items, size_t n)
{
	struct fake_sink *f = ctx;

	if (f->calls == 1) {
		f->calls++;
		return -1;
	}
	return fake_send(ctx, items, n);
}

static void test_traffic_partial_failure(void **state)
{
	struct fake_sink *f = calloc(1, sizeof(*f));
	struct quota_traffic *qt = quota_traffic_create(fail_second, f, 0);
	struct quota_traffic_stats st;

	(void)state;
	for (int i = 0; i < 600; i++) {
		char name[16];
		const char *one[] = { name };

		snprintf(name, sizeof(name), "v%d", i);
		quota_traffic_add(qt, one, 1, 1, 0);
	}
	assert_int_equal(quota_traffic_flush(qt), -1);
	quota_traffic_get_stats(qt, &st);
	assert_int_equal(st.sent, QUOTA_TRAFFIC_BATCH);
	assert_int_equal(st.pending, 600 - QUOTA_TRAFFIC_BATCH);
	assert_int_equal(quota_traffic_flush(qt), 0);
	assert_int_equal(f->n, 600);		/* every counter exactly once */
	for (size_t j = 0; j < f->n; j++)
		assert_int_equal(f->msgs[j], 1);
	quota_traffic_destroy(&qt);
	free(f);
}

static void test_traffic_pending_bound(void **state)
{
	struct fake_sink *f = calloc(1, sizeof(*f));
	struct quota_traffic *qt = quota_traffic_create(fake_send, f, 2);
	const char *a[] = { "a" }, *b[] = { "b" }, *c[] = { "c" };
	struct quota_traffic_stats st;

	(void)state;
	assert_int_equal(quota_traffic_add(qt, a, 1, 1, 0), 0);
	assert_int_equal(quota_traffic_add(qt, b, 1, 1, 0), 0);
	assert_int_equal(quota_traffic_add(qt, c, 1, 1, 0), -1);	/* a new counter: dropped */
	assert_int_equal(quota_traffic_add(qt, a, 1, 1, 0), 0);	/* an existing one still adds */
	quota_traffic_get_stats(qt, &st);
	assert_int_equal(st.pending, 2);
	assert_int_equal(st.dropped, 1);
	quota_traffic_destroy(&qt);		/* the last flush sends what is pending */
	assert_int_equal(fake_get(f, "a@0", NULL), 2);
	assert_int_equal(fake_get(f, "b@0", NULL), 1);
	assert_int_equal(fake_get(f, "c@0", NULL), 0);
	free(f);
}

static void test_traffic_flusher_thread(void **state)
{
	struct fake_sink *f = calloc(1, sizeof(*f));
	struct quota_traffic *qt = quota_traffic_create(fake_send, f, 0);
	const char *a[] = { "a" };
	const char *error = NULL;
	tn_msec_t until = tn_time_now_ms() + 5000;
	struct quota_traffic_stats st;

	(void)state;
	assert_int_equal(quota_traffic_start(qt, 20, &error), 0);
	quota_traffic_add(qt, a, 1, 3, 0);
	do {
		struct timespec ts = { 0, 5 * 1000 * 1000 };

		nanosleep(&ts, NULL);
		quota_traffic_get_stats(qt, &st);
	} while (st.sent == 0 && tn_time_now_ms() < until);
	assert_int_equal(st.sent, 1);		/* sent by the thread within its interval */
	quota_traffic_add(qt, a, 1, 4, 0);
	quota_traffic_destroy(&qt);		/* stops the thread and sends the rest */
	assert_int_equal(fake_get(f, "a@0", NULL), 2);
	free(f);
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
		cmocka_unit_test(test_traffic_sums_and_batches),
		cmocka_unit_test(test_traffic_failure_keeps_and_merges),
		cmocka_unit_test(test_traffic_partial_failure),
		cmocka_unit_test(test_traffic_pending_bound),
		cmocka_unit_test(test_traffic_flusher_thread),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

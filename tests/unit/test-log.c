/*++
 * NAME
 *	test-log 1
 * SUMMARY
 *	unit tests for lib/tn-log.c
 * DESCRIPTION
 *	tn_log_sanitize() is checked against a table of inputs and buffer
 *	sizes (every size from 1 up, NUL and high bytes, backslash, exact
 *	fit against cut). Formatting is checked by pointing stderr at a
 *	temporary file for the duration of a few tn_log() calls and
 *	comparing the exact bytes written: level words and filtering,
 *	context fields, hostile context values, over-long and multi-line
 *	messages, errno and "%m", and lines written by several threads at
 *	once. Nothing goes to syslog.
 *--*/
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "tn-log.h"

#define IDENT "test-log"

/*
 * Capturing stderr.
 */

struct capture {
	int fd;
	int saved;
};

static void capture_start(struct capture *cap)
{
	char path[] = "/tmp/test-log-XXXXXX";

	cap->fd = mkostemp(path, O_APPEND);
	assert_true(cap->fd >= 0);
	assert_int_equal(unlink(path), 0);
	cap->saved = dup(STDERR_FILENO);
	assert_true(cap->saved >= 0);
	assert_int_equal(dup2(cap->fd, STDERR_FILENO), STDERR_FILENO);
}

/* Restore stderr and return what was written (free() it). */
static char *capture_end(struct capture *cap, size_t *len_r)
{
	off_t size;
	char *text;

	assert_int_equal(dup2(cap->saved, STDERR_FILENO), STDERR_FILENO);
	close(cap->saved);
	size = lseek(cap->fd, 0, SEEK_END);
	assert_true(size >= 0);
	text = malloc((size_t)size + 1);
	assert_non_null(text);
	assert_int_equal(pread(cap->fd, text, (size_t)size, 0), size);
	text[size] = '\0';
	close(cap->fd);
	if (len_r != NULL)
		*len_r = (size_t)size;
	return text;
}

/* "test-log[PID]: " + rest + "\n", freshly allocated. */
static char *expect_line(const char *rest)
{
	char *line;

	assert_true(asprintf(&line, IDENT "[%ld]: %s\n", (long)getpid(), rest) > 0);
	return line;
}

static void assert_single_line(const char *rest, void (*emit)(void))
{
	struct capture cap;
	char *got, *want;

	capture_start(&cap);
	emit();
	got = capture_end(&cap, NULL);
	want = expect_line(rest);
	assert_string_equal(got, want);
	free(got);
	free(want);
}

static int setup(void **state)
{
	tn_log_init(IDENT, TN_LOG_TO_STDERR, LOG_MAIL);
	tn_log_set_level(TN_LOG_INFO);
	return 0;
}

/*
 * tn_log_sanitize()
 */

struct sanitize_case {
	const char *src;
	size_t srclen;
	size_t dstsize;
	const char *want;
};

static const struct sanitize_case sanitize_cases[] = {
	{ "abc", 3, 10, "abc" },
	{ "", 0, 1, "" },
	{ "", 0, 5, "" },
	{ "abc", 3, 1, "" },
	{ "abc", 3, 2, "." },
	{ "abc", 3, 3, ".." },
	{ "abc", 3, 4, "abc" },
	{ "abcd", 4, 4, "..." },
	{ "abcd", 4, 5, "abcd" },
	{ "abcde", 5, 5, "a..." },
	{ "abcdef", 3, 16, "abc" },
	{ "a\0b", 3, 16, "a\\x00b" },
	{ "\0", 1, 5, "\\x00" },
	{ "\0", 1, 4, "..." },
	{ "\0\0", 2, 5, "..." },
	{ "\xff\x80", 2, 16, "\\xff\\x80" },
	{ "caf\xc3\xa9", 5, 16, "caf\\xc3\\xa9" },
	{ "a\\b", 3, 16, "a\\x5cb" },
	{ "\\", 1, 4, "..." },
	{ "\x7f ~\x1f", 4, 16, "\\x7f ~\\x1f" },
	{ "\t\r\n", 3, 16, "\\x09\\x0d\\x0a" },
	{ "ab\n", 3, 7, "ab\\x0a" },
	{ "ab\n", 3, 6, "ab..." },
	{ "abc\ndef", 7, 8, "abc..." },
	{ "a\nb", 3, 6, "a..." },
	{ "a\nb", 3, 7, "a\\x0ab" },
	{ "x\ny", 3, 5, "x..." },
	{ "\n\n", 2, 7, "..." },
	{ "\n\n", 2, 8, "\\x0a..." },
	{ "\n\n", 2, 9, "\\x0a\\x0a" },
};

static void test_sanitize_table(void **state)
{
	size_t i;

	for (i = 0; i < sizeof(sanitize_cases) / sizeof(sanitize_cases[0]); i++) {
		const struct sanitize_case *c = &sanitize_cases[i];
		char buf[64];

		memset(buf, 'Z', sizeof(buf));
		assert_ptr_equal(tn_log_sanitize(buf, c->dstsize, c->src, c->srclen), buf);
		if (strcmp(buf, c->want) != 0)
			fail_msg("case %zu: got \"%s\", want \"%s\"", i, buf, c->want);
		/* nothing written past dstsize */
		assert_int_equal(buf[c->dstsize], 'Z');
	}
}

/* Every buffer size from 1 to past the full length: the output is a
 * prefix of the full escape (whole escapes only) plus "..." when cut,
 * and never longer than dstsize - 1. */
static void test_sanitize_all_sizes(void **state)
{
	static const char src[] = "ab\\c\001d\xfe" "efgh";
	/* where each escaped source byte starts and ends in full */
	static const size_t bounds[] = { 0, 1, 2, 6, 7, 11, 12, 16, 17, 18, 19, 20 };
	const char *full = "ab\\x5cc\\x01d\\xfeefgh";
	size_t full_len = strlen(full), size;

	assert_int_equal(full_len, 20);
	for (size = 1; size <= full_len + 2; size++) {
		char buf[64];
		size_t len, dots, keep = 0, i;

		memset(buf, 'Z', sizeof(buf));
		tn_log_sanitize(buf, size, src, sizeof(src) - 1);
		len = strlen(buf);
		assert_true(len <= size - 1);
		assert_int_equal(buf[size], 'Z');
		if (size > full_len) {
			assert_string_equal(buf, full);
			continue;
		}
		/* the longest run of whole escapes that leaves room for "..." */
		dots = size - 1 < 3 ? size - 1 : 3;
		for (i = 0; i < sizeof(bounds) / sizeof(bounds[0]); i++) {
			if (bounds[i] + 3 <= size - 1)
				keep = bounds[i];
		}
		assert_int_equal(len, keep + dots);
		assert_memory_equal(buf, full, keep);
		assert_memory_equal(buf + keep, "...", dots);
	}
}

static void test_sanitize_long_source(void **state)
{
	char src[10000], buf[TN_LOG_VALUE_MAX + 1];
	size_t len;

	memset(src, '\n', sizeof(src));
	tn_log_sanitize(buf, sizeof(buf), src, sizeof(src));
	len = strlen(buf);
	/* 63 whole "\x0a" escapes fit before the "..." */
	assert_int_equal(len, 63 * 4 + 3);
	assert_string_equal(buf + len - 3, "...");
	assert_null(strchr(buf, '\n'));
}

/*
 * Levels.
 */

static void test_level_parse(void **state)
{
	static const struct {
		const char *name;
		int want;
	} cases[] = {
		{ "debug", TN_LOG_DEBUG }, { "info", TN_LOG_INFO },
		{ "warning", TN_LOG_WARNING }, { "error", TN_LOG_ERROR },
		{ "fatal", -1 }, { "", -1 }, { "Info", -1 }, { "warn", -1 },
		{ "info ", -1 }, { "errors", -1 },
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		assert_int_equal(tn_log_level_parse(cases[i].name), cases[i].want);
	assert_int_equal(tn_log_level_parse(NULL), -1);
}

static void emit_all_levels(void)
{
	tn_log(TN_LOG_DEBUG, NULL, "line %d", 0);
	tn_log(TN_LOG_INFO, NULL, "line %d", 1);
	tn_log(TN_LOG_WARNING, NULL, "line %d", 2);
	tn_log(TN_LOG_ERROR, NULL, "line %d", 3);
	tn_log(TN_LOG_FATAL, NULL, "line %d", 4);
}

static void test_level_filter(void **state)
{
	static const char *const words[] = {
		"debug", "info", "warning", "error", "fatal"
	};
	int filter, level;

	for (filter = TN_LOG_DEBUG; filter <= TN_LOG_FATAL; filter++) {
		struct capture cap;
		char want[1024] = "", *got;

		for (level = filter; level <= TN_LOG_FATAL; level++) {
			size_t len = strlen(want);

			snprintf(want + len, sizeof(want) - len,
				 IDENT "[%ld]: %s: line %d\n", (long)getpid(),
				 words[level], level);
		}
		tn_log_set_level((enum tn_log_level)filter);
		capture_start(&cap);
		emit_all_levels();
		got = capture_end(&cap, NULL);
		tn_log_set_level(TN_LOG_INFO);
		assert_string_equal(got, want);
		free(got);
	}
}

static void emit_macros(void)
{
	tn_debug("not shown");
	tn_info("i");
	tn_warning("w");
	tn_error("e");
}

static void test_macros(void **state)
{
	struct capture cap;
	char want[256], *got;
	long pid = (long)getpid();

	snprintf(want, sizeof(want),
		 IDENT "[%ld]: info: i\n" IDENT "[%ld]: warning: w\n"
		 IDENT "[%ld]: error: e\n", pid, pid, pid);
	capture_start(&cap);
	emit_macros();
	got = capture_end(&cap, NULL);
	assert_string_equal(got, want);
	free(got);
}

static void test_bad_level_is_error(void **state)
{
	struct capture cap;
	char *got, *want;

	/* an out-of-range level is logged as an error */
	tn_log_set_level(TN_LOG_ERROR);
	capture_start(&cap);
	tn_log((enum tn_log_level)42, NULL, "odd");
	tn_log(TN_LOG_WARNING, NULL, "dropped");
	got = capture_end(&cap, NULL);
	tn_log_set_level(TN_LOG_INFO);
	want = expect_line("error: odd");
	assert_string_equal(got, want);
	free(got);
	free(want);
}

/*
 * Context.
 */

struct ctx_case {
	struct tn_log_ctx ctx;
	const char *want;
};

static const struct ctx_case ctx_cases[] = {
	{ { "S1", "Q1", "T1" }, "info: session=S1 queue=Q1 tenant=T1: msg" },
	{ { "S1", NULL, NULL }, "info: session=S1: msg" },
	{ { NULL, "Q1", NULL }, "info: queue=Q1: msg" },
	{ { NULL, NULL, "T1" }, "info: tenant=T1: msg" },
	{ { "S1", NULL, "T1" }, "info: session=S1 tenant=T1: msg" },
	{ { NULL, NULL, NULL }, "info: msg" },
	{ { "", "Q1", "" }, "info: queue=Q1: msg" },
	{ { "a\r\nb", "q=1 x", "t\\" },
	  "info: session=a\\x0d\\x0ab queue=q=1 x tenant=t\\x5c: msg" },
	{ { "\xc3\xa9", NULL, "\x1b[31m" },
	  "info: session=\\xc3\\xa9 tenant=\\x1b[31m: msg" },
};

static void test_context(void **state)
{
	size_t i;

	for (i = 0; i < sizeof(ctx_cases) / sizeof(ctx_cases[0]); i++) {
		struct capture cap;
		char *got, *want;

		capture_start(&cap);
		tn_log(TN_LOG_INFO, &ctx_cases[i].ctx, "msg");
		got = capture_end(&cap, NULL);
		want = expect_line(ctx_cases[i].want);
		assert_string_equal(got, want);
		free(got);
		free(want);
	}
}

static void emit_null_ctx(void)
{
	tn_log(TN_LOG_WARNING, NULL, "no context %s", "here");
}

static void test_null_context(void **state)
{
	assert_single_line("warning: no context here", emit_null_ctx);
}

static void test_hostile_tenant(void **state)
{
	struct tn_log_ctx ctx = { "s\r\n1", NULL, NULL };
	char *tenant = malloc(10 * 1024 + 1), want[1024];
	struct capture cap;
	char *got, *line;

	assert_non_null(tenant);
	memset(tenant, 'x', 10 * 1024);
	tenant[10 * 1024] = '\0';
	tenant[5] = '\n';
	ctx.tenant = tenant;
	capture_start(&cap);
	tn_log(TN_LOG_ERROR, &ctx, "backend down");
	got = capture_end(&cap, NULL);
	/* "xxxxx\x0a" + x's up to TN_LOG_VALUE_MAX - 3, then "..." */
	snprintf(want, sizeof(want), "error: session=s\\x0d\\x0a1 tenant=xxxxx\\x0a%.*s...: backend down",
		 TN_LOG_VALUE_MAX - 3 - 9, tenant + 6);
	line = expect_line(want);
	assert_string_equal(got, line);
	free(line);
	free(got);
	free(tenant);
}

/*
 * Over-long and multi-line messages.
 */

static void assert_one_line(const char *got, size_t len)
{
	assert_true(len > 0);
	assert_int_equal(got[len - 1], '\n');
	assert_ptr_equal(memchr(got, '\n', len), got + len - 1);
	assert_null(memchr(got, '\r', len));
}

static void test_long_message(void **state)
{
	struct tn_log_ctx ctx = { "S", "Q", "T" };
	char *msg = malloc(5001), *got, *prefix;
	struct capture cap;
	size_t len;

	assert_non_null(msg);
	memset(msg, 'm', 5000);
	msg[5000] = '\0';
	capture_start(&cap);
	tn_log(TN_LOG_INFO, &ctx, "%s", msg);
	got = capture_end(&cap, &len);
	assert_int_equal(len, TN_LOG_LINE_MAX);
	assert_one_line(got, len);
	assert_memory_equal(got + len - 4, "...\n", 4);
	assert_true(asprintf(&prefix, IDENT "[%ld]: info: session=S queue=Q tenant=T: mmm",
			     (long)getpid()) > 0);
	assert_memory_equal(got, prefix, strlen(prefix));
	assert_int_equal(strspn(got + strlen(prefix) - 3, "m"),
			 len - 4 - (strlen(prefix) - 3));
	free(prefix);
	free(got);
	free(msg);
}

/* A message that fills the line exactly is not cut; one more byte is. */
static void test_exact_fit(void **state)
{
	char head[64];
	size_t room, len;
	struct capture cap;
	char *msg, *got;

	snprintf(head, sizeof(head), IDENT "[%ld]: info: ", (long)getpid());
	room = TN_LOG_LINE_MAX - 1 - strlen(head);
	msg = malloc(room + 2);
	assert_non_null(msg);
	memset(msg, 'a', room + 1);
	msg[room] = '\0';
	capture_start(&cap);
	tn_info("%s", msg);
	msg[room] = 'b';
	msg[room + 1] = '\0';
	tn_info("%s", msg);
	got = capture_end(&cap, &len);
	assert_int_equal(len, 2 * TN_LOG_LINE_MAX);
	assert_memory_equal(got + TN_LOG_LINE_MAX - 4, "aaa\n", 4);
	assert_memory_equal(got + 2 * TN_LOG_LINE_MAX - 4, "...\n", 4);
	free(got);
	free(msg);
}

static void test_newlines_in_message(void **state)
{
	struct tn_log_ctx ctx = { NULL, "Q\n", NULL };
	struct capture cap;
	char *got, *want;
	size_t len;

	capture_start(&cap);
	tn_log(TN_LOG_WARNING, &ctx, "first\nsecond\r\nthird\tend\x7f%s", "\n");
	got = capture_end(&cap, &len);
	assert_one_line(got, len);
	want = expect_line("warning: queue=Q\\x0a: first?second??third?end??");
	assert_string_equal(got, want);
	free(got);
	free(want);
}

static void test_long_multiline_message(void **state)
{
	struct tn_log_ctx ctx = { NULL, NULL, NULL };
	char *msg = malloc(20001), *tenant = malloc(10001), *got;
	struct capture cap;
	size_t len, i;

	assert_non_null(msg);
	assert_non_null(tenant);
	for (i = 0; i < 20000; i++)
		msg[i] = i % 7 == 0 ? '\n' : 'z';
	msg[20000] = '\0';
	memset(tenant, '\r', 10000);
	tenant[10000] = '\0';
	ctx.tenant = tenant;
	capture_start(&cap);
	tn_log(TN_LOG_ERROR, &ctx, "%s", msg);
	got = capture_end(&cap, &len);
	assert_int_equal(len, TN_LOG_LINE_MAX);
	assert_one_line(got, len);
	assert_memory_equal(got + len - 4, "...\n", 4);
	free(got);
	free(tenant);
	free(msg);
}

/*
 * errno.
 */

static void test_errno_kept(void **state)
{
	struct capture cap;
	char *got, *want;

	capture_start(&cap);
	errno = ENOENT;
	tn_error("open: %m");
	assert_int_equal(errno, ENOENT);
	tn_debug("dropped");
	assert_int_equal(errno, ENOENT);
	got = capture_end(&cap, NULL);
	want = expect_line("error: open: No such file or directory");
	assert_string_equal(got, want);
	free(got);
	free(want);
}

/*
 * Threads: lines never interleave.
 */

#define THREADS 4
#define THREAD_LINES 200

static void *thread_main(void *arg)
{
	struct tn_log_ctx ctx = { "sess", NULL, NULL };
	char pad[301];
	int n;

	memset(pad, 'p', 300);
	pad[300] = '\0';
	for (n = 0; n < THREAD_LINES; n++)
		tn_log(TN_LOG_INFO, &ctx, "thread %d line %d %s", (int)(intptr_t)arg,
		       n, pad);
	return NULL;
}

static void test_threads(void **state)
{
	pthread_t threads[THREADS];
	int counts[THREADS] = { 0 }, i, t, n;
	struct capture cap;
	char head[64], *got, *line, *save = NULL;
	size_t len;

	capture_start(&cap);
	for (i = 0; i < THREADS; i++)
		assert_int_equal(pthread_create(&threads[i], NULL, thread_main,
						(void *)(intptr_t)i), 0);
	for (i = 0; i < THREADS; i++)
		assert_int_equal(pthread_join(threads[i], NULL), 0);
	got = capture_end(&cap, &len);
	snprintf(head, sizeof(head), IDENT "[%ld]: info: session=sess: thread ",
		 (long)getpid());
	for (line = strtok_r(got, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save)) {
		assert_memory_equal(line, head, strlen(head));
		assert_int_equal(sscanf(line + strlen(head), "%d line %d", &t, &n), 2);
		assert_true(t >= 0 && t < THREADS);
		assert_int_equal(n, counts[t]);
		counts[t]++;
		assert_int_equal(strspn(strrchr(line, ' ') + 1, "p"), 300);
		assert_int_equal(strlen(strrchr(line, ' ') + 1), 300);
	}
	for (i = 0; i < THREADS; i++)
		assert_int_equal(counts[i], THREAD_LINES);
	free(got);
}

/*
 * tn_log_set_handler(): a host's log takes the lines
 */

struct handled {
	int calls;
	enum tn_log_level level;
	char text[256];
	bool take;
};

static bool record_handler(enum tn_log_level level, const char *text, void *context)
{
	struct handled *h = context;

	h->calls++;
	h->level = level;
	snprintf(h->text, sizeof(h->text), "%s", text);
	return h->take;
}

static void test_handler(void **state)
{
	struct tn_log_ctx ctx = { .session = "s1", .tenant = "acme" };
	struct handled h = { .take = true };
	struct capture cap;
	char *got, *want;

	tn_log_set_handler(record_handler, &h);
	capture_start(&cap);
	tn_log(TN_LOG_WARNING, &ctx, "two\nlines %d", 1);
	tn_log(TN_LOG_DEBUG, NULL, "below the level");
	got = capture_end(&cap, NULL);
	assert_string_equal(got, "");
	free(got);
	assert_int_equal(h.calls, 1);
	assert_int_equal(h.level, TN_LOG_WARNING);
	assert_string_equal(h.text, "session=s1 tenant=acme: two?lines 1");

	/* a handler that declines leaves the line to stderr */
	h.take = false;
	capture_start(&cap);
	tn_log(TN_LOG_ERROR, NULL, "declined");
	got = capture_end(&cap, NULL);
	want = expect_line("error: declined");
	assert_string_equal(got, want);
	free(got);
	free(want);
	assert_int_equal(h.calls, 2);
	assert_string_equal(h.text, "declined");

	tn_log_set_handler(NULL, NULL);
	assert_single_line("warning: no context here", emit_null_ctx);
	assert_int_equal(h.calls, 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sanitize_table),
		cmocka_unit_test(test_sanitize_all_sizes),
		cmocka_unit_test(test_sanitize_long_source),
		cmocka_unit_test(test_level_parse),
		cmocka_unit_test_setup(test_level_filter, setup),
		cmocka_unit_test_setup(test_macros, setup),
		cmocka_unit_test_setup(test_bad_level_is_error, setup),
		cmocka_unit_test_setup(test_context, setup),
		cmocka_unit_test_setup(test_null_context, setup),
		cmocka_unit_test_setup(test_hostile_tenant, setup),
		cmocka_unit_test_setup(test_long_message, setup),
		cmocka_unit_test_setup(test_exact_fit, setup),
		cmocka_unit_test_setup(test_newlines_in_message, setup),
		cmocka_unit_test_setup(test_long_multiline_message, setup),
		cmocka_unit_test_setup(test_errno_kept, setup),
		cmocka_unit_test_setup(test_threads, setup),
		cmocka_unit_test_setup(test_handler, setup),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

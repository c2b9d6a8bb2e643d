/*++
 * NAME
 *	test-conf 1
 * SUMMARY
 *	unit tests for lib/tn-conf.c
 * DESCRIPTION
 *	Two parameter tables (one standing in for the lookup library's,
 *	one for a program called "tn-test") cover every value type. The
 *	tests load good and bad text and files and compare values and exact
 *	error texts, drive the time/size/bool parsers from tables, check
 *	list splitting, the three dump modes and the doc dump, read a dump
 *	back in (round trip), and check tn_conf_set() and tn_conf_is_set().
 *	Programming errors (bad tables, wrong accessor) must abort; they
 *	are run in a child process and the parent checks for SIGABRT and
 *	for the parameter name in what the child wrote to stderr.
 *--*/
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tn-conf.h"

#define PROGRAM "tn-test"

static const struct tn_conf_param lookup_params[] = {
	{ "ldap_uri", TN_CONF_STR, "", 0, 0, NULL, "LDAP server URI" },
	{ "cache_ttl", TN_CONF_TIME, "5m", 0, 0, NULL, "lookup cache lifetime" },
	{ "cache_size", TN_CONF_SIZE, "0", 0, 0, NULL, "lookup cache size" },
	TN_CONF_END
};

static const struct tn_conf_param test_params[] = {
	{ "name_str", TN_CONF_STR, " default text ", 0, 0, NULL, "a string" },
	{ "count", TN_CONF_INT, "10", 1, 100, NULL, "an integer" },
	{ "offset", TN_CONF_INT, "-5", 0, 0, NULL, "an unbounded integer" },
	{ "enabled", TN_CONF_BOOL, "no", 0, 0, NULL, "a flag" },
	{ "timeout", TN_CONF_TIME, "30000ms", 1000, 3600000, NULL, "a duration" },
	{ "max_size", TN_CONF_SIZE, "10m", 1024, 1073741824, NULL, "a size" },
	{ "servers", TN_CONF_LIST, "a b", 0, 0, NULL, "a list" },
	{ "mode", TN_CONF_ENUM, "fast", 0, 0, "fast|safe|paranoid", "a choice" },
	TN_CONF_END
};

static const struct tn_conf_param *const test_tables[] = {
	lookup_params, test_params, NULL
};

static int setup(void **state)
{
	*state = tn_conf_create(PROGRAM, test_tables);
	return 0;
}

static int teardown(void **state)
{
	struct tn_conf *conf = *state;

	tn_conf_destroy(&conf);
	assert_null(conf);
	return 0;
}

static void load_ok(struct tn_conf *conf, const char *text)
{
	const char *error = NULL;

	if (tn_conf_load_string(conf, "t.conf", text, &error) != 0)
		fail_msg("unexpected error: %s", error);
}

static char *dump_to_string(const struct tn_conf *conf, int mode)
{
	char *buf = NULL;
	size_t size = 0;
	FILE *out = open_memstream(&buf, &size);

	assert_non_null(out);
	if (mode < 0)
		tn_conf_dump_doc(conf, out);
	else
		tn_conf_dump(conf, out, (enum tn_conf_dump_mode)mode);
	assert_int_equal(fclose(out), 0);
	return buf;
}

/* The "name = value" line of one parameter in an ALL dump. */
static void assert_dumped(const struct tn_conf *conf, const char *name,
			  const char *value)
{
	char *dump = dump_to_string(conf, TN_CONF_DUMP_ALL), want[256];

	snprintf(want, sizeof(want), "\n%s = %s\n", name, value);
	if (strstr(dump, want) == NULL &&
	    strncmp(dump, want + 1, strlen(want + 1)) != 0)
		fail_msg("no \"%s = %s\" in dump:\n%s", name, value, dump);
	free(dump);
}

/*
 * Defaults and accessors.
 */

static void test_defaults(void **state)
{
	const struct tn_conf *conf = *state;
	const char *const *list = tn_conf_list(conf, "servers");

	assert_string_equal(tn_conf_str(conf, "name_str"), "default text");
	assert_string_equal(tn_conf_str(conf, "ldap_uri"), "");
	assert_int_equal(tn_conf_int(conf, "count"), 10);
	assert_int_equal(tn_conf_int(conf, "offset"), -5);
	assert_false(tn_conf_bool(conf, "enabled"));
	assert_int_equal(tn_conf_time_ms(conf, "timeout"), 30000);
	assert_int_equal(tn_conf_time_ms(conf, "cache_ttl"), 300000);
	assert_int_equal(tn_conf_size(conf, "max_size"), 10 * 1024 * 1024);
	assert_int_equal(tn_conf_enum(conf, "mode"), 0);
	assert_string_equal(list[0], "a");
	assert_string_equal(list[1], "b");
	assert_null(list[2]);
	assert_false(tn_conf_is_set(conf, "count"));
	assert_false(tn_conf_is_set(conf, "ldap_uri"));
}

static void test_empty_tables(void **state)
{
	const struct tn_conf_param *const none[] = { NULL };
	struct tn_conf *conf = tn_conf_create("x", none);
	const char *error;
	char *dump;

	assert_int_equal(tn_conf_load_string(conf, "e", "# nothing\n\n", &error), 0);
	assert_int_equal(tn_conf_load_string(conf, "e", "a = 1\n", &error), -1);
	assert_string_equal(error, "e:1: unknown parameter 'a'");
	dump = dump_to_string(conf, TN_CONF_DUMP_ALL);
	assert_string_equal(dump, "");
	free(dump);
	tn_conf_destroy(&conf);
}

/*
 * Good files.
 */

static void test_good_file(void **state)
{
	struct tn_conf *conf = *state;
	const char *const *list;

	load_ok(conf,
		"# a comment\n"
		"   # an indented comment\n"
		"\n"
		"   \t \n"
		"name_str = hello # not a comment\n"
		"count=42\n"
		"servers = one, two\n"
		"    three,four\n"
		"# a comment does not end the logical line\n"
		"\n"
		"\tfive\n"
		"enabled = yes\n"
		"timeout = 1m\n"
		"max_size = 1500\n"
		"mode = paranoid\n"
		"offset = -9223372036854775808\n"
		"cache_ttl = 1w\n"
		"ldap_uri = ldap://h/o=x?a=b\n");
	assert_string_equal(tn_conf_str(conf, "name_str"), "hello # not a comment");
	assert_int_equal(tn_conf_int(conf, "count"), 42);
	assert_true(tn_conf_bool(conf, "enabled"));
	assert_int_equal(tn_conf_time_ms(conf, "timeout"), 60000);
	assert_int_equal(tn_conf_size(conf, "max_size"), 1500);
	assert_int_equal(tn_conf_enum(conf, "mode"), 2);
	assert_true(tn_conf_int(conf, "offset") == INT64_MIN);
	assert_int_equal(tn_conf_time_ms(conf, "cache_ttl"), 7 * 86400000LL);
	assert_string_equal(tn_conf_str(conf, "ldap_uri"), "ldap://h/o=x?a=b");
	list = tn_conf_list(conf, "servers");
	assert_string_equal(list[0], "one");
	assert_string_equal(list[1], "two");
	assert_string_equal(list[2], "three");
	assert_string_equal(list[3], "four");
	assert_string_equal(list[4], "five");
	assert_null(list[5]);
	assert_true(tn_conf_is_set(conf, "count"));
	assert_false(tn_conf_is_set(conf, "cache_size"));
}

static void test_continuation_join(void **state)
{
	struct tn_conf *conf = *state;

	load_ok(conf, "name_str = first part   \n        continued here  \n");
	assert_string_equal(tn_conf_str(conf, "name_str"),
			    "first part continued here");
	load_ok(conf, "name_str =\n  only on the next line\n");
	assert_string_equal(tn_conf_str(conf, "name_str"), "only on the next line");
	load_ok(conf, "name_str\n  = split name\n");
	assert_string_equal(tn_conf_str(conf, "name_str"), "split name");
}

static void test_crlf(void **state)
{
	struct tn_conf *conf = *state;

	load_ok(conf, "count = 7\r\n\r\nname_str = x y\r\n  z\r\n[tn-test]\r\nmode = safe\r\n");
	assert_int_equal(tn_conf_int(conf, "count"), 7);
	assert_string_equal(tn_conf_str(conf, "name_str"), "x y z");
	assert_int_equal(tn_conf_enum(conf, "mode"), 1);
}

static void test_no_final_newline(void **state)
{
	struct tn_conf *conf = *state;

	load_ok(conf, "count = 8");
	assert_int_equal(tn_conf_int(conf, "count"), 8);
	load_ok(conf, "");
	assert_int_equal(tn_conf_int(conf, "count"), 8);
}

static void test_sections(void **state)
{
	struct tn_conf *conf = *state;

	load_ok(conf,
		"count = 1\n"
		"[tn-other]\n"
		"count = 999999\n"
		"unknown_elsewhere = x\n"
		"mode = not-a-mode\n"
		"[tn-test]\n"
		"count = 2\n"
		"enabled = yes\n"
		"[global]\n"
		"count = 3\n"			/* later, but global */
		"enabled = no\n"
		"offset = 4\n"
		"[tn-other.sub_2]\n"
		"offset = 5\n"
		"[tn-test]\n"
		"mode = safe\n"
		"[global]\n"
		"mode = paranoid\n");
	assert_int_equal(tn_conf_int(conf, "count"), 2);
	assert_true(tn_conf_bool(conf, "enabled"));
	assert_int_equal(tn_conf_int(conf, "offset"), 4);
	assert_int_equal(tn_conf_enum(conf, "mode"), 1);
}

static void test_last_one_wins(void **state)
{
	struct tn_conf *conf = *state;

	load_ok(conf,
		"timeout = 1m\n"
		"timeout = 2m\n"
		"[tn-test]\n"
		"count = 5\n"
		"count = 6\n"
		"[global]\n"
		"count = 7\n");
	assert_int_equal(tn_conf_time_ms(conf, "timeout"), 120000);
	assert_int_equal(tn_conf_int(conf, "count"), 6);
}

/* A later load replaces what an earlier one set, whatever the section. */
static void test_later_load_wins(void **state)
{
	struct tn_conf *conf = *state;

	load_ok(conf, "[tn-test]\ncount = 7\n");
	load_ok(conf, "count = 8\n");
	assert_int_equal(tn_conf_int(conf, "count"), 8);
}

/*
 * Bad files.
 */

struct bad_case {
	const char *text;
	const char *error;
};

static const struct bad_case bad_cases[] = {
	{ "ldap_ur = x\n", "t.conf:1: unknown parameter 'ldap_ur'" },
	{ "\n# c\ncount = abc\n", "t.conf:3: bad value for 'count': 'abc': not a number" },
	{ "count = 12x\n", "t.conf:1: bad value for 'count': '12x': not a number" },
	{ "count =\n", "t.conf:1: bad value for 'count': '': empty value" },
	{ "count = 99999999999999999999\n",
	  "t.conf:1: bad value for 'count': '99999999999999999999': number too large" },
	{ "count = 1000\n", "t.conf:1: 'count' must be between 1 and 100" },
	{ "count = 0\n", "t.conf:1: 'count' must be between 1 and 100" },
	{ "count = -1\n", "t.conf:1: 'count' must be between 1 and 100" },
	{ "offset = 9223372036854775808\n",
	  "t.conf:1: bad value for 'offset': '9223372036854775808': number too large" },
	{ "offset = -9223372036854775809\n",
	  "t.conf:1: bad value for 'offset': '-9223372036854775809': number too large" },
	{ "offset = --5\n", "t.conf:1: bad value for 'offset': '--5': not a number" },
	{ "offset = -\n", "t.conf:1: bad value for 'offset': '-': not a number" },
	{ "enabled = maybe\n",
	  "t.conf:1: bad value for 'enabled': 'maybe': expected yes, no, true, false, on, off, 1 or 0" },
	{ "timeout = 5x\n",
	  "t.conf:1: bad value for 'timeout': '5x': unknown time unit (use ms, s, m, h, d or w)" },
	{ "timeout = -5s\n", "t.conf:1: bad value for 'timeout': '-5s': negative value" },
	{ "timeout = 2h\n", "t.conf:1: 'timeout' must be between 1s and 1h" },
	{ "timeout = 999ms\n", "t.conf:1: 'timeout' must be between 1s and 1h" },
	{ "max_size = 10q\n",
	  "t.conf:1: bad value for 'max_size': '10q': unknown size unit (use k, m or g)" },
	{ "max_size = 2g\n", "t.conf:1: 'max_size' must be between 1k and 1g" },
	{ "max_size = 18446744073709551615\n", "t.conf:1: 'max_size' must be between 1k and 1g" },
	{ "mode = slow\n",
	  "t.conf:1: bad value for 'mode': 'slow': expected one of fast|safe|paranoid" },
	{ "mode = Fast\n",
	  "t.conf:1: bad value for 'mode': 'Fast': expected one of fast|safe|paranoid" },
	{ "count 5\n", "t.conf:1: syntax error: expected 'name = value'" },
	{ "= 5\n", "t.conf:1: syntax error: expected 'name = value'" },
	{ "count = 5\nservers\n", "t.conf:2: syntax error: expected 'name = value'" },
	{ "  count = 5\n", "t.conf:1: continuation line with nothing to continue" },
	{ "\n\n\tx\n", "t.conf:3: continuation line with nothing to continue" },
	{ "count = 5\n[tn-test]\n  count = 6\n",
	  "t.conf:3: continuation line with nothing to continue" },
	{ "Count = 5\n", "t.conf:1: syntax error: bad parameter name 'Count'" },
	{ "max-size = 5\n", "t.conf:1: syntax error: bad parameter name 'max-size'" },
	{ "a b = 5\n", "t.conf:1: syntax error: bad parameter name 'a b'" },
	{ "[tn-other]\nmax-size = 5\n", "t.conf:2: syntax error: bad parameter name 'max-size'" },
	{ "[tn-other]\nno value\n", "t.conf:2: syntax error: expected 'name = value'" },
	{ "[bad section]\n", "t.conf:1: syntax error: bad section header '[bad section]'" },
	{ "[]\n", "t.conf:1: syntax error: bad section header '[]'" },
	{ "[\n", "t.conf:1: syntax error: bad section header '['" },
	{ "[tn-test\n", "t.conf:1: syntax error: bad section header '[tn-test'" },
	{ "[tn-test] # c\n", "t.conf:1: syntax error: bad section header '[tn-test] # c'" },
	{ "count = 1\n# c\n\ncount =\n# c\n   12x\n",
	  "t.conf:4: bad value for 'count': '12x': not a number" },
	{ "count = \x01\x1b[0m\n",
	  "t.conf:1: bad value for 'count': '\\x01\\x1b[0m': not a number" },
	{ "na\xffme = 1\n", "t.conf:1: syntax error: bad parameter name 'na\\xffme'" },
};

static void test_bad_files(void **state)
{
	size_t i;

	for (i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		struct tn_conf *conf = tn_conf_create(PROGRAM, test_tables);
		const char *error = NULL;

		assert_int_equal(tn_conf_load_string(conf, "t.conf", bad_cases[i].text,
						     &error), -1);
		assert_non_null(error);
		if (strcmp(error, bad_cases[i].error) != 0)
			fail_msg("case %zu: got \"%s\", want \"%s\"", i, error,
				 bad_cases[i].error);
		tn_conf_destroy(&conf);
	}
}

/* A file with an error changes nothing, not even lines before the error. */
static void test_failed_load_changes_nothing(void **state)
{
	struct tn_conf *conf = *state;
	const char *error;

	load_ok(conf, "count = 20\n");
	assert_int_equal(tn_conf_load_string(conf, "t.conf",
					     "count = 30\nname_str = new\nmode = bad\n",
					     &error), -1);
	assert_string_equal(error, "t.conf:3: bad value for 'mode': 'bad': expected one of fast|safe|paranoid");
	assert_int_equal(tn_conf_int(conf, "count"), 20);
	assert_string_equal(tn_conf_str(conf, "name_str"), "default text");
	assert_false(tn_conf_is_set(conf, "name_str"));
}

/* A long value is quoted sanitised and bounded in the error. */
static void test_error_value_bounded(void **state)
{
	struct tn_conf *conf = *state;
	size_t len = 10000, elen;
	char *text = malloc(len + 32);
	const char *error;

	assert_non_null(text);
	strcpy(text, "count = 1");
	memset(text + 9, '\n', 1);
	memset(text + 10, 'x', len);
	strcpy(text + 10 + len, "\n");
	/* "count = 1" then a new line of x's: a syntax error, name bounded */
	assert_int_equal(tn_conf_load_string(conf, "t.conf", text, &error), -1);
	assert_string_equal(error, "t.conf:2: syntax error: expected 'name = value'");
	text[9] = '\x7f';
	assert_int_equal(tn_conf_load_string(conf, "t.conf", text, &error), -1);
	elen = strlen(error);
	assert_true(elen < 400);
	assert_memory_equal(error, "t.conf:1: bad value for 'count': '1\\x7fxxx", 40);
	assert_string_equal(error + elen - 21, "xxx...': not a number");
	memmove(text + 6, text + 10, len + 2);
	memcpy(text, "name_", 5);
	text[5] = 'X';
	/* "name_X" followed by x's and "= 1" */
	strcpy(text + 6 + len, " = 1\n");
	assert_int_equal(tn_conf_load_string(conf, "t.conf", text, &error), -1);
	elen = strlen(error);
	assert_true(elen < 400);
	assert_memory_equal(error, "t.conf:1: syntax error: bad parameter name 'name_Xxxx", 51);
	assert_string_equal(error + elen - 5, "x...'");
	free(text);
}

static char *long_setting(const char *prefix, size_t total)
{
	size_t plen = strlen(prefix);
	char *text = malloc(total + 2);

	assert_non_null(text);
	memcpy(text, prefix, plen);
	memset(text + plen, 'x', total - plen);
	text[total] = '\n';
	text[total + 1] = '\0';
	return text;
}

static void test_long_lines(void **state)
{
	struct tn_conf *conf = *state;
	char *text = long_setting("name_str = ", 65536), *more;
	const char *error;

	load_ok(conf, text);
	assert_int_equal(strlen(tn_conf_str(conf, "name_str")), 65536 - 11);
	free(text);

	text = long_setting("name_str = ", 65537);
	assert_int_equal(tn_conf_load_string(conf, "t.conf", text, &error), -1);
	assert_string_equal(error, "t.conf:1: line too long (more than 65536 bytes)");
	free(text);

	/* a comment line is bounded too */
	text = long_setting("\n\n# ", 70000);
	assert_int_equal(tn_conf_load_string(conf, "t.conf", text, &error), -1);
	assert_string_equal(error, "t.conf:3: line too long (more than 65536 bytes)");
	free(text);

	/* joined: 40000 + 1 + 40000 bytes; the error names the first line */
	text = long_setting("count = 1\nname_str = ", 40010);
	more = long_setting("\n  ", 40003);
	text = realloc(text, strlen(text) + strlen(more) + 1);
	assert_non_null(text);
	strcat(text, more + 1);
	assert_int_equal(tn_conf_load_string(conf, "t.conf", text, &error), -1);
	assert_string_equal(error, "t.conf:2: line too long (more than 65536 bytes)");
	free(more);
	free(text);
}

/*
 * Value parsers.
 */

struct time_case {
	const char *text;
	int64_t ms;
	const char *error;	/* NULL: valid */
};

#define TIME_UNIT_ERROR "unknown time unit (use ms, s, m, h, d or w)"

static const struct time_case time_cases[] = {
	{ "0", 0, NULL },
	{ "0ms", 0, NULL },
	{ "5", 5000, NULL },
	{ "5s", 5000, NULL },
	{ "007s", 7000, NULL },
	{ "1500ms", 1500, NULL },
	{ "2m", 120000, NULL },
	{ "1h", 3600000, NULL },
	{ "1d", 86400000, NULL },
	{ "2w", 1209600000, NULL },
	{ "9223372036854775807ms", INT64_MAX, NULL },
	{ "9223372036854775s", 9223372036854775000LL, NULL },
	{ "", 0, "empty value" },
	{ " ", 0, "not a number" },
	{ " 5", 0, "not a number" },
	{ "5 ", 0, TIME_UNIT_ERROR },
	{ "5 s", 0, TIME_UNIT_ERROR },
	{ "-5", 0, "negative value" },
	{ "-5s", 0, "negative value" },
	{ "+5", 0, "not a number" },
	{ "s", 0, "not a number" },
	{ "99999999999999999999", 0, "number too large" },
	{ "99999999999999999999ms", 0, "number too large" },
	{ "9223372036854775808ms", 0, "number too large" },
	{ "9223372036854776s", 0, "number too large" },
	{ "15250284452472w", 0, "number too large" },
	{ "5x", 0, TIME_UNIT_ERROR },
	{ "5S", 0, TIME_UNIT_ERROR },
	{ "5MS", 0, TIME_UNIT_ERROR },
	{ "5sec", 0, TIME_UNIT_ERROR },
	{ "5ss", 0, TIME_UNIT_ERROR },
	{ "1.5s", 0, TIME_UNIT_ERROR },
	{ "0x10", 0, TIME_UNIT_ERROR },
};

static void test_parse_time(void **state)
{
	size_t i;

	for (i = 0; i < sizeof(time_cases) / sizeof(time_cases[0]); i++) {
		const struct time_case *c = &time_cases[i];
		const char *error = NULL;
		int64_t ms = -42;
		int ret = tn_conf_parse_time_ms(c->text, &ms, &error);

		if (c->error == NULL) {
			if (ret != 0)
				fail_msg("'%s': unexpected error %s", c->text, error);
			assert_true(ms == c->ms);
		} else {
			if (ret != -1)
				fail_msg("'%s': accepted", c->text);
			assert_string_equal(error, c->error);
			assert_true(ms == -42);
		}
	}
}

struct size_case {
	const char *text;
	uint64_t bytes;
	const char *error;	/* NULL: valid */
};

#define SIZE_UNIT_ERROR "unknown size unit (use k, m or g)"

static const struct size_case size_cases[] = {
	{ "0", 0, NULL },
	{ "1024", 1024, NULL },
	{ "1k", 1024, NULL },
	{ "10K", 10240, NULL },
	{ "10kb", 10240, NULL },
	{ "10kB", 10240, NULL },
	{ "10KiB", 10240, NULL },
	{ "3m", 3145728, NULL },
	{ "3MB", 3145728, NULL },
	{ "3mib", 3145728, NULL },
	{ "1g", 1073741824, NULL },
	{ "1G", 1073741824, NULL },
	{ "2GiB", 2147483648ULL, NULL },
	{ "100b", 100, NULL },
	{ "100B", 100, NULL },
	{ "18446744073709551615", UINT64_MAX, NULL },
	{ "17179869183g", 17179869183ULL * 1073741824ULL, NULL },
	{ "", 0, "empty value" },
	{ " ", 0, "not a number" },
	{ "-1", 0, "negative value" },
	{ "-1k", 0, "negative value" },
	{ "k", 0, "not a number" },
	{ "10q", 0, SIZE_UNIT_ERROR },
	{ "10 k", 0, SIZE_UNIT_ERROR },
	{ "10k ", 0, SIZE_UNIT_ERROR },
	{ "10ib", 0, SIZE_UNIT_ERROR },
	{ "10kk", 0, SIZE_UNIT_ERROR },
	{ "10t", 0, SIZE_UNIT_ERROR },
	{ "1.5k", 0, SIZE_UNIT_ERROR },
	{ "18446744073709551616", 0, "number too large" },
	{ "99999999999999999999", 0, "number too large" },
	{ "17179869184g", 0, "number too large" },
	{ "18014398509481984k", 0, "number too large" },
};

static void test_parse_size(void **state)
{
	size_t i;

	for (i = 0; i < sizeof(size_cases) / sizeof(size_cases[0]); i++) {
		const struct size_case *c = &size_cases[i];
		const char *error = NULL;
		uint64_t bytes = 42;
		int ret = tn_conf_parse_size(c->text, &bytes, &error);

		if (c->error == NULL) {
			if (ret != 0)
				fail_msg("'%s': unexpected error %s", c->text, error);
			assert_true(bytes == c->bytes);
		} else {
			if (ret != -1)
				fail_msg("'%s': accepted", c->text);
			assert_string_equal(error, c->error);
			assert_true(bytes == 42);
		}
	}
}

struct bool_case {
	const char *text;
	int value;		/* -1: invalid */
};

static const struct bool_case bool_cases[] = {
	{ "yes", 1 }, { "no", 0 }, { "true", 1 }, { "false", 0 },
	{ "on", 1 }, { "off", 0 }, { "1", 1 }, { "0", 0 },
	{ "YES", 1 }, { "True", 1 }, { "oFF", 0 },
	{ "", -1 }, { " ", -1 }, { "maybe", -1 }, { "2", -1 }, { "yes ", -1 },
	{ " yes", -1 }, { "y", -1 }, { "n", -1 }, { "onn", -1 }, { "01", -1 },
	{ "-1", -1 },
};

static void test_parse_bool(void **state)
{
	size_t i;

	for (i = 0; i < sizeof(bool_cases) / sizeof(bool_cases[0]); i++) {
		const struct bool_case *c = &bool_cases[i];
		const char *error = NULL;
		bool value = true;
		int ret = tn_conf_parse_bool(c->text, &value, &error);

		if (c->value < 0) {
			if (ret != -1)
				fail_msg("'%s': accepted", c->text);
			assert_string_equal(error, "expected yes, no, true, false, on, off, 1 or 0");
		} else {
			if (ret != 0)
				fail_msg("'%s': unexpected error %s", c->text, error);
			assert_int_equal(value, c->value);
		}
	}
}

static void test_int_values(void **state)
{
	static const struct {
		const char *text;
		int64_t value;
	} cases[] = {
		{ "0", 0 }, { "-0", 0 }, { "+5", 5 }, { "-17", -17 }, { "007", 7 },
		{ "9223372036854775807", INT64_MAX },
		{ "-9223372036854775808", INT64_MIN },
	};
	struct tn_conf *conf = *state;
	const char *error;
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(tn_conf_set(conf, "offset", cases[i].text, &error), 0);
		assert_true(tn_conf_int(conf, "offset") == cases[i].value);
	}
	assert_int_equal(tn_conf_set(conf, "offset", "1 000", &error), -1);
	assert_string_equal(error, "bad value for 'offset': '1 000': not a number");
}

struct list_case {
	const char *text;
	const char *items[5];
};

static const struct list_case list_cases[] = {
	{ "a,b c", { "a", "b", "c", NULL } },
	{ " a , , b\t", { "a", "b", NULL } },
	{ "", { NULL } },
	{ ",,, ,", { NULL } },
	{ "one", { "one", NULL } },
	{ "x,y,,z", { "x", "y", "z", NULL } },
	{ "ldap://a:389/,ldap://b/", { "ldap://a:389/", "ldap://b/", NULL } },
	{ "a;b\tc\r\fd", { "a;b", "c", "d", NULL } },
};

static void test_list_split(void **state)
{
	struct tn_conf *conf = *state;
	size_t i, j;

	for (i = 0; i < sizeof(list_cases) / sizeof(list_cases[0]); i++) {
		const char *const *list;
		const char *error;

		assert_int_equal(tn_conf_set(conf, "servers", list_cases[i].text, &error), 0);
		list = tn_conf_list(conf, "servers");
		for (j = 0; list_cases[i].items[j] != NULL; j++) {
			assert_non_null(list[j]);
			assert_string_equal(list[j], list_cases[i].items[j]);
		}
		assert_null(list[j]);
	}
}

static void test_enum_values(void **state)
{
	struct tn_conf *conf = *state;
	static const char *const words[] = { "fast", "safe", "paranoid" };
	const char *error;
	int i;

	for (i = 0; i < 3; i++) {
		assert_int_equal(tn_conf_set(conf, "mode", words[i], &error), 0);
		assert_int_equal(tn_conf_enum(conf, "mode"), i);
		assert_dumped(conf, "mode", words[i]);
	}
	assert_int_equal(tn_conf_set(conf, "mode", "", &error), -1);
	assert_int_equal(tn_conf_set(conf, "mode", "fas", &error), -1);
	assert_int_equal(tn_conf_set(conf, "mode", "fast|safe", &error), -1);
	assert_string_equal(error, "bad value for 'mode': 'fast|safe': expected one of fast|safe|paranoid");
	assert_int_equal(tn_conf_enum(conf, "mode"), 2);
}

/*
 * Printing.
 */

static const char dump_defaults[] =
	"cache_size = 0\n"
	"cache_ttl = 5m\n"
	"count = 10\n"
	"enabled = no\n"
	"ldap_uri =\n"
	"max_size = 10m\n"
	"mode = fast\n"
	"name_str = default text\n"
	"offset = -5\n"
	"servers = a, b\n"
	"timeout = 30s\n";

static void test_dump_modes(void **state)
{
	struct tn_conf *conf = *state;
	char *dump;

	dump = dump_to_string(conf, TN_CONF_DUMP_CHANGED);
	assert_string_equal(dump, "");
	free(dump);
	dump = dump_to_string(conf, TN_CONF_DUMP_ALL);
	assert_string_equal(dump, dump_defaults);
	free(dump);

	load_ok(conf,
		"count = 10\n"			/* same as default */
		"timeout = 30s\n"		/* same, other spelling */
		"servers = a,b\n"		/* same, other spelling */
		"max_size = 1500\n"
		"mode = safe\n"
		"ldap_uri = ldap://x/ # y\n"
		"cache_ttl = 90000ms\n");
	dump = dump_to_string(conf, TN_CONF_DUMP_CHANGED);
	assert_string_equal(dump,
			    "cache_ttl = 90s\n"
			    "ldap_uri = ldap://x/ # y\n"
			    "max_size = 1500\n"
			    "mode = safe\n");
	free(dump);
	dump = dump_to_string(conf, TN_CONF_DUMP_DEFAULTS);
	assert_string_equal(dump, dump_defaults);
	free(dump);
	dump = dump_to_string(conf, TN_CONF_DUMP_ALL);
	assert_string_equal(dump,
			    "cache_size = 0\n"
			    "cache_ttl = 90s\n"
			    "count = 10\n"
			    "enabled = no\n"
			    "ldap_uri = ldap://x/ # y\n"
			    "max_size = 1500\n"
			    "mode = safe\n"
			    "name_str = default text\n"
			    "offset = -5\n"
			    "servers = a, b\n"
			    "timeout = 30s\n");
	free(dump);
}

static void test_dump_doc(void **state)
{
	char *dump = dump_to_string(*state, -1);

	assert_string_equal(dump,
			    "cache_size\tsize\t0\tlookup cache size\n"
			    "cache_ttl\ttime\t5m\tlookup cache lifetime\n"
			    "count\tint\t10\tan integer\n"
			    "enabled\tbool\tno\ta flag\n"
			    "ldap_uri\tstr\t\tLDAP server URI\n"
			    "max_size\tsize\t10m\ta size\n"
			    "mode\tenum\tfast\ta choice\n"
			    "name_str\tstr\tdefault text\ta string\n"
			    "offset\tint\t-5\tan unbounded integer\n"
			    "servers\tlist\ta, b\ta list\n"
			    "timeout\ttime\t30s\ta duration\n");
	free(dump);
}

static void test_dump_time_units(void **state)
{
	static const char *const cases[][2] = {
		{ "1500ms", "1500ms" }, { "5000ms", "5s" }, { "120s", "2m" },
		{ "90s", "90s" }, { "0", "0s" }, { "0ms", "0s" }, { "24h", "1d" },
		{ "7d", "1w" }, { "8d", "8d" }, { "3600001ms", "3600001ms" },
		{ "61m", "61m" }, { "5", "5s" }, { "2w", "2w" },
		{ "9223372036854775807ms", "9223372036854775807ms" },
	};
	struct tn_conf *conf = *state;
	const char *error;
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(tn_conf_set(conf, "cache_ttl", cases[i][0], &error), 0);
		assert_dumped(conf, "cache_ttl", cases[i][1]);
	}
}

static void test_dump_size_units(void **state)
{
	static const char *const cases[][2] = {
		{ "0", "0" }, { "1024", "1k" }, { "1536", "1536" },
		{ "1048576", "1m" }, { "10m", "10m" }, { "1g", "1g" },
		{ "1024m", "1g" }, { "1025k", "1025k" }, { "3GiB", "3g" },
		{ "100b", "100" }, { "1", "1" },
		{ "18446744073709551615", "18446744073709551615" },
		{ "17179869183g", "17179869183g" },
	};
	struct tn_conf *conf = *state;
	const char *error;
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(tn_conf_set(conf, "cache_size", cases[i][0], &error), 0);
		assert_dumped(conf, "cache_size", cases[i][1]);
	}
}

static void round_trip(struct tn_conf *conf)
{
	struct tn_conf *copy = tn_conf_create(PROGRAM, test_tables);
	char *dump = dump_to_string(conf, TN_CONF_DUMP_ALL), *again;
	const char *error = NULL;

	if (tn_conf_load_string(copy, "dump", dump, &error) != 0)
		fail_msg("dump does not parse: %s\n%s", error, dump);
	again = dump_to_string(copy, TN_CONF_DUMP_ALL);
	assert_string_equal(again, dump);
	free(again);
	free(dump);
	dump = dump_to_string(conf, TN_CONF_DUMP_CHANGED);
	again = dump_to_string(copy, TN_CONF_DUMP_CHANGED);
	assert_string_equal(again, dump);
	free(again);
	free(dump);
	tn_conf_destroy(&copy);
}

static void test_dump_round_trip(void **state)
{
	struct tn_conf *conf = *state;
	const char *error;

	round_trip(conf);
	load_ok(conf,
		"name_str = a # b = c [x]\n"
		"ldap_uri = ldap://h/?x=1\n"
		"count = 100\n"
		"offset = -9223372036854775808\n"
		"enabled = on\n"
		"timeout = 1500ms\n"
		"cache_ttl = 604800001ms\n"
		"cache_size = 18446744073709551615\n"
		"max_size = 1025k\n"
		"servers = ,x ,\n  y,z\n"
		"mode = paranoid\n");
	round_trip(conf);
	assert_int_equal(tn_conf_set(conf, "servers", "", &error), 0);
	assert_int_equal(tn_conf_set(conf, "name_str", "", &error), 0);
	assert_int_equal(tn_conf_set(conf, "cache_size", "3g", &error), 0);
	round_trip(conf);
}

/*
 * tn_conf_set() and tn_conf_is_set()
 */

static void test_set(void **state)
{
	struct tn_conf *conf = *state;
	const char *error = NULL;

	assert_int_equal(tn_conf_set(conf, "count", " 42 ", &error), 0);
	assert_int_equal(tn_conf_int(conf, "count"), 42);
	assert_int_equal(tn_conf_set(conf, "name_str", "  hello  world ", &error), 0);
	assert_string_equal(tn_conf_str(conf, "name_str"), "hello  world");

	assert_int_equal(tn_conf_set(conf, "nope", "1", &error), -1);
	assert_string_equal(error, "unknown parameter 'nope'");
	assert_int_equal(tn_conf_set(conf, "count", "abc", &error), -1);
	assert_string_equal(error, "bad value for 'count': 'abc': not a number");
	assert_int_equal(tn_conf_set(conf, "count", "0", &error), -1);
	assert_string_equal(error, "'count' must be between 1 and 100");
	assert_int_equal(tn_conf_set(conf, "timeout", "1d", &error), -1);
	assert_string_equal(error, "'timeout' must be between 1s and 1h");
	assert_int_equal(tn_conf_set(conf, "name_str", "a\nb", &error), -1);
	assert_string_equal(error, "bad value for 'name_str': 'a\\x0ab': line break in value");
	assert_int_equal(tn_conf_set(conf, "enabled", "", &error), -1);
	assert_string_equal(error, "bad value for 'enabled': '': expected yes, no, true, false, on, off, 1 or 0");
	/* failures leave the value alone */
	assert_int_equal(tn_conf_int(conf, "count"), 42);
	assert_string_equal(tn_conf_str(conf, "name_str"), "hello  world");
	assert_false(tn_conf_is_set(conf, "enabled"));
}

static void test_set_hostile_name(void **state)
{
	struct tn_conf *conf = *state;
	char name[2000];
	const char *error;
	size_t len;

	memset(name, 'x', sizeof(name) - 1);
	name[sizeof(name) - 1] = '\0';
	memcpy(name, "a\r\nb", 4);
	assert_int_equal(tn_conf_set(conf, name, "1", &error), -1);
	len = strlen(error);
	assert_true(len < 300);
	assert_memory_equal(error, "unknown parameter 'a\\x0d\\x0abxxx", 32);
	assert_string_equal(error + len - 5, "x...'");
	assert_null(strchr(error, '\n'));
}

static void test_set_too_long(void **state)
{
	struct tn_conf *conf = *state;
	char *value = malloc(70001);
	const char *error;

	assert_non_null(value);
	memset(value, 'v', 70000);
	value[70000] = '\0';
	assert_int_equal(tn_conf_set(conf, "name_str", value, &error), -1);
	assert_true(strlen(error) < 400);
	assert_string_equal(error + strlen(error) - 23, "vvv...': value too long");
	free(value);
}

static void test_set_overrides_file(void **state)
{
	struct tn_conf *conf = *state;
	const char *error;

	load_ok(conf, "[tn-test]\ncount = 7\n");
	assert_int_equal(tn_conf_set(conf, "count", "8", &error), 0);
	assert_int_equal(tn_conf_int(conf, "count"), 8);
}

static void test_is_set(void **state)
{
	struct tn_conf *conf = *state;
	const char *error;

	load_ok(conf, "count = 10\n[tn-other]\noffset = 3\n");
	/* set to the default value: still set */
	assert_true(tn_conf_is_set(conf, "count"));
	assert_false(tn_conf_is_set(conf, "offset"));
	assert_false(tn_conf_is_set(conf, "mode"));
	assert_int_equal(tn_conf_set(conf, "mode", "fast", &error), 0);
	assert_true(tn_conf_is_set(conf, "mode"));
	assert_int_equal(tn_conf_set(conf, "enabled", "bad", &error), -1);
	assert_false(tn_conf_is_set(conf, "enabled"));
}

/* Every error text stays valid until the conf is destroyed. */
static void test_errors_kept(void **state)
{
	struct tn_conf *conf = *state;
	const char *first, *second;

	assert_int_equal(tn_conf_set(conf, "nope", "1", &first), -1);
	assert_int_equal(tn_conf_load_string(conf, "o", "x = 1", &second), -1);
	assert_string_equal(first, "unknown parameter 'nope'");
	assert_string_equal(second, "o:1: unknown parameter 'x'");
}

/*
 * Files.
 */

static char *write_temp(const char *text, size_t len)
{
	char *path = strdup("/tmp/test-conf-XXXXXX");
	int fd;

	assert_non_null(path);
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, len), (ssize_t)len);
	assert_int_equal(close(fd), 0);
	return path;
}

static void test_load_file(void **state)
{
	static const char text[] =
		"# tenantmail.conf\n"
		"count = 33\n"
		"[tn-test]\n"
		"servers = s1,\n"
		"   s2\n"
		"[global]\n"
		"mode = safe";
	struct tn_conf *conf = *state;
	char *path = write_temp(text, sizeof(text) - 1);
	const char *error = NULL;
	const char *const *list;

	assert_int_equal(tn_conf_load_file(conf, path, &error), 0);
	assert_int_equal(tn_conf_int(conf, "count"), 33);
	assert_int_equal(tn_conf_enum(conf, "mode"), 1);
	list = tn_conf_list(conf, "servers");
	assert_string_equal(list[0], "s1");
	assert_string_equal(list[1], "s2");
	assert_null(list[2]);
	unlink(path);
	free(path);
}

static void test_load_file_errors(void **state)
{
	static const char bad[] = "count = 1\n\n[tn-test]\ncount = 500\n";
	static const char nul[] = "count = 1\ncount = 2\0x\n";
	struct tn_conf *conf = *state;
	char *path = write_temp(bad, sizeof(bad) - 1), want[256];
	const char *error = NULL;

	assert_int_equal(tn_conf_load_file(conf, path, &error), -1);
	snprintf(want, sizeof(want), "%s:4: 'count' must be between 1 and 100", path);
	assert_string_equal(error, want);
	unlink(path);
	free(path);

	path = write_temp(nul, sizeof(nul) - 1);
	assert_int_equal(tn_conf_load_file(conf, path, &error), -1);
	snprintf(want, sizeof(want), "%s:2: syntax error: NUL byte in line", path);
	assert_string_equal(error, want);

	/* the file is gone now */
	unlink(path);
	assert_int_equal(tn_conf_load_file(conf, path, &error), -1);
	snprintf(want, sizeof(want), "%s: cannot open: No such file or directory", path);
	assert_string_equal(error, want);
	free(path);

	assert_int_equal(tn_conf_load_file(conf, "/", &error), -1);
	assert_string_equal(error, "/: read error: Is a directory");
	assert_int_equal(tn_conf_int(conf, "count"), 10);
}

static void test_load_file_long_lines(void **state)
{
	struct tn_conf *conf = *state;
	char *line = long_setting("name_str = ", 65536), *text, *path, want[256];
	size_t len = strlen(line);
	const char *error;

	/* line 1 exactly at the limit, line 2 one byte over */
	text = malloc(2 * len + 32);
	assert_non_null(text);
	memcpy(text, line, len);
	memcpy(text + len, line, len);
	strcpy(text + 2 * len - 1, "y\ncount = 5\n");
	path = write_temp(text, strlen(text));
	assert_int_equal(tn_conf_load_file(conf, path, &error), -1);
	snprintf(want, sizeof(want), "%s:2: line too long (more than 65536 bytes)", path);
	assert_string_equal(error, want);
	unlink(path);
	free(path);

	/* without the long second line, it loads */
	strcpy(text + len, "count = 5\n");
	path = write_temp(text, strlen(text));
	assert_int_equal(tn_conf_load_file(conf, path, &error), 0);
	assert_int_equal(strlen(tn_conf_str(conf, "name_str")), 65536 - 11);
	assert_int_equal(tn_conf_int(conf, "count"), 5);
	unlink(path);
	free(path);
	free(text);
	free(line);
}

/*
 * Programming errors abort.
 */

/* Run fn in a child; it must die of SIGABRT and say want on stderr. */
static void assert_aborts(void (*fn)(void), const char *want)
{
	char out[65536];
	size_t len = 0;
	ssize_t n;
	int fds[2], status;
	pid_t pid;

	assert_int_equal(pipe(fds), 0);
	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(fds[0]);
		dup2(fds[1], STDERR_FILENO);
		fn();
		_exit(0);
	}
	close(fds[1]);
	while (len < sizeof(out) - 1 &&
	       (n = read(fds[0], out + len, sizeof(out) - 1 - len)) > 0)
		len += (size_t)n;
	out[len] = '\0';
	close(fds[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGABRT)
		fail_msg("child did not abort (status %d), wrote: %s", status, out);
	if (strstr(out, want) == NULL)
		fail_msg("no \"%s\" in: %s", want, out);
}

static void create_with(const struct tn_conf_param *a, const struct tn_conf_param *b)
{
	const struct tn_conf_param *const tables[] = { a, b, NULL };
	struct tn_conf *conf = tn_conf_create(PROGRAM, tables);

	tn_conf_destroy(&conf);
}

static void dup_across_tables(void)
{
	static const struct tn_conf_param dup[] = {
		{ "cache_ttl", TN_CONF_TIME, "1s", 0, 0, NULL, "again" },
		TN_CONF_END
	};

	create_with(test_params, dup);
	create_with(lookup_params, dup);
}

static void dup_in_table(void)
{
	static const struct tn_conf_param dup[] = {
		{ "same", TN_CONF_STR, "", 0, 0, NULL, "" },
		{ "other", TN_CONF_STR, "", 0, 0, NULL, "" },
		{ "same", TN_CONF_INT, "1", 0, 0, NULL, "" },
		TN_CONF_END
	};

	create_with(dup, NULL);
}

static void bad_default_int(void)
{
	static const struct tn_conf_param bad[] = {
		{ "bad_int", TN_CONF_INT, "ten", 0, 0, NULL, "" },
		TN_CONF_END
	};

	create_with(bad, NULL);
}

static void default_out_of_bounds(void)
{
	static const struct tn_conf_param bad[] = {
		{ "small_int", TN_CONF_INT, "0", 1, 10, NULL, "" },
		TN_CONF_END
	};

	create_with(bad, NULL);
}

static void bad_default_time(void)
{
	static const struct tn_conf_param bad[] = {
		{ "bad_time", TN_CONF_TIME, "5 s", 0, 0, NULL, "" },
		TN_CONF_END
	};

	create_with(bad, NULL);
}

static void bad_default_enum(void)
{
	static const struct tn_conf_param bad[] = {
		{ "bad_enum", TN_CONF_ENUM, "d", 0, 0, "a|b|c", "" },
		TN_CONF_END
	};

	create_with(bad, NULL);
}

static void enum_without_choices(void)
{
	static const struct tn_conf_param bad[] = {
		{ "no_choices", TN_CONF_ENUM, "a", 0, 0, NULL, "" },
		TN_CONF_END
	};

	create_with(bad, NULL);
}

static void enum_empty_choice(void)
{
	static const struct tn_conf_param bad[] = {
		{ "empty_choice", TN_CONF_ENUM, "a", 0, 0, "a||b", "" },
		TN_CONF_END
	};

	create_with(bad, NULL);
}

static void bad_param_name(void)
{
	static const struct tn_conf_param bad[] = {
		{ "Bad-Name", TN_CONF_STR, "", 0, 0, NULL, "" },
		TN_CONF_END
	};

	create_with(bad, NULL);
}

static void null_default(void)
{
	static const struct tn_conf_param bad[] = {
		{ "null_default", TN_CONF_STR, NULL, 0, 0, NULL, "" },
		TN_CONF_END
	};

	create_with(bad, NULL);
}

static void min_above_max(void)
{
	static const struct tn_conf_param bad[] = {
		{ "inverted", TN_CONF_INT, "5", 10, 1, NULL, "" },
		TN_CONF_END
	};

	create_with(bad, NULL);
}

static void get_unknown(void)
{
	struct tn_conf *conf = tn_conf_create(PROGRAM, test_tables);

	(void)tn_conf_int(conf, "no_such_param");
}

static void get_wrong_type(void)
{
	struct tn_conf *conf = tn_conf_create(PROGRAM, test_tables);

	(void)tn_conf_int(conf, "name_str");
}

static void get_list_as_str(void)
{
	struct tn_conf *conf = tn_conf_create(PROGRAM, test_tables);

	(void)tn_conf_str(conf, "servers");
}

static void is_set_unknown(void)
{
	struct tn_conf *conf = tn_conf_create(PROGRAM, test_tables);

	(void)tn_conf_is_set(conf, "no_such_param");
}

static void test_programming_errors(void **state)
{
	assert_aborts(dup_across_tables, "'cache_ttl'");
	assert_aborts(dup_in_table, "'same'");
	assert_aborts(bad_default_int, "'bad_int'");
	assert_aborts(default_out_of_bounds, "'small_int'");
	assert_aborts(bad_default_time, "'bad_time'");
	assert_aborts(bad_default_enum, "'bad_enum'");
	assert_aborts(enum_without_choices, "'no_choices'");
	assert_aborts(enum_empty_choice, "'empty_choice'");
	assert_aborts(bad_param_name, "'Bad-Name'");
	assert_aborts(null_default, "'null_default'");
	assert_aborts(min_above_max, "'inverted'");
	assert_aborts(get_unknown, "'no_such_param'");
	assert_aborts(get_wrong_type, "'name_str'");
	assert_aborts(get_list_as_str, "'servers'");
	assert_aborts(is_set_unknown, "'no_such_param'");
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_defaults),
		cmocka_unit_test(test_empty_tables),
		T(test_good_file),
		T(test_continuation_join),
		T(test_crlf),
		T(test_no_final_newline),
		T(test_sections),
		T(test_last_one_wins),
		T(test_later_load_wins),
		cmocka_unit_test(test_bad_files),
		T(test_failed_load_changes_nothing),
		T(test_error_value_bounded),
		T(test_long_lines),
		cmocka_unit_test(test_parse_time),
		cmocka_unit_test(test_parse_size),
		cmocka_unit_test(test_parse_bool),
		T(test_int_values),
		T(test_list_split),
		T(test_enum_values),
		T(test_dump_modes),
		T(test_dump_doc),
		T(test_dump_time_units),
		T(test_dump_size_units),
		T(test_dump_round_trip),
		T(test_set),
		T(test_set_hostile_name),
		T(test_set_too_long),
		T(test_set_overrides_file),
		T(test_is_set),
		T(test_errors_kept),
		T(test_load_file),
		T(test_load_file_errors),
		T(test_load_file_long_lines),
		cmocka_unit_test(test_programming_errors),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

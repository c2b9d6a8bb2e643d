/*++
 * NAME
 *	test-tnctl-csv 1
 * SUMMARY
 *	unit tests: tnctl import's RFC 4180 reader, and text to JSON per
 *	field type
 *--*/
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <jansson.h>

#include "tn-mem.h"
#include "tnctl-prov.h"

/* Records of text, each as "line|field|field|..." or "line!why". */
static char *csv_records(const char *text)
{
	struct tnctl_csv c;
	struct tnctl_csv_record rec = { 0 };
	const char *why = NULL;
	char *out = tn_mem_strdup(""), *next;
	int ret;

	tnctl_csv_init(&c, text, strlen(text));
	while ((ret = tnctl_csv_next(&c, &rec, &why)) != 0) {
		if (ret < 0) {
			next = tn_mem_printf("%s%u!%s\n", out, rec.line, why);
		} else {
			next = tn_mem_printf("%s%u", out, rec.line);
			for (size_t i = 0; i < rec.n; i++) {
				char *more = tn_mem_printf("%s|%s", next, rec.fields[i]);

				tn_mem_free(&next);
				next = more;
			}
			tn_mem_free(&out);
			out = tn_mem_printf("%s\n", next);
			tn_mem_free(&next);
			continue;
		}
		tn_mem_free(&out);
		out = next;
	}
	tnctl_csv_record_clear(&rec);
	return out;
}

static void test_csv(void **state)
{
	static const struct {
		const char *in, *out;
	} cases[] = {
		{ "a,b,c\n1,2,3\n", "1|a|b|c\n2|1|2|3\n" },
		{ "a,b\r\n1,2\r\n", "1|a|b\n2|1|2\n" },
		{ "a,b\n1,2", "1|a|b\n2|1|2\n" },				/* no final newline */
		{ "a,,\n,,\n", "1|a||\n2|||\n" },				/* empty fields */
		{ "\"x,y\",\"say \"\"hi\"\"\"\n", "1|x,y|say \"hi\"\n" },
		{ "\"two\nlines\",z\nnext,1\n", "1|two\nlines|z\n3|next|1\n" },
		{ "\"crlf\r\ninside\"\r\nn\r\n", "1|crlf\r\ninside\n3|n\n" },
		{ "\n\r\n\na\n\n\nb\n", "4|a\n7|b\n" },			/* blank lines */
		{ "\xef\xbb\xbfh1,h2\n", "1|h1|h2\n" },			/* BOM */
		{ "\"\"\n", "1|\n" },					/* quoted empty */
		{ "a\"b,c\nok\n", "1!a quote inside an unquoted field (quote the whole "
		  "field and double the quote)\n2|ok\n" },
		{ "\"a\"b,c\nok\n", "1!text after a closing quote\n2|ok\n" },
		{ "x\n\"open,\nnever closed\n", "1|x\n2!unterminated quoted field\n" },
		{ "", "" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *out = csv_records(cases[i].in);

		assert_string_equal(out, cases[i].out);
		tn_mem_free(&out);
	}
}

static void test_field_value(void **state)
{
	const struct tnctl_kind *t = tnctl_kind_find("tenant");
	const struct tnctl_kind *m = tnctl_kind_find("mailbox");
	const struct tnctl_kind *a = tnctl_kind_find("alias");
	static const struct {
		const char *kind, *field, *in, *json;	/* json NULL: refused */
	} cases[] = {
		{ "tenant", "storage_quota_bytes", "10G", "10737418240" },
		{ "tenant", "storage_quota_bytes", "2t", "2199023255552" },
		{ "tenant", "storage_quota_bytes", "1024", "1024" },
		{ "tenant", "storage_quota_bytes", "unlimited", "0" },
		{ "tenant", "storage_quota_bytes", "lots", NULL },
		{ "tenant", "max_mailboxes", "100", "100" },
		{ "tenant", "max_mailboxes", "1k", NULL },	/* not a size */
		{ "tenant", "max_mailboxes", "-1", NULL },
		{ "tenant", "max_mailboxes", "9007199254740992", NULL },
		{ "tenant", "overcommit", "yes", "true" },
		{ "tenant", "overcommit", "0", "false" },
		{ "tenant", "overcommit", "maybe", NULL },
		{ "tenant", "name", "null", "\"null\"" },	/* text stays text */
		{ "mailbox", "quota_bytes", "inherit", "null" },
		{ "alias", "targets", "a@x.example, b@x.example c@y.example",
		  "[\"a@x.example\", \"b@x.example\", \"c@y.example\"]" },
		{ "alias", "targets", "[\"a@x.example\"]", "[\"a@x.example\"]" },
	};

	(void)state;
	assert_non_null(t);
	assert_non_null(m);
	assert_non_null(a);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct tnctl_field *f =
			tnctl_field_find(tnctl_kind_find(cases[i].kind), cases[i].field);
		const char *why = NULL;
		json_t *v, *want;

		assert_non_null(f);
		v = tnctl_field_value(f, cases[i].in, &why);
		if (cases[i].json == NULL) {
			assert_null(v);
			assert_non_null(why);
			continue;
		}
		want = json_loads(cases[i].json, JSON_DECODE_ANY, NULL);
		assert_non_null(v);
		assert_true(json_equal(v, want));
		json_decref(v);
		json_decref(want);
	}
}

static void test_check_create(void **state)
{
	static const struct {
		const char *kind, *json, *field;	/* field "": accepted */
	} cases[] = {
		{ "mailbox", "{\"address\":\"a@x.example\",\"quota_bytes\":5}", "" },
		{ "mailbox", "{\"quota_bytes\":5}", "address" },
		{ "mailbox", "{\"address\":\"a@@x.example\"}", "address" },
		{ "mailbox", "{\"address\":\"a@x.example\",\"flavour\":1}", NULL },
		{ "mailbox", "{\"address\":\"a@x.example\",\"quota_bytes\":\"5\"}", "quota_bytes" },
		{ "mailbox", "{\"address\":\"a@x.example\",\"name\":\"a\\nb\"}", "name" },
		{ "mailbox", "{\"address\":\"a@x.example\",\"host\":\"Store1\"}", "host" },
		{ "mailbox", "{\"address\":\"a@x.example\",\"password_hash\":\"{PLAIN}x\"}",
		  "password_hash" },
		{ "mailbox", "{\"address\":\"a@x.example\",\"password\":\"p\","
		  "\"password_hash\":\"{PLAIN}x\"}", "password_hash" },
		{ "tenant", "{\"id\":\"Acme\",\"overcommit\":true}", "" },
		{ "tenant", "{\"id\":\"-acme\"}", "id" },
		{ "tenant", "{\"id\":\"t\",\"status_time\":\"x\"}", NULL },	/* read only */
		{ "domain", "{\"domain\":\"example\"}", "domain" },
		{ "alias", "{\"address\":\"s@x.example\"}", "targets" },
		{ "alias", "{\"address\":\"s@x.example\",\"targets\":[\"s@x.example\"]}", "targets" },
		{ "alias", "{\"address\":\"s@x.example\",\"targets\":[\"a@x.example\","
		  "\"a@x.example\"]}", "targets" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		json_t *obj = json_loads(cases[i].json, 0, NULL);
		const char *field = NULL;
		char *why = NULL;
		int ret = tnctl_check_create(tnctl_kind_find(cases[i].kind), obj, &field, &why);

		if (cases[i].field != NULL && cases[i].field[0] == '\0') {
			assert_int_equal(ret, 0);
		} else {
			assert_int_equal(ret, -1);
			assert_non_null(why);
			if (cases[i].field != NULL)
				assert_string_equal(field, cases[i].field);
		}
		tn_mem_free(&why);
		json_decref(obj);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_csv),
		cmocka_unit_test(test_field_value),
		cmocka_unit_test(test_check_create),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/*++
 * NAME
 *	test-record 1
 * SUMMARY
 *	unit tests: status cascade, limit inheritance, cache encoding
 *--*/
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "tn-mem.h"
#include "tn-record.h"

static struct tn_obj *mk(enum tn_obj_kind kind, const char *key, enum tn_status st,
			 const char *reason)
{
	struct tn_obj *o = tn_obj_create(kind, key);

	o->tenant = tn_mem_strdup("acme");
	o->status = st;
	o->reason = reason != NULL ? tn_mem_strdup(reason) : NULL;
	return o;
}

struct cascade_case {
	enum tn_status t, d, m;
	enum tn_status want;
	enum tn_level from;
	const char *reason;
};

/* Table: the most severe status wins; among equals the outermost. */
static void test_cascade(void **state)
{
	static const struct cascade_case cases[] = {
		{ TN_STATUS_ACTIVE, TN_STATUS_ACTIVE, TN_STATUS_ACTIVE, TN_STATUS_ACTIVE, TN_LEVEL_DEFAULT, NULL },
		{ TN_STATUS_SUSPENDED, TN_STATUS_ACTIVE, TN_STATUS_ACTIVE, TN_STATUS_SUSPENDED, TN_LEVEL_TENANT, "t" },
		{ TN_STATUS_ACTIVE, TN_STATUS_SUSPENDED, TN_STATUS_ACTIVE, TN_STATUS_SUSPENDED, TN_LEVEL_DOMAIN, "d" },
		{ TN_STATUS_ACTIVE, TN_STATUS_ACTIVE, TN_STATUS_SUSPENDED, TN_STATUS_SUSPENDED, TN_LEVEL_OBJECT, "m" },
		{ TN_STATUS_SUSPENDED, TN_STATUS_SUSPENDED, TN_STATUS_SUSPENDED, TN_STATUS_SUSPENDED, TN_LEVEL_TENANT, "t" },
		{ TN_STATUS_SUSPENDED, TN_STATUS_ACTIVE, TN_STATUS_DELETED, TN_STATUS_DELETED, TN_LEVEL_OBJECT, "m" },
		{ TN_STATUS_DELETED, TN_STATUS_SUSPENDED, TN_STATUS_DELETED, TN_STATUS_DELETED, TN_LEVEL_TENANT, "t" },
		{ TN_STATUS_ACTIVE, TN_STATUS_DELETED, TN_STATUS_SUSPENDED, TN_STATUS_DELETED, TN_LEVEL_DOMAIN, "d" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct tn_obj *t = mk(TN_OBJ_TENANT, "acme", cases[i].t, "t");
		struct tn_obj *d = mk(TN_OBJ_DOMAIN, "acme.example", cases[i].d, "d");
		struct tn_obj *m = mk(TN_OBJ_MAILBOX, "a@acme.example", cases[i].m, "m");
		struct tn_account *a = tn_account_compose(t, d, m);

		assert_int_equal(a->status, cases[i].want);
		assert_int_equal(a->status_from, cases[i].from);
		if (cases[i].reason == NULL)
			assert_null(a->status_reason);
		else
			assert_string_equal(a->status_reason, cases[i].reason);
		tn_account_free(&a);
		assert_null(a);
		tn_obj_unref(&t);
		tn_obj_unref(&d);
		tn_obj_unref(&m);
	}
}

static void test_inheritance(void **state)
{
	struct tn_obj *t = mk(TN_OBJ_TENANT, "acme", TN_STATUS_ACTIVE, NULL);
	struct tn_obj *d = mk(TN_OBJ_DOMAIN, "acme.example", TN_STATUS_ACTIVE, NULL);
	struct tn_obj *m = mk(TN_OBJ_MAILBOX, "a@acme.example", TN_STATUS_ACTIVE, NULL);
	struct tn_account *a;

	t->mailbox_quota = 1000;
	t->storage_quota = 50000;
	t->max_msg_size = 300;
	t->send_rate = 200;
	t->pool = tn_mem_strdup("pool-a");
	m->send_rate = 0;	/* explicit unlimited beats the plan */
	a = tn_account_compose(t, d, m);
	assert_int_equal(a->quota.value, 1000);
	assert_int_equal(a->quota.from, TN_LEVEL_TENANT);
	assert_int_equal(a->send_rate.value, 0);
	assert_int_equal(a->send_rate.from, TN_LEVEL_OBJECT);
	assert_int_equal(a->tenant_storage.value, 50000);
	assert_int_equal(a->max_msg_size.value, 300);
	assert_int_equal(a->tenant_send_rate.value, 0);
	assert_int_equal(a->tenant_send_rate.from, TN_LEVEL_DEFAULT);
	assert_string_equal(a->pool, "pool-a");
	assert_int_equal(a->pool_from, TN_LEVEL_TENANT);
	tn_account_free(&a);

	m->mailbox_quota = 5;
	m->pool = tn_mem_strdup("pool-b");
	a = tn_account_compose(t, d, m);
	assert_int_equal(a->quota.value, 5);
	assert_int_equal(a->quota.from, TN_LEVEL_OBJECT);
	assert_string_equal(a->pool, "pool-b");
	assert_int_equal(a->kind, TN_ACCOUNT_MAILBOX);
	tn_account_free(&a);

	/* a domain account: no mailbox limits of its own */
	a = tn_account_compose(t, d, NULL);
	assert_int_equal(a->kind, TN_ACCOUNT_DOMAIN);
	assert_null(a->address);
	assert_int_equal(a->quota.value, 1000);
	tn_account_free(&a);
	tn_obj_unref(&t);
	tn_obj_unref(&d);
	tn_obj_unref(&m);
}

static void test_encode_roundtrip(void **state)
{
	struct tn_obj *m = mk(TN_OBJ_MAILBOX, "a@acme.example", TN_STATUS_SUSPENDED,
			      "abuse \"report\"\n");
	struct tn_obj *al = mk(TN_OBJ_ALIAS, "sales@acme.example", TN_STATUS_ACTIVE, NULL);
	struct tn_obj *back;
	const char *why;
	char *json;

	m->mailbox_quota = 0;
	m->max_msg_size = 12345678901LL;
	m->host = tn_mem_strdup("store1:24");
	m->password = tn_mem_strdup("{SHA512-CRYPT}$6$x");
	json = tn_obj_encode(m);
	back = tn_obj_decode(json, strlen(json), &why);
	assert_non_null(back);
	assert_int_equal(back->kind, TN_OBJ_MAILBOX);
	assert_string_equal(back->key, "a@acme.example");
	assert_string_equal(back->tenant, "acme");
	assert_int_equal(back->status, TN_STATUS_SUSPENDED);
	assert_string_equal(back->reason, "abuse \"report\"\n");
	assert_int_equal(back->mailbox_quota, 0);
	assert_int_equal(back->max_msg_size, 12345678901LL);
	assert_int_equal(back->send_rate, TN_LIMIT_INHERIT);
	assert_string_equal(back->host, "store1:24");
	assert_string_equal(back->password, "{SHA512-CRYPT}$6$x");
	free(json);
	tn_obj_unref(&back);

	tn_obj_add_target(al, "alice@acme.example");
	tn_obj_add_target(al, "ext@else.example");
	json = tn_obj_encode(al);
	back = tn_obj_decode(json, strlen(json), &why);
	assert_non_null(back);
	assert_int_equal(back->ntargets, 2);
	assert_string_equal(back->targets[1], "ext@else.example");
	assert_null(back->targets[2]);
	free(json);
	tn_obj_unref(&back);
	tn_obj_unref(&m);
	tn_obj_unref(&al);
}

static void test_decode_rejects(void **state)
{
	static const char *const bad[] = {
		"", "!", "[]", "{", "null", "{\"kind\":\"mailbox\"}",
		"{\"kind\":\"nonsense\",\"key\":\"a\",\"tenant\":\"t\"}",
		"{\"kind\":\"mailbox\",\"key\":\"a\"}",	/* no tenant */
		"{\"kind\":\"mailbox\",\"key\":\"a\",\"tenant\":\"t\",\"status\":\"weird\"}",
		"{\"kind\":\"mailbox\",\"key\":\"a\",\"tenant\":\"t\",\"mailbox_quota\":-5}",
		"{\"kind\":\"mailbox\",\"key\":\"a\",\"tenant\":\"t\",\"mailbox_quota\":\"5\"}",
		"{\"kind\":\"alias\",\"key\":\"a\",\"tenant\":\"t\"}",	/* no targets */
		"{\"kind\":\"alias\",\"key\":\"a\",\"tenant\":\"t\",\"targets\":[1]}",
		"{\"kind\":\"mailbox\",\"key\":\"a\",\"key\":\"b\",\"tenant\":\"t\"}",
	};
	const char *why;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		why = NULL;
		assert_null(tn_obj_decode(bad[i], strlen(bad[i]), &why));
		assert_non_null(why);
	}
}

static void test_account_dup_and_json(void **state)
{
	struct tn_obj *t = mk(TN_OBJ_TENANT, "acme", TN_STATUS_ACTIVE, NULL);
	struct tn_obj *d = mk(TN_OBJ_DOMAIN, "acme.example", TN_STATUS_ACTIVE, NULL);
	struct tn_obj *al = mk(TN_OBJ_ALIAS, "sales@acme.example", TN_STATUS_ACTIVE, NULL);
	struct tn_account *a = tn_account_compose(t, d, al), *b;
	char *json;

	tn_account_add_target(a, "alice@acme.example");
	b = tn_account_dup(a);
	tn_account_free(&a);
	assert_int_equal(b->kind, TN_ACCOUNT_ALIAS);
	assert_int_equal(b->ntargets, 1);
	assert_string_equal(b->targets[0], "alice@acme.example");
	json = tn_account_to_json(b, false);
	assert_non_null(strstr(json, "\"targets\":[\"alice@acme.example\"]"));
	assert_null(strstr(json, "password"));
	free(json);
	tn_account_free(&b);
	tn_obj_unref(&t);
	tn_obj_unref(&d);
	tn_obj_unref(&al);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cascade),
		cmocka_unit_test(test_inheritance),
		cmocka_unit_test(test_encode_roundtrip),
		cmocka_unit_test(test_decode_rejects),
		cmocka_unit_test(test_account_dup_and_json),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

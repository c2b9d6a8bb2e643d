/*++
 * NAME
 *	test-mcache 1
 * SUMMARY
 *	unit tests: in-process cache hits, expiry, invalidation races, bounds
 *--*/
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <pthread.h>
#include <unistd.h>
#include <cmocka.h>

#include "tn-mcache.h"
#include "tn-mem.h"

static struct tn_obj *mk(const char *key)
{
	struct tn_obj *o = tn_obj_create(TN_OBJ_MAILBOX, key);

	o->tenant = tn_mem_strdup("acme");
	return o;
}

static void test_hit_negative_miss(void **state)
{
	struct tn_mcache *mc = tn_mcache_create(100);
	struct tn_obj *o = mk("a@x"), *got;

	tn_mcache_put(mc, "adr:a@x", o, 10000, tn_mcache_generation(mc));
	tn_mcache_put(mc, "adr:b@x", NULL, 10000, tn_mcache_generation(mc));
	assert_int_equal(tn_mcache_get(mc, "adr:a@x", &got), TN_MCACHE_HIT);
	assert_ptr_equal(got, o);
	tn_obj_unref(&got);
	assert_int_equal(tn_mcache_get(mc, "adr:b@x", &got), TN_MCACHE_NEGATIVE);
	assert_null(got);
	assert_int_equal(tn_mcache_get(mc, "adr:c@x", &got), TN_MCACHE_MISS);
	tn_obj_unref(&o);
	tn_mcache_destroy(&mc);
	assert_null(mc);
}

static void test_expiry(void **state)
{
	struct tn_mcache *mc = tn_mcache_create(100);
	struct tn_obj *o = mk("a@x"), *got;

	tn_mcache_put(mc, "k", o, 20, tn_mcache_generation(mc));
	assert_int_equal(tn_mcache_get(mc, "k", &got), TN_MCACHE_HIT);
	tn_obj_unref(&got);
	usleep(40000);
	assert_int_equal(tn_mcache_get(mc, "k", &got), TN_MCACHE_MISS);
	tn_obj_unref(&o);
	tn_mcache_destroy(&mc);
}

/* A fill that read its data before an invalidation must not land. */
static void test_stale_fill_refused(void **state)
{
	struct tn_mcache *mc = tn_mcache_create(100);
	struct tn_obj *o = mk("a@x"), *got;
	uint64_t gen = tn_mcache_generation(mc);

	tn_mcache_invalidate(mc, "k");
	tn_mcache_put(mc, "k", o, 10000, gen);
	assert_int_equal(tn_mcache_get(mc, "k", &got), TN_MCACHE_MISS);
	gen = tn_mcache_generation(mc);
	tn_mcache_put(mc, "k", o, 10000, gen);
	assert_int_equal(tn_mcache_get(mc, "k", &got), TN_MCACHE_HIT);
	tn_obj_unref(&got);
	tn_mcache_invalidate(mc, "k");
	assert_int_equal(tn_mcache_get(mc, "k", &got), TN_MCACHE_MISS);
	tn_obj_unref(&o);
	tn_mcache_destroy(&mc);
}

static void test_disabled_bypass(void **state)
{
	struct tn_mcache *mc = tn_mcache_create(100);
	struct tn_obj *o = mk("a@x"), *got;

	tn_mcache_put(mc, "k", o, 10000, tn_mcache_generation(mc));
	tn_mcache_set_enabled(mc, false);
	assert_int_equal(tn_mcache_get(mc, "k", &got), TN_MCACHE_MISS);
	tn_mcache_put(mc, "k", o, 10000, tn_mcache_generation(mc));
	tn_mcache_set_enabled(mc, true);
	/* disabling flushed, and the put while disabled was dropped */
	assert_int_equal(tn_mcache_get(mc, "k", &got), TN_MCACHE_MISS);
	assert_int_equal(tn_mcache_count(mc), 0);
	tn_obj_unref(&o);
	tn_mcache_destroy(&mc);

	mc = tn_mcache_create(0);
	assert_false(tn_mcache_enabled(mc));
	tn_mcache_set_enabled(mc, true);
	assert_false(tn_mcache_enabled(mc));
	tn_mcache_destroy(&mc);
}

static void test_bounded(void **state)
{
	struct tn_mcache *mc = tn_mcache_create(160);
	struct tn_obj *o = mk("a@x");
	char key[32];

	for (int i = 0; i < 5000; i++) {
		snprintf(key, sizeof(key), "adr:%d@x", i);
		tn_mcache_put(mc, key, o, 10000, tn_mcache_generation(mc));
	}
	assert_true(tn_mcache_count(mc) <= 160);
	assert_true(tn_mcache_count(mc) >= 100);
	tn_obj_unref(&o);
	tn_mcache_destroy(&mc);
}

static struct tn_mcache *race_mc;
static struct tn_obj *race_obj;

static void *race_thread(void *arg)
{
	char key[32];
	struct tn_obj *got;

	for (int i = 0; i < 20000; i++) {
		snprintf(key, sizeof(key), "k%d", (i * 7 + (int)(intptr_t)arg) % 64);
		if (i % 3 == 0)
			tn_mcache_invalidate(race_mc, key);
		else if (i % 3 == 1)
			tn_mcache_put(race_mc, key, race_obj, 10000, tn_mcache_generation(race_mc));
		else if (tn_mcache_get(race_mc, key, &got) == TN_MCACHE_HIT)
			tn_obj_unref(&got);
	}
	return NULL;
}

static void test_threads(void **state)
{
	pthread_t th[8];

	race_mc = tn_mcache_create(32);
	race_obj = mk("a@x");
	for (intptr_t i = 0; i < 8; i++)
		pthread_create(&th[i], NULL, race_thread, (void *)i);
	for (int i = 0; i < 8; i++)
		pthread_join(th[i], NULL);
	assert_true(tn_mcache_count(race_mc) <= 32);
	tn_mcache_destroy(&race_mc);
	assert_int_equal(race_obj->refcount, 1);
	tn_obj_unref(&race_obj);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hit_negative_miss),
		cmocka_unit_test(test_expiry),
		cmocka_unit_test(test_stale_fill_refused),
		cmocka_unit_test(test_disabled_bypass),
		cmocka_unit_test(test_bounded),
		cmocka_unit_test(test_threads),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

## milters/: tn-quota-milter (Milters issue, part 1). Its unit tests, man
## pages, docs and integration tests are listed here.

# The decisions: pure, linked by the unit test without libmilter.
QUOTA_POLICY_SOURCES = milters/quota-policy.c milters/quota-policy.h

check_PROGRAMS += tests/unit/test-quota-policy
TESTS += tests/unit/test-quota-policy
tests_unit_test_quota_policy_SOURCES = tests/unit/test-quota-policy.c $(QUOTA_POLICY_SOURCES) \
	milters/quota-redis.c milters/quota-redis.h milters/quota-traffic.c milters/quota-traffic.h
tests_unit_test_quota_policy_CFLAGS = $(UNIT_CFLAGS) -I$(top_srcdir)/milters $(HIREDIS_CFLAGS) \
	-DTN_QUOTA_GOLDEN_DIR='"$(abs_top_srcdir)/tests/unit"'
EXTRA_DIST += tests/unit/test-quota-policy.in tests/unit/test-quota-policy.ref
tests_unit_test_quota_policy_LDADD = $(UNIT_LDADD)

# The milter: libmilter callbacks and main(); tn-milter-common is the part
# tn-submit-milter will share (socket options, reload thread, /metrics).
sbin_PROGRAMS += milters/tn-quota-milter
milters_tn_quota_milter_SOURCES = milters/tn-quota-milter.c $(QUOTA_POLICY_SOURCES) \
	milters/quota-redis.c milters/quota-redis.h milters/quota-traffic.c milters/quota-traffic.h \
	milters/tn-milter-common.c milters/tn-milter-common.h
milters_tn_quota_milter_CFLAGS = $(AM_CFLAGS) $(MILTER_CFLAGS) $(JANSSON_CFLAGS) \
	$(HIREDIS_CFLAGS) $(MICROHTTPD_CFLAGS)
milters_tn_quota_milter_LDADD = lib/libtenantmail.la $(MILTER_LIBS) $(JANSSON_LIBS) \
	$(HIREDIS_LIBS) $(MICROHTTPD_LIBS) $(PTHREAD_LIBS)

dist_man_MANS += man/tn-quota-milter.8
EXTRA_DIST += tests/milter/negotiate.lua tests/milter/transaction.lua \
	tests/integration/test_quota_milter.py tests/integration/test_quota_milter_postfix.py \
	docs/milters.md

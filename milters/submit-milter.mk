## milters/: tn-submit-milter (Milters issue, part 2). Its unit tests, man
## pages, docs and integration tests are listed here.

# The decisions: pure, linked by the unit test without libmilter.
SUBMIT_POLICY_SOURCES = milters/submit-policy.c milters/submit-policy.h
SUBMIT_REDIS_SOURCES = milters/submit-redis.c milters/submit-redis.h

check_PROGRAMS += tests/unit/test-submit-policy
TESTS += tests/unit/test-submit-policy
tests_unit_test_submit_policy_SOURCES = tests/unit/test-submit-policy.c \
	$(SUBMIT_POLICY_SOURCES) $(SUBMIT_REDIS_SOURCES)
tests_unit_test_submit_policy_CFLAGS = $(UNIT_CFLAGS) -I$(top_srcdir)/milters \
	$(HIREDIS_CFLAGS) $(OPENSSL_CFLAGS) -DTN_SUBMIT_GOLDEN_DIR='"$(abs_top_srcdir)/tests/unit"'
EXTRA_DIST += tests/unit/test-submit-policy.in tests/unit/test-submit-policy.ref
tests_unit_test_submit_policy_LDADD = $(UNIT_LDADD) $(OPENSSL_LIBS)

# The milter: libmilter callbacks and main(), with tn-milter-common
# (socket options, reload thread, /metrics) shared with tn-quota-milter.
sbin_PROGRAMS += milters/tn-submit-milter
milters_tn_submit_milter_SOURCES = milters/tn-submit-milter.c $(SUBMIT_POLICY_SOURCES) \
	$(SUBMIT_REDIS_SOURCES) milters/submit-commit.c milters/submit-commit.h \
	milters/tn-milter-common.c milters/tn-milter-common.h
milters_tn_submit_milter_CFLAGS = $(AM_CFLAGS) $(MILTER_CFLAGS) $(JANSSON_CFLAGS) \
	$(HIREDIS_CFLAGS) $(MICROHTTPD_CFLAGS) $(OPENSSL_CFLAGS)
milters_tn_submit_milter_LDADD = lib/libtenantmail.la $(MILTER_LIBS) $(JANSSON_LIBS) \
	$(HIREDIS_LIBS) $(MICROHTTPD_LIBS) $(OPENSSL_LIBS) $(PTHREAD_LIBS)

dist_man_MANS += man/tn-submit-milter.8
EXTRA_DIST += tests/milter/submit-negotiate.lua tests/milter/submit-transaction.lua \
	tests/integration/test_submit_milter.py tests/integration/test_submit_milter_postfix.py \
	docs/submit-milter.md

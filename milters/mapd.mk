## milters/: tn-mapd, the Postfix socketmap server (Milters issue, part 0).
## Its unit tests, man pages, docs and integration tests are listed here.
# (milters/README.md: docs/local.mk)

# The protocol and the decisions: pure, linked by the unit test alone.
MAPD_POLICY_SOURCES = milters/mapd-policy.c milters/mapd-policy.h

sbin_PROGRAMS += milters/tn-mapd
milters_tn_mapd_SOURCES = milters/tn-mapd.c $(MAPD_POLICY_SOURCES) \
	milters/mapd-metrics.c milters/mapd-metrics.h
milters_tn_mapd_CFLAGS = $(AM_CFLAGS) $(LIBEVENT_CFLAGS) $(MICROHTTPD_CFLAGS)
milters_tn_mapd_LDADD = lib/libtenantmail.la $(LIBEVENT_LIBS) $(MICROHTTPD_LIBS) \
	$(PTHREAD_LIBS)

check_PROGRAMS += tests/unit/test-mapd-policy
TESTS += tests/unit/test-mapd-policy
tests_unit_test_mapd_policy_SOURCES = tests/unit/test-mapd-policy.c $(MAPD_POLICY_SOURCES)
tests_unit_test_mapd_policy_CFLAGS = $(UNIT_CFLAGS) -I$(top_srcdir)/milters
tests_unit_test_mapd_policy_LDADD = $(UNIT_LDADD)

dist_man_MANS += man/tn-mapd.8
EXTRA_DIST += docs/postfix.md bench/mapd tests/harness/tnpostfix.py \
	tests/integration/test_postfix_harness.py tests/integration/test_mapd.py

## milters/: tn-quota-milter (Milters issue, part 1). Its unit tests, man
## pages, docs and integration tests are listed here.

# The decisions: pure, linked by the unit test without libmilter.
QUOTA_POLICY_SOURCES = milters/quota-policy.c milters/quota-policy.h

check_PROGRAMS += tests/unit/test-quota-policy
TESTS += tests/unit/test-quota-policy
tests_unit_test_quota_policy_SOURCES = tests/unit/test-quota-policy.c $(QUOTA_POLICY_SOURCES)
tests_unit_test_quota_policy_CFLAGS = $(UNIT_CFLAGS) -I$(top_srcdir)/milters
tests_unit_test_quota_policy_LDADD = $(UNIT_LDADD)

## tests/: cmocka unit tests (make check) and the probe the integration
## tests (pytest, real servers; run by scripts/test) drive.
UNIT_TESTS = tests/unit/test-conf tests/unit/test-log tests/unit/test-escape \
	tests/unit/test-record tests/unit/test-mcache tests/unit/test-outbox \
	tests/unit/test-webhook tests/unit/test-prov-input tests/unit/test-tnctl-csv \
	tests/unit/test-usage
check_PROGRAMS += $(UNIT_TESTS)
TESTS += $(UNIT_TESTS)
UNIT_CFLAGS = $(AM_CFLAGS) $(CMOCKA_CFLAGS)
UNIT_LDADD = lib/libtenantmail.la $(CMOCKA_LIBS)

tests_unit_test_conf_SOURCES = tests/unit/test-conf.c
tests_unit_test_conf_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_conf_LDADD = $(UNIT_LDADD)
tests_unit_test_log_SOURCES = tests/unit/test-log.c
tests_unit_test_log_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_log_LDADD = $(UNIT_LDADD)
tests_unit_test_escape_SOURCES = tests/unit/test-escape.c
tests_unit_test_escape_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_escape_LDADD = $(UNIT_LDADD)
tests_unit_test_record_SOURCES = tests/unit/test-record.c
tests_unit_test_record_CFLAGS = $(UNIT_CFLAGS) $(JANSSON_CFLAGS)
tests_unit_test_record_LDADD = $(UNIT_LDADD) $(JANSSON_LIBS)
tests_unit_test_mcache_SOURCES = tests/unit/test-mcache.c
tests_unit_test_mcache_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_mcache_LDADD = $(UNIT_LDADD)
tests_unit_test_outbox_SOURCES = tests/unit/test-outbox.c
tests_unit_test_outbox_CFLAGS = $(UNIT_CFLAGS) $(JANSSON_CFLAGS)
tests_unit_test_outbox_LDADD = $(UNIT_LDADD) $(JANSSON_LIBS)
tests_unit_test_webhook_SOURCES = tests/unit/test-webhook.c
tests_unit_test_webhook_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_webhook_LDADD = $(UNIT_LDADD)
tests_unit_test_prov_input_SOURCES = tests/unit/test-prov-input.c
tests_unit_test_prov_input_CFLAGS = $(UNIT_CFLAGS) $(JANSSON_CFLAGS)
tests_unit_test_prov_input_LDADD = $(UNIT_LDADD) $(JANSSON_LIBS) $(CRYPT_LIBS)
tests_unit_test_usage_SOURCES = tests/unit/test-usage.c
tests_unit_test_usage_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_usage_LDADD = $(UNIT_LDADD)
# tnctl import's CSV reader and field conversion: pure files of provisioning/
tests_unit_test_tnctl_csv_SOURCES = tests/unit/test-tnctl-csv.c provisioning/tnctl-csv.c \
	provisioning/tnctl-fields.c
tests_unit_test_tnctl_csv_CFLAGS = $(UNIT_CFLAGS) $(JANSSON_CFLAGS) -I$(top_srcdir)/provisioning
tests_unit_test_tnctl_csv_LDADD = $(UNIT_LDADD) $(JANSSON_LIBS) $(CRYPT_LIBS)

noinst_PROGRAMS += tests/tn-probe
tests_tn_probe_SOURCES = tests/tn-probe.c
tests_tn_probe_CFLAGS = $(AM_CFLAGS) $(LIBEVENT_CFLAGS) $(JANSSON_CFLAGS)
tests_tn_probe_LDADD = lib/libtenantmail.la $(LIBEVENT_LIBS) $(JANSSON_LIBS)

noinst_PROGRAMS += tests/tn-prov-probe
tests_tn_prov_probe_SOURCES = tests/tn-prov-probe.c
tests_tn_prov_probe_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS)
tests_tn_prov_probe_LDADD = lib/libtenantmail.la $(JANSSON_LIBS)

EXTRA_DIST += tests/harness/tnharness.py tests/harness/tnprobe.py tests/integration/conftest.py \
	tests/integration/test_schema.py tests/integration/test_lookup.py \
	tests/integration/test_faults.py tests/integration/test_docs.py \
	tests/integration/test_tls.py tests/integration/test_events.py tests/integration/test_events_cli.py \
	tests/integration/test_webhook_example.py \
	tests/harness/tnreceiver.py tests/harness/tnhookd.py tests/harness/tnprovd.py tests/integration/test_hookd.py \
	tests/integration/test_prov_dir.py tests/integration/test_prov_core.py \
	tests/integration/test_provisiond.py tests/integration/test_provisiond_http.py tests/integration/test_provisiond_scope.py \
	tests/integration/test_provisiond_batch.py tests/integration/test_shared_conf.py \
	tests/integration/test_openapi.py tests/integration/openapi-3.0-schema.yaml \
	tests/integration/test_tnctl_prov.py tests/integration/test_sandbox.py \
	tests/integration/test_tnctl_sync.py tests/integration/test_auth_tenant.py \
	tests/integration/test_auth_cache.py \
	tests/harness/tndovecot.py tests/harness/authdb_tntest.c \
	tests/integration/test_dovecot_harness.py tests/integration/test_imap_tenant.py \
	tests/integration/test_tenant_quota.py \
	tests/run-unit tests/summarize

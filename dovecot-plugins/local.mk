## dovecot-plugins/: Dovecot 2.3 modules, built against dovecot-dev
## (m4/tn_check_dovecot.m4). Dovecot's headers need Dovecot's config.h
## first, which defines PACKAGE and VERSION as tn-build.h does: these
## targets replace AM_CPPFLAGS (no -include tn-build.h) and read
## configure's results from dovecot-plugins/tn-dovecot-build.h.
## lib/libtenantmail.la is a PIC convenience library: it goes into the
## module whole; only Dovecot's entry points are exported.
dovecot_authdir = $(DOVECOT_AUTH_MODULEDIR)
dovecot_auth_LTLIBRARIES = dovecot-plugins/libauthdb_tenant.la
dovecot_plugins_libauthdb_tenant_la_SOURCES = dovecot-plugins/auth-tenant.c \
	dovecot-plugins/tn-auth-policy.c dovecot-plugins/tn-auth-policy.h \
	dovecot-plugins/tn-lookup-ioloop.c dovecot-plugins/tn-lookup-ioloop.h \
	dovecot-plugins/tn-auth-cache.c dovecot-plugins/tn-auth-cache.h
dovecot_plugins_libauthdb_tenant_la_CPPFLAGS = -DHAVE_CONFIG_H $(DOVECOT_CPPFLAGS) \
	-I$(top_builddir)/dovecot-plugins -I$(top_srcdir)/dovecot-plugins -I$(top_srcdir)/lib
dovecot_plugins_libauthdb_tenant_la_CFLAGS = $(AM_CFLAGS)
dovecot_plugins_libauthdb_tenant_la_LDFLAGS = -module -avoid-version -shared \
	-export-symbols-regex '^authdb_tenant_'
dovecot_plugins_libauthdb_tenant_la_LIBADD = lib/libtenantmail.la

# The driver's pure policy, unit-tested without Dovecot.
check_PROGRAMS += tests/unit/test-auth-policy
TESTS += tests/unit/test-auth-policy
tests_unit_test_auth_policy_SOURCES = tests/unit/test-auth-policy.c \
	dovecot-plugins/tn-auth-policy.c
tests_unit_test_auth_policy_CFLAGS = $(UNIT_CFLAGS) -I$(top_srcdir)/dovecot-plugins
tests_unit_test_auth_policy_LDADD = $(UNIT_LDADD)


# The mail plugin tenant_quota: quota backend "tenant" (a tenant's pool
# counted in Redis). lib11_: loaded after lib10_quota, whose symbols it
# uses (it declares the dependency as well).
dovecot_moduledir = $(DOVECOT_MODULEDIR)
dovecot_module_LTLIBRARIES = dovecot-plugins/lib11_tenant_quota_plugin.la
dovecot_plugins_lib11_tenant_quota_plugin_la_SOURCES = dovecot-plugins/tenant-quota-plugin.c
dovecot_plugins_lib11_tenant_quota_plugin_la_CPPFLAGS = $(dovecot_plugins_libauthdb_tenant_la_CPPFLAGS) \
	$(JANSSON_CFLAGS)
dovecot_plugins_lib11_tenant_quota_plugin_la_CFLAGS = $(AM_CFLAGS)
dovecot_plugins_lib11_tenant_quota_plugin_la_LDFLAGS = -module -avoid-version -shared \
	-export-symbols-regex '^tenant_quota_plugin_'
dovecot_plugins_lib11_tenant_quota_plugin_la_LIBADD = lib/libtenantmail.la

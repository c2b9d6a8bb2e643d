## ldap-schema/: tenantmail.schema is the one hand-kept source; the
## cn=config LDIF is generated from it at build time.
schemadir = $(datadir)/tenantmail/ldap-schema
dist_schema_DATA = ldap-schema/tenantmail.schema ldap-schema/indexes.conf \
	ldap-schema/indexes.ldif ldap-schema/acl.conf ldap-schema/acl.ldif \
	ldap-schema/example-dit.ldif ldap-schema/unique.conf ldap-schema/unique.ldif \
	ldap-schema/limits.conf ldap-schema/limits.ldif
nodist_schema_DATA = ldap-schema/tenantmail.ldif
dist_noinst_SCRIPTS += ldap-schema/schema2ldif
EXTRA_DIST += ldap-schema/README.md
CLEANFILES += ldap-schema/tenantmail.ldif

ldap-schema/tenantmail.ldif: ldap-schema/tenantmail.schema ldap-schema/schema2ldif
	$(AM_V_GEN)$(MKDIR_P) ldap-schema && \
	$(PYTHON3) $(srcdir)/ldap-schema/schema2ldif $(srcdir)/ldap-schema/tenantmail.schema > $@.tmp && mv $@.tmp $@

all-local: ldap-schema/tenantmail.ldif

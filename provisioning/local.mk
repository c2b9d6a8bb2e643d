## provisioning/: tnctl (and, with the Provisioning issue, tn-provisiond).
sbin_PROGRAMS += provisioning/tnctl
provisioning_tnctl_SOURCES = provisioning/tnctl.c provisioning/tnctl.h \
	provisioning/tnctl-events.c provisioning/tnctl-spool.c provisioning/tnctl-verify.c \
	provisioning/tnctl-api.c provisioning/tnctl-api.h provisioning/tnctl-prov.c \
	provisioning/tnctl-prov.h provisioning/tnctl-fields.c provisioning/tnctl-csv.c \
	provisioning/tnctl-import.c provisioning/tnctl-bulk.c provisioning/tnctl-sync.c \
	provisioning/tnctl-ldif.c provisioning/tnctl-usage.c
provisioning_tnctl_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS) $(CURL_CFLAGS) $(OPENSSL_CFLAGS)
provisioning_tnctl_LDADD = lib/libtenantmail.la $(JANSSON_LIBS) $(CURL_LIBS) $(OPENSSL_LIBS)

sbin_PROGRAMS += provisioning/tn-provisiond
provisioning_tn_provisiond_SOURCES = provisioning/tn-provisiond.c provisioning/provd.h \
	provisioning/provd-tokens.c provisioning/provd-routes.c provisioning/provd-idem.c
provisioning_tn_provisiond_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS) $(MICROHTTPD_CFLAGS) \
	$(OPENSSL_CFLAGS)
provisioning_tn_provisiond_LDADD = lib/libtenantmail.la $(JANSSON_LIBS) $(MICROHTTPD_LIBS) \
	$(OPENSSL_LIBS) $(PTHREAD_LIBS)

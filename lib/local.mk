## lib/: the convenience library every program and plugin links (PIC, not installed).
noinst_LTLIBRARIES += lib/libtenantmail.la
lib_libtenantmail_la_SOURCES = \
	lib/tn-mem.c lib/tn-mem.h \
	lib/tn-time.c lib/tn-time.h \
	lib/tn-log.c lib/tn-log.h \
	lib/tn-conf.c lib/tn-conf.h lib/tn-conf-shared.h \
	lib/tn-escape.c lib/tn-escape.h \
	lib/tn-record.c lib/tn-record.h \
	lib/tn-dir.c lib/tn-dir.h \
	lib/tn-cache.c lib/tn-cache.h \
	lib/tn-mcache.c lib/tn-mcache.h \
	lib/tn-lookup.c lib/tn-lookup.h \
	lib/tn-lookup-params.c \
	lib/tn-lookup-event.c lib/tn-lookup-event.h \
	lib/tn-outbox.c lib/tn-outbox.h \
	lib/tn-usage.c lib/tn-usage.h \
	lib/tn-webhook.c lib/tn-webhook.h \
	lib/tn-hook-spool.c lib/tn-hook-spool.h \
	lib/tn-daemon.c lib/tn-daemon.h \
	lib/tn-idem.c lib/tn-idem.h \
	lib/tn-place.c lib/tn-place.h lib/tn-place-record.c lib/tn-place-record.h \
	lib/tn-router-params.c \
	lib/tn-prov.c lib/tn-prov.h lib/tn-prov-int.h lib/tn-prov-ldap.c \
	lib/tn-prov-write.c lib/tn-prov-input.c lib/tn-prov-input.h
lib_libtenantmail_la_CFLAGS = $(AM_CFLAGS) $(LDAP_CFLAGS) $(HIREDIS_CFLAGS) \
	$(JANSSON_CFLAGS) $(LIBEVENT_CFLAGS) $(OPENSSL_CFLAGS) $(CRYPT_CFLAGS)
lib_libtenantmail_la_LIBADD = $(LDAP_LIBS) $(HIREDIS_LIBS) $(JANSSON_LIBS) \
	$(LIBEVENT_LIBS) $(OPENSSL_LIBS) $(CRYPT_LIBS) $(PTHREAD_LIBS)

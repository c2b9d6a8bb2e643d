## billing-hook/: tn-hookd, the webhook deliverer of the event outbox.
sbin_PROGRAMS += billing-hook/tn-hookd
billing_hook_tn_hookd_SOURCES = billing-hook/tn-hookd.c billing-hook/hookd.h \
	billing-hook/hookd-queue.c billing-hook/hookd-metrics.c
billing_hook_tn_hookd_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS) $(LIBEVENT_CFLAGS) \
	$(CURL_CFLAGS) $(MICROHTTPD_CFLAGS) $(OPENSSL_CFLAGS)
billing_hook_tn_hookd_LDADD = lib/libtenantmail.la $(JANSSON_LIBS) $(LIBEVENT_LIBS) \
	$(CURL_LIBS) $(MICROHTTPD_LIBS) $(OPENSSL_LIBS) $(PTHREAD_LIBS)

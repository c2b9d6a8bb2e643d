## bench/: benchmarks, run by hand (never part of the test command).
noinst_PROGRAMS += bench/tn-bench-lookup bench/tn-bench-receiver bench/tn-bench-hookd
bench_tn_bench_lookup_SOURCES = bench/tn-bench-lookup.c
bench_tn_bench_lookup_CFLAGS = $(AM_CFLAGS) $(LDAP_CFLAGS) $(HIREDIS_CFLAGS)
bench_tn_bench_lookup_LDADD = lib/libtenantmail.la $(LDAP_LIBS) $(HIREDIS_LIBS)
bench_tn_bench_receiver_SOURCES = bench/tn-bench-receiver.c
bench_tn_bench_receiver_CFLAGS = $(AM_CFLAGS) $(MICROHTTPD_CFLAGS) $(JANSSON_CFLAGS)
bench_tn_bench_receiver_LDADD = lib/libtenantmail.la $(MICROHTTPD_LIBS) $(JANSSON_LIBS) \
	$(PTHREAD_LIBS)
bench_tn_bench_hookd_SOURCES = bench/tn-bench-hookd.c
bench_tn_bench_hookd_CFLAGS = $(AM_CFLAGS) $(CURL_CFLAGS) $(JANSSON_CFLAGS)
bench_tn_bench_hookd_LDADD = lib/libtenantmail.la $(CURL_LIBS) $(JANSSON_LIBS) $(PTHREAD_LIBS)
EXTRA_DIST += bench/tnbenchstat.py bench/lookup bench/hookd bench/provision bench/auth bench/quota bench/README.md
noinst_PROGRAMS += bench/tn-bench-noop-milter
bench_tn_bench_noop_milter_SOURCES = bench/tn-bench-noop-milter.c
bench_tn_bench_noop_milter_CFLAGS = $(AM_CFLAGS) $(MILTER_CFLAGS)
bench_tn_bench_noop_milter_LDADD = $(MILTER_LIBS) $(PTHREAD_LIBS)
EXTRA_DIST += bench/smtp
noinst_PROGRAMS += bench/tn-bench-lmtp
bench_tn_bench_lmtp_SOURCES = bench/tn-bench-lmtp.c
bench_tn_bench_lmtp_CFLAGS = $(AM_CFLAGS) $(LIBEVENT_CFLAGS)
bench_tn_bench_lmtp_LDADD = $(LIBEVENT_LIBS)
EXTRA_DIST += bench/lmtp

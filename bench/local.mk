## bench/: benchmarks, run by hand (never part of the test command).
noinst_PROGRAMS += bench/tn-bench-lookup
bench_tn_bench_lookup_SOURCES = bench/tn-bench-lookup.c
bench_tn_bench_lookup_CFLAGS = $(AM_CFLAGS) $(LDAP_CFLAGS) $(HIREDIS_CFLAGS)
bench_tn_bench_lookup_LDADD = lib/libtenantmail.la $(LDAP_LIBS) $(HIREDIS_LIBS)
EXTRA_DIST += bench/lookup bench/README.md

## lmtp-router/: tn-lmtp-router (LMTP router issue). Its unit tests, man
## pages, docs and integration tests are listed here too, so that this
## fragment is the only build file the router's work touches.
# (lmtp-router/README.md: docs/local.mk)
sbin_PROGRAMS += lmtp-router/tn-lmtp-router
lmtp_router_tn_lmtp_router_SOURCES = lmtp-router/tn-lmtp-router.c lmtp-router/router.h \
	lmtp-router/router-route.c lmtp-router/router-route.h \
	lmtp-router/router-session.c lmtp-router/router-store.c \
	lmtp-router/router-control.c lmtp-router/router-metrics.c lmtp-router/router-spool.c \
	lmtp-router/router-place.c
lmtp_router_tn_lmtp_router_CFLAGS = $(AM_CFLAGS) $(LIBEVENT_CFLAGS) $(JANSSON_CFLAGS)
lmtp_router_tn_lmtp_router_LDADD = lib/libtenantmail.la $(LIBEVENT_LIBS) $(JANSSON_LIBS) \
	$(PTHREAD_LIBS)

# the routing decisions, without a network; tn-auth-policy.c is linked to
# check that the router and the Dovecot userdb agree on who has mail
check_PROGRAMS += tests/unit/test-router-route
TESTS += tests/unit/test-router-route
tests_unit_test_router_route_SOURCES = tests/unit/test-router-route.c \
	lmtp-router/router-route.c dovecot-plugins/tn-auth-policy.c
tests_unit_test_router_route_CFLAGS = $(AM_CFLAGS) $(CMOCKA_CFLAGS) \
	-I$(top_srcdir)/lmtp-router -I$(top_srcdir)/dovecot-plugins
tests_unit_test_router_route_LDADD = lib/libtenantmail.la $(CMOCKA_LIBS)

dist_man_MANS += man/tn-lmtp-router.8
EXTRA_DIST += docs/lmtp-router.md tests/harness/tnrouter.py \
	tests/integration/test_lmtp_router.py tests/integration/test_lmtp_router_postfix.py \
	tests/integration/test_lmtp_router_placement.py

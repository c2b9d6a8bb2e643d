/*++
 * NAME
 *	test-router-route 1
 * SUMMARY
 *	unit tests of tn-lmtp-router's routing decisions (router-route.c)
 * DESCRIPTION
 *	Table-driven: pools from router_pool_members items, the decision
 *	for each kind of lookup answer (host, pool, default pool, unknown
 *	pool, tempfail, not found, alias, suspended and deleted at each
 *	level of the cascade), the member order with members down and
 *	drained, MAIL/RCPT argument parsing and reply formatting. The
 *	cascade table is also checked against the Dovecot userdb's verdict
 *	(tn_auth_user_verdict): a mailbox the store's userdb would not know
 *	is one the router refuses, and the other way round.
 *
 *	Placement (router_placement): the same address always goes to the
 *	same member of the default pool whatever the configured order;
 *	members get about 1/N each; a member added takes about 1/N and
 *	moves nothing between the others; a member removed moves only its
 *	own mailboxes; a placement recorded in tnMailHost is where both the
 *	router and the Dovecot proxy (tn_auth_route) go. The hash itself is
 *	pinned by a few known scores (lib/tn-place.c: a change would move
 *	every unrecorded mailbox), and the Dovecot proxy's own placement
 *	(dovecot_placement, reading the router's section of the same file)
 *	picks the router's member, port dropped, for every address.
 *--*/
#include "tn-build.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "router-route.h"
#include "tn-auth-policy.h"
#include "tn-conf-shared.h"
#include "tn-mem.h"

static const char *const pool_items[] = {
	"pool-a=127.0.0.1:2401", "pool-a=127.0.0.2", "pool-b=[::1]:2403",
	"pool-a=store3.example:2405", NULL,
};

static struct tn_router_pools *pools_make(const char *def)
{
	struct tn_router_pools *p;
	const char *error;

	assert_int_equal(tn_router_route_pools_parse(pool_items, def, 24, &p, &error), 0);
	return p;
}

static void test_pools_parse(void **state)
{
	struct tn_router_pools *p = pools_make("pool-b");

	(void)state;
	assert_int_equal(tn_router_route_npools(p), 2);
	assert_string_equal(tn_router_route_pool_name(p, 0), "pool-a");
	assert_int_equal(tn_router_route_nmembers(p, 0), 3);
	assert_string_equal(tn_router_route_member(p, 0, 0), "127.0.0.1:2401");
	assert_string_equal(tn_router_route_member(p, 0, 1), "127.0.0.2:24");
	assert_string_equal(tn_router_route_member(p, 0, 2), "store3.example:2405");
	assert_string_equal(tn_router_route_member(p, 1, 0), "[::1]:2403");
	assert_int_equal(tn_router_route_pool_find(p, "pool-b"), 1);
	assert_int_equal(tn_router_route_pool_find(p, "pool-c"), -1);
	tn_router_route_pools_free(&p);
	assert_null(p);
}

static void test_pools_parse_errors(void **state)
{
	static const char *const bad[][3] = {
		{ "no-equals", NULL, NULL },
		{ "=127.0.0.1:24", NULL, NULL },
		{ "p=127.0.0.1:0", NULL, NULL },
		{ "p=127.0.0.1:99999", NULL, NULL },
		{ "p=::1", NULL, NULL },
		{ "p=host name", NULL, NULL },
		{ "p=a:24", "p=a", NULL },		/* the same member twice */
	};
	struct tn_router_pools *p;
	const char *error;
	const char *const one[] = { "p=a:24", NULL };

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		error = NULL;
		assert_int_equal(tn_router_route_pools_parse(bad[i], "", 24, &p, &error), -1);
		assert_non_null(error);
	}
	assert_int_equal(tn_router_route_pools_parse(one, "nosuch", 24, &p, &error), -1);
	assert_non_null(strstr(error, "router_default_pool"));
}

static struct tn_account *acct_make(enum tn_account_kind kind, enum tn_status status,
				    enum tn_level from, const char *host, const char *pool)
{
	struct tn_account *a = tn_mem_calloc(1, sizeof(*a));

	a->kind = kind;
	a->status = status;
	a->status_from = from;
	a->tenant = tn_mem_strdup("acme");
	a->address = tn_mem_strdup("alice@acme.example");
	a->password = tn_mem_strdup("{PLAIN}x");
	a->host = host != NULL ? tn_mem_strdup(host) : NULL;
	a->pool = pool != NULL ? tn_mem_strdup(pool) : NULL;
	return a;
}

struct decide_case {
	enum tn_result res;
	enum tn_account_kind kind;
	enum tn_status status;
	const char *host, *pool, *def;
	enum tn_router_verdict verdict;
	enum tn_router_via via;
	const char *where;		/* host or pool name */
	const char *reply;		/* prefix */
};

static const struct decide_case decide_cases[] = {
	{ TN_FOUND, TN_ACCOUNT_MAILBOX, TN_STATUS_ACTIVE, "10.0.0.1", "pool-a", "",
	  TN_ROUTER_ROUTE, TN_ROUTER_VIA_HOST, "10.0.0.1:24", NULL },
	{ TN_FOUND, TN_ACCOUNT_MAILBOX, TN_STATUS_ACTIVE, "store1.example:2424", NULL, "",
	  TN_ROUTER_ROUTE, TN_ROUTER_VIA_HOST, "store1.example:2424", NULL },
	{ TN_FOUND, TN_ACCOUNT_MAILBOX, TN_STATUS_ACTIVE, "", "pool-b", "pool-a",
	  TN_ROUTER_ROUTE, TN_ROUTER_VIA_POOL, "pool-b", NULL },
	{ TN_FOUND, TN_ACCOUNT_MAILBOX, TN_STATUS_ACTIVE, NULL, NULL, "pool-a",
	  TN_ROUTER_ROUTE, TN_ROUTER_VIA_DEFAULT, "pool-a", NULL },
	{ TN_FOUND, TN_ACCOUNT_MAILBOX, TN_STATUS_ACTIVE, NULL, NULL, "",
	  TN_ROUTER_NOROUTE, TN_ROUTER_VIA_DEFAULT, NULL, "451 4.3.5" },
	{ TN_FOUND, TN_ACCOUNT_MAILBOX, TN_STATUS_ACTIVE, NULL, "pool-z", "pool-a",
	  TN_ROUTER_NOROUTE, TN_ROUTER_VIA_POOL, NULL, "451 4.3.5" },
	{ TN_FOUND, TN_ACCOUNT_MAILBOX, TN_STATUS_ACTIVE, "bad host:x", NULL, "pool-a",
	  TN_ROUTER_NOROUTE, TN_ROUTER_VIA_NONE, NULL, "451 4.3.5" },
	{ TN_FOUND, TN_ACCOUNT_MAILBOX, TN_STATUS_SUSPENDED, NULL, "pool-a", "",
	  TN_ROUTER_ROUTE, TN_ROUTER_VIA_POOL, "pool-a", NULL },
	{ TN_FOUND, TN_ACCOUNT_MAILBOX, TN_STATUS_DELETED, NULL, "pool-a", "",
	  TN_ROUTER_UNKNOWN, TN_ROUTER_VIA_NONE, NULL, "550 5.1.1" },
	{ TN_FOUND, TN_ACCOUNT_ALIAS, TN_STATUS_ACTIVE, NULL, "pool-a", "",
	  TN_ROUTER_UNKNOWN, TN_ROUTER_VIA_NONE, NULL, "550 5.1.1" },
	{ TN_NOTFOUND, TN_ACCOUNT_MAILBOX, TN_STATUS_ACTIVE, NULL, NULL, "pool-a",
	  TN_ROUTER_UNKNOWN, TN_ROUTER_VIA_NONE, NULL, "550 5.1.1" },
	{ TN_TEMPFAIL, TN_ACCOUNT_MAILBOX, TN_STATUS_ACTIVE, NULL, NULL, "pool-a",
	  TN_ROUTER_TEMPFAIL, TN_ROUTER_VIA_NONE, NULL, "451 4.3.0" },
};

static void test_decide(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(decide_cases) / sizeof(decide_cases[0]); i++) {
		const struct decide_case *c = &decide_cases[i];
		struct tn_router_pools *p = pools_make(c->def);
		struct tn_account *a = c->res == TN_FOUND ?
			acct_make(c->kind, c->status, TN_LEVEL_OBJECT, c->host, c->pool) : NULL;
		struct tn_router_route rt;

		tn_router_route_decide(p, c->res, a, &rt);
		if (rt.verdict != c->verdict)
			fail_msg("case %zu: verdict %d, expected %d", i, rt.verdict, c->verdict);
		if (c->verdict == TN_ROUTER_ROUTE) {
			assert_int_equal(rt.via, c->via);
			if (c->via == TN_ROUTER_VIA_HOST)
				assert_string_equal(rt.host, c->where);
			else
				assert_string_equal(tn_router_route_pool_name(p, (size_t)rt.pool),
						    c->where);
		} else {
			assert_non_null(rt.reply);
			if (strncmp(rt.reply, c->reply, strlen(c->reply)) != 0)
				fail_msg("case %zu: reply %s", i, rt.reply);
			assert_non_null(rt.why);
		}
		tn_router_route_clear(&rt);
		tn_account_free(&a);
		tn_router_route_pools_free(&p);
	}
}

/* Every status at every level of the cascade, and aliases: the router
 * refuses exactly what the store's userdb would not know. */
static void test_agrees_with_userdb(void **state)
{
	struct tn_router_pools *p = pools_make("pool-a");

	(void)state;
	for (int kind = TN_ACCOUNT_MAILBOX; kind <= TN_ACCOUNT_ALIAS; kind++) {
		for (int st = TN_STATUS_ACTIVE; st <= TN_STATUS_DELETED; st++) {
			for (int lv = TN_LEVEL_TENANT; lv <= TN_LEVEL_OBJECT; lv++) {
				struct tn_account *a = acct_make(kind, st, lv, NULL, "pool-a");
				struct tn_router_route rt;
				const char *reason;
				enum tn_auth_verdict v = tn_auth_user_verdict(TN_FOUND, a, &reason);

				tn_router_route_decide(p, TN_FOUND, a, &rt);
				if ((v == TN_AUTH_OK) != (rt.verdict == TN_ROUTER_ROUTE))
					fail_msg("kind %d status %d level %d: userdb %d, router %d",
						 kind, st, lv, v, rt.verdict);
				tn_router_route_clear(&rt);
				tn_account_free(&a);
			}
		}
	}
	tn_router_route_pools_free(&p);
}

static void test_order(void **state)
{
	static const struct {
		struct tn_router_member_state st[4];
		size_t n;
		size_t order[4];
		size_t k;
	} cases[] = {
		{ { { true, false }, { true, false }, { true, false } }, 3, { 0, 1, 2 }, 3 },
		{ { { false, false }, { true, false }, { true, false } }, 3, { 1, 2 }, 2 },
		{ { { true, true }, { true, false }, { true, false } }, 3, { 1, 2, 0 }, 3 },
		{ { { true, true }, { false, false }, { true, true } }, 3, { 0, 2 }, 2 },
		{ { { false, false }, { false, true } }, 2, { 0 }, 0 },
		{ { { true, true } }, 1, { 0 }, 1 },
	};
	size_t order[4];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t k = tn_router_route_order(cases[i].st, cases[i].n, order);

		assert_int_equal(k, cases[i].k);
		for (size_t j = 0; j < k; j++)
			assert_int_equal(order[j], cases[i].order[j]);
	}
}

static void test_hostport(void **state)
{
	static const char *const ok[][2] = {
		{ "host", "host:24" }, { "host:2424", "host:2424" },
		{ "10.1.2.3", "10.1.2.3:24" }, { "[::1]", "[::1]:24" },
		{ "[2001:db8::1]:25", "[2001:db8::1]:25" },
	};
	static const char *const bad[] = {
		"", "host:", "host:x", ":24", "::1", "[::1", "[::1]x", "a b", "host:24:25",
		"h\r\nost",
	};
	const char *error;
	char *out, *host;
	unsigned port;

	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		assert_int_equal(tn_router_route_hostport(ok[i][0], 24, &out, &error), 0);
		assert_string_equal(out, ok[i][1]);
		tn_mem_free(&out);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (tn_router_route_hostport(bad[i], 24, &out, &error) == 0)
			fail_msg("%s accepted as %s", bad[i], out);
	}
	assert_int_equal(tn_router_route_split("[::1]:2403", &host, &port), 0);
	assert_string_equal(host, "::1");
	assert_int_equal(port, 2403);
	tn_mem_free(&host);
}

static void test_parse_path(void **state)
{
	const char *rest;
	char *path, kw[16], val[16];

	(void)state;
	assert_int_equal(tn_router_route_parse_path("<a@b.example> SIZE=12 BODY=8bitmime",
						    &path, &rest), 0);
	assert_string_equal(path, "a@b.example");
	tn_mem_free(&path);
	assert_int_equal(tn_router_route_parse_param(&rest, kw, sizeof(kw), val, sizeof(val)), 1);
	assert_string_equal(kw, "SIZE");
	assert_string_equal(val, "12");
	assert_int_equal(tn_router_route_parse_param(&rest, kw, sizeof(kw), val, sizeof(val)), 1);
	assert_string_equal(kw, "BODY");
	assert_string_equal(val, "8bitmime");
	assert_int_equal(tn_router_route_parse_param(&rest, kw, sizeof(kw), val, sizeof(val)), 0);
	assert_int_equal(tn_router_route_parse_path(" <>", &path, &rest), 0);
	assert_string_equal(path, "");
	tn_mem_free(&path);
	assert_int_equal(tn_router_route_parse_path("a@b", &path, &rest), -1);
	assert_int_equal(tn_router_route_parse_path("<a@b", &path, &rest), -1);
	assert_int_equal(tn_router_route_parse_path("<a b@c>", &path, &rest), -1);
	assert_int_equal(tn_router_route_parse_path("<a@b>x", &path, &rest), -1);
	assert_int_equal(tn_router_route_parse_path("<a\x01@b>", &path, &rest), -1);
	rest = " SIZE=";
	assert_int_equal(tn_router_route_parse_param(&rest, kw, sizeof(kw), val, sizeof(val)), -1);
	rest = " X=0123456789abcdefghij";
	assert_int_equal(tn_router_route_parse_param(&rest, kw, sizeof(kw), val, sizeof(val)), -1);
	rest = " S!ZE=1";
	assert_int_equal(tn_router_route_parse_param(&rest, kw, sizeof(kw), val, sizeof(val)), -1);
}

static void test_xtext(void **state)
{
	static const char *const ok[][2] = {
		{ "Q+41BC", "QABC" }, { "mx.example", "mx.example" }, { "[UNAVAILABLE]", "[UNAVAILABLE]" },
		{ "a+2Bb", "a+b" }, { "+4", "+4" }, { "", "" },
	};
	static const char *const bad[] = { "a+0Ab", "a+7Fb", "x\x01", "\xc3\xa9" };
	char *out, big[300];

	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		out = tn_router_route_xtext(ok[i][0], strlen(ok[i][0]));
		assert_non_null(out);
		assert_string_equal(out, ok[i][1]);
		tn_mem_free(&out);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_null(tn_router_route_xtext(bad[i], strlen(bad[i])));
	memset(big, 'a', sizeof(big));
	assert_null(tn_router_route_xtext(big, sizeof(big)));
	out = tn_router_route_xtext("abc=def", 3);	/* n bounds the input */
	assert_string_equal(out, "abc");
	tn_mem_free(&out);
}

static void test_reply(void **state)
{
	char *r;

	(void)state;
	r = tn_router_route_reply(250, "2.0.0 <a@b> Saved", "S1");
	assert_string_equal(r, "250 2.0.0 <a@b> Saved [S1]");
	tn_mem_free(&r);
	r = tn_router_route_reply(452, "4.2.2 over\r\nquota", "S2");
	assert_string_equal(r, "452 4.2.2 over\\x0d\\x0aquota [S2]");
	tn_mem_free(&r);
	r = tn_router_route_reply(999, "x", "S3");
	assert_string_equal(r, "451 x [S3]");
	tn_mem_free(&r);
}

/* --- placement by rendezvous hashing ---------------------------------------------- */

#define PLACE_ADDRS 20000

static struct tn_router_pools *place_pools(const char *const *members, size_t n,
					   enum tn_router_placement pm)
{
	const char *items[16];
	struct tn_router_pools *p;
	const char *error;
	char buf[16][64];

	assert_true(n < 16);
	for (size_t i = 0; i < n; i++) {
		snprintf(buf[i], sizeof(buf[i]), "d=%s", members[i]);
		items[i] = buf[i];
	}
	items[n] = NULL;
	assert_int_equal(tn_router_route_pools_parse(items, "d", 24, &p, &error), 0);
	tn_router_route_set_placement(p, pm);
	return p;
}

static const char *place_of(const struct tn_router_pools *p, size_t i)
{
	char addr[64];

	snprintf(addr, sizeof(addr), "user%zu@tenant%zu.example", i, i % 97);
	return tn_router_route_member(p, 0, tn_router_route_place(p, 0, addr));
}

static const char *const place_members[] = {
	"10.0.0.1:24", "10.0.0.2:24", "store3.example:24", "store4.example:2424",
	"10.0.0.5:24",
};

/* The same address always lands on the same member, whatever the
 * order the members are configured in and the case of the address. */
static void test_place_stable(void **state)
{
	const char *const rev[] = { place_members[3], place_members[2], place_members[1],
				    place_members[0] };
	struct tn_router_pools *a = place_pools(place_members, 4, TN_ROUTER_PLACE_HASH);
	struct tn_router_pools *b = place_pools(rev, 4, TN_ROUTER_PLACE_HASH);

	(void)state;
	for (size_t i = 0; i < PLACE_ADDRS; i++) {
		assert_string_equal(place_of(a, i), place_of(b, i));
		assert_string_equal(place_of(a, i), place_of(a, i));
	}
	assert_int_equal(tn_router_route_place(a, 0, "Alice@ACME.example"),
			 tn_router_route_place(a, 0, "alice@acme.example"));
	assert_true(tn_router_route_hrw_score("10.0.0.1:24", "a@b.example") !=
		    tn_router_route_hrw_score("10.0.0.2:24", "a@b.example"));
	tn_router_route_pools_free(&a);
	tn_router_route_pools_free(&b);
}

/* Each of N members gets about 1/N of the mailboxes. */
static void test_place_balance(void **state)
{
	struct tn_router_pools *p = place_pools(place_members, 4, TN_ROUTER_PLACE_HASH);
	size_t count[4] = { 0 };

	(void)state;
	for (size_t i = 0; i < PLACE_ADDRS; i++) {
		char addr[64];

		snprintf(addr, sizeof(addr), "user%zu@tenant%zu.example", i, i % 97);
		count[tn_router_route_place(p, 0, addr)]++;
	}
	for (size_t j = 0; j < 4; j++) {
		if (count[j] < PLACE_ADDRS / 4 * 9 / 10 || count[j] > PLACE_ADDRS / 4 * 11 / 10)
			fail_msg("member %zu got %zu of %d", j, count[j], PLACE_ADDRS);
	}
	tn_router_route_pools_free(&p);
}

/* A fifth member takes about 1/5 of the mailboxes, all from the others,
 * and no mailbox moves between the four old members. */
static void test_place_add_member(void **state)
{
	struct tn_router_pools *four = place_pools(place_members, 4, TN_ROUTER_PLACE_HASH);
	struct tn_router_pools *five = place_pools(place_members, 5, TN_ROUTER_PLACE_HASH);
	size_t moved = 0;

	(void)state;
	for (size_t i = 0; i < PLACE_ADDRS; i++) {
		const char *before = place_of(four, i), *after = place_of(five, i);

		if (strcmp(before, after) == 0)
			continue;
		moved++;
		assert_string_equal(after, place_members[4]);
	}
	if (moved < PLACE_ADDRS / 5 * 9 / 10 || moved > PLACE_ADDRS / 5 * 11 / 10)
		fail_msg("%zu of %d moved (expected about 1/5)", moved, PLACE_ADDRS);
	tn_router_route_pools_free(&four);
	tn_router_route_pools_free(&five);
}

/* Removing a member moves its own mailboxes only, spread over the rest. */
static void test_place_remove_member(void **state)
{
	const char *const rest[] = { place_members[0], place_members[2], place_members[3],
				     place_members[4] };
	struct tn_router_pools *all = place_pools(place_members, 5, TN_ROUTER_PLACE_HASH);
	struct tn_router_pools *less = place_pools(rest, 4, TN_ROUTER_PLACE_HASH);
	size_t gone = 0, to[5] = { 0 };

	(void)state;
	for (size_t i = 0; i < PLACE_ADDRS; i++) {
		const char *before = place_of(all, i), *after = place_of(less, i);

		if (strcmp(before, place_members[1]) != 0) {
			assert_string_equal(before, after);
			continue;
		}
		gone++;
		for (size_t j = 0; j < 5; j++)
			to[j] += strcmp(after, place_members[j]) == 0;
	}
	assert_true(gone > 0);
	assert_int_equal(to[1], 0);
	for (size_t j = 0; j < 5; j++) {
		if (j != 1 && (to[j] < gone / 4 * 7 / 10 || to[j] > gone / 4 * 13 / 10))
			fail_msg("member %zu took %zu of the %zu moved", j, to[j], gone);
	}
	tn_router_route_pools_free(&all);
	tn_router_route_pools_free(&less);
}

/* The decision with each router_placement: only mailboxes bound for the
 * default pool are placed; hash-record asks for the write; once the
 * placement is in tnMailHost the router goes there as a pinned host and
 * the Dovecot proxy (tn_auth_route) reads the same store. */
static void test_decide_placement(void **state)
{
	static const char *const proxy_pools[] = { "pool-a:10.9.9.9", NULL };
	const struct tn_auth_settings set = { .default_host = "10.8.8.8",
					      .pool_hosts = proxy_pools };
	struct tn_router_route rt, again;
	char *proxy_host, *member_host;
	unsigned port;

	(void)state;
	for (int pm = TN_ROUTER_PLACE_NONE; pm <= TN_ROUTER_PLACE_RECORD; pm++) {
		struct tn_router_pools *p = place_pools(place_members, 5, pm);
		struct tn_account *a = acct_make(TN_ACCOUNT_MAILBOX, TN_STATUS_ACTIVE,
						 TN_LEVEL_OBJECT, NULL, NULL);

		tn_router_route_decide(p, TN_FOUND, a, &rt);
		assert_int_equal(rt.verdict, TN_ROUTER_ROUTE);
		assert_int_equal(rt.pool, 0);
		if (pm == TN_ROUTER_PLACE_NONE) {
			assert_int_equal(rt.via, TN_ROUTER_VIA_DEFAULT);
			assert_null(rt.host);
			assert_false(rt.record);
		} else {
			assert_int_equal(rt.via, TN_ROUTER_VIA_PLACED);
			assert_string_equal(rt.host, tn_router_route_member(p, 0,
				tn_router_route_place(p, 0, "alice@acme.example")));
			assert_int_equal(rt.record, pm == TN_ROUTER_PLACE_RECORD);
			assert_string_equal(tn_router_route_via_name(rt.via), "placed");
			/* recorded: the router pins it there, the proxy reads there */
			a->host = tn_mem_strdup(rt.host);
			tn_router_route_decide(p, TN_FOUND, a, &again);
			assert_int_equal(again.via, TN_ROUTER_VIA_HOST);
			assert_false(again.record);
			assert_string_equal(again.host, rt.host);
			assert_int_equal(tn_auth_route(&set, a, &proxy_host), 0);
			assert_int_equal(tn_router_route_split(rt.host, &member_host, &port), 0);
			assert_string_equal(proxy_host, member_host);
			tn_mem_free(&proxy_host);
			tn_mem_free(&member_host);
			tn_router_route_clear(&again);
		}
		tn_router_route_clear(&rt);
		/* a mailbox with a pool, or pinned, is never placed */
		tn_mem_free(&a->host);
		a->pool = tn_mem_strdup("d");
		tn_router_route_decide(p, TN_FOUND, a, &rt);
		assert_int_equal(rt.via, TN_ROUTER_VIA_POOL);
		assert_false(rt.record);
		tn_router_route_clear(&rt);
		tn_account_free(&a);
		tn_router_route_pools_free(&p);
	}
}

/* The scores of the hash as the router computed them before the hash
 * moved to lib/tn-place.c (and as the Python copy in
 * tests/integration/test_imap_tenant.py computes them). */
static void test_place_pinned(void **state)
{
	(void)state;
	assert_true(tn_router_route_hrw_score("10.0.0.1:24", "a@b.example") ==
		    UINT64_C(0xd282931dabbb3db7));
	assert_true(tn_router_route_hrw_score("10.0.0.1:24", "Alice@ACME.example") ==
		    UINT64_C(0x394ef8a12c139c52));
	assert_true(tn_router_route_hrw_score("10.0.0.2:24", "a@b.example") ==
		    UINT64_C(0xe4b4d1cb4e2c9875));
	assert_true(tn_router_route_hrw_score("10.0.0.2:24", "Alice@ACME.example") ==
		    UINT64_C(0x7d5b4dc8142708dd));
}

/* One tenantmail.conf read by both programs: the router's section
 * (member list, default pool, default port) and the driver's. */
static const char proxy_conf_text[] =
	"ldap_uri = ldap://127.0.0.1:1/\n"
	"[tn-lmtp-router]\n"
	"router_pool_members = d=10.0.0.1, d=10.0.0.2:2424, x=10.0.0.9,\n"
	"    d=store3.example, d=store4.example:24\n"
	"router_default_pool = d\n"
	"router_lmtp_port = 2401\n"
	"router_placement = hash-record\n"
	"[dovecot-auth]\n"
	"dovecot_proxy = yes\n"
	"dovecot_default_host = 10.8.8.8\n"
	"dovecot_placement = hash\n";

static void proxy_settings(const char *text, struct tn_auth_settings *set,
			   struct tn_conf **conf_r)
{
	static const struct tn_conf_param *const tables[] = {
		TN_CONF_SHARED_TABLES, tn_auth_params, NULL
	};
	struct tn_conf *router = tn_auth_router_conf_create();
	const char *error = "";

	*conf_r = tn_conf_create(TN_AUTH_CONF_SECTION, tables);
	if (tn_conf_load_string(*conf_r, "t.conf", text, &error) < 0 ||
	    tn_auth_settings_read(*conf_r, set, &error) < 0 ||
	    tn_conf_load_string(router, "t.conf", text, &error) < 0 ||
	    tn_auth_placement_read(set, router, &error) < 0)
		fail_msg("%s", error);
	tn_conf_destroy(&router);
}

/* The Dovecot proxy's placement (tn_auth_route with dovecot_placement)
 * sends every unplaced mailbox to the host of the member the router
 * delivers it to (port dropped, as for a recorded tnMailHost), from the
 * same lines of the same file; and the member it would record is the
 * router's, so a recorded placement changes nothing for either. */
static void test_proxy_placement_agrees(void **state)
{
	static const char *const reordered_members =
		"router_pool_members = d=store4.example:24, x=10.0.0.9, d=store3.example:2401,\n"
		"    d=10.0.0.2:2424, d=10.0.0.1\n";
	struct tn_auth_settings set, set2;
	struct tn_conf *conf, *conf2, *rconf;
	struct tn_router_pools *p;
	const char *error = "", *member, *member2;
	char *text2, *proxy_host, *proxy_host2, *router_host;
	size_t seen[4] = { 0 };
	unsigned port;

	(void)state;
	proxy_settings(proxy_conf_text, &set, &conf);
	assert_int_equal(set.place_nmembers, 4);
	/* the same members in another order (an explicit default port) */
	text2 = tn_mem_printf("%s[tn-lmtp-router]\n%s", proxy_conf_text, reordered_members);
	proxy_settings(text2, &set2, &conf2);
	/* the router's own reading of the file */
	rconf = tn_auth_router_conf_create();
	assert_int_equal(tn_conf_load_string(rconf, "t.conf", proxy_conf_text, &error), 0);
	assert_int_equal(tn_router_route_pools_parse(tn_conf_list(rconf, "router_pool_members"),
						     tn_conf_str(rconf, "router_default_pool"),
						     (unsigned)tn_conf_int(rconf, "router_lmtp_port"),
						     &p, &error), 0);
	tn_router_route_set_placement(p, TN_ROUTER_PLACE_RECORD);
	for (size_t i = 0; i < PLACE_ADDRS; i++) {
		struct tn_account *a = acct_make(TN_ACCOUNT_MAILBOX, TN_STATUS_ACTIVE,
						 TN_LEVEL_OBJECT, NULL, NULL);
		struct tn_router_route rt;

		tn_mem_free(&a->address);
		a->address = tn_mem_printf("%s%zu@tenant%zu.example", i % 3 ? "user" : "User",
					   i, i % 97);
		tn_router_route_decide(p, TN_FOUND, a, &rt);
		assert_int_equal(rt.via, TN_ROUTER_VIA_PLACED);
		assert_int_equal(tn_auth_route_placed(&set, a, &proxy_host, &member), 0);
		assert_int_equal(tn_auth_route_placed(&set2, a, &proxy_host2, &member2), 0);
		assert_int_equal(tn_router_route_split(rt.host, &router_host, &port), 0);
		assert_string_equal(proxy_host, router_host);
		assert_string_equal(proxy_host2, router_host);
		assert_string_equal(member, rt.host);
		assert_string_equal(member2, rt.host);
		for (size_t j = 0; j < 4; j++)
			seen[j] += strcmp(member, set.place_members[j]) == 0;
		tn_mem_free(&proxy_host);
		tn_mem_free(&proxy_host2);
		tn_mem_free(&router_host);
		tn_router_route_clear(&rt);
		tn_account_free(&a);
	}
	for (size_t j = 0; j < 4; j++)
		assert_true(seen[j] > PLACE_ADDRS / 8);		/* every member is used */
	tn_router_route_pools_free(&p);
	tn_conf_destroy(&rconf);
	tn_auth_settings_clear(&set);
	tn_auth_settings_clear(&set2);
	tn_conf_destroy(&conf);
	tn_conf_destroy(&conf2);
	tn_mem_free(&text2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pools_parse),
		cmocka_unit_test(test_pools_parse_errors),
		cmocka_unit_test(test_decide),
		cmocka_unit_test(test_agrees_with_userdb),
		cmocka_unit_test(test_order),
		cmocka_unit_test(test_hostport),
		cmocka_unit_test(test_parse_path),
		cmocka_unit_test(test_xtext),
		cmocka_unit_test(test_reply),
		cmocka_unit_test(test_place_stable),
		cmocka_unit_test(test_place_balance),
		cmocka_unit_test(test_place_add_member),
		cmocka_unit_test(test_place_remove_member),
		cmocka_unit_test(test_place_pinned),
		cmocka_unit_test(test_proxy_placement_agrees),
		cmocka_unit_test(test_decide_placement),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/*++
 * NAME
 *	test-auth-policy 1
 * SUMMARY
 *	unit tests: the Dovecot auth driver's verdicts, templates, routes, settings
 *--*/
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "tn-auth-policy.h"
#include "tn-conf.h"
#include "tn-lookup.h"
#include "tn-mem.h"

static struct tn_account mailbox(enum tn_status status, enum tn_level from)
{
	struct tn_account a = {
		.kind = TN_ACCOUNT_MAILBOX, .address = "alice@acme.example",
		.domain = "acme.example", .tenant = "acme", .status = status,
		.status_from = from, .password = "{PLAIN}secret",
	};
	return a;
}

struct verdict_case {
	enum tn_result res;
	enum tn_account_kind kind;
	enum tn_status status;
	enum tn_level from;
	const char *password;
	enum tn_auth_verdict login, user;
	const char *reason;	/* of the login verdict */
};

static void test_verdicts(void **state)
{
	static const struct verdict_case cases[] = {
		{ TN_TEMPFAIL, 0, 0, 0, "x", TN_AUTH_TEMPFAIL, TN_AUTH_TEMPFAIL,
		  "directory unavailable" },
		{ TN_NOTFOUND, 0, 0, 0, "x", TN_AUTH_UNKNOWN, TN_AUTH_UNKNOWN,
		  "no such address" },
		{ TN_FOUND, TN_ACCOUNT_ALIAS, TN_STATUS_ACTIVE, 0, NULL,
		  TN_AUTH_UNKNOWN, TN_AUTH_UNKNOWN, "an alias, not a mailbox" },
		{ TN_FOUND, TN_ACCOUNT_MAILBOX, TN_STATUS_ACTIVE, 0, "{X}y",
		  TN_AUTH_OK, TN_AUTH_OK, "active mailbox" },
		{ TN_FOUND, TN_ACCOUNT_MAILBOX, TN_STATUS_SUSPENDED, TN_LEVEL_TENANT,
		  "{X}y", TN_AUTH_DISABLED, TN_AUTH_OK, "tenant suspended" },
		{ TN_FOUND, TN_ACCOUNT_MAILBOX, TN_STATUS_SUSPENDED, TN_LEVEL_OBJECT,
		  "{X}y", TN_AUTH_DISABLED, TN_AUTH_OK, "mailbox suspended" },
		{ TN_FOUND, TN_ACCOUNT_MAILBOX, TN_STATUS_DELETED, TN_LEVEL_DOMAIN,
		  "{X}y", TN_AUTH_DISABLED, TN_AUTH_UNKNOWN, "domain deleted" },
		{ TN_FOUND, TN_ACCOUNT_MAILBOX, TN_STATUS_DELETED, TN_LEVEL_OBJECT,
		  "{X}y", TN_AUTH_DISABLED, TN_AUTH_UNKNOWN, "mailbox deleted" },
		{ TN_FOUND, TN_ACCOUNT_MAILBOX, TN_STATUS_ACTIVE, 0, "",
		  TN_AUTH_DISABLED, TN_AUTH_OK, "mailbox has no password" },
		{ TN_FOUND, TN_ACCOUNT_MAILBOX, TN_STATUS_ACTIVE, 0, NULL,
		  TN_AUTH_DISABLED, TN_AUTH_OK, "mailbox has no password" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct verdict_case *c = &cases[i];
		struct tn_account a = mailbox(c->status, c->from);
		const struct tn_account *ap = c->res == TN_FOUND ? &a : NULL;
		const char *reason;

		a.kind = c->kind;
		a.password = (char *)c->password;
		assert_int_equal(tn_auth_login_verdict(c->res, ap, &reason), c->login);
		assert_string_equal(reason, c->reason);
		assert_int_equal(tn_auth_user_verdict(c->res, ap, &reason), c->user);
	}
}

struct expand_case {
	const char *tmpl;
	const char *address;
	const char *tenant;
	const char *out;	/* NULL: refused */
};

static void test_expand(void **state)
{
	static const struct expand_case cases[] = {
		{ "/var/vmail/%d/%n", "alice@acme.example", "acme",
		  "/var/vmail/acme.example/alice" },
		{ "/srv/%t/%u", "alice@acme.example", "acme",
		  "/srv/acme/alice@acme.example" },
		{ "maildir:~/Maildir:INDEX=/idx/%t/%%n", "bob@x.example", "t1",
		  "maildir:~/Maildir:INDEX=/idx/t1/%n" },
		{ "", "a@b.example", "t", "" },
		{ "/v/%n", "../x@b.example", "t", NULL },
		{ "/v/%n", "a/b@b.example", "t", NULL },
		{ "/v/%n", "..@b.example", "t", NULL },
		{ "/v/%n", "@b.example", "t", NULL },
		{ "/v/%t", "a@b.example", "..", NULL },
		{ "/v/%x", "a@b.example", "t", NULL },
		{ "/v/%", "a@b.example", "t", NULL },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct expand_case *c = &cases[i];
		struct tn_account a = mailbox(TN_STATUS_ACTIVE, 0);
		const char *error;
		char *out = NULL;
		int ret;

		a.address = (char *)c->address;
		a.tenant = (char *)c->tenant;
		ret = tn_auth_expand(c->tmpl, &a, &out, &error);
		if (c->out == NULL) {
			assert_int_equal(ret, -1);
			continue;
		}
		assert_int_equal(ret, 0);
		assert_string_equal(out, c->out);
		tn_mem_free(&out);
	}
}

struct route_case {
	const char *host, *pool, *deflt;
	const char *out;	/* NULL: none */
};

static void test_route(void **state)
{
	static const char *const pools[] = { "pool-a:store-a.example",
					     "pool-b:[2001:db8::1]:143", NULL };
	static const struct route_case cases[] = {
		{ "store1.example:24", "pool-a", "", "store1.example" },
		{ "store1.example", NULL, "", "store1.example" },
		{ "[2001:db8::2]:24", NULL, "", "2001:db8::2" },
		{ "2001:db8::3", NULL, "", "2001:db8::3" },
		{ NULL, "pool-a", "", "store-a.example" },
		{ "", "pool-b", "", "2001:db8::1" },
		{ NULL, "pool-c", "", NULL },
		{ NULL, "pool-c", "default.example", "default.example" },
		{ NULL, "pool", "", NULL },
		{ NULL, NULL, "", NULL },
		{ NULL, NULL, "default.example", "default.example" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct route_case *c = &cases[i];
		struct tn_auth_settings set = { .default_host = c->deflt,
						.pool_hosts = pools };
		struct tn_account a = mailbox(TN_STATUS_ACTIVE, 0);
		char *host = NULL;

		a.host = (char *)c->host;
		a.pool = (char *)c->pool;
		if (c->out == NULL) {
			assert_int_equal(tn_auth_route(&set, &a, &host), -1);
			continue;
		}
		assert_int_equal(tn_auth_route(&set, &a, &host), 0);
		assert_string_equal(host, c->out);
		tn_mem_free(&host);
	}
}

static int load(const char *text, struct tn_auth_settings *set,
		struct tn_conf **conf_r, const char **error_r)
{
	static const struct tn_conf_param *const tables[] = {
		tn_lookup_params, tn_auth_params, NULL
	};

	*conf_r = tn_conf_create(TN_AUTH_CONF_SECTION, tables);
	if (tn_conf_load_string(*conf_r, "test.conf", text, error_r) < 0)
		return -1;
	return tn_auth_settings_read(*conf_r, set, error_r);
}

static void test_settings(void **state)
{
	struct tn_auth_settings set;
	struct tn_conf *conf;
	const char *error;

	assert_int_equal(load("", &set, &conf, &error), 0);
	assert_string_equal(set.uid, "vmail");
	assert_string_equal(set.home, "/var/vmail/%d/%n");
	assert_false(set.proxy);
	assert_null(set.pool_hosts[0]);
	assert_false(set.blocking);
	assert_int_equal(set.lookup_threads, 4);
	tn_conf_destroy(&conf);

	assert_int_equal(load("dovecot_blocking = yes\ndovecot_lookup_threads = 16\n",
			      &set, &conf, &error), 0);
	assert_true(set.blocking);
	assert_int_equal(set.lookup_threads, 16);
	tn_conf_destroy(&conf);
	assert_int_equal(load("dovecot_lookup_threads = 0\n", &set, &conf, &error), -1);
	tn_conf_destroy(&conf);

	/* brute-force protection: off by default, either limit locks */
	assert_int_equal(load("", &set, &conf, &error), 0);
	assert_int_equal(set.lockout_user_failures, 0);
	assert_int_equal(set.lockout_window, 15 * 60 * 1000);
	assert_false(tn_auth_locked_out(&set, 1000, 1000));
	tn_conf_destroy(&conf);
	assert_int_equal(load("dovecot_lockout_user_failures = 3\n"
			      "dovecot_lockout_ip_failures = 10\n"
			      "dovecot_lockout_window = 1m\n", &set, &conf, &error), 0);
	assert_int_equal(set.lockout_window, 60000);
	assert_false(tn_auth_locked_out(&set, 2, 9));
	assert_true(tn_auth_locked_out(&set, 3, 0));
	assert_true(tn_auth_locked_out(&set, 0, 10));
	tn_conf_destroy(&conf);
	assert_int_equal(load("dovecot_lockout_window = 0\n", &set, &conf, &error), -1);
	tn_conf_destroy(&conf);

	assert_int_equal(load("ldap_uri = ldap://127.0.0.1:1/\n"
			      "[dovecot-auth]\ndovecot_proxy = yes\n"
			      "dovecot_proxy_port = 1143\n"
			      "dovecot_pool_hosts = p1:h1, p2:h2\n"
			      "[other]\nwhatever = 1\n", &set, &conf, &error), 0);
	assert_true(set.proxy);
	assert_int_equal(set.proxy_port, 1143);
	assert_string_equal(set.pool_hosts[1], "p2:h2");
	tn_conf_destroy(&conf);

	assert_int_equal(load("dovecot_home = /v/%q\n", &set, &conf, &error), -1);
	assert_non_null(strstr(error, "dovecot_home: bad template"));
	tn_conf_destroy(&conf);
	assert_int_equal(load("dovecot_pool_hosts = p1\n", &set, &conf, &error), -1);
	assert_non_null(strstr(error, "pool:host"));
	tn_conf_destroy(&conf);
	assert_int_equal(load("dovecot_uid_typo = 1\n", &set, &conf, &error), -1);
	assert_non_null(strstr(error, "test.conf:1"));
	tn_conf_destroy(&conf);
}

/* dovecot_placement: off by default; only on a proxy; the members are
 * the router's default pool from the router's section; the host of a
 * directory host or pool wins over placement, placement over
 * dovecot_default_host. */
static void test_placement(void **state)
{
	static const char *const pools[] = { "pool-a:store-a.example", NULL };
	struct tn_auth_settings set;
	struct tn_conf *conf, *router;
	struct tn_account a = mailbox(TN_STATUS_ACTIVE, 0);
	const char *error, *member;
	char *host;

	(void)state;
	assert_int_equal(load("", &set, &conf, &error), 0);
	assert_int_equal(set.placement, TN_AUTH_PLACE_NONE);
	tn_conf_destroy(&conf);
	assert_int_equal(load("dovecot_placement = hash\n", &set, &conf, &error), -1);
	assert_non_null(strstr(error, "dovecot_proxy"));
	tn_conf_destroy(&conf);
	assert_int_equal(load("dovecot_placement = sideways\n", &set, &conf, &error), -1);
	tn_conf_destroy(&conf);

	static const struct { const char *router, *why; } bad[] = {
		{ "", "router_default_pool" },
		{ "router_pool_members = d=10.0.0.1\nrouter_default_pool = e\n", "names no pool" },
		{ "router_pool_members = d=10.0.0.1, d=[::1]:24\nrouter_default_pool = d\n",
		  "IPv6" },
		{ "router_pool_members = d=10.0.0.1, d=10.0.0.1:24\nrouter_default_pool = d\n",
		  "twice" },
		{ "router_pool_members = d=a/b\nrouter_default_pool = d\n", "not host" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *text = tn_mem_printf("[tn-lmtp-router]\n%s", bad[i].router);

		assert_int_equal(load("[dovecot-auth]\ndovecot_proxy = yes\n"
				      "dovecot_placement = hash-record\n", &set, &conf, &error), 0);
		router = tn_auth_router_conf_create();
		assert_int_equal(tn_conf_load_string(router, "r.conf", text, &error), 0);
		assert_int_equal(tn_auth_placement_read(&set, router, &error), -1);
		if (strstr(error, bad[i].why) == NULL)
			fail_msg("case %zu: %s", i, error);
		assert_int_equal(set.place_nmembers, 0);
		tn_conf_destroy(&router);
		tn_conf_destroy(&conf);
		tn_mem_free(&text);
	}

	/* hash: an IPv6 member is fine (nothing is written) */
	assert_int_equal(load("[dovecot-auth]\ndovecot_proxy = yes\ndovecot_placement = hash\n"
			      "dovecot_default_host = default.example\n", &set, &conf, &error), 0);
	router = tn_auth_router_conf_create();
	assert_int_equal(tn_conf_load_string(router, "r.conf",
		"[tn-lmtp-router]\nrouter_pool_members = d=10.0.0.1, e=10.0.0.2, d=[::1]\n"
		"router_default_pool = d\nrouter_lmtp_port = 2401\n", &error), 0);
	assert_int_equal(tn_auth_placement_read(&set, router, &error), 0);
	assert_int_equal(set.place_nmembers, 2);
	assert_string_equal(set.place_members[0], "10.0.0.1:2401");
	assert_string_equal(set.place_members[1], "[::1]:2401");
	set.pool_hosts = pools;
	/* no host, no pool: placed, the member's port dropped */
	assert_int_equal(tn_auth_route_placed(&set, &a, &host, &member), 0);
	assert_non_null(member);
	assert_true(strcmp(host, "10.0.0.1") == 0 || strcmp(host, "::1") == 0);
	assert_true(strncmp(member, host[0] == ':' ? "[::1]" : host, 5) == 0);
	tn_mem_free(&host);
	/* a host, a mapped pool, an unmapped pool: never placed */
	a.host = (char *)"store1.example:24";
	assert_int_equal(tn_auth_route_placed(&set, &a, &host, &member), 0);
	assert_string_equal(host, "store1.example");
	assert_null(member);
	tn_mem_free(&host);
	a.host = NULL;
	a.pool = (char *)"pool-a";
	assert_int_equal(tn_auth_route_placed(&set, &a, &host, &member), 0);
	assert_string_equal(host, "store-a.example");
	assert_null(member);
	tn_mem_free(&host);
	a.pool = (char *)"pool-z";
	assert_int_equal(tn_auth_route_placed(&set, &a, &host, &member), 0);
	assert_string_equal(host, "default.example");
	assert_null(member);
	tn_mem_free(&host);
	a.pool = NULL;
	/* placement off: dovecot_default_host, as before */
	set.placement = TN_AUTH_PLACE_NONE;
	assert_int_equal(tn_auth_route_placed(&set, &a, &host, &member), 0);
	assert_string_equal(host, "default.example");
	assert_null(member);
	tn_mem_free(&host);
	tn_auth_settings_clear(&set);
	assert_null(set.place_members);
	tn_conf_destroy(&router);
	tn_conf_destroy(&conf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_verdicts),
		cmocka_unit_test(test_expand),
		cmocka_unit_test(test_route),
		cmocka_unit_test(test_settings),
		cmocka_unit_test(test_placement),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/*++
 * NAME
 *	tn-auth-policy 3
 * SUMMARY
 *	what the Dovecot auth driver "tenant" answers (see tn-auth-policy.h)
 * DESCRIPTION
 *	The parameter table below is the driver's documentation source:
 *	man/tenantmail-dovecot.7 lists the same names, types and defaults
 *	(tests/integration/test_auth_tenant.py compares them).
 *--*/
#include <stdio.h>
#include <string.h>

#include "tn-auth-policy.h"
#include "tn-conf-shared.h"
#include "tn-mem.h"
#include "tn-place.h"

const struct tn_conf_param tn_auth_params[] = {
	{ "dovecot_uid", TN_CONF_STR, "vmail", 0, 0, NULL,
	  "userdb uid: user name or number (empty: Dovecot's mail_uid)" },
	{ "dovecot_gid", TN_CONF_STR, "vmail", 0, 0, NULL,
	  "userdb gid: group name or number (empty: Dovecot's mail_gid)" },
	{ "dovecot_home", TN_CONF_STR, "/var/vmail/%d/%n", 0, 0, NULL,
	  "userdb home template: %u address, %n local part, %d domain, %t tenant (empty: none)" },
	{ "dovecot_mail", TN_CONF_STR, "", 0, 0, NULL,
	  "userdb mail location template (empty: Dovecot's mail_location)" },
	{ "dovecot_proxy", TN_CONF_BOOL, "no", 0, 0, NULL,
	  "front-end: passdb answers proxy=y host=<store> after checking the password" },
	{ "dovecot_proxy_port", TN_CONF_INT, "0", 0, 65535, NULL,
	  "port returned with proxy=y (0: none, the protocol's default port)" },
	{ "dovecot_pool_hosts", TN_CONF_LIST, "", 0, 0, NULL,
	  "pool:host items: the store of a mailbox that has a pool but no host" },
	{ "dovecot_default_host", TN_CONF_STR, "", 0, 0, NULL,
	  "store of a mailbox with neither host nor mapped pool (empty: nologin)" },
	{ "dovecot_placement", TN_CONF_ENUM, "none", 0, 0, "none|hash|hash-record",
	  "proxy: a mailbox without host or pool goes to the router's hashed member "
	  "(hash-record: written to tnMailHost)" },
	{ "dovecot_placement_bind_dn", TN_CONF_STR, "", 0, 0, NULL,
	  "DN hash-record writes tnMailHost as (empty: prov_ldap_bind_dn)" },
	{ "dovecot_placement_password_file", TN_CONF_STR, "", 0, 0, NULL,
	  "password file of that DN (empty: prov_ldap_bind_password_file)" },
	{ "dovecot_blocking", TN_CONF_BOOL, "no", 0, 0, NULL,
	  "look up in auth worker processes instead of the auth process itself" },
	{ "dovecot_lookup_threads", TN_CONF_INT, "4", 1, 64, NULL,
	  "auth process: threads that wait on Redis and LDAP for cache misses" },
	{ "dovecot_lockout_user_failures", TN_CONF_INT, "0", 0, 1000000, NULL,
	  "failed logins of one address within dovecot_lockout_window that lock it out (0: off)" },
	{ "dovecot_lockout_ip_failures", TN_CONF_INT, "0", 0, 1000000, NULL,
	  "failed logins from one client IP within dovecot_lockout_window that lock it out (0: off)" },
	{ "dovecot_lockout_window", TN_CONF_TIME, "15m", 1000, INT64_C(86400000), NULL,
	  "how long failed logins are counted (from the first one of a window)" },
	TN_CONF_END
};

static int tn_auth_check_template(const char *name, const char *tmpl,
				  const char **error_r)
{
	static __thread char error[160];
	struct tn_account probe = {
		.kind = TN_ACCOUNT_MAILBOX, .address = "a@b.example",
		.domain = "b.example", .tenant = "t",
	};
	const char *why;
	char *out;

	if (tn_auth_expand(tmpl, &probe, &out, &why) < 0) {
		snprintf(error, sizeof(error), "%s: bad template: %s", name, why);
		*error_r = error;
		return -1;
	}
	tn_mem_free(&out);
	return 0;
}

static int tn_auth_check_pool_hosts(const char *const *items, const char **error_r)
{
	for (; *items != NULL; items++) {
		const char *colon = strchr(*items, ':');

		if (colon == NULL || colon == *items || colon[1] == '\0') {
			*error_r = "dovecot_pool_hosts: items are pool:host";
			return -1;
		}
	}
	return 0;
}

int tn_auth_settings_read(const struct tn_conf *conf,
			  struct tn_auth_settings *set_r, const char **error_r)
{
	set_r->uid = tn_conf_str(conf, "dovecot_uid");
	set_r->gid = tn_conf_str(conf, "dovecot_gid");
	set_r->home = tn_conf_str(conf, "dovecot_home");
	set_r->mail = tn_conf_str(conf, "dovecot_mail");
	set_r->proxy = tn_conf_bool(conf, "dovecot_proxy");
	set_r->proxy_port = tn_conf_int(conf, "dovecot_proxy_port");
	set_r->default_host = tn_conf_str(conf, "dovecot_default_host");
	set_r->pool_hosts = tn_conf_list(conf, "dovecot_pool_hosts");
	set_r->placement = (enum tn_auth_placement)tn_conf_enum(conf, "dovecot_placement");
	set_r->place_members = NULL;
	set_r->place_nmembers = 0;
	set_r->blocking = tn_conf_bool(conf, "dovecot_blocking");
	set_r->lookup_threads = (unsigned)tn_conf_int(conf, "dovecot_lookup_threads");
	set_r->lockout_user_failures = tn_conf_int(conf, "dovecot_lockout_user_failures");
	set_r->lockout_ip_failures = tn_conf_int(conf, "dovecot_lockout_ip_failures");
	set_r->lockout_window = tn_conf_time_ms(conf, "dovecot_lockout_window");
	if (tn_auth_check_template("dovecot_home", set_r->home, error_r) < 0 ||
	    tn_auth_check_template("dovecot_mail", set_r->mail, error_r) < 0)
		return -1;
	if (set_r->placement != TN_AUTH_PLACE_NONE && !set_r->proxy) {
		*error_r = "dovecot_placement needs dovecot_proxy = yes (only a proxy places)";
		return -1;
	}
	return tn_auth_check_pool_hosts(set_r->pool_hosts, error_r);
}

/* --- placement: the router's default pool ---------------------------------- */

struct tn_conf *tn_auth_router_conf_create(void)
{
	static const struct tn_conf_param *const tables[] = {
		TN_CONF_SHARED_TABLES, tn_router_params, NULL
	};

	return tn_conf_create(TN_AUTH_ROUTER_SECTION, tables);
}

/* hash-record writes a member's "host:port" as tnMailHost, which
 * provisioning takes as a host name or IPv4 address with a port (the
 * router refuses the same). */
static int tn_auth_placement_members_ok(const struct tn_auth_settings *set,
					const char **error_r)
{
	for (size_t i = 0; i < set->place_nmembers; i++) {
		if (set->placement == TN_AUTH_PLACE_RECORD && set->place_members[i][0] == '[') {
			*error_r = "dovecot_placement = hash-record: the members of "
				"router_default_pool must be host names or IPv4 addresses "
				"(tnMailHost holds no IPv6 address)";
			return -1;
		}
	}
	return 0;
}

int tn_auth_placement_read(struct tn_auth_settings *set, const struct tn_conf *router_conf,
			   const char **error_r)
{
	const char *pool = tn_conf_str(router_conf, "router_default_pool");

	if (set->placement == TN_AUTH_PLACE_NONE)
		return 0;
	if (*pool == '\0') {
		*error_r = "dovecot_placement needs router_default_pool in the [tn-lmtp-router] "
			"section of the same file (the pool the router places in)";
		return -1;
	}
	if (tn_place_pool_members(tn_conf_list(router_conf, "router_pool_members"), pool,
				  (unsigned)tn_conf_int(router_conf, "router_lmtp_port"),
				  &set->place_members, &set->place_nmembers, error_r) < 0)
		return -1;
	if (set->place_nmembers == 0) {
		tn_auth_settings_clear(set);
		*error_r = "dovecot_placement: router_default_pool names no pool of "
			"router_pool_members";
		return -1;
	}
	if (tn_auth_placement_members_ok(set, error_r) < 0) {
		tn_auth_settings_clear(set);
		return -1;
	}
	return 0;
}

void tn_auth_settings_clear(struct tn_auth_settings *set)
{
	tn_place_members_free(&set->place_members);
	set->place_nmembers = 0;
}

/* --- verdicts ------------------------------------------------------------ */

static const char *tn_auth_status_reason(const struct tn_account *acct)
{
	static const char *const texts[][4] = {
		[TN_STATUS_SUSPENDED] = { "suspended", "tenant suspended",
					  "domain suspended", "mailbox suspended" },
		[TN_STATUS_DELETED] = { "deleted", "tenant deleted",
					"domain deleted", "mailbox deleted" },
	};

	if (acct->status == TN_STATUS_ACTIVE)
		return "active";
	return texts[acct->status][acct->status_from];
}

enum tn_auth_verdict tn_auth_login_verdict(enum tn_result res,
					   const struct tn_account *acct,
					   const char **reason_r)
{
	if (res == TN_TEMPFAIL) {
		*reason_r = "directory unavailable";
		return TN_AUTH_TEMPFAIL;
	}
	if (res == TN_NOTFOUND) {
		*reason_r = "no such address";
		return TN_AUTH_UNKNOWN;
	}
	if (acct->kind != TN_ACCOUNT_MAILBOX) {
		*reason_r = "an alias, not a mailbox";
		return TN_AUTH_UNKNOWN;
	}
	if (acct->status != TN_STATUS_ACTIVE) {
		*reason_r = tn_auth_status_reason(acct);
		return TN_AUTH_DISABLED;
	}
	if (acct->password == NULL || acct->password[0] == '\0') {
		*reason_r = "mailbox has no password";
		return TN_AUTH_DISABLED;
	}
	*reason_r = "active mailbox";
	return TN_AUTH_OK;
}

enum tn_auth_verdict tn_auth_user_verdict(enum tn_result res,
					  const struct tn_account *acct,
					  const char **reason_r)
{
	enum tn_auth_verdict v = tn_auth_login_verdict(res, acct, reason_r);

	if (v != TN_AUTH_DISABLED)
		return v;
	if (acct->status == TN_STATUS_DELETED) {
		*reason_r = tn_auth_status_reason(acct);
		return TN_AUTH_UNKNOWN;
	}
	/* suspended, or no password: the mail is still there */
	return TN_AUTH_OK;
}

/* --- templates ----------------------------------------------------------- */

struct tn_auth_buf {
	char *s;
	size_t len, size;
};

static void tn_auth_buf_add(struct tn_auth_buf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->size) {
		b->size = (b->len + n + 1) * 2;
		b->s = tn_mem_realloc(b->s, b->size);
	}
	memcpy(b->s + b->len, s, n);
	b->len += n;
	b->s[b->len] = '\0';
}

/* A value that is safe as one path component. */
static bool tn_auth_component_ok(const char *s, size_t n)
{
	if (n == 0 || memchr(s, '/', n) != NULL || memchr(s, '\0', n) != NULL)
		return false;
	return !(n == 1 && s[0] == '.') && !(n == 2 && s[0] == '.' && s[1] == '.');
}

/* The text of %c for acct (*s_r, *n_r), or -1 when c is not known. */
static int tn_auth_var(char c, const struct tn_account *acct,
		       const char **s_r, size_t *n_r)
{
	const char *at = acct->address != NULL ? strrchr(acct->address, '@') : NULL;

	switch (c) {
	case 'u':
		*s_r = acct->address;
		break;
	case 'n':
		*s_r = acct->address;
		*n_r = at != NULL ? (size_t)(at - acct->address) : 0;
		return *s_r != NULL ? 0 : -1;
	case 'd':
		*s_r = at != NULL ? at + 1 : acct->domain;
		break;
	case 't':
		*s_r = acct->tenant;
		break;
	default:
		return -1;
	}
	*n_r = *s_r != NULL ? strlen(*s_r) : 0;
	return 0;
}

int tn_auth_expand(const char *tmpl, const struct tn_account *acct,
		   char **out_r, const char **error_r)
{
	struct tn_auth_buf b = { tn_mem_strdup(""), 0, 1 };
	const char *p, *s;
	size_t n;

	for (p = tmpl; *p != '\0'; p++) {
		if (*p != '%') {
			tn_auth_buf_add(&b, p, 1);
			continue;
		}
		p++;
		if (*p == '%') {
			tn_auth_buf_add(&b, "%", 1);
			continue;
		}
		if (*p == '\0' || tn_auth_var(*p, acct, &s, &n) < 0) {
			*error_r = "unknown %-sequence (known: %u, %n, %d, %t, %%)";
			tn_mem_free(&b.s);
			return -1;
		}
		if (s == NULL || !tn_auth_component_ok(s, n)) {
			*error_r = "a value is empty, '.', '..' or holds '/'";
			tn_mem_free(&b.s);
			return -1;
		}
		tn_auth_buf_add(&b, s, n);
	}
	*out_r = b.s;
	return 0;
}

/* --- proxy routes -------------------------------------------------------- */

/* "host", "host:port", "[v6]" or "[v6]:port" -> host; a bare IPv6
 * address (more than one ':') is kept whole. */
static char *tn_auth_host_only(const char *hostport)
{
	const char *colon;

	if (hostport[0] == '[') {
		const char *end = strchr(hostport, ']');

		if (end != NULL)
			return tn_mem_strndup(hostport + 1, (size_t)(end - hostport - 1));
		return tn_mem_strdup(hostport);
	}
	colon = strchr(hostport, ':');
	if (colon != NULL && strchr(colon + 1, ':') == NULL)
		return tn_mem_strndup(hostport, (size_t)(colon - hostport));
	return tn_mem_strdup(hostport);
}

static const char *tn_auth_pool_host(const struct tn_auth_settings *set,
				     const char *pool)
{
	const char *const *item;
	size_t n = strlen(pool);

	for (item = set->pool_hosts; *item != NULL; item++) {
		if (strncmp(*item, pool, n) == 0 && (*item)[n] == ':')
			return *item + n + 1;
	}
	return NULL;
}

/* The member of the router's default pool that hashing picks for a
 * mailbox with neither host nor pool (tn-place.h), or NULL. */
static const char *tn_auth_placed(const struct tn_auth_settings *set,
				  const struct tn_account *acct)
{
	size_t j;

	if (set->placement == TN_AUTH_PLACE_NONE || set->place_nmembers == 0 ||
	    acct->address == NULL)
		return NULL;
	j = tn_place_pick((const char *const *)set->place_members, set->place_nmembers,
			  acct->address);
	return set->place_members[j];
}

int tn_auth_route_placed(const struct tn_auth_settings *set, const struct tn_account *acct,
			 char **host_r, const char **member_r)
{
	const char *host = NULL, *member = NULL;

	if (acct->host != NULL && acct->host[0] != '\0')
		host = acct->host;
	else if (acct->pool != NULL && acct->pool[0] != '\0')
		host = tn_auth_pool_host(set, acct->pool);
	else if ((member = tn_auth_placed(set, acct)) != NULL)
		host = member;
	if (host == NULL && set->default_host[0] != '\0')
		host = set->default_host;
	if (member_r != NULL)
		*member_r = member;
	if (host == NULL)
		return -1;
	*host_r = tn_auth_host_only(host);
	return (*host_r)[0] != '\0' ? 0 : (tn_mem_free(host_r), -1);
}

int tn_auth_route(const struct tn_auth_settings *set,
		  const struct tn_account *acct, char **host_r)
{
	return tn_auth_route_placed(set, acct, host_r, NULL);
}

bool tn_auth_locked_out(const struct tn_auth_settings *set,
			int64_t user_failures, int64_t ip_failures)
{
	return (set->lockout_user_failures > 0 && user_failures >= set->lockout_user_failures) ||
		(set->lockout_ip_failures > 0 && ip_failures >= set->lockout_ip_failures);
}

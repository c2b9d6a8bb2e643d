/*++
 * NAME
 *	tn-dir 3
 * SUMMARY
 *	directory client (see tn-dir.h)
 * DESCRIPTION
 *	Connections are checked out of the pool for one request and checked
 *	back in; a connection that saw a transport error or a timeout is
 *	closed instead (its state is unknown), and its URI marked down.
 *--*/
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <ldap.h>

#include "tn-dir.h"
#include "tn-escape.h"
#include "tn-log.h"
#include "tn-mem.h"


struct tn_dir_conn {
	LDAP *ld;
	size_t uri;
	tn_msec_t last_used;
	bool busy;
};

struct tn_dir_uri {
	char *uri;
	tn_msec_t down_until;
};

struct tn_dir {
	struct tn_dir_settings set;
	char *base, *tenants_dn, *bind_dn, *bind_password, *ca_file;
	int require_cert;
	struct tn_dir_uri *uris;
	size_t nuris;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct tn_dir_conn *conns;
	struct tn_dir_stats stats;
};

static __thread char tn_dir_errbuf[512];

static const char *tn_dir_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *tn_dir_err(const char *fmt, ...)
{
	char tmp[sizeof(tn_dir_errbuf)];
	va_list ap;

	/* format first: the arguments may point into tn_dir_errbuf */
	va_start(ap, fmt);
	vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	memcpy(tn_dir_errbuf, tmp, sizeof(tmp));
	return tn_dir_errbuf;
}

static void tn_dir_count(uint64_t *counter)
{
	__atomic_add_fetch(counter, 1, __ATOMIC_RELAXED);
}

static int tn_dir_require_cert(const char *name)
{
	static const struct { const char *name; int value; } map[] = {
		{ "never", LDAP_OPT_X_TLS_NEVER }, { "allow", LDAP_OPT_X_TLS_ALLOW },
		{ "try", LDAP_OPT_X_TLS_TRY }, { "demand", LDAP_OPT_X_TLS_DEMAND },
	};

	for (size_t i = 0; name != NULL && i < sizeof(map) / sizeof(map[0]); i++) {
		if (strcasecmp(name, map[i].name) == 0)
			return map[i].value;
	}
	return LDAP_OPT_X_TLS_DEMAND;
}

static char *tn_strdup_opt(const char *s)
{
	return s != NULL && *s != '\0' ? tn_mem_strdup(s) : NULL;
}

/* libldap initialises itself once per process, on first use: it reads
 * ldap.conf and looks up this host's own name (ldap_pvt_get_fqdn), a DNS
 * query when the name is not in /etc/hosts, bounded only by the
 * resolver's timeout (5 s a try), not by any deadline of ours. Left to
 * the first ldap_initialize() that happens inside the first request's
 * deadline (a provisioning call took 5.0 s against prov_timeout 2s when
 * one DNS answer was lost); done here it happens at start-up. */
static pthread_once_t tn_dir_ldap_once = PTHREAD_ONCE_INIT;

static void tn_dir_ldap_init(void)
{
	int version;

	(void)ldap_get_option(NULL, LDAP_OPT_PROTOCOL_VERSION, &version);
}

struct tn_dir *tn_dir_create(const struct tn_dir_settings *set)
{
	struct tn_dir *dir = tn_mem_calloc(1, sizeof(*dir));

	pthread_once(&tn_dir_ldap_once, tn_dir_ldap_init);
	dir->set = *set;
	if (dir->set.max_connections == 0)
		dir->set.max_connections = 1;
	dir->base = tn_mem_strdup(set->base);
	dir->tenants_dn = tn_mem_printf("%s,%s", set->tenants_rdn, set->base);
	dir->bind_dn = tn_strdup_opt(set->bind_dn);
	dir->bind_password = tn_mem_strdup(set->bind_password != NULL ? set->bind_password : "");
	dir->ca_file = tn_strdup_opt(set->tls_ca_file);
	dir->require_cert = tn_dir_require_cert(set->tls_require_cert);
	for (const char *const *u = set->uris; u != NULL && *u != NULL; u++)
		dir->nuris++;
	dir->uris = tn_mem_calloc(dir->nuris, sizeof(*dir->uris));
	for (size_t i = 0; i < dir->nuris; i++)
		dir->uris[i].uri = tn_mem_strdup(set->uris[i]);
	dir->conns = tn_mem_calloc(dir->set.max_connections, sizeof(*dir->conns));
	pthread_mutex_init(&dir->lock, NULL);
	pthread_cond_init(&dir->cond, NULL);
	/* the settings' strings belong to the caller */
	dir->set.uris = NULL;
	dir->set.base = dir->set.tenants_rdn = dir->set.bind_dn = NULL;
	dir->set.bind_password = dir->set.tls_ca_file = dir->set.tls_require_cert = NULL;
	return dir;
}

static void tn_dir_conn_close(struct tn_dir_conn *c)
{
	if (c->ld != NULL)
		ldap_unbind_ext_s(c->ld, NULL, NULL);
	c->ld = NULL;
}

void tn_dir_destroy(struct tn_dir **dirp)
{
	struct tn_dir *dir = *dirp;

	if (dir == NULL)
		return;
	for (unsigned i = 0; i < dir->set.max_connections; i++)
		tn_dir_conn_close(&dir->conns[i]);
	for (size_t i = 0; i < dir->nuris; i++)
		tn_mem_free(&dir->uris[i].uri);
	if (dir->bind_password != NULL)
		explicit_bzero(dir->bind_password, strlen(dir->bind_password));
	tn_mem_free(&dir->uris);
	tn_mem_free(&dir->conns);
	tn_mem_free(&dir->base);
	tn_mem_free(&dir->tenants_dn);
	tn_mem_free(&dir->bind_dn);
	tn_mem_free(&dir->bind_password);
	tn_mem_free(&dir->ca_file);
	pthread_mutex_destroy(&dir->lock);
	pthread_cond_destroy(&dir->cond);
	tn_mem_free(dirp);
}

void tn_dir_get_stats(struct tn_dir *dir, struct tn_dir_stats *stats_r)
{
	stats_r->searches = __atomic_load_n(&dir->stats.searches, __ATOMIC_RELAXED);
	stats_r->errors = __atomic_load_n(&dir->stats.errors, __ATOMIC_RELAXED);
	stats_r->connects = __atomic_load_n(&dir->stats.connects, __ATOMIC_RELAXED);
	stats_r->failovers = __atomic_load_n(&dir->stats.failovers, __ATOMIC_RELAXED);
}

/* --- connecting -------------------------------------------------------- */

static struct timeval tn_dir_tv(tn_msec_t limit, tn_msec_t deadline)
{
	tn_msec_t left = tn_time_left_ms(deadline);
	struct timeval tv;

	if (limit > 0 && limit < left)
		left = limit;
	if (left < 1)
		left = 1;
	tv.tv_sec = left / 1000;
	tv.tv_usec = (left % 1000) * 1000;
	return tv;
}

static int tn_dir_set_tls(struct tn_dir *dir, LDAP *ld)
{
	int zero = 0;

	if (dir->ca_file != NULL &&
	    ldap_set_option(ld, LDAP_OPT_X_TLS_CACERTFILE, dir->ca_file) != LDAP_OPT_SUCCESS)
		return -1;
	if (ldap_set_option(ld, LDAP_OPT_X_TLS_REQUIRE_CERT, &dir->require_cert) != LDAP_OPT_SUCCESS)
		return -1;
	return ldap_set_option(ld, LDAP_OPT_X_TLS_NEWCTX, &zero) == LDAP_OPT_SUCCESS ? 0 : -1;
}

static int tn_dir_set_options(struct tn_dir *dir, LDAP *ld, tn_msec_t deadline)
{
	int version = LDAP_VERSION3;
	struct timeval net = tn_dir_tv(dir->set.network_timeout, deadline);
	struct timeval op = tn_dir_tv(dir->set.op_timeout, deadline);

	if (ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &version) != LDAP_OPT_SUCCESS ||
	    ldap_set_option(ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF) != LDAP_OPT_SUCCESS ||
	    ldap_set_option(ld, LDAP_OPT_NETWORK_TIMEOUT, &net) != LDAP_OPT_SUCCESS ||
	    ldap_set_option(ld, LDAP_OPT_TIMEOUT, &op) != LDAP_OPT_SUCCESS)
		return -1;
	return tn_dir_set_tls(dir, ld);
}

/* libldap's diagnostic text for the last operation, or "" */
static const char *tn_dir_diag(LDAP *ld, char *buf, size_t size)
{
	char *msg = NULL;

	buf[0] = '\0';
	if (ldap_get_option(ld, LDAP_OPT_DIAGNOSTIC_MESSAGE, &msg) == LDAP_OPT_SUCCESS &&
	    msg != NULL && *msg != '\0' && strcmp(msg, "(unknown error code)") != 0)
		snprintf(buf, size, " (%s)", msg);
	ldap_memfree(msg);
	return buf;
}

/* StartTLS on ldap:// URIs when asked for; ldaps:// is TLS already. */
static int tn_dir_starttls(struct tn_dir *dir, LDAP *ld, const char *uri,
			   const char **error_r)
{
	char diag[256];
	int rc;

	if (!dir->set.starttls || strncasecmp(uri, "ldaps:", 6) == 0 ||
	    strncasecmp(uri, "ldapi:", 6) == 0)
		return 0;
	rc = ldap_start_tls_s(ld, NULL, NULL);
	if (rc == LDAP_SUCCESS)
		return 0;
	*error_r = tn_dir_err("StartTLS failed: %s%s", ldap_err2string(rc),
			      tn_dir_diag(ld, diag, sizeof(diag)));
	return -1;
}

static int tn_dir_bind(struct tn_dir *dir, LDAP *ld, const char *uri,
		       const char **error_r)
{
	struct berval cred;
	char diag[256];
	int rc;

	if (tn_dir_starttls(dir, ld, uri, error_r) < 0)
		return -1;
	cred.bv_val = dir->bind_password;
	cred.bv_len = strlen(dir->bind_password);
	rc = ldap_sasl_bind_s(ld, dir->bind_dn, LDAP_SASL_SIMPLE,
			      dir->bind_dn != NULL ? &cred : NULL, NULL, NULL, NULL);
	if (rc != LDAP_SUCCESS) {
		*error_r = tn_dir_err("bind as %s failed: %s%s%s",
				      dir->bind_dn != NULL ? dir->bind_dn : "anonymous",
				      ldap_err2string(rc), tn_dir_diag(ld, diag, sizeof(diag)),
				      rc == LDAP_SERVER_DOWN && strncasecmp(uri, "ldaps:", 6) == 0 ?
				      " (connection or TLS handshake failed: check the server "
				      "certificate against ldap_tls_ca_file)" : "");
		return -1;
	}
	return 0;
}

static LDAP *tn_dir_open_uri(struct tn_dir *dir, size_t i, tn_msec_t deadline,
			     const char **error_r)
{
	LDAP *ld = NULL;
	int rc = ldap_initialize(&ld, dir->uris[i].uri);

	if (rc != LDAP_SUCCESS) {
		*error_r = tn_dir_err("bad URI: %s", ldap_err2string(rc));
		return NULL;
	}
	if (tn_dir_set_options(dir, ld, deadline) < 0) {
		*error_r = tn_dir_err("cannot set LDAP options (TLS settings?)");
	} else if (tn_dir_bind(dir, ld, dir->uris[i].uri, error_r) == 0) {
		tn_dir_count(&dir->stats.connects);
		return ld;
	}
	ldap_unbind_ext_s(ld, NULL, NULL);
	return NULL;
}

static void tn_dir_mark_down(struct tn_dir *dir, size_t i, const char *why)
{
	pthread_mutex_lock(&dir->lock);
	dir->uris[i].down_until = tn_time_now_ms() + dir->set.retry_down;
	pthread_mutex_unlock(&dir->lock);
	tn_dir_count(&dir->stats.failovers);
	tn_warning("directory %s marked down for %lld ms: %s", dir->uris[i].uri,
		   (long long)dir->set.retry_down, why);
}

static bool tn_dir_uri_usable(struct tn_dir *dir, size_t i, bool all_down)
{
	bool up;

	pthread_mutex_lock(&dir->lock);
	up = dir->uris[i].down_until <= tn_time_now_ms();
	pthread_mutex_unlock(&dir->lock);
	return up || all_down;
}

static bool tn_dir_all_down(struct tn_dir *dir)
{
	for (size_t i = 0; i < dir->nuris; i++) {
		if (tn_dir_uri_usable(dir, i, false))
			return false;
	}
	return true;
}

/* Fail back: a connection made to a later URI is closed once an earlier
 * one is no longer marked down, so the next connect tries it first. */
static bool tn_dir_earlier_uri_up(struct tn_dir *dir, size_t uri)
{
	for (size_t i = 0; i < uri; i++) {
		if (tn_dir_uri_usable(dir, i, false))
			return true;
	}
	return false;
}

/* Connect to the first usable URI; when every URI is marked down, try
 * them all anyway (a recovered server is found without waiting). */
static int tn_dir_connect(struct tn_dir *dir, struct tn_dir_conn *c,
			  tn_msec_t deadline, const char **error_r)
{
	bool all_down = tn_dir_all_down(dir);

	*error_r = tn_dir_err("no LDAP URI configured");
	for (size_t i = 0; i < dir->nuris && tn_time_left_ms(deadline) > 0; i++) {
		if (!tn_dir_uri_usable(dir, i, all_down))
			continue;
		c->ld = tn_dir_open_uri(dir, i, deadline, error_r);
		if (c->ld != NULL) {
			c->uri = i;
			return 0;
		}
		*error_r = tn_dir_err("%s: %s", dir->uris[i].uri, *error_r);
		tn_dir_mark_down(dir, i, *error_r);
	}
	if (tn_time_left_ms(deadline) == 0)
		*error_r = tn_dir_err("deadline passed while connecting (%s)", *error_r);
	return -1;
}

/* --- the pool ---------------------------------------------------------- */

static struct tn_dir_conn *tn_dir_pick(struct tn_dir *dir)
{
	struct tn_dir_conn *empty = NULL;

	for (unsigned i = 0; i < dir->set.max_connections; i++) {
		struct tn_dir_conn *c = &dir->conns[i];

		if (c->busy)
			continue;
		if (c->ld != NULL)
			return c;
		if (empty == NULL)
			empty = c;
	}
	return empty;
}

static struct tn_dir_conn *tn_dir_acquire(struct tn_dir *dir, tn_msec_t deadline,
					  const char **error_r)
{
	struct tn_dir_conn *c;
	struct timespec ts;

	tn_time_deadline_timespec(deadline, &ts);
	pthread_mutex_lock(&dir->lock);
	while ((c = tn_dir_pick(dir)) == NULL) {
		if (pthread_cond_timedwait(&dir->cond, &dir->lock, &ts) == ETIMEDOUT) {
			pthread_mutex_unlock(&dir->lock);
			*error_r = tn_dir_err("timed out waiting for a directory connection");
			return NULL;
		}
	}
	c->busy = true;
	pthread_mutex_unlock(&dir->lock);
	if (c->ld != NULL && ((dir->set.idle_timeout > 0 &&
			       tn_time_now_ms() - c->last_used > dir->set.idle_timeout) ||
			      tn_dir_earlier_uri_up(dir, c->uri)))
		tn_dir_conn_close(c);
	if (c->ld == NULL && tn_dir_connect(dir, c, deadline, error_r) < 0) {
		pthread_mutex_lock(&dir->lock);
		c->busy = false;
		pthread_cond_signal(&dir->cond);
		pthread_mutex_unlock(&dir->lock);
		return NULL;
	}
	return c;
}

/* A connection to uri broke: the idle ones to the same server are most
 * likely dead too (a restarted slapd drops them all), and a lookup that
 * drew them one after the other would fail although the server answers
 * again. Close them now; the next lookups connect afresh. Connections in
 * use find out for themselves. */
static void tn_dir_drop_idle(struct tn_dir *dir, size_t uri)
{
	struct tn_dir_conn *drop[dir->set.max_connections];
	unsigned n = 0;

	pthread_mutex_lock(&dir->lock);
	for (unsigned i = 0; i < dir->set.max_connections; i++) {
		struct tn_dir_conn *c = &dir->conns[i];

		if (!c->busy && c->ld != NULL && c->uri == uri) {
			c->busy = true;
			drop[n++] = c;
		}
	}
	pthread_mutex_unlock(&dir->lock);
	for (unsigned i = 0; i < n; i++)
		tn_dir_conn_close(drop[i]);
	pthread_mutex_lock(&dir->lock);
	for (unsigned i = 0; i < n; i++)
		drop[i]->busy = false;
	if (n > 0)
		pthread_cond_broadcast(&dir->cond);
	pthread_mutex_unlock(&dir->lock);
}

static void tn_dir_release(struct tn_dir *dir, struct tn_dir_conn *c, bool broken)
{
	if (broken) {
		tn_dir_conn_close(c);
		tn_dir_drop_idle(dir, c->uri);
	}
	c->last_used = tn_time_now_ms();
	pthread_mutex_lock(&dir->lock);
	c->busy = false;
	pthread_cond_signal(&dir->cond);
	pthread_mutex_unlock(&dir->lock);
}

/* --- raw connections (tn-dir.h) ------------------------------------------ */

struct tn_dir_conn *tn_dir_conn_get(struct tn_dir *dir, tn_msec_t deadline,
				    const char **error_r)
{
	return tn_dir_acquire(dir, deadline, error_r);
}

struct ldap *tn_dir_conn_ldap(struct tn_dir_conn *conn)
{
	return conn->ld;
}

const char *tn_dir_conn_uri(struct tn_dir *dir, const struct tn_dir_conn *conn)
{
	return dir->uris[conn->uri].uri;
}

void tn_dir_conn_put(struct tn_dir *dir, struct tn_dir_conn *conn,
		     const char *broken_why)
{
	if (broken_why != NULL) {
		tn_dir_count(&dir->stats.errors);
		tn_dir_mark_down(dir, conn->uri, broken_why);
	}
	tn_dir_release(dir, conn, broken_why != NULL);
}

const char *tn_dir_tenants_dn(const struct tn_dir *dir)
{
	return dir->tenants_dn;
}

/* --- searching ----------------------------------------------------------- */

bool tn_dir_transport_error(int rc)
{
	return rc == LDAP_SERVER_DOWN || rc == LDAP_TIMEOUT || rc == LDAP_CONNECT_ERROR ||
		rc == LDAP_UNAVAILABLE || rc == LDAP_BUSY || rc == LDAP_TIMELIMIT_EXCEEDED ||
		rc == LDAP_LOCAL_ERROR || rc == LDAP_ENCODING_ERROR ||
		rc == LDAP_DECODING_ERROR;
}

const char *const tn_dir_attrs[] = {
	"objectClass", "mail", "tnDomain", "tnTenantId", "tnStatus",
	"tnStatusReason", "tnPlan", "tnStorageQuotaBytes", "tnMailboxQuotaBytes",
	"tnQuotaBytes", "tnMaxMailboxes", "tnMaxMessageSize", "tnSendRate",
	"tnTenantSendRate", "tnOvercommit", "tnMailHost", "tnMailPool",
	"tnAliasTarget", "userPassword", "cn", "displayName", NULL,
};

struct tn_dir_query {
	const char *base;
	int scope;
	const char *filter;
	bool base_missing_is_notfound;	/* base-scope read of an entry */
};

/* One search on one connection; *res_r owned by the caller. Returns 1
 * completed, 0 the base entry does not exist, -1 error (*broken_r says
 * whether the connection is unusable). */
static int tn_dir_search_once(struct tn_dir *dir, struct tn_dir_conn *c,
			      const struct tn_dir_query *q, tn_msec_t deadline,
			      LDAPMessage **res_r, bool *broken_r,
			      const char **error_r)
{
	struct timeval tv = tn_dir_tv(dir->set.op_timeout, deadline);
	int rc;

	*res_r = NULL;
	tn_dir_count(&dir->stats.searches);
	rc = ldap_search_ext_s(c->ld, q->base, q->scope, q->filter,
			       (char **)tn_dir_attrs, 0, NULL, NULL, &tv,
			       TN_DIR_SIZELIMIT, res_r);
	if (rc == LDAP_SUCCESS)
		return 1;
	if (*res_r != NULL)
		ldap_msgfree(*res_r);
	*res_r = NULL;
	if (rc == LDAP_NO_SUCH_OBJECT && q->base_missing_is_notfound)
		return 0;
	*broken_r = tn_dir_transport_error(rc);
	*error_r = tn_dir_err("%s: search failed: %s", dir->uris[c->uri].uri,
			      ldap_err2string(rc));
	return -1;
}

/* --- entries to objects -------------------------------------------------- */

enum tn_dir_attr_type { TN_DA_STR, TN_DA_LOWER, TN_DA_INT, TN_DA_BOOL, TN_DA_STATUS };

struct tn_dir_attr_map {
	const char *attr;
	enum tn_dir_attr_type type;
	size_t offset;
};

static const struct tn_dir_attr_map tn_dir_attr_maps[] = {
	{ "tnStatus", TN_DA_STATUS, offsetof(struct tn_obj, status) },
	{ "tnStatusReason", TN_DA_STR, offsetof(struct tn_obj, reason) },
	{ "tnPlan", TN_DA_STR, offsetof(struct tn_obj, plan) },
	{ "tnStorageQuotaBytes", TN_DA_INT, offsetof(struct tn_obj, storage_quota) },
	{ "tnMailboxQuotaBytes", TN_DA_INT, offsetof(struct tn_obj, mailbox_quota) },
	{ "tnQuotaBytes", TN_DA_INT, offsetof(struct tn_obj, mailbox_quota) },
	{ "tnMaxMailboxes", TN_DA_INT, offsetof(struct tn_obj, max_mailboxes) },
	{ "tnMaxMessageSize", TN_DA_INT, offsetof(struct tn_obj, max_msg_size) },
	{ "tnSendRate", TN_DA_INT, offsetof(struct tn_obj, send_rate) },
	{ "tnTenantSendRate", TN_DA_INT, offsetof(struct tn_obj, tenant_send_rate) },
	{ "tnOvercommit", TN_DA_BOOL, offsetof(struct tn_obj, overcommit) },
	{ "tnMailHost", TN_DA_LOWER, offsetof(struct tn_obj, host) },
	{ "tnMailPool", TN_DA_STR, offsetof(struct tn_obj, pool) },
	{ "userPassword", TN_DA_STR, offsetof(struct tn_obj, password) },
	{ "displayName", TN_DA_STR, offsetof(struct tn_obj, name) },
	{ "cn", TN_DA_STR, offsetof(struct tn_obj, name) },
};

static int tn_dir_parse_int(const struct berval *bv, int64_t *value_r)
{
	char buf[24], *end;
	long long v;

	if (bv->bv_len == 0 || bv->bv_len >= sizeof(buf))
		return -1;
	memcpy(buf, bv->bv_val, bv->bv_len);
	buf[bv->bv_len] = '\0';
	errno = 0;
	v = strtoll(buf, &end, 10);
	if (errno != 0 || *end != '\0' || v < 0)
		return -1;
	*value_r = v;
	return 0;
}

static int tn_dir_set_field(struct tn_obj *obj, const struct tn_dir_attr_map *m,
			    const struct berval *bv)
{
	char *p = (char *)obj + m->offset;
	char *text;
	int ret = 0;

	switch (m->type) {
	case TN_DA_INT:
		return tn_dir_parse_int(bv, (int64_t *)p);
	case TN_DA_BOOL:
		*(bool *)p = bv->bv_len == 4 && strncasecmp(bv->bv_val, "TRUE", 4) == 0;
		return 0;
	default:
		break;
	}
	text = tn_mem_strndup(bv->bv_val, bv->bv_len);
	if (m->type == TN_DA_STATUS) {
		ret = tn_status_parse(text, (enum tn_status *)p);
		tn_mem_free(&text);
	} else if (*(char **)p == NULL) {	/* displayName before cn */
		if (m->type == TN_DA_LOWER) {
			for (char *s = text; *s != '\0'; s++)
				*s = (char)(*s >= 'A' && *s <= 'Z' ? *s - 'A' + 'a' : *s);
		}
		*(char **)p = text;
	} else {
		tn_mem_free(&text);
	}
	return ret;
}

static int tn_dir_fill_obj(struct tn_dir *dir, LDAP *ld, LDAPMessage *e,
			   struct tn_obj *obj, const char **error_r)
{
	for (size_t i = 0; i < sizeof(tn_dir_attr_maps) / sizeof(tn_dir_attr_maps[0]); i++) {
		const struct tn_dir_attr_map *m = &tn_dir_attr_maps[i];
		struct berval **vals = ldap_get_values_len(ld, e, m->attr);
		int ret = 0;

		if (vals != NULL && vals[0] != NULL)
			ret = tn_dir_set_field(obj, m, vals[0]);
		ldap_value_free_len(vals);
		if (ret < 0) {
			*error_r = tn_dir_err("invalid %s in directory entry for %s",
					      m->attr, obj->key);
			return -1;
		}
	}
	return 0;
}

static void tn_dir_fill_targets(LDAP *ld, LDAPMessage *e, struct tn_obj *obj)
{
	struct berval **vals = ldap_get_values_len(ld, e, "tnAliasTarget");
	char *norm;
	const char *why;

	for (size_t i = 0; vals != NULL && vals[i] != NULL; i++) {
		if (tn_address_normalize(vals[i]->bv_val, vals[i]->bv_len, &norm, &why) < 0) {
			tn_warning("alias %s: ignoring invalid target: %s", obj->key, why);
			continue;
		}
		tn_obj_add_target(obj, norm);
		tn_mem_free(&norm);
	}
	ldap_value_free_len(vals);
}

char *tn_dir_dn_tenant(const char *dn)
{
	LDAPDN ldn = NULL;
	char *id = NULL;

	if (dn == NULL || ldap_str2dn(dn, &ldn, LDAP_DN_FORMAT_LDAPV3) != LDAP_SUCCESS)
		return NULL;
	for (size_t i = 0; ldn[i] != NULL && id == NULL; i++) {
		for (size_t j = 0; ldn[i][j] != NULL; j++) {
			LDAPAVA *ava = ldn[i][j];

			if (ava->la_attr.bv_len == 10 &&
			    strncasecmp(ava->la_attr.bv_val, "tnTenantId", 10) == 0) {
				id = tn_mem_strndup(ava->la_value.bv_val, ava->la_value.bv_len);
				break;
			}
		}
	}
	ldap_dnfree(ldn);
	return id;
}

/* The tenant id is the tnTenantId RDN on the entry's DN. */
static char *tn_dir_tenant_of(LDAP *ld, LDAPMessage *e)
{
	char *dn = ldap_get_dn(ld, e);
	char *id = tn_dir_dn_tenant(dn);

	ldap_memfree(dn);
	return id;
}

static bool tn_dir_has_class(LDAP *ld, LDAPMessage *e, const char *cls)
{
	struct berval **vals = ldap_get_values_len(ld, e, "objectClass");
	bool found = false;

	for (size_t i = 0; vals != NULL && vals[i] != NULL && !found; i++)
		found = strlen(cls) == vals[i]->bv_len &&
			strncasecmp(vals[i]->bv_val, cls, vals[i]->bv_len) == 0;
	ldap_value_free_len(vals);
	return found;
}

struct tn_dir_class {
	const char *objectclass;
	enum tn_obj_kind kind;
	const char *key_attr;
};

static const struct tn_dir_class tn_dir_classes[] = {
	{ "tnTenant", TN_OBJ_TENANT, "tnTenantId" },
	{ "tnMailDomain", TN_OBJ_DOMAIN, "tnDomain" },
	{ "tnMailbox", TN_OBJ_MAILBOX, "mail" },
	{ "tnMailAlias", TN_OBJ_ALIAS, "mail" },
};

static char *tn_dir_key_of(LDAP *ld, LDAPMessage *e, const char *attr)
{
	struct berval **vals = ldap_get_values_len(ld, e, attr);
	char *key = NULL;

	if (vals != NULL && vals[0] != NULL) {
		key = tn_mem_strndup(vals[0]->bv_val, vals[0]->bv_len);
		for (char *s = key; *s != '\0'; s++)
			*s = (char)(*s >= 'A' && *s <= 'Z' ? *s - 'A' + 'a' : *s);
	}
	ldap_value_free_len(vals);
	return key;
}

/* Build an object from an entry; NULL with *error_r for invalid data,
 * NULL without error for entries of no class of ours. */
static struct tn_obj *tn_dir_entry_obj(struct tn_dir *dir, LDAP *ld, LDAPMessage *e,
				       const char **error_r)
{
	const struct tn_dir_class *cls = NULL;
	struct tn_obj *obj;
	char *key;

	*error_r = NULL;
	for (size_t i = 0; i < sizeof(tn_dir_classes) / sizeof(tn_dir_classes[0]); i++) {
		if (tn_dir_has_class(ld, e, tn_dir_classes[i].objectclass))
			cls = &tn_dir_classes[i];
	}
	if (cls == NULL || (key = tn_dir_key_of(ld, e, cls->key_attr)) == NULL)
		return NULL;
	obj = tn_obj_create(cls->kind, key);
	tn_mem_free(&key);
	obj->tenant = tn_dir_tenant_of(ld, e);
	if (obj->tenant == NULL) {
		*error_r = tn_dir_err("%s %s is not inside a tenant subtree",
				      tn_obj_kind_name(obj->kind), obj->key);
	} else if (tn_dir_fill_obj(dir, ld, e, obj, error_r) == 0) {
		if (obj->kind == TN_OBJ_ALIAS)
			tn_dir_fill_targets(ld, e, obj);
		return obj;
	}
	tn_obj_unref(&obj);
	return NULL;
}

/* Put obj into the slot for its kind; two objects for one slot mean the
 * directory holds the same address or domain twice: refuse to guess. */
static int tn_dir_place(struct tn_obj *obj, struct tn_obj **slots[4],
			const char **error_r)
{
	struct tn_obj **slot = slots[obj->kind];

	if (slot == NULL) {
		tn_obj_unref(&obj);
		return 0;
	}
	if (*slot != NULL) {
		*error_r = tn_dir_err("%s is held by more than one directory entry",
				      obj->key);
		tn_obj_unref(&obj);
		return -1;
	}
	*slot = obj;
	return 0;
}

/* Of the mailbox/alias entries found for an address, only one inside
 * the tenant that owns the address's domain counts: an entry planted
 * under another tenant (its admin may write only its own subtree, but
 * may name any address there) is ignored, loudly. */
static int tn_dir_pick_owned(struct tn_obj **cands, size_t n, struct tn_obj **slot,
			     const struct tn_obj *domain, const char **error_r)
{
	int ret = 0;

	for (size_t i = 0; i < n; i++) {
		if (domain == NULL || strcmp(cands[i]->tenant, domain->tenant) != 0) {
			if (domain != NULL)
				tn_error("directory: ignoring %s %s inside tenant %s: its domain "
					 "belongs to tenant %s", tn_obj_kind_name(cands[i]->kind),
					 cands[i]->key, cands[i]->tenant, domain->tenant);
			tn_obj_unref(&cands[i]);
		} else if (*slot != NULL) {
			*error_r = tn_dir_err("%s is held by more than one directory entry",
					      cands[i]->key);
			tn_obj_unref(&cands[i]);
			ret = -1;
		} else {
			*slot = cands[i];
			cands[i] = NULL;
		}
	}
	return ret;
}

static int tn_dir_collect(struct tn_dir *dir, LDAP *ld, LDAPMessage *res,
			  struct tn_obj **slots[4], const char **error_r)
{
	struct tn_obj *cands[TN_DIR_SIZELIMIT];
	size_t ncands = 0;
	int ret = 0;

	for (LDAPMessage *e = ldap_first_entry(ld, res); e != NULL && ret == 0;
	     e = ldap_next_entry(ld, e)) {
		struct tn_obj *obj = tn_dir_entry_obj(dir, ld, e, error_r);

		if (obj == NULL && *error_r != NULL)
			ret = -1;
		else if (obj != NULL && slots[TN_OBJ_DOMAIN] != NULL &&
			 (obj->kind == TN_OBJ_MAILBOX || obj->kind == TN_OBJ_ALIAS) &&
			 slots[obj->kind] != NULL && ncands < TN_DIR_SIZELIMIT)
			cands[ncands++] = obj;
		else if (obj != NULL)
			ret = tn_dir_place(obj, slots, error_r);
	}
	if (ncands > 0 && ret == 0)
		return tn_dir_pick_owned(cands, ncands, slots[TN_OBJ_MAILBOX],
					 *slots[TN_OBJ_DOMAIN], error_r);
	for (size_t i = 0; i < ncands; i++)
		tn_obj_unref(&cands[i]);
	return ret;
}

static void tn_dir_clear_slots(struct tn_obj **slots[4])
{
	for (size_t i = 0; i < 4; i++) {
		if (slots[i] != NULL && *slots[i] != NULL)
			tn_obj_unref(slots[i]);
	}
}

/* Run q on one connection after another (failing over after transport
 * errors while the deadline allows) and sort the entries into slots
 * (indexed by kind; mailbox and alias may share one), parsing them while
 * the connection that produced them is held. */
static int tn_dir_search(struct tn_dir *dir, const struct tn_dir_query *q,
			 tn_msec_t deadline, struct tn_obj **slots[4],
			 const char **error_r)
{
	for (unsigned attempt = 0; attempt <= dir->nuris; attempt++) {
		struct tn_dir_conn *c = tn_dir_acquire(dir, deadline, error_r);
		LDAPMessage *res = NULL;
		bool broken = false;
		int ret;

		if (c == NULL)
			break;
		ret = tn_dir_search_once(dir, c, q, deadline, &res, &broken, error_r);
		if (ret > 0 && tn_dir_collect(dir, c->ld, res, slots, error_r) < 0) {
			tn_dir_clear_slots(slots);
			ret = -1;
		}
		if (res != NULL)
			ldap_msgfree(res);
		if (broken)
			tn_dir_mark_down(dir, c->uri, *error_r);
		tn_dir_release(dir, c, broken);
		if (ret >= 0 || !broken || tn_time_left_ms(deadline) == 0)
			return ret;
	}
	return -1;
}

static enum tn_result tn_dir_fetch(struct tn_dir *dir, const struct tn_dir_query *q,
				   tn_msec_t deadline, struct tn_obj **slots[4],
				   const char **error_r)
{
	int ret = tn_dir_search(dir, q, deadline, slots, error_r);

	if (ret < 0) {
		tn_dir_count(&dir->stats.errors);
		return TN_TEMPFAIL;
	}
	return ret == 0 ? TN_NOTFOUND : TN_FOUND;
}

enum tn_result tn_dir_fetch_address(struct tn_dir *dir, const char *addr,
				    const char *domain, const char *tenant_hint,
				    tn_msec_t deadline, struct tn_obj **obj_r,
				    struct tn_obj **domain_r, struct tn_obj **tenant_r,
				    const char **error_r)
{
	char *a = tn_escape_filter_value(addr, strlen(addr));
	char *d = tn_escape_filter_value(domain, strlen(domain));
	char *t = tenant_hint != NULL ?
		tn_escape_filter_value(tenant_hint, strlen(tenant_hint)) : NULL;
	/* No objectClass terms: intersecting with objectClass=tnMailbox (all
	 * mailboxes) costs the server more than the search itself, and the
	 * entries are told apart by their object classes here anyway. Only
	 * a tenant entry holds tnTenantId as an attribute (below it, the
	 * value is only in the DN). */
	char *filter = tn_mem_printf("(|(mail=%s)(tnDomain=%s)%s%s%s)", a, d,
				     t != NULL ? "(tnTenantId=" : "", t != NULL ? t : "",
				     t != NULL ? ")" : "");
	struct tn_dir_query q = { dir->tenants_dn, LDAP_SCOPE_SUBTREE, filter, false };
	struct tn_obj **slots[4] = { t != NULL ? tenant_r : NULL, domain_r, obj_r, obj_r };
	enum tn_result res;

	*obj_r = *domain_r = *tenant_r = NULL;
	res = tn_dir_fetch(dir, &q, deadline, slots, error_r);
	tn_mem_free(&filter);
	tn_mem_free(&a);
	tn_mem_free(&d);
	tn_mem_free(&t);
	return res;
}

enum tn_result tn_dir_fetch_domain(struct tn_dir *dir, const char *domain,
				   tn_msec_t deadline, struct tn_obj **domain_r,
				   const char **error_r)
{
	char *d = tn_escape_filter_value(domain, strlen(domain));
	char *filter = tn_mem_printf("(&(objectClass=tnMailDomain)(tnDomain=%s))", d);
	struct tn_dir_query q = { dir->tenants_dn, LDAP_SCOPE_SUBTREE, filter, false };
	struct tn_obj **slots[4] = { NULL, domain_r, NULL, NULL };
	enum tn_result res;

	*domain_r = NULL;
	res = tn_dir_fetch(dir, &q, deadline, slots, error_r);
	tn_mem_free(&filter);
	tn_mem_free(&d);
	if (res == TN_FOUND && *domain_r == NULL)
		res = TN_NOTFOUND;
	return res;
}

enum tn_result tn_dir_fetch_tenant(struct tn_dir *dir, const char *id,
				   tn_msec_t deadline, struct tn_obj **tenant_r,
				   const char **error_r)
{
	char *v = tn_escape_dn_value(id, strlen(id));
	char *dn = tn_mem_printf("tnTenantId=%s,%s", v, dir->tenants_dn);
	struct tn_dir_query q = { dn, LDAP_SCOPE_BASE, "(objectClass=tnTenant)", true };
	struct tn_obj **slots[4] = { tenant_r, NULL, NULL, NULL };
	enum tn_result res;

	*tenant_r = NULL;
	res = tn_dir_fetch(dir, &q, deadline, slots, error_r);
	tn_mem_free(&dn);
	tn_mem_free(&v);
	if (res == TN_FOUND && *tenant_r == NULL)
		res = TN_NOTFOUND;
	return res;
}

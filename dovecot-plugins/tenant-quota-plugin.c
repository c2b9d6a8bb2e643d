/*++
 * NAME
 *	tenant-quota-plugin 3
 * SUMMARY
 *	Dovecot 2.3 mail plugin tenant_quota: quota backend "tenant", a
 *	tenant's storage pool counted in Redis across all stores
 * SYNOPSIS
 *	mail_plugins = $mail_plugins quota tenant_quota
 *	plugin {
 *	    quota = count:User quota
 *	    quota2 = tenant:Tenant pool
 *	    quota_vsizes = yes
 *	    tenant_quota_config = /etc/tenantmail/tenantmail.conf
 *	    tenant_quota_warning = 80 95 100
 *	}
 * DESCRIPTION
 *	lib11_tenant_quota_plugin.so registers the quota backend "tenant"
 *	with the quota plugin (lib10, loaded first; a declared dependency).
 *	A quota root of this backend is the tenant's pool: its limit is the
 *	userdb field tenant_quota_bytes (0 or absent: unlimited), its usage
 *	the hash usage:ten:<tenant> in Redis (tn-usage.h), to which every
 *	store adds the deltas of its own commits (saves, copies, expunges)
 *	in one atomic script, mirroring them into usage:mbx:<address> for
 *	the milter. Dovecot compares usage and limit as for any other root
 *	and refuses LMTP delivery (552 5.2.2) and IMAP APPEND/COPY
 *	([OVERQUOTA]) over it. Do not give the root a quota2_rule: a "*"
 *	rule would replace the userdb limit.
 *
 *	Warnings: when a growing usage reaches one of tenant_quota_warning's
 *	percentages a quota.warning event is appended to the outbox of
 *	tenantmail.conf's outbox_dir, once per crossing (the hashes
 *	usage:warn:ten:<tenant> and usage:warn:mbx:<address>, re-armed when
 *	usage falls back): scope tenant for the pool, scope mailbox for the
 *	mailbox's own limit (the other root's quota_rule) against its
 *	mirror usage:mbx:<address>. A write Dovecot refused gives
 *	quota.exceeded (where lmtp or imap), scope tenant when the pool was
 *	full, else mailbox (the mailbox's own root), at most one a minute
 *	per pool or mailbox, the others counted in "suppressed". An event
 *	that cannot be appended is an error line; mail never waits for it.
 *
 *	Redis unreachable (no answer within redis_timeout, then fail-fast
 *	for the cache's backoff): the pool's usage is unknown, and for that
 *	operation the root counts as unlimited, so Dovecot refuses nothing
 *	on it while the per-mailbox root still applies; a delta that could
 *	not be written is an error line ("Failed to update quota") naming
 *	the tenant, and "tnctl usage reconcile --tenant T" sets the counters
 *	from Dovecot's own per-mailbox figures.
 *
 *	A user without the userdb field tenant (another passdb, a system
 *	user) has an unlimited pool and no Redis traffic.
 * SECURITY
 *	Runs in the mail processes as the mail user: tenantmail.conf, the
 *	Redis password file it names and the outbox must be readable and
 *	writable by the group those processes have (mail_access_groups).
 *	Nothing from the message reaches Redis or the log.
 *--*/
#include "lib.h"
#include "array.h"
#include "ioloop.h"
#include "module-dir.h"
#include "mail-user.h"
#include "quota-private.h"
#include "quota-plugin.h"

#include <jansson.h>

#include "tn-cache.h"
#include "tn-conf.h"
#include "tn-conf-shared.h"
#include "tn-log.h"
#include "tn-lookup.h"
#include "tn-outbox.h"
#include "tn-time.h"
#include "tn-usage.h"

#define TENANT_QUOTA_DEFAULT_CONF "/etc/tenantmail/tenantmail.conf"
#define TENANT_QUOTA_DEFAULT_WARNING "80 95 100"
#define TENANT_QUOTA_CONF_SECTION "dovecot-quota"
#define TENANT_QUOTA_EXCEEDED_WINDOW 60000
/* how long an unanswered Redis keeps the pool unenforced before asking again */
#define TENANT_QUOTA_DOWN_MSECS 1000

const char *tenant_quota_plugin_version = DOVECOT_ABI_VERSION;
const char *tenant_quota_plugin_dependencies[] = { "quota", NULL };

void tenant_quota_plugin_init(struct module *module);
void tenant_quota_plugin_deinit(void);

/* One per tenantmail.conf path in a process (LMTP serves many users). */
struct tenant_quota_conf {
	struct tenant_quota_conf *next;
	char *path;
	struct tn_conf *conf;
	struct tn_usage *usage;
	struct tn_outbox *outbox;	/* NULL: outbox_dir empty */
	tn_msec_t down_until;		/* Redis unanswered: pools unenforced until then */
};

struct tenant_quota_settings {
	const char *tenant;		/* NULL: not a tenant's user */
	int64_t limit;			/* tenant_quota_bytes; 0 unlimited */
	const char *config;
	unsigned thresholds[TN_USAGE_THRESHOLDS_MAX];
	unsigned n_thresholds;
};

struct tenant_quota_root {
	struct quota_root root;
	struct tenant_quota_settings set;
	struct tenant_quota_conf *tc;
	const char *event_tenant;	/* the id in lower case (the outbox's rule) */
	/* usage read by the last get_resource, reused within the same ioloop
	 * iteration (Dovecot asks for bytes and messages in turn) */
	int64_t last_bytes, last_messages;
	struct timeval last_read;
};

static struct tenant_quota_conf *tenant_quota_confs;
static enum quota_alloc_result
(*tenant_quota_super_test_alloc)(struct quota_transaction_context *ctx,
				 uoff_t size, const char **error_r);

/* --- settings ------------------------------------------------------------ */

/* Every setting the plugin reads, in one place: the userdb fields tenant
 * and tenant_quota_bytes and the plugin {} settings tenant_quota_*.
 * Dovecot 2.4 replaces this API (mail_user_plugin_getenv) with typed
 * settings structs: only this function changes then. */
static int tenant_quota_settings_read(struct mail_user *user,
				      struct tenant_quota_settings *set_r,
				      const char **error_r)
{
	const char *tenant = mail_user_plugin_getenv(user, "tenant");
	const char *limit = mail_user_plugin_getenv(user, "tenant_quota_bytes");
	const char *config = mail_user_plugin_getenv(user, "tenant_quota_config");
	const char *warning = mail_user_plugin_getenv(user, "tenant_quota_warning");
	uint64_t bytes = 0;
	int n;

	i_zero(set_r);
	set_r->tenant = tenant != NULL && *tenant != '\0' ? tenant : NULL;
	if (limit != NULL && *limit != '\0' && str_to_uint64(limit, &bytes) < 0) {
		*error_r = t_strdup_printf("tenant_quota_bytes: not a number: %s", limit);
		return -1;
	}
	set_r->limit = bytes > INT64_MAX ? INT64_MAX : (int64_t)bytes;
	set_r->config = config != NULL && *config != '\0' ? config :
		TENANT_QUOTA_DEFAULT_CONF;
	n = tn_usage_parse_thresholds(warning != NULL ? warning :
				      TENANT_QUOTA_DEFAULT_WARNING,
				      set_r->thresholds, error_r);
	if (n < 0) {
		*error_r = t_strdup_printf("tenant_quota_warning: %s", *error_r);
		return -1;
	}
	set_r->n_thresholds = (unsigned)n;
	return 0;
}

static struct tenant_quota_conf *tenant_quota_conf_get(const char *path,
						       const char **error_r)
{
	static const struct tn_conf_param *const tables[] = {
		TN_CONF_SHARED_TABLES, NULL
	};
	struct tenant_quota_conf *tc;

	for (tc = tenant_quota_confs; tc != NULL; tc = tc->next) {
		if (strcmp(tc->path, path) == 0)
			return tc;
	}
	tc = i_new(struct tenant_quota_conf, 1);
	tc->conf = tn_conf_create(TENANT_QUOTA_CONF_SECTION, tables);
	if (tn_conf_load_file(tc->conf, path, error_r) < 0 ||
	    (tc->usage = tn_usage_create(tc->conf, error_r)) == NULL) {
		*error_r = t_strdup(*error_r);
		tn_conf_destroy(&tc->conf);
		i_free(tc);
		return NULL;
	}
	if (*tn_conf_str(tc->conf, "outbox_dir") != '\0')
		tc->outbox = tn_outbox_create_conf(tc->conf);
	tc->path = i_strdup(path);
	tc->next = tenant_quota_confs;
	tenant_quota_confs = tc;
	return tc;
}

static void tenant_quota_confs_free(void)
{
	struct tenant_quota_conf *tc;

	while ((tc = tenant_quota_confs) != NULL) {
		tenant_quota_confs = tc->next;
		tn_usage_destroy(&tc->usage);
		if (tc->outbox != NULL)
			tn_outbox_destroy(&tc->outbox);
		tn_conf_destroy(&tc->conf);
		i_free(tc->path);
		i_free(tc);
	}
}

/* --- events -------------------------------------------------------------- */

static void tenant_quota_emit(struct tenant_quota_root *tq, const char *type, json_t *data)
{
	char id[TN_OUTBOX_ID_SIZE];
	const char *error;
	uint64_t seq;

	if (tq->tc->outbox == NULL || data == NULL) {
		json_decref(data);
		return;
	}
	if (tn_outbox_append(tq->tc->outbox, type, tq->event_tenant, data, id, &seq,
			     &error) < 0) {
		e_error(tq->root.quota->user->event,
			"tenant_quota: tenant=%s: %s event not recorded: %s",
			tq->set.tenant, type, error);
	}
	json_decref(data);
}

static void tenant_quota_warn(struct tenant_quota_root *tq, bool pool, unsigned percent,
			      int64_t bytes, int64_t limit)
{
	const char *address = tq->root.quota->user->username;

	e_info(tq->root.quota->user->event,
	       "tenant_quota: tenant=%s: %s usage %lld of %lld bytes reached %u%%",
	       tq->set.tenant, pool ? "pool" : "mailbox", (long long)bytes,
	       (long long)limit, percent);
	tenant_quota_emit(tq, "quota.warning",
			  json_pack("{s:s, s:o, s:I, s:I, s:I}", "scope",
				    pool ? "tenant" : "mailbox",
				    "address", pool ? json_null() : json_string(address),
				    "threshold_percent", (json_int_t)percent,
				    "usage_bytes", (json_int_t)bytes,
				    "limit_bytes", (json_int_t)limit));
}

/* The mailbox's own limit: the first other root's (Dovecot's count root
 * with the userdb quota_rule); 0 when it has none. */
static int64_t tenant_quota_mailbox_limit(struct tenant_quota_root *tq)
{
	struct quota_root *root;

	array_foreach_elem(&tq->root.quota->roots, root) {
		if (root != &tq->root && root->bytes_limit > 0)
			return root->bytes_limit;
	}
	return 0;
}

/* A refusal: scope "tenant" (the pool) or "mailbox" (another root, the
 * mailbox's own quota). Logged always, an event at most once a window. */
static void tenant_quota_exceeded(struct tenant_quota_root *tq, const char *scope,
				  uoff_t size, int64_t usage, int64_t limit)
{
	struct mail_user *user = tq->root.quota->user;
	const char *where = strcmp(user->service, "lmtp") == 0 ? "lmtp" : "imap";
	bool pool = strcmp(scope, "tenant") == 0;
	int64_t suppressed;
	int ret;

	ret = tn_usage_exceeded(tq->tc->usage, pool ? "ten" : "mbx",
				pool ? tq->set.tenant : user->username,
				TENANT_QUOTA_EXCEEDED_WINDOW,
				tn_time_now_ms() + tn_usage_timeout(tq->tc->usage),
				&suppressed);
	e_info(user->event, "tenant_quota: tenant=%s: refused %llu bytes: %s full "
	       "(%lld of %lld bytes)", tq->set.tenant, (unsigned long long)size,
	       pool ? "pool" : "mailbox", (long long)usage, (long long)limit);
	if (ret <= 0)
		return;
	tenant_quota_emit(tq, "quota.exceeded",
			  json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I}", "scope", scope,
				    "address", user->username, "where", where,
				    "message_bytes", (json_int_t)size,
				    "usage_bytes", (json_int_t)usage,
				    "limit_bytes", (json_int_t)limit,
				    "suppressed", (json_int_t)suppressed));
}

/* The refusal was not the pool's: the first other root over its limit. */
static void tenant_quota_exceeded_other(struct tenant_quota_root *tq, uoff_t size)
{
	struct quota_root *root;
	uint64_t value, limit;
	const char *error;

	array_foreach_elem(&tq->root.quota->roots, root) {
		if (root == &tq->root ||
		    quota_get_resource(root, "", QUOTA_NAME_STORAGE_BYTES, &value, &limit,
				       &error) != QUOTA_GET_RESULT_LIMITED ||
		    value + size <= limit)
			continue;
		tenant_quota_exceeded(tq, "mailbox", size, (int64_t)value, (int64_t)limit);
		return;
	}
}

/* --- the backend ----------------------------------------------------------- */

static struct tenant_quota_root *tenant_quota_root_find(struct quota *quota)
{
	struct quota_root *root;

	array_foreach_elem(&quota->roots, root) {
		if (strcmp(root->backend.name, "tenant") == 0)
			return (struct tenant_quota_root *)root;
	}
	return NULL;
}

/* Dovecot's own test, then: was it the pool that refused? */
static enum quota_alloc_result
tenant_quota_test_alloc(struct quota_transaction_context *ctx, uoff_t size,
			const char **error_r)
{
	enum quota_alloc_result ret = tenant_quota_super_test_alloc(ctx, size, error_r);
	struct tenant_quota_root *tq;

	if (ret != QUOTA_ALLOC_RESULT_OVER_QUOTA && ret != QUOTA_ALLOC_RESULT_OVER_QUOTA_LIMIT)
		return ret;
	tq = tenant_quota_root_find(ctx->quota);
	if (tq == NULL || tq->tc == NULL)
		return ret;
	if (tq->set.limit > 0 && tn_time_now_ms() >= tq->tc->down_until &&
	    tq->last_bytes + ctx->bytes_used + (int64_t)size > tq->set.limit) {
		tenant_quota_exceeded(tq, "tenant", size, tq->last_bytes, tq->set.limit);
	} else {
		tenant_quota_exceeded_other(tq, size);
	}
	return ret;
}

static struct quota_root *tenant_quota_alloc(void)
{
	struct tenant_quota_root *tq = i_new(struct tenant_quota_root, 1);

	return &tq->root;
}

static int tenant_quota_init(struct quota_root *root, const char *args,
			     const char **error_r)
{
	struct tenant_quota_root *tq = (struct tenant_quota_root *)root;

	if (quota_root_default_init(root, args, error_r) < 0)
		return -1;
	if (tenant_quota_settings_read(root->quota->user, &tq->set, error_r) < 0)
		return -1;
	tq->set.tenant = p_strdup(root->pool, tq->set.tenant);
	if (tq->set.tenant != NULL)
		tq->event_tenant = p_strdup(root->pool, t_str_lcase(tq->set.tenant));
	if (tq->set.tenant != NULL &&
	    (tq->tc = tenant_quota_conf_get(tq->set.config, error_r)) == NULL)
		return -1;
	root->bytes_limit = tq->tc != NULL ? tq->set.limit : 0;
	root->count_limit = 0;
	/* Dovecot's own quota2_warning percentages: of the pool */
	quota_root_recalculate_relative_rules(root->set, root->bytes_limit, 0);
	if (tenant_quota_super_test_alloc == NULL)
		tenant_quota_super_test_alloc = root->quota->set->test_alloc;
	root->quota->set->test_alloc = tenant_quota_test_alloc;
	return 0;
}

static void tenant_quota_deinit(struct quota_root *root)
{
	i_free(root);
}

/* Called by Dovecot before it uses the limit: unlimited while Redis
 * does not answer (the pool's usage is unknown). */
static int tenant_quota_init_limits(struct quota_root *root, const char **error_r ATTR_UNUSED)
{
	struct tenant_quota_root *tq = (struct tenant_quota_root *)root;

	root->bytes_limit = tq->tc == NULL || tn_time_now_ms() < tq->tc->down_until ?
		0 : tq->set.limit;
	quota_root_recalculate_relative_rules(root->set, root->bytes_limit, 0);
	return 0;
}

static const char *const *tenant_quota_get_resources(struct quota_root *root ATTR_UNUSED)
{
	static const char *resources[] = {
		QUOTA_NAME_STORAGE_KILOBYTES, QUOTA_NAME_MESSAGES, NULL
	};

	return resources;
}

static void tenant_quota_mark_down(struct tenant_quota_root *tq)
{
	if (tn_time_now_ms() >= tq->tc->down_until) {
		e_warning(tq->root.quota->user->event,
			  "tenant_quota: tenant=%s: pool usage unknown, not enforced "
			  "for now (the mailbox quota still applies): %s",
			  tq->set.tenant, tn_cache_last_error());
	}
	tq->tc->down_until = tn_time_now_ms() + TENANT_QUOTA_DOWN_MSECS;
}

/* The pool's usage: 0, or -1 when Redis did not answer. */
static int tenant_quota_read(struct tenant_quota_root *tq)
{
	int64_t bytes, messages;

	if (timercmp(&tq->last_read, &ioloop_timeval, ==))
		return 0;
	if (tn_usage_get(tq->tc->usage, "ten", tq->set.tenant,
			 tn_time_now_ms() + tn_usage_timeout(tq->tc->usage),
			 &bytes, &messages) < 0)
		return -1;
	tq->last_bytes = bytes;
	tq->last_messages = messages;
	tq->last_read = ioloop_timeval;
	return 0;
}

static enum quota_get_result
tenant_quota_get_resource(struct quota_root *root, const char *name,
			  uint64_t *value_r, const char **error_r)
{
	struct tenant_quota_root *tq = (struct tenant_quota_root *)root;
	bool bytes = strcmp(name, QUOTA_NAME_STORAGE_BYTES) == 0;

	*value_r = 0;
	if (!bytes && strcmp(name, QUOTA_NAME_MESSAGES) != 0) {
		*error_r = QUOTA_UNKNOWN_RESOURCE_ERROR_STRING;
		return QUOTA_GET_RESULT_UNKNOWN_RESOURCE;
	}
	if (tq->tc == NULL)
		return QUOTA_GET_RESULT_LIMITED;
	if (tenant_quota_read(tq) < 0) {
		tenant_quota_mark_down(tq);
		return QUOTA_GET_RESULT_LIMITED;
	}
	tq->tc->down_until = 0;
	*value_r = (uint64_t)(bytes ? tq->last_bytes : tq->last_messages);
	return QUOTA_GET_RESULT_LIMITED;
}

/* doveadm quota recalc (or Dovecot missed frees): count this mailbox as
 * the count backend does, and turn the difference from its mirror into a
 * delta of both counters -- a per-user reconciliation that loses no
 * other store's concurrent changes. */
static int tenant_quota_recalc_delta(struct tenant_quota_root *tq, int64_t *dbytes_r,
				     int64_t *dmessages_r, const char **error_r)
{
	enum quota_get_result result;
	uint64_t bytes, count;
	int64_t mbytes, mcount;

	if (quota_count(&tq->root, &bytes, &count, &result, error_r) <= 0)
		return -1;
	if (tn_usage_get(tq->tc->usage, "mbx", tq->root.quota->user->username,
			 tn_time_now_ms() + tn_usage_timeout(tq->tc->usage),
			 &mbytes, &mcount) < 0) {
		*error_r = tn_cache_last_error();
		return -1;
	}
	*dbytes_r = (int64_t)bytes - mbytes;
	*dmessages_r = (int64_t)count - mcount;
	e_info(tq->root.quota->user->event, "tenant_quota: tenant=%s: recalculated: "
	       "%llu bytes, %llu messages (counters corrected by %lld, %lld)",
	       tq->set.tenant, (unsigned long long)bytes, (unsigned long long)count,
	       (long long)*dbytes_r, (long long)*dmessages_r);
	return 0;
}

static int tenant_quota_update(struct quota_root *root,
			       struct quota_transaction_context *ctx,
			       const char **error_r)
{
	struct tenant_quota_root *tq = (struct tenant_quota_root *)root;
	int64_t dbytes = ctx->bytes_used, dmessages = ctx->count_used;
	struct tn_usage_limits limits = {
		.tenant_limit = tq->set.limit,
		.thresholds = tq->set.thresholds,
		.n_thresholds = tq->set.n_thresholds,
	};
	struct tn_usage_result res;

	if (tq->tc == NULL)
		return 0;
	if (ctx->recalculate != QUOTA_RECALCULATE_DONT &&
	    tenant_quota_recalc_delta(tq, &dbytes, &dmessages, error_r) < 0)
		return -1;
	if (dbytes == 0 && dmessages == 0)
		return 0;
	limits.mailbox_limit = tenant_quota_mailbox_limit(tq);
	if (tn_usage_add(tq->tc->usage, tq->set.tenant, root->quota->user->username,
			 dbytes, dmessages, &limits,
			 tn_time_now_ms() + tn_usage_timeout(tq->tc->usage), &res) < 0) {
		*error_r = t_strdup_printf("tenant_quota: tenant=%s: change of %lld bytes, "
					   "%lld messages not counted (run tnctl usage "
					   "reconcile --tenant %s): %s", tq->set.tenant,
					   (long long)dbytes, (long long)dmessages,
					   tq->set.tenant, tn_cache_last_error());
		return -1;
	}
	tq->last_bytes = res.bytes;
	tq->last_messages = res.messages;
	for (unsigned i = 0; i < res.n_crossed; i++)
		tenant_quota_warn(tq, TRUE, res.crossed[i], res.bytes, tq->set.limit);
	for (unsigned i = 0; i < res.n_crossed_mailbox; i++) {
		tenant_quota_warn(tq, FALSE, res.crossed_mailbox[i], res.mailbox_bytes,
				  limits.mailbox_limit);
	}
	return 0;
}

static struct quota_backend quota_backend_tenant = {
	.name = "tenant",
	.v = {
		.alloc = tenant_quota_alloc,
		.init = tenant_quota_init,
		.deinit = tenant_quota_deinit,
		.init_limits = tenant_quota_init_limits,
		.get_resources = tenant_quota_get_resources,
		.get_resource = tenant_quota_get_resource,
		.update = tenant_quota_update,
	},
};

/* --- the library's log lines ------------------------------------------------ */

static bool tenant_quota_log_handler(enum tn_log_level level, const char *text,
				     void *context ATTR_UNUSED)
{
	switch (level) {
	case TN_LOG_DEBUG:
		e_debug(quota_backend_tenant.event, "%s", text);
		break;
	case TN_LOG_INFO:
		i_info("tenant_quota: %s", text);
		break;
	case TN_LOG_WARNING:
		i_warning("tenant_quota: %s", text);
		break;
	default:
		i_error("tenant_quota: %s", text);
		break;
	}
	return TRUE;
}

void tenant_quota_plugin_init(struct module *module ATTR_UNUSED)
{
	quota_backend_tenant.event = event_create(NULL);
	event_set_append_log_prefix(quota_backend_tenant.event, "tenant_quota: ");
	tn_log_set_handler(tenant_quota_log_handler, NULL);
	quota_backend_register(&quota_backend_tenant);
}

void tenant_quota_plugin_deinit(void)
{
	quota_backend_unregister(&quota_backend_tenant);
	tn_log_set_handler(NULL, NULL);
	tenant_quota_confs_free();
	event_unref(&quota_backend_tenant.event);
}

/*++
 * NAME
 *	tn-lookup 3
 * SUMMARY
 *	the composed lookup (see tn-lookup.h)
 * DESCRIPTION
 *	A fetch gets the directory objects behind one question (an address
 *	and its domain; a domain; a tenant) plus the tenant they belong to,
 *	from the shallowest layer that has all of them. The leader of a
 *	fetch is registered as a "flight" under its first cache key; a
 *	concurrent fetch of the same key waits for the leader's result
 *	instead of asking Redis and LDAP again.
 *
 *	Generations: the in-process generation is read before Redis is
 *	asked and the Redis generation before LDAP is asked; fills carry
 *	them, so an invalidation that happens during a fetch always wins.
 *--*/
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <hiredis/hiredis.h>

#include "tn-cache.h"
#include "tn-dir.h"
#include "tn-escape.h"
#include "tn-log.h"
#include "tn-lookup.h"
#include "tn-mcache.h"
#include "tn-mem.h"

enum tn_fetch_what { TN_FETCH_ADDRESS, TN_FETCH_DOMAIN, TN_FETCH_TENANT };

/* Tenant hints: which tenant a domain belonged to when last seen. A hint
 * only chooses which tenant entry to read in the same MGET as the address
 * and domain; the domain entry read there decides, so a stale hint costs
 * one more round trip, never a wrong answer. */
#define TN_LOOKUP_HINTS_MAX 100000
#define TN_LOOKUP_HINTS_TTL (3600 * 1000)

struct tn_fetch {
	enum tn_fetch_what what;
	const char *name;		/* address, domain or tenant id */
	const char *domain;		/* ADDRESS: its domain */
	char *keys[2];
	unsigned n;
	struct tn_obj *objs[2];		/* per key; NULL: no such object */
	struct tn_obj *tenant;		/* the objects' tenant, or NULL */
	enum tn_layer layer;
	struct tn_lookup_usage *usage;	/* read usage along (ADDRESS), or NULL */
	char *usage_tenant;		/* the tenant whose usage was read */
};

struct tn_flight {
	struct tn_flight *next;
	char *key;
	unsigned waiters;
	bool done;
	enum tn_result rc;
	struct tn_obj *objs[2];
	struct tn_obj *tenant;
	enum tn_layer layer;
	char error[256];
};

struct tn_lookup {
	unsigned flags;
	struct tn_dir *dir;
	struct tn_cache *cache;		/* NULL: redis_enabled = no */
	struct tn_mcache *mc;
	struct tn_mcache *hints;	/* domain -> its domain object (tenant hint) */
	tn_msec_t mem_ttl, timeout;
	unsigned alias_max_depth, alias_max_targets;
	pthread_mutex_t flight_lock;
	pthread_cond_t flight_cond;
	struct tn_flight *flights;
	struct tn_lookup_stats stats;
	tn_lookup_keys_cb *on_keys;	/* tn_lookup_set_listener() */
	tn_lookup_state_cb *on_state;
	void *listener_context;
};

static __thread char tn_lookup_errbuf[512];

static const char *tn_lookup_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *tn_lookup_err(const char *fmt, ...)
{
	char tmp[sizeof(tn_lookup_errbuf)];
	va_list ap;

	/* format first: the arguments may point into tn_lookup_errbuf */
	va_start(ap, fmt);
	vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	memcpy(tn_lookup_errbuf, tmp, sizeof(tmp));
	return tn_lookup_errbuf;
}

static void tn_lookup_count(uint64_t *counter)
{
	__atomic_add_fetch(counter, 1, __ATOMIC_RELAXED);
}

/* --- creation ---------------------------------------------------------------- */

int tn_lookup_read_secret(const char *path, char **secret_r, const char **error_r)
{
	char buf[1024];
	struct stat st;
	FILE *fp;
	size_t len;

	*secret_r = NULL;
	if (path == NULL || *path == '\0')
		return 0;
	if ((fp = fopen(path, "r")) == NULL) {
		*error_r = tn_lookup_err("%s: cannot open: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fileno(fp), &st) == 0 && (st.st_mode & 0077) != 0)
		tn_warning("%s: readable by group or others; make it mode 0600", path);
	if (fgets(buf, sizeof(buf), fp) == NULL)
		buf[0] = '\0';
	fclose(fp);
	len = strcspn(buf, "\r\n");
	if (len == 0 || len == sizeof(buf) - 1) {
		explicit_bzero(buf, sizeof(buf));
		*error_r = tn_lookup_err("%s: %s", path, len == 0 ?
					 "empty: the first line must hold the password" :
					 "first line too long for a password");
		return -1;
	}
	*secret_r = tn_mem_strndup(buf, len);
	explicit_bzero(buf, sizeof(buf));
	return 0;
}

static void tn_lookup_on_message(const char *const *keys, void *context)
{
	struct tn_lookup *lk = context;

	for (size_t i = 0; keys[i] != NULL; i++)
		tn_mcache_invalidate(lk->mc, keys[i]);
	if (lk->on_keys != NULL)
		lk->on_keys(keys, lk->listener_context);
}

static void tn_lookup_on_state(bool subscribed, void *context)
{
	struct tn_lookup *lk = context;

	__atomic_store_n(&lk->stats.subscribed, subscribed ? 1 : 0, __ATOMIC_RELAXED);
	tn_mcache_set_enabled(lk->mc, subscribed);
	if (lk->on_state != NULL)
		lk->on_state(subscribed, lk->listener_context);
}

void tn_lookup_set_listener(struct tn_lookup *lk, tn_lookup_keys_cb *on_keys,
			    tn_lookup_state_cb *on_state, void *context)
{
	lk->on_keys = on_keys;
	lk->on_state = on_state;
	lk->listener_context = context;
}

struct tn_dir *tn_lookup_dir_create(const struct tn_conf *conf, const char *const *uris,
				    const char *bind_dn, const char *password)
{
	/* the order of ldap_tls_require_cert's choices */
	static const char *const require_cert[] = { "never", "allow", "try", "demand" };
	struct tn_dir_settings set = {
		.uris = uris != NULL && uris[0] != NULL ? uris : tn_conf_list(conf, "ldap_uri"),
		.base = tn_conf_str(conf, "ldap_base"),
		.tenants_rdn = tn_conf_str(conf, "ldap_tenants_rdn"),
		.bind_dn = bind_dn != NULL ? bind_dn : tn_conf_str(conf, "ldap_bind_dn"),
		.bind_password = password,
		.starttls = tn_conf_bool(conf, "ldap_starttls"),
		.tls_ca_file = tn_conf_str(conf, "ldap_tls_ca_file"),
		.tls_require_cert = require_cert[tn_conf_enum(conf, "ldap_tls_require_cert")],
		.network_timeout = tn_conf_time_ms(conf, "ldap_network_timeout"),
		.op_timeout = tn_conf_time_ms(conf, "ldap_timeout"),
		.idle_timeout = tn_conf_time_ms(conf, "ldap_idle_timeout"),
		.retry_down = tn_conf_time_ms(conf, "ldap_retry_down"),
		.max_connections = (unsigned)tn_conf_int(conf, "ldap_connections"),
	};

	return tn_dir_create(&set);
}

static struct tn_cache *tn_lookup_cache_create(const struct tn_conf *conf, const char *password)
{
	struct tn_cache_settings set = {
		.host = tn_conf_str(conf, "redis_host"),
		.port = (int)tn_conf_int(conf, "redis_port"),
		.socket_path = tn_conf_str(conf, "redis_socket"),
		.password = password,
		.db = (int)tn_conf_int(conf, "redis_db"),
		.timeout = tn_conf_time_ms(conf, "redis_timeout"),
		.max_connections = (unsigned)tn_conf_int(conf, "redis_connections"),
		.key_prefix = tn_conf_str(conf, "redis_key_prefix"),
		.positive_ttl = tn_conf_time_ms(conf, "cache_positive_ttl"),
		.negative_ttl = tn_conf_time_ms(conf, "cache_negative_ttl"),
	};

	return tn_cache_create(&set);
}

struct tn_cache *tn_lookup_redis_create(const struct tn_conf *conf, const char **error_r)
{
	struct tn_cache *cache;
	char *password = NULL;

	if (tn_lookup_read_secret(tn_conf_str(conf, "redis_password_file"), &password,
				  error_r) < 0)
		return NULL;
	cache = tn_lookup_cache_create(conf, password);
	if (password != NULL)
		explicit_bzero(password, strlen(password));
	tn_mem_free(&password);
	return cache;
}

static int tn_lookup_check_conf(const struct tn_conf *conf, const char **error_r)
{
	if (tn_conf_list(conf, "ldap_uri")[0] == NULL) {
		*error_r = "ldap_uri: no LDAP server configured";
		return -1;
	}
	if (*tn_conf_str(conf, "ldap_base") == '\0') {
		*error_r = "ldap_base must be set";
		return -1;
	}
	return 0;
}

struct tn_lookup *tn_lookup_create(const struct tn_conf *conf, unsigned flags,
				   const char **error_r)
{
	char *ldap_pw = NULL, *redis_pw = NULL;
	struct tn_lookup *lk;
	size_t mem_size;

	if (tn_lookup_check_conf(conf, error_r) < 0 ||
	    tn_lookup_read_secret(tn_conf_str(conf, "ldap_bind_password_file"), &ldap_pw, error_r) < 0 ||
	    tn_lookup_read_secret(tn_conf_str(conf, "redis_password_file"), &redis_pw, error_r) < 0) {
		tn_mem_free(&ldap_pw);
		return NULL;
	}
	lk = tn_mem_calloc(1, sizeof(*lk));
	lk->flags = flags;
	lk->dir = tn_lookup_dir_create(conf, NULL, NULL, ldap_pw);
	if (tn_conf_bool(conf, "redis_enabled"))
		lk->cache = tn_lookup_cache_create(conf, redis_pw);
	lk->mem_ttl = tn_conf_time_ms(conf, "memory_cache_ttl");
	mem_size = (flags & TN_LOOKUP_NO_MEMORY_CACHE) != 0 || lk->mem_ttl == 0 ? 0 :
		(size_t)tn_conf_int(conf, "memory_cache_size");
	lk->mc = tn_mcache_create(mem_size);
	lk->hints = tn_mcache_create(TN_LOOKUP_HINTS_MAX);
	/* with Redis, memory is used only while subscribed to invalidations */
	if (lk->cache != NULL)
		tn_mcache_set_enabled(lk->mc, false);
	lk->timeout = tn_conf_time_ms(conf, "lookup_timeout");
	lk->alias_max_depth = (unsigned)tn_conf_int(conf, "alias_max_depth");
	lk->alias_max_targets = (unsigned)tn_conf_int(conf, "alias_max_targets");
	pthread_mutex_init(&lk->flight_lock, NULL);
	pthread_cond_init(&lk->flight_cond, NULL);
	if (ldap_pw != NULL)
		explicit_bzero(ldap_pw, strlen(ldap_pw));
	if (redis_pw != NULL)
		explicit_bzero(redis_pw, strlen(redis_pw));
	tn_mem_free(&ldap_pw);
	tn_mem_free(&redis_pw);
	return lk;
}

int tn_lookup_start(struct tn_lookup *lk, const char **error_r)
{
	bool memory = (lk->flags & TN_LOOKUP_NO_MEMORY_CACHE) == 0 && lk->mem_ttl > 0;

	if (lk->cache == NULL || (!memory && lk->on_keys == NULL && lk->on_state == NULL))
		return 0;
	if (tn_cache_subscribe(lk->cache, tn_lookup_on_message, tn_lookup_on_state, lk) < 0) {
		*error_r = "cannot start the invalidation subscriber thread";
		return -1;
	}
	return 0;
}

void tn_lookup_destroy(struct tn_lookup **lkp)
{
	struct tn_lookup *lk = *lkp;

	if (lk == NULL)
		return;
	tn_cache_destroy(&lk->cache);
	tn_dir_destroy(&lk->dir);
	tn_mcache_destroy(&lk->mc);
	tn_mcache_destroy(&lk->hints);
	pthread_mutex_destroy(&lk->flight_lock);
	pthread_cond_destroy(&lk->flight_cond);
	tn_mem_free(lkp);
}

tn_msec_t tn_lookup_default_timeout(struct tn_lookup *lk)
{
	return lk->timeout;
}

bool tn_lookup_memory_active(struct tn_lookup *lk)
{
	return tn_mcache_enabled(lk->mc);
}

/* --- fetch: memory ------------------------------------------------------------- */

/* prefix + name, malloc()ed: on every lookup, in-process hits included
 * (a printf would be most of a hit's own work). */
static char *tn_lookup_key(const char *prefix, const char *name)
{
	size_t plen = strlen(prefix), nlen = strlen(name);
	char *key = tn_mem_alloc(plen + nlen + 1);

	memcpy(key, prefix, plen);
	memcpy(key + plen, name, nlen + 1);
	return key;
}

static void tn_fetch_init(struct tn_fetch *f, enum tn_fetch_what what,
			  const char *name, const char *domain)
{
	static const char *const prefixes[] = { "adr:", "dom:", "ten:" };

	memset(f, 0, sizeof(*f));
	f->what = what;
	f->name = name;
	f->domain = domain;
	f->keys[f->n++] = tn_lookup_key(prefixes[what], name);
	if (what == TN_FETCH_ADDRESS)
		f->keys[f->n++] = tn_lookup_key("dom:", domain);
}

static void tn_fetch_clear_results(struct tn_fetch *f)
{
	tn_obj_unref(&f->objs[0]);
	tn_obj_unref(&f->objs[1]);
	tn_obj_unref(&f->tenant);
}

static void tn_fetch_deinit(struct tn_fetch *f)
{
	tn_fetch_clear_results(f);
	tn_mem_free(&f->usage_tenant);
	for (unsigned i = 0; i < f->n; i++)
		tn_mem_free(&f->keys[i]);
}

/* The tenant the fetched objects belong to (the address's before the
 * domain's), or NULL when nothing was found. */
static const char *tn_fetch_tenant_id(const struct tn_fetch *f)
{
	for (unsigned i = 0; i < f->n; i++) {
		if (f->objs[i] != NULL)
			return f->objs[i]->tenant;
	}
	return NULL;
}

static bool tn_fetch_memory(struct tn_lookup *lk, struct tn_fetch *f)
{
	const char *tid;
	char *tkey;
	bool ok;

	for (unsigned i = 0; i < f->n; i++) {
		if (tn_mcache_get(lk->mc, f->keys[i], &f->objs[i]) == TN_MCACHE_MISS) {
			tn_fetch_clear_results(f);
			return false;
		}
	}
	if (f->what == TN_FETCH_TENANT || (tid = tn_fetch_tenant_id(f)) == NULL) {
		f->tenant = f->what == TN_FETCH_TENANT && f->objs[0] != NULL ?
			tn_obj_ref(f->objs[0]) : NULL;
		return true;
	}
	tkey = tn_lookup_key("ten:", tid);
	ok = tn_mcache_get(lk->mc, tkey, &f->tenant) != TN_MCACHE_MISS;
	tn_mem_free(&tkey);
	if (!ok)
		tn_fetch_clear_results(f);
	return ok;
}

static void tn_fetch_fill_memory(struct tn_lookup *lk, struct tn_fetch *f, uint64_t gen)
{
	for (unsigned i = 0; i < f->n; i++)
		tn_mcache_put(lk->mc, f->keys[i], f->objs[i], lk->mem_ttl, gen);
	if (f->tenant != NULL && f->what != TN_FETCH_TENANT) {
		char *tkey = tn_lookup_key("ten:", f->tenant->key);

		tn_mcache_put(lk->mc, tkey, f->tenant, lk->mem_ttl, gen);
		tn_mem_free(&tkey);
	}
}

/* --- fetch: Redis and LDAP ---------------------------------------------------------- */

static enum tn_result tn_lookup_fetch(struct tn_lookup *lk, struct tn_fetch *f,
				      tn_msec_t deadline, const char **error_r);

static const char *tn_fetch_domain_name(const struct tn_fetch *f)
{
	return f->what == TN_FETCH_ADDRESS ? f->domain :
		f->what == TN_FETCH_DOMAIN ? f->name : NULL;
}

/* The tenant id the domain of f belonged to when last seen, or NULL. */
static char *tn_fetch_hint(struct tn_lookup *lk, const struct tn_fetch *f)
{
	const char *domain = tn_fetch_domain_name(f);
	struct tn_obj *dom = NULL;
	char *hint = NULL;

	if (domain != NULL && tn_mcache_get(lk->hints, domain, &dom) == TN_MCACHE_HIT) {
		hint = tn_mem_strdup(dom->tenant);
		tn_obj_unref(&dom);
	}
	return hint;
}

static void tn_fetch_learn_hint(struct tn_lookup *lk, const struct tn_fetch *f)
{
	struct tn_obj *dom = f->what == TN_FETCH_ADDRESS ? f->objs[1] :
		f->what == TN_FETCH_DOMAIN ? f->objs[0] : NULL;

	if (dom != NULL)
		tn_mcache_put(lk->hints, dom->key, dom, TN_LOOKUP_HINTS_TTL,
			      tn_mcache_generation(lk->hints));
}

/* The usage reads pipelined behind the MGET: the address's counters and
 * those of the tenant the hint names (which the answer may prove wrong:
 * f->usage_tenant says whose were read). */
static unsigned tn_fetch_usage_cmds(struct tn_lookup *lk, struct tn_fetch *f,
				    const char *tid_hint, char *keys[2],
				    const char *argvs[2][4], struct tn_cache_cmd cmds[2])
{
	const char *prefix;

	if (f->usage == NULL || f->what != TN_FETCH_ADDRESS || tid_hint == NULL)
		return 0;
	prefix = tn_cache_key_prefix(lk->cache);
	keys[0] = tn_mem_printf("%susage:mbx:%s", prefix, f->name);
	keys[1] = tn_mem_printf("%susage:ten:%s", prefix, tid_hint);
	for (unsigned i = 0; i < 2; i++) {
		argvs[i][0] = "HMGET";
		argvs[i][1] = keys[i];
		argvs[i][2] = "bytes";
		argvs[i][3] = "messages";
		cmds[i].argc = 4;
		cmds[i].argv = argvs[i];
	}
	return 2;
}

static void tn_fetch_usage_take(struct tn_fetch *f, const char *tid_hint,
				struct tn_cache_cmd cmds[2])
{
	struct tn_lookup_usage *u = f->usage;

	if (tn_cache_usage_reply(cmds[0].reply, &u->mailbox_bytes, &u->mailbox_messages) == 0 &&
	    tn_cache_usage_reply(cmds[1].reply, &u->tenant_bytes, &u->tenant_messages) == 0)
		f->usage_tenant = tn_mem_strdup(tid_hint);
	for (unsigned i = 0; i < 2; i++) {
		if (cmds[i].reply != NULL)
			freeReplyObject(cmds[i].reply);
	}
}

/* Redis, one MGET: the keys of f, the generation, and the tenant entry
 * the hint names (and the usage counters f asks for, pipelined). True
 * when every key of f was there (positive or negative); the tenant is
 * taken only if the hint was right. */
static bool tn_fetch_redis(struct tn_lookup *lk, struct tn_fetch *f, tn_msec_t deadline,
			   bool *redis_ok_r, char gen_r[32])
{
	struct tn_cache_entry entries[3];
	char *tid_hint = lk->cache != NULL ? tn_fetch_hint(lk, f) : NULL;
	char *hint = tid_hint != NULL ? tn_lookup_key("ten:", tid_hint) : NULL;
	const char *keys[3] = { f->keys[0], f->keys[1], NULL };
	char *ukeys[2] = { NULL, NULL };
	const char *uargv[2][4];
	struct tn_cache_cmd ucmds[2];
	unsigned n = f->n, nu = 0;
	const char *tid;
	bool complete = true;
	int ret = -1;

	*redis_ok_r = false;
	if (hint != NULL)
		keys[n++] = hint;
	if (lk->cache != NULL) {
		nu = tn_fetch_usage_cmds(lk, f, tid_hint, ukeys, uargv, ucmds);
		ret = tn_cache_get_with(lk->cache, keys, n, ucmds, nu, deadline, entries, gen_r);
		if (ret == 0 && nu > 0)
			tn_fetch_usage_take(f, tid_hint, ucmds);
	}
	tn_mem_free(&ukeys[0]);
	tn_mem_free(&ukeys[1]);
	tn_mem_free(&tid_hint);
	if (ret < 0) {
		tn_mem_free(&hint);
		return false;
	}
	*redis_ok_r = true;
	for (unsigned i = 0; i < f->n; i++) {
		complete = complete && entries[i].state != TN_CACHE_ABSENT;
		f->objs[i] = entries[i].obj;
	}
	tid = tn_fetch_tenant_id(f);
	if (hint != NULL) {
		if (tid != NULL && entries[f->n].obj != NULL && strcmp(hint + 4, tid) == 0)
			f->tenant = tn_obj_ref(entries[f->n].obj);
		tn_cache_entry_clear(&entries[f->n]);
	}
	tn_mem_free(&hint);
	if (!complete)
		tn_fetch_clear_results(f);
	return complete;
}

/* Address and domain in one search, with the hinted tenant's entry in
 * the same request; the tenant is kept only if it is the right one. */
static enum tn_result tn_fetch_ldap_address(struct tn_lookup *lk, struct tn_fetch *f,
					    tn_msec_t deadline, const char **error_r)
{
	char *hint = tn_fetch_hint(lk, f);
	struct tn_obj *tenant = NULL;
	const char *tid;
	enum tn_result rc;

	rc = tn_dir_fetch_address(lk->dir, f->name, f->domain, hint, deadline,
				  &f->objs[0], &f->objs[1], &tenant, error_r);
	tid = tn_fetch_tenant_id(f);
	if (rc == TN_FOUND && tenant != NULL && tid != NULL && strcmp(tenant->key, tid) == 0)
		f->tenant = tn_obj_ref(tenant);
	tn_obj_unref(&tenant);
	tn_mem_free(&hint);
	return rc;
}

static enum tn_result tn_fetch_ldap(struct tn_lookup *lk, struct tn_fetch *f,
				    tn_msec_t deadline, const char **error_r)
{
	enum tn_result rc;

	switch (f->what) {
	case TN_FETCH_ADDRESS:
		return tn_fetch_ldap_address(lk, f, deadline, error_r);
	case TN_FETCH_DOMAIN:
		rc = tn_dir_fetch_domain(lk->dir, f->name, deadline, &f->objs[0], error_r);
		break;
	case TN_FETCH_TENANT:
	default:
		rc = tn_dir_fetch_tenant(lk->dir, f->name, deadline, &f->objs[0], error_r);
		break;
	}
	return rc == TN_NOTFOUND ? TN_FOUND : rc;
}

/* Fetch the tenant of the objects through its own (coalesced) fetch. */
static enum tn_result tn_fetch_tenant_of(struct tn_lookup *lk, struct tn_fetch *f,
					 tn_msec_t deadline, const char **error_r)
{
	const char *tid = tn_fetch_tenant_id(f);
	struct tn_fetch tf;
	enum tn_result rc;

	if (f->what == TN_FETCH_TENANT) {
		f->tenant = f->objs[0] != NULL ? tn_obj_ref(f->objs[0]) : NULL;
		return TN_FOUND;
	}
	if (tid == NULL || f->tenant != NULL)
		return TN_FOUND;
	tn_fetch_init(&tf, TN_FETCH_TENANT, tid, NULL);
	rc = tn_lookup_fetch(lk, &tf, deadline, error_r);
	if (rc == TN_FOUND) {
		f->tenant = tf.tenant != NULL ? tn_obj_ref(tf.tenant) : NULL;
		if (tf.layer > f->layer)
			f->layer = tf.layer;
	}
	tn_fetch_deinit(&tf);
	return rc;
}

/* Fill Redis with what LDAP said, the tenant read along included. */
static void tn_fetch_fill_redis(struct tn_lookup *lk, struct tn_fetch *f,
				const char *generation, tn_msec_t deadline)
{
	const char *keys[3] = { f->keys[0], f->keys[1], NULL };
	struct tn_obj *objs[3] = { f->objs[0], f->objs[1], NULL };
	char *tkey = NULL;
	unsigned n = f->n;

	if (f->tenant != NULL && f->what != TN_FETCH_TENANT) {
		keys[n] = tkey = tn_lookup_key("ten:", f->tenant->key);
		objs[n++] = f->tenant;
	}
	if (tn_cache_put(lk->cache, keys, objs, n, generation, deadline) < 0)
		tn_debug("cache fill failed: %s", tn_cache_last_error());
	tn_mem_free(&tkey);
}

static enum tn_result tn_fetch_slow(struct tn_lookup *lk, struct tn_fetch *f,
				    tn_msec_t deadline, const char **error_r)
{
	uint64_t mem_gen = tn_mcache_generation(lk->mc);
	char redis_gen[32] = "";
	bool redis_ok;
	enum tn_result rc;

	f->layer = TN_LAYER_REDIS;
	if (!tn_fetch_redis(lk, f, deadline, &redis_ok, redis_gen)) {
		f->layer = TN_LAYER_LDAP;
		rc = tn_fetch_ldap(lk, f, deadline, error_r);
		if (rc != TN_FOUND)
			return rc;
		if (redis_ok)
			tn_fetch_fill_redis(lk, f, redis_gen, deadline);
	}
	tn_fetch_learn_hint(lk, f);
	rc = tn_fetch_tenant_of(lk, f, deadline, error_r);
	if (rc == TN_FOUND)
		tn_fetch_fill_memory(lk, f, mem_gen);
	return rc;
}

/* --- coalescing ------------------------------------------------------------------- */

static struct tn_flight *tn_flight_find(struct tn_lookup *lk, const char *key)
{
	for (struct tn_flight *fl = lk->flights; fl != NULL; fl = fl->next) {
		if (strcmp(fl->key, key) == 0)
			return fl;
	}
	return NULL;
}

static void tn_flight_free(struct tn_flight **flp)
{
	struct tn_flight *fl = *flp;

	tn_obj_unref(&fl->objs[0]);
	tn_obj_unref(&fl->objs[1]);
	tn_obj_unref(&fl->tenant);
	tn_mem_free(&fl->key);
	tn_mem_free(flp);
}

static void tn_flight_unlink(struct tn_lookup *lk, struct tn_flight *fl)
{
	for (struct tn_flight **pp = &lk->flights; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == fl) {
			*pp = fl->next;
			return;
		}
	}
}

/* Follower: wait for the leader's result; called with flight_lock held. */
static enum tn_result tn_flight_wait(struct tn_lookup *lk, struct tn_flight *fl,
				     struct tn_fetch *f, tn_msec_t deadline,
				     const char **error_r)
{
	enum tn_result rc = TN_TEMPFAIL;
	struct timespec ts;

	tn_lookup_count(&lk->stats.coalesced);
	tn_time_deadline_timespec(deadline, &ts);
	fl->waiters++;
	while (!fl->done) {
		if (pthread_cond_timedwait(&lk->flight_cond, &lk->flight_lock, &ts) == ETIMEDOUT)
			break;
	}
	if (fl->done) {
		rc = fl->rc;
		for (unsigned i = 0; i < f->n; i++)
			f->objs[i] = fl->objs[i] != NULL ? tn_obj_ref(fl->objs[i]) : NULL;
		f->tenant = fl->tenant != NULL ? tn_obj_ref(fl->tenant) : NULL;
		f->layer = fl->layer;
		if (rc != TN_FOUND)
			*error_r = tn_lookup_err("%s", fl->error);
	} else {
		*error_r = tn_lookup_err("deadline passed waiting for a concurrent lookup of %s",
					 fl->key);
	}
	if (--fl->waiters == 0 && fl->done)
		tn_flight_free(&fl);
	return rc;
}

static void tn_flight_finish(struct tn_lookup *lk, struct tn_flight *fl,
			     const struct tn_fetch *f, enum tn_result rc,
			     const char *error)
{
	pthread_mutex_lock(&lk->flight_lock);
	tn_flight_unlink(lk, fl);
	fl->rc = rc;
	fl->done = true;
	fl->layer = f->layer;
	for (unsigned i = 0; i < f->n; i++)
		fl->objs[i] = f->objs[i] != NULL ? tn_obj_ref(f->objs[i]) : NULL;
	fl->tenant = f->tenant != NULL ? tn_obj_ref(f->tenant) : NULL;
	if (rc != TN_FOUND)
		snprintf(fl->error, sizeof(fl->error), "%s", error);
	if (fl->waiters == 0)
		tn_flight_free(&fl);
	else
		pthread_cond_broadcast(&lk->flight_cond);
	pthread_mutex_unlock(&lk->flight_lock);
}

/* Get the objects of f (TN_FOUND: the layers answered, objects may be
 * NULL) or TN_TEMPFAIL. */
static enum tn_result tn_lookup_fetch(struct tn_lookup *lk, struct tn_fetch *f,
				      tn_msec_t deadline, const char **error_r)
{
	struct tn_flight *fl;
	enum tn_result rc;

	if (tn_fetch_memory(lk, f)) {
		f->layer = TN_LAYER_MEMORY;
		return TN_FOUND;
	}
	pthread_mutex_lock(&lk->flight_lock);
	if ((fl = tn_flight_find(lk, f->keys[0])) != NULL) {
		rc = tn_flight_wait(lk, fl, f, deadline, error_r);
		pthread_mutex_unlock(&lk->flight_lock);
		return rc;
	}
	fl = tn_mem_calloc(1, sizeof(*fl));
	fl->key = tn_mem_strdup(f->keys[0]);
	fl->next = lk->flights;
	lk->flights = fl;
	pthread_mutex_unlock(&lk->flight_lock);

	rc = tn_fetch_slow(lk, f, deadline, error_r);
	tn_flight_finish(lk, fl, f, rc, rc != TN_FOUND ? *error_r : NULL);
	if (rc != TN_FOUND)
		tn_fetch_clear_results(f);
	return rc;
}

/* --- resolving --------------------------------------------------------------------- */

static enum tn_result tn_lookup_done(struct tn_lookup *lk, enum tn_result rc,
				     struct tn_account *acct, struct tn_account **acct_r)
{
	*acct_r = NULL;
	if (rc == TN_TEMPFAIL) {
		tn_lookup_count(&lk->stats.tempfails);
		tn_account_free(&acct);
		return rc;
	}
	if (acct != NULL) {
		static const size_t offs[] = {
			offsetof(struct tn_lookup_stats, memory_answers),
			offsetof(struct tn_lookup_stats, redis_answers),
			offsetof(struct tn_lookup_stats, ldap_answers),
		};
		tn_lookup_count((uint64_t *)((char *)&lk->stats + offs[acct->layer]));
	}
	*acct_r = rc == TN_FOUND ? acct : NULL;
	if (rc != TN_FOUND)
		tn_account_free(&acct);
	return rc;
}

/* Expansion visits every address once. An address met again is a
 * duplicate (two aliases sharing a target: skipped quietly) unless it is
 * an alias on the current path from the top, which makes a loop. */
struct tn_expand_seen {
	char *addr;
	bool on_path;
};

struct tn_expand {
	struct tn_lookup *lk;
	struct tn_account *acct;
	tn_msec_t deadline;
	struct tn_expand_seen *seen;
	size_t nseen;
};

static struct tn_expand_seen *tn_expand_find(struct tn_expand *x, const char *addr)
{
	for (size_t i = 0; i < x->nseen; i++) {
		if (strcmp(x->seen[i].addr, addr) == 0)
			return &x->seen[i];
	}
	return NULL;
}

/* true when addr was met before (and flags a loop when it is on the path) */
static bool tn_expand_seen(struct tn_expand *x, const char *addr)
{
	struct tn_expand_seen *s = tn_expand_find(x, addr);

	if (s != NULL) {
		if (s->on_path)
			x->acct->alias_loop = true;
		return true;
	}
	x->seen = tn_mem_realloc(x->seen, (x->nseen + 1) * sizeof(*x->seen));
	x->seen[x->nseen].addr = tn_mem_strdup(addr);
	x->seen[x->nseen++].on_path = false;
	return false;
}

static void tn_expand_path(struct tn_expand *x, const char *addr, bool on_path)
{
	tn_expand_find(x, addr)->on_path = on_path;
}

static enum tn_result tn_expand_targets(struct tn_expand *x, const struct tn_obj *alias,
					unsigned depth, const char **error_r);

static enum tn_result tn_expand_one(struct tn_expand *x, const char *target,
				    unsigned depth, const char **error_r)
{
	struct tn_fetch f;
	enum tn_result rc;

	tn_fetch_init(&f, TN_FETCH_ADDRESS, target, strrchr(target, '@') + 1);
	rc = tn_lookup_fetch(x->lk, &f, x->deadline, error_r);
	if (rc == TN_FOUND) {
		if (f.layer > x->acct->layer)
			x->acct->layer = f.layer;
		if (f.objs[1] == NULL)		/* not our domain: external */
			tn_account_add_target(x->acct, target);
		else if (f.objs[0] == NULL)
			tn_warning("alias %s: target %s does not exist, skipped",
				   x->acct->address, target);
		else if (f.objs[0]->kind == TN_OBJ_MAILBOX)
			tn_account_add_target(x->acct, target);
		else if (f.objs[0]->status != TN_STATUS_ACTIVE)
			tn_info("alias %s: nested alias %s is %s, skipped", x->acct->address,
				target, tn_status_name(f.objs[0]->status));
		else if (depth + 1 >= x->lk->alias_max_depth)
			x->acct->alias_loop = true;
		else {
			tn_expand_path(x, target, true);
			rc = tn_expand_targets(x, f.objs[0], depth + 1, error_r);
			tn_expand_path(x, target, false);
		}
	}
	tn_fetch_deinit(&f);
	return rc;
}

static enum tn_result tn_expand_targets(struct tn_expand *x, const struct tn_obj *alias,
					unsigned depth, const char **error_r)
{
	for (size_t i = 0; i < alias->ntargets; i++) {
		if (x->acct->ntargets >= x->lk->alias_max_targets) {
			x->acct->targets_truncated = true;
			return TN_FOUND;
		}
		if (tn_expand_seen(x, alias->targets[i]))
			continue;
		if (tn_expand_one(x, alias->targets[i], depth, error_r) == TN_TEMPFAIL)
			return TN_TEMPFAIL;
	}
	return TN_FOUND;
}

static enum tn_result tn_lookup_expand(struct tn_lookup *lk, struct tn_account *acct,
				       const struct tn_obj *alias, tn_msec_t deadline,
				       const char **error_r)
{
	struct tn_expand x = { lk, acct, deadline, NULL, 0 };
	enum tn_result rc;

	tn_expand_seen(&x, alias->key);
	tn_expand_path(&x, alias->key, true);
	rc = tn_expand_targets(&x, alias, 0, error_r);
	for (size_t i = 0; i < x.nseen; i++)
		tn_mem_free(&x.seen[i].addr);
	tn_mem_free(&x.seen);
	return rc;
}

static tn_msec_t tn_lookup_deadline(struct tn_lookup *lk, tn_msec_t deadline)
{
	return deadline > 0 ? deadline : tn_time_now_ms() + lk->timeout;
}

/* Compose an account from a completed fetch. */
static enum tn_result tn_lookup_compose(struct tn_lookup *lk, struct tn_fetch *f,
					tn_msec_t deadline, struct tn_account **acct_r,
					const char **error_r)
{
	struct tn_obj *obj = f->what == TN_FETCH_ADDRESS ? f->objs[0] : NULL;
	struct tn_obj *dom = f->what == TN_FETCH_ADDRESS ? f->objs[1] :
		f->what == TN_FETCH_DOMAIN ? f->objs[0] : NULL;
	enum tn_result rc = TN_FOUND;

	*acct_r = NULL;
	if ((f->what != TN_FETCH_TENANT && dom == NULL) ||
	    (f->what == TN_FETCH_ADDRESS && obj == NULL) || f->objs[0] == NULL) {
		*error_r = dom == NULL && f->what != TN_FETCH_TENANT ?
			"domain not hosted here" : "no such address";
		return TN_NOTFOUND;
	}
	if (f->tenant == NULL) {
		*error_r = tn_lookup_err("%s: its tenant is missing from the directory", f->name);
		return TN_TEMPFAIL;
	}
	*acct_r = tn_account_compose(f->tenant, dom, obj);
	(*acct_r)->layer = f->layer;
	if (obj != NULL && obj->kind == TN_OBJ_ALIAS)
		rc = tn_lookup_expand(lk, *acct_r, obj, deadline, error_r);
	return rc;
}

static enum tn_result tn_lookup_resolve_what(struct tn_lookup *lk, enum tn_fetch_what what,
					     const char *name, const char *domain,
					     tn_msec_t deadline, struct tn_account **acct_r,
					     struct tn_lookup_usage *usage_r,
					     const char **error_r)
{
	struct tn_account *acct = NULL;
	struct tn_fetch f;
	enum tn_result rc;

	tn_lookup_count(&lk->stats.resolves);
	deadline = tn_lookup_deadline(lk, deadline);
	tn_fetch_init(&f, what, name, domain);
	f.usage = usage_r;
	rc = tn_lookup_fetch(lk, &f, deadline, error_r);
	if (rc == TN_FOUND)
		rc = tn_lookup_compose(lk, &f, deadline, &acct, error_r);
	if (usage_r != NULL && rc == TN_FOUND && f.usage_tenant != NULL &&
	    strcmp(acct->tenant, f.usage_tenant) == 0 && strcmp(acct->address, name) == 0)
		usage_r->known = true;
	tn_fetch_deinit(&f);
	return tn_lookup_done(lk, rc, acct, acct_r);
}

enum tn_result tn_lookup_resolve_usage(struct tn_lookup *lk, const char *address,
				       tn_msec_t deadline, struct tn_account **acct_r,
				       struct tn_lookup_usage *usage_r,
				       const char **error_r)
{
	char *norm;
	enum tn_result rc;

	*acct_r = NULL;
	if (usage_r != NULL)
		memset(usage_r, 0, sizeof(*usage_r));
	if (tn_address_normalize(address, strlen(address), &norm, error_r) < 0) {
		tn_lookup_count(&lk->stats.resolves);
		return TN_NOTFOUND;
	}
	rc = tn_lookup_resolve_what(lk, TN_FETCH_ADDRESS, norm, strrchr(norm, '@') + 1,
				    deadline, acct_r, usage_r, error_r);
	tn_mem_free(&norm);
	return rc;
}

enum tn_result tn_lookup_resolve(struct tn_lookup *lk, const char *address,
				 tn_msec_t deadline, struct tn_account **acct_r,
				 const char **error_r)
{
	return tn_lookup_resolve_usage(lk, address, deadline, acct_r, NULL, error_r);
}

enum tn_result tn_lookup_resolve_domain(struct tn_lookup *lk, const char *domain,
					tn_msec_t deadline, struct tn_account **acct_r,
					const char **error_r)
{
	char *norm;
	enum tn_result rc;

	*acct_r = NULL;
	if (tn_domain_normalize(domain, strlen(domain), &norm, error_r) < 0) {
		tn_lookup_count(&lk->stats.resolves);
		return TN_NOTFOUND;
	}
	rc = tn_lookup_resolve_what(lk, TN_FETCH_DOMAIN, norm, NULL, deadline, acct_r, NULL,
				    error_r);
	tn_mem_free(&norm);
	return rc;
}

static bool tn_lookup_tenant_id_valid(const char *id)
{
	size_t len = strlen(id);

	if (len == 0 || len > 63)
		return false;
	for (const char *p = id; *p != '\0'; p++) {
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' ||
		      (*p >= 'A' && *p <= 'Z') || *p == '_' || *p == '.'))
			return false;
	}
	return true;
}

enum tn_result tn_lookup_resolve_tenant(struct tn_lookup *lk, const char *tenant,
					tn_msec_t deadline, struct tn_account **acct_r,
					const char **error_r)
{
	*acct_r = NULL;
	if (!tn_lookup_tenant_id_valid(tenant)) {
		tn_lookup_count(&lk->stats.resolves);
		*error_r = "invalid tenant id";
		return TN_NOTFOUND;
	}
	return tn_lookup_resolve_what(lk, TN_FETCH_TENANT, tenant, NULL, deadline, acct_r, NULL,
				      error_r);
}

enum tn_result tn_lookup_resolve_cached(struct tn_lookup *lk, const char *address,
					struct tn_account **acct_r)
{
	struct tn_fetch f;
	enum tn_result rc = TN_TEMPFAIL;
	const char *why;
	char *norm;

	*acct_r = NULL;
	if (tn_address_normalize(address, strlen(address), &norm, &why) < 0)
		return TN_NOTFOUND;
	tn_fetch_init(&f, TN_FETCH_ADDRESS, norm, strrchr(norm, '@') + 1);
	if (tn_fetch_memory(lk, &f)) {
		f.layer = TN_LAYER_MEMORY;
		if (f.objs[0] == NULL || f.objs[0]->kind != TN_OBJ_ALIAS) {
			tn_lookup_count(&lk->stats.resolves);
			rc = tn_lookup_compose(lk, &f, tn_time_now_ms(), acct_r, &why);
			rc = tn_lookup_done(lk, rc, *acct_r, acct_r);
		}
	}
	tn_fetch_deinit(&f);
	tn_mem_free(&norm);
	return rc;
}

enum tn_result tn_lookup_resolve_domain_cached(struct tn_lookup *lk, const char *domain,
					       struct tn_account **acct_r)
{
	struct tn_fetch f;
	enum tn_result rc = TN_TEMPFAIL;
	const char *why;
	char *norm;

	*acct_r = NULL;
	if (tn_domain_normalize(domain, strlen(domain), &norm, &why) < 0)
		return TN_NOTFOUND;
	tn_fetch_init(&f, TN_FETCH_DOMAIN, norm, NULL);
	if (tn_fetch_memory(lk, &f)) {
		f.layer = TN_LAYER_MEMORY;
		tn_lookup_count(&lk->stats.resolves);
		rc = tn_lookup_compose(lk, &f, tn_time_now_ms(), acct_r, &why);
		rc = tn_lookup_done(lk, rc, *acct_r, acct_r);
	}
	tn_fetch_deinit(&f);
	tn_mem_free(&norm);
	return rc;
}

/* --- invalidation, usage, stats ------------------------------------------------------ */

static int tn_lookup_invalidate_key(struct tn_lookup *lk, const char *key,
				    const char **error_r)
{
	const char *keys[1] = { key };

	tn_mcache_invalidate(lk->mc, key);
	if (lk->cache == NULL)
		return 0;
	if (tn_cache_invalidate(lk->cache, keys, 1, tn_time_now_ms() + lk->timeout) < 0) {
		*error_r = tn_lookup_err("invalidation of %s failed: %s", key,
					 tn_cache_last_error());
		return -1;
	}
	return 0;
}

static int tn_lookup_invalidate_norm(struct tn_lookup *lk, const char *prefix,
				     const char *name, const char **error_r)
{
	char *key = tn_mem_printf("%s%s", prefix, name);
	int ret = tn_lookup_invalidate_key(lk, key, error_r);

	tn_mem_free(&key);
	return ret;
}

int tn_lookup_invalidate_address(struct tn_lookup *lk, const char *address,
				 const char **error_r)
{
	char *norm;
	int ret;

	if (tn_address_normalize(address, strlen(address), &norm, error_r) < 0)
		return -1;
	ret = tn_lookup_invalidate_norm(lk, "adr:", norm, error_r);
	tn_mem_free(&norm);
	return ret;
}

int tn_lookup_invalidate_domain(struct tn_lookup *lk, const char *domain,
				const char **error_r)
{
	char *norm;
	int ret;

	if (tn_domain_normalize(domain, strlen(domain), &norm, error_r) < 0)
		return -1;
	ret = tn_lookup_invalidate_norm(lk, "dom:", norm, error_r);
	tn_mem_free(&norm);
	return ret;
}

int tn_lookup_invalidate_tenant(struct tn_lookup *lk, const char *tenant,
				const char **error_r)
{
	if (!tn_lookup_tenant_id_valid(tenant)) {
		*error_r = "invalid tenant id";
		return -1;
	}
	return tn_lookup_invalidate_norm(lk, "ten:", tenant, error_r);
}

int tn_lookup_usage(struct tn_lookup *lk, const char *kind, const char *id,
		    int64_t *bytes_r, int64_t *messages_r, const char **error_r)
{
	if (lk->cache == NULL) {
		*error_r = "redis is disabled (redis_enabled = no)";
		return -1;
	}
	if (tn_cache_get_usage(lk->cache, kind, id, tn_time_now_ms() + lk->timeout,
			       bytes_r, messages_r) < 0) {
		*error_r = tn_lookup_err("%s", tn_cache_last_error());
		return -1;
	}
	return 0;
}

void tn_lookup_get_dir_stats(struct tn_lookup *lk, struct tn_dir_stats *stats_r)
{
	tn_dir_get_stats(lk->dir, stats_r);
}

void tn_lookup_get_stats(struct tn_lookup *lk, struct tn_lookup_stats *stats_r)
{
	uint64_t *src = (uint64_t *)&lk->stats, *dst = (uint64_t *)stats_r;

	for (size_t i = 0; i < sizeof(*stats_r) / sizeof(uint64_t); i++)
		dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
}

char *tn_lookup_metrics(struct tn_lookup *lk, const char *prefix)
{
	struct tn_lookup_stats ls;
	struct tn_dir_stats ds;
	struct tn_cache_stats cs = { 0 };

	tn_lookup_get_stats(lk, &ls);
	tn_dir_get_stats(lk->dir, &ds);
	if (lk->cache != NULL)
		tn_cache_get_stats(lk->cache, &cs);
	return tn_mem_printf(
		"# TYPE %1$s_lookups_total counter\n%1$s_lookups_total %2$llu\n"
		"# TYPE %1$s_lookup_answers_total counter\n"
		"%1$s_lookup_answers_total{layer=\"memory\"} %3$llu\n"
		"%1$s_lookup_answers_total{layer=\"redis\"} %4$llu\n"
		"%1$s_lookup_answers_total{layer=\"ldap\"} %5$llu\n"
		"# TYPE %1$s_lookup_tempfails_total counter\n%1$s_lookup_tempfails_total %6$llu\n"
		"# TYPE %1$s_lookup_coalesced_total counter\n%1$s_lookup_coalesced_total %7$llu\n"
		"# TYPE %1$s_cache_subscribed gauge\n%1$s_cache_subscribed %8$llu\n"
		"# TYPE %1$s_ldap_searches_total counter\n%1$s_ldap_searches_total %9$llu\n"
		"# TYPE %1$s_ldap_errors_total counter\n%1$s_ldap_errors_total %10$llu\n"
		"# TYPE %1$s_ldap_connects_total counter\n%1$s_ldap_connects_total %11$llu\n"
		"# TYPE %1$s_ldap_failovers_total counter\n%1$s_ldap_failovers_total %12$llu\n"
		"# TYPE %1$s_redis_calls_total counter\n%1$s_redis_calls_total %13$llu\n"
		"# TYPE %1$s_redis_errors_total counter\n%1$s_redis_errors_total %14$llu\n"
		"# TYPE %1$s_redis_invalidations_total counter\n%1$s_redis_invalidations_total %15$llu\n"
		"# TYPE %1$s_redis_reconnects_total counter\n%1$s_redis_reconnects_total %16$llu\n",
		prefix, (unsigned long long)ls.resolves, (unsigned long long)ls.memory_answers,
		(unsigned long long)ls.redis_answers, (unsigned long long)ls.ldap_answers,
		(unsigned long long)ls.tempfails, (unsigned long long)ls.coalesced,
		(unsigned long long)ls.subscribed, (unsigned long long)ds.searches,
		(unsigned long long)ds.errors, (unsigned long long)ds.connects,
		(unsigned long long)ds.failovers, (unsigned long long)cs.calls,
		(unsigned long long)cs.errors, (unsigned long long)cs.invalidations_received,
		(unsigned long long)cs.reconnects);
}

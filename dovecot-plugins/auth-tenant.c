/*++
 * NAME
 *	auth-tenant 3
 * SUMMARY
 *	Dovecot 2.3 auth driver "tenant": passdb and userdb from the lookup library
 * SYNOPSIS
 *	passdb {
 *	    driver = tenant
 *	    args = /etc/tenantmail/tenantmail.conf
 *	}
 *	userdb {
 *	    driver = tenant
 *	    args = /etc/tenantmail/tenantmail.conf
 *	}
 * DESCRIPTION
 *	libauthdb_tenant.so, loaded by the auth process on first use of
 *	the driver name. args is the path of tenantmail.conf (default
 *	/etc/tenantmail/tenantmail.conf); its global lines and its
 *	[dovecot-auth] section apply (tn-auth-policy.h has the driver's own
 *	parameters, man/tenantmail-dovecot.7 documents them).
 *
 *	Two modes (dovecot_blocking):
 *
 *	no (default): the databases are asynchronous and run in the auth
 *	process itself, through tn-lookup-ioloop.h. An answer the lookup
 *	library's in-process cache holds (kept fresh by the invalidation
 *	channel) is given inside the call, without leaving the process; a
 *	miss waits in one of dovecot_lookup_threads threads while the auth
 *	process goes on serving others, and is answered within
 *	lookup_timeout. The lookup is made in preinit (root reads the
 *	password files), the threads on the first request.
 *
 *	yes: the databases are blocking: Dovecot runs them in auth worker
 *	processes, which call tn_lookup_resolve() synchronously with the
 *	lookup_timeout deadline. Each worker makes its own lookup on its
 *	first request (a process that finds a lookup made by another pid
 *	makes its own and leaves the other alone). Kept for comparison
 *	(bench/auth) and for sites that want the directory traffic out of
 *	the auth process.
 *
 *	Brute-force protection (off by default): with
 *	dovecot_lockout_user_failures or dovecot_lockout_ip_failures set,
 *	every failed password of an existing mailbox (verify_plain: PLAIN
 *	and LOGIN) counts in Redis, authfail:user:<address> and
 *	authfail:ip:<client IP>, each expiring dovecot_lockout_window after
 *	its first failure; once a count reaches its limit, logins of that
 *	address (or from that IP) are refused as a password mismatch even
 *	with the right password, the reason and the tenant in the log. The
 *	counters are read and written in the lookup threads (asynchronous
 *	mode) or the worker; Redis unanswered: the login is not held back
 *	(a warning says so).
 *
 *	passdb: an active mailbox gives its stored {SCHEME}hash, which
 *	Dovecot verifies (verify_plain and lookup_credentials). Suspended
 *	or deleted after the tenant -> domain -> mailbox cascade: user
 *	disabled, the reason in the auth log, Dovecot's generic failure to
 *	the client. An alias or an unknown address: user unknown. No answer
 *	from the directory within the deadline: internal failure, which the
 *	client sees as a temporary error -- never "unknown user". With
 *	dovecot_proxy = yes it adds proxy=y host=<store> [port=N]; a mailbox
 *	that has no store gets nologin=y and a generic reason.
 *
 *	userdb: uid, gid, home, mail (templates), quota_rule=*:bytes=N from
 *	the mailbox quota, tenant=<id>, tenant_quota_bytes=<pooled limit>
 *	and, for a suspended mailbox, tenant_status=suspended. Deleted,
 *	alias or unknown: user unknown; no answer: internal failure.
 *	A login's userdb step (the REQUEST of the post-login process, on
 *	the same auth request) is answered from the account its passdb step
 *	read a moment before, without a second lookup, unless the userdb
 *	block has default_fields (asynchronous mode, not on a proxy).
 *	The formatted fields (templates, quota_rule, tenant_quota_bytes)
 *	are kept per address in the process and reused while the account
 *	read for the request (from the in-process cache, which the
 *	invalidation channel keeps fresh) still has the values they were
 *	made from: a provisioning change shows in the next answer.
 *
 *	The lookup library's log lines go to Dovecot's log with their
 *	severity (lines from its own threads, which must not call Dovecot,
 *	are written to stderr in Dovecot's internal log protocol).
 * SECURITY
 *	The configuration (and the bind password files it names) is read
 *	in preinit, while the auth process is still root; workers read the
 *	password files when they make their lookup, as the auth-worker
 *	service's user. Passwords are never logged. Usernames reach the log
 *	only through Dovecot's own request prefix, which escapes them.
 *--*/
#include "auth-common.h"
#include "password-scheme.h"
#include "hash.h"
#include "module-dir.h"
#include "passdb.h"
#include "passdb-cache.h"
#include "userdb.h"
#include "userdb-template.h"

#include <grp.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <pwd.h>
#include <stdio.h>
#include <unistd.h>

#include "tn-dovecot-build.h"
#include "tn-auth-cache.h"
#include "tn-auth-policy.h"
#include "tn-cache.h"
#include "tn-conf.h"
#include "tn-conf-shared.h"
#include "tn-log.h"
#include "tn-lookup.h"
#include "tn-lookup-ioloop.h"
#include "tn-mem.h"
#include "tn-place-record.h"

#define TENANT_DEFAULT_CONF "/etc/tenantmail/tenantmail.conf"
#define TENANT_SUBSYS AUTH_SUBSYS_DB
/* Formatted userdb answers kept per process; a full table is emptied. */
#define TENANT_REPLIES_MAX 50000

struct tenant_reply;

/* One configuration file's settings and this process's lookup. */
struct tenant_db {
	struct tenant_db *next;
	char *path;
	int refcount;
	struct tn_conf *conf;
	struct tn_auth_settings set;
	struct tn_lookup *lookup;
	pid_t lookup_pid;
	char *lookup_error;		/* async: why there is no lookup */
	char *uid, *gid;		/* dovecot_uid/gid as numbers */
	struct tn_cache *fails;		/* lock-out counters, or NULL: off */
	struct tn_lookup_ioloop *ioloop;	/* async: made on first use */
	struct tn_auth_cache *auth_cache;	/* async, Dovecot's cache on */
	struct tn_place_record *placer;	/* hash-record: writes tnMailHost */
	pid_t placer_pid;
	/* address -> its formatted userdb fields (tenant_reply_get) */
	HASH_TABLE(const char *, struct tenant_reply *) replies;
};

/* An asynchronous request: what to answer once the lookup is done. */
struct tenant_async {
	struct auth_request *request;
	struct tenant_db *db;
	const char *login;			/* the user the lookup is for */
	uint64_t cache_mark;			/* tn_auth_cache_begin() */
	const char *password;			/* verify_plain */
	verify_plain_callback_t *verify_cb;
	lookup_credentials_callback_t *credentials_cb;
	userdb_callback_t *userdb_cb;
};

struct tenant_passdb_module {
	struct passdb_module module;
	struct tenant_db *db;
};

struct tenant_userdb_module {
	struct userdb_module module;
	struct tenant_db *db;
};

extern const char authdb_tenant_plugin_version[];
const char authdb_tenant_plugin_version[] = DOVECOT_ABI_VERSION;

void authdb_tenant_init(struct module *module);
void authdb_tenant_deinit(void);

static struct tenant_db *tenant_dbs;
static pthread_t tenant_main_thread;
static bool tenant_log_internal;	/* stderr speaks Dovecot's log protocol */

/* --- log ----------------------------------------------------------------- */

/* A line from one of the lookup library's threads, which must not call
 * Dovecot: written in Dovecot's internal log protocol ("\001", the log
 * type + 1, the pid, a space, the text) with one write(2), as Dovecot's
 * own internal handler does. */
static bool tenant_log_from_thread(enum log_type type, const char *text)
{
	char line[TN_LOG_LINE_MAX + 64];
	int n;

	if (!tenant_log_internal)
		return FALSE;
	n = snprintf(line, sizeof(line), "\001%c%ld tenant: %s\n",
		     (char)(type + 1), (long)getpid(), text);
	if (n < 0 || (size_t)n >= sizeof(line))
		return FALSE;
	return write(STDERR_FILENO, line, (size_t)n) == n;
}

/* The lookup library's lines, into Dovecot's log. */
static bool tenant_log_handler(enum tn_log_level level, const char *text,
			       void *context ATTR_UNUSED)
{
	static const enum log_type types[] = {
		[TN_LOG_DEBUG] = LOG_TYPE_DEBUG, [TN_LOG_INFO] = LOG_TYPE_INFO,
		[TN_LOG_WARNING] = LOG_TYPE_WARNING, [TN_LOG_ERROR] = LOG_TYPE_ERROR,
		[TN_LOG_FATAL] = LOG_TYPE_ERROR,
	};
	enum log_type type = types[level];

	if (!pthread_equal(pthread_self(), tenant_main_thread))
		return tenant_log_from_thread(type, text);
	switch (type) {
	case LOG_TYPE_DEBUG:
		i_debug("tenant: %s", text);
		break;
	case LOG_TYPE_INFO:
		i_info("tenant: %s", text);
		break;
	case LOG_TYPE_WARNING:
		i_warning("tenant: %s", text);
		break;
	default:
		i_error("tenant: %s", text);
		break;
	}
	return TRUE;
}

/* --- configuration and lookup -------------------------------------------- */

static const char *tenant_conf_path(const char *args)
{
	while (*args == ' ' || *args == '\t')
		args++;
	return *args == '\0' ? TENANT_DEFAULT_CONF : args;
}

/* dovecot_uid and dovecot_gid as numbers, resolved once here: a name in
 * the userdb answer would cost Dovecot an NSS lookup per request. An
 * unknown name stops the auth process at start. */
static void tenant_db_numeric_ids(struct tenant_db *db, const char *kind)
{
	const char *uid = db->set.uid, *gid = db->set.gid;

	if (uid[0] != '\0' && !str_is_numeric(uid, '\0')) {
		struct passwd *pw = getpwnam(uid);

		if (pw == NULL)
			i_fatal("%s tenant: %s: dovecot_uid: no user '%s'", kind, db->path, uid);
		db->uid = i_strdup_printf("%lu", (unsigned long)pw->pw_uid);
		db->set.uid = db->uid;
	}
	if (gid[0] != '\0' && !str_is_numeric(gid, '\0')) {
		struct group *gr = getgrnam(gid);

		if (gr == NULL)
			i_fatal("%s tenant: %s: dovecot_gid: no group '%s'", kind, db->path, gid);
		db->gid = i_strdup_printf("%lu", (unsigned long)gr->gr_gid);
		db->set.gid = db->gid;
	}
}

/* Brute-force protection on: the Redis connections of its counters
 * (made here, as root, for the password file; no traffic yet). */
static void tenant_db_make_fails(struct tenant_db *db, const char *kind)
{
	const char *error;

	if (db->set.lockout_user_failures == 0 && db->set.lockout_ip_failures == 0)
		return;
	if (!tn_conf_bool(db->conf, "redis_enabled"))
		i_fatal("%s tenant: %s: dovecot_lockout_*: the counters need Redis "
			"(redis_enabled = no)", kind, db->path);
	if ((db->fails = tn_lookup_redis_create(db->conf, &error)) == NULL)
		i_fatal("%s tenant: %s", kind, error);
}

/* Async mode: the lookup, made while preinit still runs as root (the
 * password files); a failure is kept and given to every request. */
static void tenant_db_make_lookup(struct tenant_db *db)
{
	const char *error;

	db->lookup = tn_lookup_create(db->conf, 0, &error);
	if (db->lookup == NULL) {
		db->lookup_error = i_strdup_printf("%s: %s", db->path, error);
		i_error("tenant: %s", db->lookup_error);
		return;
	}
	db->lookup_pid = getpid();
}

/* --- placement ------------------------------------------------------------ */

static const struct tn_place_record_settings tenant_place_settings = {
	.actor_id = "dovecot-auth",
	.label = "user",
	.writer = "proxy",
	.uses = "logins",
	.retry = "login",
};

/* dovecot_placement: the router's default pool, from the router's own
 * section of the same file (one member list for both programs, parsed
 * by the router's table), and for hash-record the write credentials.
 * Misconfiguration stops the auth process at start. */
static void tenant_db_placement(struct tenant_db *db, const char *kind)
{
	static const char *const names[] = { "none", "hash", "hash-record" };
	struct tn_conf *router = NULL;
	const char *error;
	int router_pm;

	if (db->set.placement == TN_AUTH_PLACE_NONE)
		return;
	router = tn_auth_router_conf_create();
	if (tn_conf_load_file(router, db->path, &error) < 0 ||
	    tn_auth_placement_read(&db->set, router, &error) < 0)
		i_fatal("%s tenant: %s: %s", kind, db->path, error);
	router_pm = tn_conf_enum(router, "router_placement");
	if (router_pm != (int)db->set.placement) {
		i_warning("tenant: %s: dovecot_placement = %s but the router's router_placement "
			  "= %s: a mailbox without host may be read and delivered on different "
			  "stores", db->path, names[db->set.placement], names[router_pm]);
	}
	tn_conf_destroy(&router);
	if (db->set.placement == TN_AUTH_PLACE_RECORD &&
	    tn_place_record_credentials(db->conf, "dovecot_placement = hash-record",
					"dovecot_placement_bind_dn",
					"dovecot_placement_password_file", &error) < 0)
		i_fatal("%s tenant: %s: %s", kind, db->path, error);
}

/* hash-record, asynchronous mode: the write path, made while preinit
 * runs as root (the bind password file); its thread starts with the
 * first placement. */
static void tenant_db_make_placer(struct tenant_db *db, const char *kind)
{
	const char *error;

	db->placer = tn_place_record_create(db->conf, db->lookup, &tenant_place_settings,
					    &error);
	if (db->placer == NULL)
		i_fatal("%s tenant: %s: dovecot_placement: %s", kind, db->path, error);
	db->placer_pid = getpid();
}

static struct tn_lookup *tenant_db_lookup(struct tenant_db *db, const char **error_r);

/* This process's write path: in blocking mode made in the worker on its
 * first placement (as the auth-worker's user, as its lookup is); NULL
 * with *error_r when it cannot be. */
static struct tn_place_record *tenant_db_placer(struct tenant_db *db, const char **error_r)
{
	struct tn_lookup *lookup;

	if (db->placer != NULL && db->placer_pid == getpid())
		return db->placer;
	if (!db->set.blocking) {
		*error_r = "no lookup";
		return NULL;
	}
	if ((lookup = tenant_db_lookup(db, error_r)) == NULL)
		return NULL;
	db->placer = tn_place_record_create(db->conf, lookup, &tenant_place_settings, error_r);
	if (db->placer == NULL)
		return NULL;
	db->placer_pid = getpid();
	return db->placer;
}

/* A login placed by hash (hash-record) succeeded: write its member to
 * tnMailHost in the write path's thread; the login is answered now. */
static void tenant_place_record(struct tenant_db *db, struct auth_request *request,
				const char *address, const char *member, const char *tenant)
{
	struct tn_place_record *placer;
	const char *error;

	if (member == NULL || db->set.placement != TN_AUTH_PLACE_RECORD)
		return;
	if ((placer = tenant_db_placer(db, &error)) == NULL) {
		auth_request_log_warning(request, TENANT_SUBSYS,
			"tenant=%s: placement on %s not recorded: %s; tried again at the next "
			"login", tenant, member, error);
		return;
	}
	tn_place_record_queue(placer, address, member, tenant, request->fields.session_id);
}

static struct tenant_db *tenant_db_get(const char *kind, const char *args)
{
	static const struct tn_conf_param *const tables[] = {
		TN_CONF_SHARED_TABLES, tn_auth_params, NULL
	};
	const char *path = tenant_conf_path(args);
	struct tenant_db *db;
	const char *error;

	for (db = tenant_dbs; db != NULL; db = db->next) {
		if (strcmp(db->path, path) == 0) {
			db->refcount++;
			return db;
		}
	}
	db = i_new(struct tenant_db, 1);
	db->path = i_strdup(path);
	db->refcount = 1;
	db->conf = tn_conf_create(TN_AUTH_CONF_SECTION, tables);
	if (tn_conf_load_file(db->conf, db->path, &error) < 0 ||
	    tn_auth_settings_read(db->conf, &db->set, &error) < 0)
		i_fatal("%s tenant: %s", kind, error);
	tenant_db_numeric_ids(db, kind);
	tenant_db_make_fails(db, kind);
	tenant_db_placement(db, kind);
	if (!db->set.blocking) {
		tenant_db_make_lookup(db);
		if (db->set.placement == TN_AUTH_PLACE_RECORD && db->lookup != NULL)
			tenant_db_make_placer(db, kind);
	}
	db->next = tenant_dbs;
	tenant_dbs = db;
	return db;
}

static void tenant_replies_free(struct tenant_db *db);

static void tenant_db_unref(struct tenant_db **_db)
{
	struct tenant_db *db = *_db, **p;

	*_db = NULL;
	if (--db->refcount > 0)
		return;
	for (p = &tenant_dbs; *p != db; p = &(*p)->next)
		;
	*p = db->next;
	/* a lookup made by another process has threads that are not ours */
	if (db->placer != NULL && db->placer_pid == getpid())
		tn_place_record_destroy(&db->placer);	/* borrows the lookup */
	tn_lookup_ioloop_destroy(&db->ioloop);
	tenant_replies_free(db);
	if (db->lookup != NULL && db->lookup_pid == getpid())
		tn_lookup_destroy(&db->lookup);
	/* after the lookup: its subscriber thread calls the listener */
	tn_auth_cache_destroy(&db->auth_cache);
	i_free(db->lookup_error);
	i_free(db->uid);
	i_free(db->gid);
	tn_cache_destroy(&db->fails);
	tn_auth_settings_clear(&db->set);
	tn_conf_destroy(&db->conf);
	i_free(db->path);
	i_free(db);
}

/* This process's lookup, made on first use: NULL with *error_r when the
 * settings cannot make one (every request then fails temporarily). */
static struct tn_lookup *tenant_db_lookup(struct tenant_db *db, const char **error_r)
{
	const char *error;

	if (db->lookup != NULL && db->lookup_pid == getpid())
		return db->lookup;
	db->lookup = tn_lookup_create(db->conf, 0, &error);
	if (db->lookup == NULL) {
		*error_r = t_strdup_printf("%s: %s", db->path, error);
		return NULL;
	}
	db->lookup_pid = getpid();
	if (tn_lookup_start(db->lookup, &error) < 0)
		i_warning("tenant: %s (in-process cache off)", error);
	return db->lookup;
}

/* Async mode: the adapter, made with its threads and the invalidation
 * subscriber on the first request (inside the auth process's ioloop);
 * NULL with *error_r when it cannot be. */
static struct tn_lookup_ioloop *tenant_db_ioloop(struct tenant_db *db,
						 const char **error_r)
{
	const char *error;

	if (db->ioloop != NULL)
		return db->ioloop;
	if (db->lookup == NULL) {
		*error_r = db->lookup_error;
		return NULL;
	}
	/* Dovecot's own cache on: flushed by the invalidations, which the
	 * subscriber started below delivers */
	if (passdb_cache != NULL && db->auth_cache == NULL) {
		db->auth_cache = tn_auth_cache_create(db->lookup, passdb_cache, &error);
		if (db->auth_cache == NULL) {
			*error_r = t_strdup_printf("%s: %s", db->path, error);
			return NULL;
		}
	}
	db->ioloop = tn_lookup_ioloop_create(db->lookup, db->set.lookup_threads, &error);
	if (db->ioloop == NULL) {
		*error_r = t_strdup_printf("%s: %s", db->path, error);
		return NULL;
	}
	if (tn_lookup_start(db->lookup, &error) < 0)
		i_warning("tenant: %s (in-process cache off)", error);
	return db->ioloop;
}

/* A temporary failure of the lookup, logged on the request. */
static void tenant_log_tempfail(struct auth_request *request, enum tn_result res,
				const char *error)
{
	if (res == TN_TEMPFAIL) {
		auth_request_log_error(request, TENANT_SUBSYS,
				       "lookup failed (temporary failure): %s", error);
	}
}

/* Resolve the request's user: the result, with *acct_r when found. */
static enum tn_result tenant_resolve(struct auth_request *request,
				     struct tenant_db *db,
				     struct tn_account **acct_r)
{
	struct tn_lookup *lookup;
	const char *error;
	enum tn_result res;

	*acct_r = NULL;
	lookup = tenant_db_lookup(db, &error);
	if (lookup == NULL) {
		auth_request_log_error(request, TENANT_SUBSYS, "%s", error);
		return TN_TEMPFAIL;
	}
	res = tn_lookup_resolve(lookup, request->fields.user, 0, acct_r, &error);
	tenant_log_tempfail(request, res, error);
	return res;
}

/* --- passdb -------------------------------------------------------------- */

/* Proxy fields for an active mailbox on a front-end; *placed_r: the
 * member hashing picked (dovecot_placement), in the request's pool, or
 * NULL. */
static void tenant_passdb_proxy(struct auth_request *request,
				const struct tn_auth_settings *set,
				const struct tn_account *acct, const char **placed_r)
{
	const char *member;
	char *host;

	*placed_r = NULL;
	if (tn_auth_route_placed(set, acct, &host, &member) < 0) {
		auth_request_log_error(request, TENANT_SUBSYS,
			"tenant=%s: mailbox has no store (no host, pool '%s' not in "
			"dovecot_pool_hosts, no dovecot_default_host): nologin",
			acct->tenant, acct->pool != NULL ? acct->pool : "");
		auth_request_set_field(request, "nologin", "y", NULL);
		auth_request_set_field(request, "reason",
				       "Mailbox temporarily unavailable", NULL);
		return;
	}
	if (member != NULL) {
		auth_request_log_debug(request, TENANT_SUBSYS,
				       "tenant=%s: no host or pool: placed by hash on %s",
				       acct->tenant, member);
		*placed_r = p_strdup(request->pool, member);
	}
	auth_request_set_field(request, "proxy", "y", NULL);
	auth_request_set_field(request, "host", host, NULL);
	if (set->proxy_port > 0) {
		auth_request_set_field(request, "port",
			dec2str((uintmax_t)set->proxy_port), NULL);
	}
	tn_mem_free(&host);
}

static enum userdb_result tenant_userdb_fill(struct auth_request *request,
					     struct tenant_db *db,
					     const struct tn_account *acct);

/* A login's userdb step follows its passdb step on the same request
 * (the post-login process's REQUEST to auth-master), microseconds later:
 * the account just read for the password gives the userdb fields now,
 * the way Dovecot's "userdb_" passdb fields do for userdb prefetch, and
 * the userdb step answers from them without a second lookup
 * (tenant_userdb_prefetched). Only on a login process's connection
 * (auth_only: no REQUEST follows, e.g. SMTP AUTH or doveadm auth test),
 * and not with auth workers (the userdb step would run in a worker
 * anyway). A template error is left to the userdb step, which logs it. */
static void tenant_passdb_prefetch(struct auth_request *request, struct tenant_db *db,
				   const struct tn_account *acct)
{
	if (db->set.blocking || request->auth_only)
		return;
	if (request->fields.userdb_reply == NULL)
		auth_request_init_userdb_reply(request, TRUE);
	if (tenant_userdb_fill(request, db, acct) == USERDB_RESULT_OK)
		request->userdb_prefetch_set = TRUE;
}

/* Set the passdb fields from a lookup's answer: the result, with the
 * stored password and its scheme when OK, and on a proxy the member
 * placement picked (*placed_r, else NULL). acct is freed. */
static enum passdb_result
tenant_passdb_fill(struct auth_request *request, enum tn_result res,
		   struct tn_account *acct, const char **crypted_r,
		   const char **scheme_r, const char **tenant_r,
		   const char **address_r, const char **placed_r)
{
	struct tenant_passdb_module *module =
		(struct tenant_passdb_module *)request->passdb->passdb;
	enum passdb_result result;
	const char *reason;

	*placed_r = NULL;
	switch (tn_auth_login_verdict(res, acct, &reason)) {
	case TN_AUTH_TEMPFAIL:
		result = PASSDB_RESULT_INTERNAL_FAILURE;
		break;
	case TN_AUTH_UNKNOWN:
		if (acct != NULL) {
			auth_request_log_info(request, TENANT_SUBSYS,
					      "tenant=%s: %s", acct->tenant, reason);
		}
		auth_request_log_unknown_user(request, TENANT_SUBSYS);
		result = PASSDB_RESULT_USER_UNKNOWN;
		break;
	case TN_AUTH_DISABLED:
		auth_request_log_info(request, TENANT_SUBSYS,
			"tenant=%s: login refused: %s%s%s", acct->tenant, reason,
			acct->status_reason != NULL ? ": " : "",
			acct->status_reason != NULL ? acct->status_reason : "");
		result = PASSDB_RESULT_USER_DISABLED;
		break;
	default:
		*crypted_r = p_strdup(request->pool, acct->password);
		*scheme_r = password_get_scheme(crypted_r);
		if (*scheme_r == NULL)
			*scheme_r = module->module.default_pass_scheme;
		auth_request_set_field(request, "password", *crypted_r, *scheme_r);
		if (strcmp(acct->address, request->fields.user) != 0) {
			if (module->db->auth_cache != NULL) {
				tn_auth_cache_alias(module->db->auth_cache,
						    request->fields.user, acct->address);
			}
			auth_request_set_field(request, "user", acct->address, NULL);
		}
		if (module->db->set.proxy)
			tenant_passdb_proxy(request, &module->db->set, acct, placed_r);
		else
			tenant_passdb_prefetch(request, module->db, acct);
		*tenant_r = p_strdup(request->pool, acct->tenant);
		*address_r = p_strdup(request->pool, acct->address);
		result = PASSDB_RESULT_OK;
		break;
	}
	if (acct != NULL)
		tn_account_free(&acct);
	return result;
}

/* --- brute-force protection ------------------------------------------------ */

/* A check (and, for a failed password, a count) of the lock-out
 * counters; malloc()ed: a lookup thread fills it in. */
struct tenant_lockout_job {
	struct tn_cache *cache;
	char *keys[2];			/* user, ip; NULL: that limit is off */
	bool count;			/* a failed password: INCR */
	tn_msec_t window, deadline;
	bool answered;
	int64_t counts[2];
	char error[160];
};

/* A login waiting for its lock-out check (asynchronous mode). */
struct tenant_lockout {
	struct auth_request *request;
	struct tenant_db *db;
	enum passdb_result result;
	const char *tenant;
	const char *address, *placed;	/* a placement to record if it succeeds */
	verify_plain_callback_t *callback;
};

/* INCR each key, starting its window on the first failure: the counts. */
static const char tenant_lockout_script[] =
	"local r = {} for i, k in ipairs(KEYS) do "
	"local n = redis.call('INCR', k) "
	"if n == 1 then redis.call('PEXPIRE', k, ARGV[1]) end "
	"r[i] = n end return r";

static void tenant_lockout_job_free(void *context)
{
	struct tenant_lockout_job *job = context;

	tn_mem_free(&job->keys[0]);
	tn_mem_free(&job->keys[1]);
	tn_mem_free(&job);
}

/* The counts from Redis's answer (an array, one element per key). */
static void tenant_lockout_parse(struct tenant_lockout_job *job, const redisReply *r,
				 const unsigned *slots, unsigned nkeys)
{
	if (r->type != REDIS_REPLY_ARRAY || r->elements != nkeys) {
		snprintf(job->error, sizeof(job->error), "unexpected answer from Redis%s%s",
			 r->type == REDIS_REPLY_ERROR ? ": " : "",
			 r->type == REDIS_REPLY_ERROR ? r->str : "");
		return;
	}
	for (unsigned i = 0; i < nkeys; i++) {
		const redisReply *e = r->element[i];

		job->counts[slots[i]] = e->type == REDIS_REPLY_INTEGER ? e->integer :
			e->type == REDIS_REPLY_STRING ? strtoll(e->str, NULL, 10) : 0;
	}
	job->answered = true;
}

/* In a lookup thread (or the worker): read or count. */
static void tenant_lockout_run(void *context)
{
	struct tenant_lockout_job *job = context;
	const char *argv[6];
	unsigned slots[2], nkeys = 0;
	char numkeys[8], window[24];
	redisReply *r;
	int argc = 0;

	if (job->count) {
		argv[argc++] = "EVAL";
		argv[argc++] = tenant_lockout_script;
		argv[argc++] = numkeys;
	} else {
		argv[argc++] = "MGET";
	}
	for (unsigned i = 0; i < 2; i++) {
		if (job->keys[i] != NULL) {
			slots[nkeys++] = i;
			argv[argc++] = job->keys[i];
		}
	}
	snprintf(numkeys, sizeof(numkeys), "%u", nkeys);
	snprintf(window, sizeof(window), "%lld", (long long)job->window);
	if (job->count)
		argv[argc++] = window;
	r = tn_cache_command_argv(job->cache, argc, argv, NULL, job->deadline);
	if (r == NULL) {
		snprintf(job->error, sizeof(job->error), "%s", tn_cache_last_error());
		return;
	}
	tenant_lockout_parse(job, r, slots, nkeys);
	freeReplyObject(r);
}

static struct tenant_lockout_job *
tenant_lockout_job_new(struct tenant_db *db, struct auth_request *request,
		       const char *address, bool count)
{
	struct tenant_lockout_job *job = tn_mem_calloc(1, sizeof(*job));
	const char *prefix = tn_cache_key_prefix(db->fails);
	const char *ip = net_ip2addr(&request->fields.remote_ip);

	job->cache = db->fails;
	job->count = count;
	job->window = db->set.lockout_window;
	job->deadline = tn_time_now_ms() + tn_conf_time_ms(db->conf, "lookup_timeout");
	if (db->set.lockout_user_failures > 0)
		job->keys[0] = tn_mem_printf("%sauthfail:user:%s", prefix, address);
	if (db->set.lockout_ip_failures > 0 && ip[0] != '\0')
		job->keys[1] = tn_mem_printf("%sauthfail:ip:%s", prefix, ip);
	return job;
}

/* The login's result once the counters are known (job NULL: unknown). */
static enum passdb_result
tenant_lockout_decide(struct auth_request *request, const struct tn_auth_settings *set,
		      const char *tenant, enum passdb_result result,
		      const struct tenant_lockout_job *job, const char *why)
{
	if (job == NULL || !job->answered) {
		auth_request_log_warning(request, TENANT_SUBSYS,
			"tenant=%s: failed-login counters unavailable, not checked: %s",
			tenant, job != NULL ? job->error : why);
		return result;
	}
	if (!tn_auth_locked_out(set, job->counts[0], job->counts[1]))
		return result;
	if (result == PASSDB_RESULT_OK || job->counts[0] == set->lockout_user_failures ||
	    job->counts[1] == set->lockout_ip_failures) {
		auth_request_log_info(request, TENANT_SUBSYS,
			"tenant=%s: login refused: locked out: %lld failed logins of the "
			"address, %lld from the client IP within dovecot_lockout_window",
			tenant, (long long)job->counts[0], (long long)job->counts[1]);
	}
	return PASSDB_RESULT_PASSWORD_MISMATCH;
}

static void tenant_lockout_done(bool done, void *job_context, void *context)
{
	struct tenant_lockout *lk = context;
	struct auth_request *request = lk->request;
	enum passdb_result result;

	/* not done: the job may still be running, its fields are not ours */
	result = tenant_lockout_decide(request, &lk->db->set, lk->tenant, lk->result,
				       done ? job_context : NULL, "timed out");
	if (result == PASSDB_RESULT_OK)
		tenant_place_record(lk->db, request, lk->address, lk->placed, lk->tenant);
	lk->callback(result, request);
	auth_request_unref(&request);
}

/* Check (and count) before answering a login of an existing mailbox. */
static void tenant_lockout_begin(struct tenant_db *db, struct auth_request *request,
				 enum passdb_result result, const char *tenant,
				 const char *address, const char *placed,
				 verify_plain_callback_t *callback)
{
	struct tenant_lockout_job *job =
		tenant_lockout_job_new(db, request, address,
				       result == PASSDB_RESULT_PASSWORD_MISMATCH);
	struct tenant_lockout *lk;
	const char *error = "lookup unavailable";

	if (db->set.blocking) {
		/* a worker: wait here, as for the lookup */
		tenant_lockout_run(job);
		result = tenant_lockout_decide(request, &db->set, tenant, result, job, "");
		tenant_lockout_job_free(job);
		if (result == PASSDB_RESULT_OK)
			tenant_place_record(db, request, address, placed, tenant);
		callback(result, request);
		return;
	}
	if (tenant_db_ioloop(db, &error) == NULL) {
		tenant_lockout_job_free(job);
		result = tenant_lockout_decide(request, &db->set, tenant, result, NULL, error);
		if (result == PASSDB_RESULT_OK)
			tenant_place_record(db, request, address, placed, tenant);
		callback(result, request);
		return;
	}
	lk = p_new(request->pool, struct tenant_lockout, 1);
	lk->request = request;
	lk->db = db;
	lk->result = result;
	lk->tenant = tenant;
	lk->address = address;
	lk->placed = placed;
	lk->callback = callback;
	auth_request_ref(request);
	(void)tn_lookup_ioloop_run(db->ioloop, 0, tenant_lockout_run, job,
				   tenant_lockout_job_free, tenant_lockout_done, lk);
}

/* --- passdb answers -------------------------------------------------------- */

static void tenant_verify_finish(struct auth_request *request, const char *password,
				 enum tn_result res, struct tn_account *acct,
				 verify_plain_callback_t *callback)
{
	struct tenant_passdb_module *module =
		(struct tenant_passdb_module *)request->passdb->passdb;
	const char *crypted = NULL, *scheme = NULL, *tenant = NULL, *address = NULL;
	const char *placed;
	enum passdb_result result = tenant_passdb_fill(request, res, acct, &crypted,
						       &scheme, &tenant, &address, &placed);
	int ret;

	if (result == PASSDB_RESULT_OK) {
		ret = auth_request_password_verify(request, password, crypted,
						   scheme, TENANT_SUBSYS);
		if (ret <= 0)
			result = PASSDB_RESULT_PASSWORD_MISMATCH;
		if (module->db->fails != NULL) {
			tenant_lockout_begin(module->db, request, result, tenant,
					     address, placed, callback);
			return;
		}
		/* placed by hash: recorded only once the password is right */
		if (result == PASSDB_RESULT_OK)
			tenant_place_record(module->db, request, address, placed, tenant);
	}
	callback(result, request);
}

static void tenant_credentials_finish(struct auth_request *request, enum tn_result res,
				      struct tn_account *acct,
				      lookup_credentials_callback_t *callback)
{
	const char *crypted = NULL, *scheme = NULL, *tenant, *address, *placed;
	/* a placement is not recorded here: the password is checked after
	 * this answer, by the mechanism (or not at all: doveadm auth lookup) */
	enum passdb_result result = tenant_passdb_fill(request, res, acct, &crypted,
						       &scheme, &tenant, &address, &placed);

	passdb_handle_credentials(result, crypted, scheme, callback, request);
}

static void tenant_userdb_finish(struct auth_request *request, enum tn_result res,
				 struct tn_account *acct, userdb_callback_t *callback);

/* Async mode: the lookup's answer, in the ioloop (or inside the call for
 * a cache hit); the request was referenced when the lookup began. */
static void tenant_async_done(enum tn_result res, struct tn_account *acct,
			      const char *error, void *context)
{
	struct tenant_async *ctx = context;
	struct auth_request *request = ctx->request;

	tenant_log_tempfail(request, res, error);
	if (ctx->verify_cb != NULL)
		tenant_verify_finish(request, ctx->password, res, acct, ctx->verify_cb);
	else if (ctx->credentials_cb != NULL)
		tenant_credentials_finish(request, res, acct, ctx->credentials_cb);
	else
		tenant_userdb_finish(request, res, acct, ctx->userdb_cb);
	/* Dovecot has cached the answer by now: if it was read before an
	 * invalidation that the flush has already handled, drop it again */
	if (ctx->db != NULL && ctx->db->auth_cache != NULL) {
		tn_auth_cache_answered(ctx->db->auth_cache, ctx->cache_mark, ctx->login,
				       request->fields.user);
	}
	auth_request_unref(&request);
}

/* Async mode: start the lookup of ctx->request's user. */
static void tenant_async_begin(struct tenant_db *db, struct tenant_async *ctx)
{
	struct tn_lookup_ioloop *li;
	const char *error = "lookup unavailable";

	auth_request_ref(ctx->request);
	li = tenant_db_ioloop(db, &error);
	ctx->db = db;
	if (db->auth_cache != NULL) {
		ctx->login = p_strdup(ctx->request->pool, ctx->request->fields.user);
		ctx->cache_mark = tn_auth_cache_begin(db->auth_cache);
	}
	if (li == NULL) {
		auth_request_log_error(ctx->request, TENANT_SUBSYS, "%s", error);
		tenant_async_done(TN_TEMPFAIL, NULL, "", ctx);
		return;
	}
	(void)tn_lookup_ioloop_resolve(li, ctx->request->fields.user, 0,
				       tenant_async_done, ctx);
}

static struct tenant_async *tenant_async_new(struct auth_request *request)
{
	struct tenant_async *ctx = p_new(request->pool, struct tenant_async, 1);

	ctx->request = request;
	return ctx;
}

static void tenant_verify_plain(struct auth_request *request, const char *password,
				verify_plain_callback_t *callback)
{
	struct tenant_passdb_module *module =
		(struct tenant_passdb_module *)request->passdb->passdb;
	struct tenant_async *ctx;
	struct tn_account *acct;
	enum tn_result res;

	if (!module->module.blocking) {
		ctx = tenant_async_new(request);
		ctx->password = p_strdup(request->pool, password);
		ctx->verify_cb = callback;
		tenant_async_begin(module->db, ctx);
		return;
	}
	res = tenant_resolve(request, module->db, &acct);
	tenant_verify_finish(request, password, res, acct, callback);
}

static void tenant_lookup_credentials(struct auth_request *request,
				      lookup_credentials_callback_t *callback)
{
	struct tenant_passdb_module *module =
		(struct tenant_passdb_module *)request->passdb->passdb;
	struct tenant_async *ctx;
	struct tn_account *acct;
	enum tn_result res;

	if (!module->module.blocking) {
		ctx = tenant_async_new(request);
		ctx->credentials_cb = callback;
		tenant_async_begin(module->db, ctx);
		return;
	}
	res = tenant_resolve(request, module->db, &acct);
	tenant_credentials_finish(request, res, acct, callback);
}

static struct passdb_module *tenant_passdb_preinit(pool_t pool, const char *args)
{
	struct tenant_passdb_module *module;

	module = p_new(pool, struct tenant_passdb_module, 1);
	module->db = tenant_db_get("passdb", args);
	module->module.blocking = module->db->set.blocking;
	module->module.default_cache_key = "%u";
	module->module.default_pass_scheme = "PLAIN";
	/* a login answered from Dovecot's cache never reaches the counters */
	if ((module->db->set.lockout_user_failures > 0 ||
	     module->db->set.lockout_ip_failures > 0) && global_auth_settings != NULL &&
	    global_auth_settings->cache_size > 0) {
		i_fatal("passdb tenant: %s: dovecot_lockout_* needs every login to reach the "
			"driver, but auth_cache_size is set: Dovecot would accept a cached "
			"user's password without the lock-out check; set auth_cache_size = 0 "
			"or turn the lock-out off", module->db->path);
	}
	if (module->db->set.blocking && global_auth_settings != NULL &&
	    global_auth_settings->cache_size > 0) {
		i_warning("passdb tenant: %s: auth_cache_size is set with dovecot_blocking = yes: "
			  "Dovecot's auth cache is flushed on provisioning changes only in the "
			  "asynchronous mode; here it keeps answers until auth_cache_ttl",
			  module->db->path);
	}
	return &module->module;
}

static void tenant_passdb_init(struct passdb_module *module ATTR_UNUSED)
{
}

static void tenant_passdb_deinit(struct passdb_module *_module)
{
	struct tenant_passdb_module *module = (struct tenant_passdb_module *)_module;

	tenant_db_unref(&module->db);
}

static struct passdb_module_interface passdb_tenant = {
	.name = "tenant",
	.preinit = tenant_passdb_preinit,
	.init = tenant_passdb_init,
	.deinit = tenant_passdb_deinit,
	.verify_plain = tenant_verify_plain,
	.lookup_credentials = tenant_lookup_credentials,
};

/* --- userdb -------------------------------------------------------------- */

/* A mailbox's userdb fields, formatted once and kept while the account
 * they were made from stays the same: every lookup still reads the
 * account from the in-process cache (which the invalidation channel
 * keeps fresh) and compares what the fields depend on, so a change is
 * seen at the next lookup. One malloc()ed block, strings after it. */
struct tenant_reply {
	const char *address;		/* the key */
	const char *domain, *tenant;	/* what the templates may use */
	int64_t quota, tenant_quota;
	const char *home, *mail;	/* NULL: template empty */
	const char *quota_rule, *tenant_quota_bytes;
};

static void tenant_replies_free(struct tenant_db *db)
{
	struct hash_iterate_context *iter;
	const char *key;
	struct tenant_reply *reply;

	if (!hash_table_is_created(db->replies))
		return;
	iter = hash_table_iterate_init(db->replies);
	while (hash_table_iterate(iter, db->replies, &key, &reply))
		i_free(reply);
	hash_table_iterate_deinit(&iter);
	hash_table_destroy(&db->replies);
}

static bool tenant_reply_matches(const struct tenant_reply *reply,
				 const struct tn_account *acct)
{
	return reply->quota == acct->quota.value &&
		reply->tenant_quota == acct->tenant_storage.value &&
		strcmp(reply->tenant, acct->tenant) == 0 &&
		null_strcmp(reply->domain, acct->domain) == 0;
}

/* A template field expanded for acct: 0 with *value_r (NULL when the
 * template is empty, else tn_mem_free()), or -1 (logged) when the
 * directory's values cannot be put in it. */
static int tenant_reply_template(struct auth_request *request, const char *field,
				 const char *tmpl, const struct tn_account *acct,
				 char **value_r)
{
	const char *error;

	*value_r = NULL;
	if (tmpl[0] == '\0')
		return 0;
	if (tn_auth_expand(tmpl, acct, value_r, &error) < 0) {
		auth_request_log_error(request, TENANT_SUBSYS,
				       "tenant=%s: %s: %s", acct->tenant, field, error);
		return -1;
	}
	return 0;
}

/* Copy src (NULL stays NULL) to *pos, advancing it. */
static const char *tenant_reply_put(char **pos, const char *src)
{
	char *dest = *pos;
	size_t len;

	if (src == NULL)
		return NULL;
	len = strlen(src) + 1;
	memcpy(dest, src, len);
	*pos = dest + len;
	return dest;
}

/* Format acct's fields into a new reply: NULL (logged) when a template
 * cannot take the directory's values. */
static struct tenant_reply *
tenant_reply_new(struct auth_request *request, const struct tn_auth_settings *set,
		 const struct tn_account *acct)
{
	char quota_rule[48], tenant_quota[24], *home, *mail, *pos;
	struct tenant_reply *reply;
	size_t size;

	if (tenant_reply_template(request, "home", set->home, acct, &home) < 0)
		return NULL;
	if (tenant_reply_template(request, "mail", set->mail, acct, &mail) < 0) {
		tn_mem_free(&home);
		return NULL;
	}
	i_snprintf(quota_rule, sizeof(quota_rule), "*:bytes=%"PRId64, acct->quota.value);
	i_snprintf(tenant_quota, sizeof(tenant_quota), "%"PRId64,
		   acct->tenant_storage.value);
	size = sizeof(*reply) + strlen(acct->address) + 1 + strlen(acct->tenant) + 1 +
		(acct->domain != NULL ? strlen(acct->domain) + 1 : 0) +
		(home != NULL ? strlen(home) + 1 : 0) +
		(mail != NULL ? strlen(mail) + 1 : 0) +
		strlen(quota_rule) + 1 + strlen(tenant_quota) + 1;
	reply = i_malloc(size);
	pos = (char *)(reply + 1);
	reply->address = tenant_reply_put(&pos, acct->address);
	reply->domain = tenant_reply_put(&pos, acct->domain);
	reply->tenant = tenant_reply_put(&pos, acct->tenant);
	reply->quota = acct->quota.value;
	reply->tenant_quota = acct->tenant_storage.value;
	reply->home = tenant_reply_put(&pos, home);
	reply->mail = tenant_reply_put(&pos, mail);
	reply->quota_rule = tenant_reply_put(&pos, quota_rule);
	reply->tenant_quota_bytes = tenant_reply_put(&pos, tenant_quota);
	tn_mem_free(&home);
	tn_mem_free(&mail);
	return reply;
}

/* The formatted userdb fields of a mailbox account: the kept ones when
 * acct still gives the same, else made (and kept) now; NULL (logged)
 * when a template cannot take the directory's values. Valid until the
 * next call. */
static const struct tenant_reply *
tenant_reply_get(struct auth_request *request, struct tenant_db *db,
		 const struct tn_account *acct)
{
	struct tenant_reply *reply;

	if (!hash_table_is_created(db->replies))
		hash_table_create(&db->replies, default_pool, 0, str_hash, strcmp);
	reply = hash_table_lookup(db->replies, (const char *)acct->address);
	if (reply != NULL && tenant_reply_matches(reply, acct))
		return reply;
	if (reply != NULL) {
		hash_table_remove(db->replies, reply->address);
		i_free(reply);
	}
	reply = tenant_reply_new(request, &db->set, acct);
	if (reply == NULL)
		return NULL;
	if (hash_table_count(db->replies) >= TENANT_REPLIES_MAX) {
		tenant_replies_free(db);
		hash_table_create(&db->replies, default_pool, 0, str_hash, strcmp);
	}
	hash_table_insert(db->replies, reply->address, reply);
	return reply;
}

static enum userdb_result tenant_userdb_fill(struct auth_request *request,
					     struct tenant_db *db,
					     const struct tn_account *acct)
{
	const struct tn_auth_settings *set = &db->set;
	const struct tenant_reply *reply = tenant_reply_get(request, db, acct);

	if (reply == NULL)
		return USERDB_RESULT_INTERNAL_FAILURE;
	if (reply->home != NULL)
		auth_request_set_userdb_field(request, "home", reply->home);
	if (reply->mail != NULL)
		auth_request_set_userdb_field(request, "mail", reply->mail);
	if (strcmp(acct->address, request->fields.user) != 0)
		auth_request_set_userdb_field(request, "user", acct->address);
	if (set->uid[0] != '\0')
		auth_request_set_userdb_field(request, "uid", set->uid);
	if (set->gid[0] != '\0')
		auth_request_set_userdb_field(request, "gid", set->gid);
	auth_request_set_userdb_field(request, "quota_rule", reply->quota_rule);
	auth_request_set_userdb_field(request, "tenant", reply->tenant);
	auth_request_set_userdb_field(request, "tenant_quota_bytes",
				      reply->tenant_quota_bytes);
	if (acct->status != TN_STATUS_ACTIVE) {
		auth_request_set_userdb_field(request, "tenant_status",
					      tn_status_name(acct->status));
	}
	return USERDB_RESULT_OK;
}

/* Answer a userdb lookup from a lookup's result; acct is freed. */
static void tenant_userdb_finish(struct auth_request *request, enum tn_result res,
				 struct tn_account *acct, userdb_callback_t *callback)
{
	struct tenant_userdb_module *module =
		(struct tenant_userdb_module *)request->userdb->userdb;
	enum userdb_result result;
	const char *reason;

	switch (tn_auth_user_verdict(res, acct, &reason)) {
	case TN_AUTH_TEMPFAIL:
		result = USERDB_RESULT_INTERNAL_FAILURE;
		break;
	case TN_AUTH_OK:
		result = tenant_userdb_fill(request, module->db, acct);
		break;
	default:
		if (acct != NULL) {
			auth_request_log_info(request, TENANT_SUBSYS,
					      "tenant=%s: %s", acct->tenant, reason);
		}
		auth_request_log_unknown_user(request, TENANT_SUBSYS);
		result = USERDB_RESULT_USER_UNKNOWN;
		break;
	}
	if (acct != NULL)
		tn_account_free(&acct);
	callback(result, request);
}

/* The passdb step of this login put the fields in (tenant_passdb_prefetch).
 * Only when this userdb has no default_fields: Dovecot applies them to
 * the fields already there before calling us, and they must not
 * override the directory's. */
static bool tenant_userdb_prefetched(struct auth_request *request)
{
	struct userdb_template *defaults = request->userdb->default_fields_tmpl;

	return request->userdb_prefetch_set && request->fields.userdb_reply != NULL &&
		auth_fields_find(request->fields.userdb_reply, "tenant") != NULL &&
		(defaults == NULL || userdb_template_is_empty(defaults));
}

/* Dovecot's auth cache keeps of a userdb answer only the fields set
 * since the userdb step began (flagged changed): the fields the passdb
 * step wrote are set again, else the cache would hold an empty answer
 * (no uid, home, quota) for every later lookup of the user. */
static void tenant_userdb_mark_prefetched(struct auth_request *request)
{
	const ARRAY_TYPE(auth_field) *fields = auth_fields_export(request->fields.userdb_reply);
	const struct auth_field *field;
	ARRAY(struct auth_field) copy;

	T_BEGIN {
		t_array_init(&copy, array_count(fields));
		array_append_array(&copy, fields);
		array_foreach(&copy, field) {
			auth_fields_add(request->fields.userdb_reply, field->key, field->value,
					field->flags);
		}
	} T_END;
}

static void tenant_userdb_lookup(struct auth_request *request,
				 userdb_callback_t *callback)
{
	struct tenant_userdb_module *module =
		(struct tenant_userdb_module *)request->userdb->userdb;
	struct tenant_async *ctx;
	struct tn_account *acct;
	enum tn_result res;

	if (tenant_userdb_prefetched(request)) {
		auth_request_log_debug(request, TENANT_SUBSYS,
				       "userdb fields from this login's passdb lookup");
		tenant_userdb_mark_prefetched(request);
		callback(USERDB_RESULT_OK, request);
		return;
	}
	if (!module->module.blocking) {
		ctx = tenant_async_new(request);
		ctx->userdb_cb = callback;
		tenant_async_begin(module->db, ctx);
		return;
	}
	res = tenant_resolve(request, module->db, &acct);
	tenant_userdb_finish(request, res, acct, callback);
}

static struct userdb_module *tenant_userdb_preinit(pool_t pool, const char *args)
{
	struct tenant_userdb_module *module;

	module = p_new(pool, struct tenant_userdb_module, 1);
	module->db = tenant_db_get("userdb", args);
	module->module.blocking = module->db->set.blocking;
	module->module.default_cache_key = "%u";
	return &module->module;
}

static void tenant_userdb_init(struct userdb_module *module ATTR_UNUSED)
{
}

static void tenant_userdb_deinit(struct userdb_module *_module)
{
	struct tenant_userdb_module *module = (struct tenant_userdb_module *)_module;

	tenant_db_unref(&module->db);
}

static struct userdb_module_interface userdb_tenant = {
	.name = "tenant",
	.preinit = tenant_userdb_preinit,
	.init = tenant_userdb_init,
	.deinit = tenant_userdb_deinit,
	.lookup = tenant_userdb_lookup,
};

/* --- module -------------------------------------------------------------- */

void authdb_tenant_init(struct module *module ATTR_UNUSED)
{
	failure_callback_t *fatal, *error, *info, *debug;

	i_get_failure_handlers(&fatal, &error, &info, &debug);
	tenant_log_internal = i_failure_handler_is_internal(error);
	tenant_main_thread = pthread_self();
	tn_log_set_handler(tenant_log_handler, NULL);
	passdb_register_module(&passdb_tenant);
	userdb_register_module(&userdb_tenant);
}

void authdb_tenant_deinit(void)
{
	passdb_unregister_module(&passdb_tenant);
	userdb_unregister_module(&userdb_tenant);
	tn_log_set_handler(NULL, NULL);
}

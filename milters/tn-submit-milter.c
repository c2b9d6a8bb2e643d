/*++
 * NAME
 *	tn-submit-milter 8
 * SUMMARY
 *	the submission smtpd's milter: sender ownership and send limits
 * SYNOPSIS
 *	tn-submit-milter [-c FILE] [-o NAME=VALUE]... [-e] [-n]
 * DESCRIPTION
 *	A libmilter filter for the submission smtpd (authenticated users).
 *	At MAIL FROM the SASL login ({auth_authen}, asked for with
 *	smfi_setsymlist) and, when needed, the envelope sender and its
 *	domain are resolved through lib/tn-lookup (blocking, one deadline
 *	of submit_milter_lookup_timeout for all of them, in libmilter's
 *	thread of that session) and milters/submit-policy.c decides
 *	whether the login may use the sender. At each RCPT TO a send-limit
 *	reservation is made in Redis (milters/submit-redis.c); end of
 *	message commits it with the real recipient count and counts the
 *	message and its bytes out for the login's tenant -- without waiting
 *	for Redis: the commit is queued for the committer thread
 *	(milters/submit-commit.h, which says why the limits stay exact),
 *	or made at once when submit_milter_commit_queue is full or 0;
 *	abort and close release it (and Redis drops it by itself after
 *	submit_milter_reservation_hold, should this process die).
 *
 *	Refusals become message.rejected events, limits reached
 *	ratelimit.exceeded events (once per crossing), in the outbox. A
 *	refusal whose event cannot be recorded becomes 451 4.3.0.
 *
 *	Threads: libmilter's (one per SMTP session), its signal thread
 *	(SIGHUP, SIGINT, SIGTERM: stop), the reload thread (SIGUSR1),
 *	libmicrohttpd's for /metrics, the lookup library's invalidation
 *	subscriber and the committer (it sends what is queued before the
 *	Redis connections go at shutdown). Counters are atomics; a message
 *	keeps the settings it started with (a reference taken at MAIL
 *	FROM).
 *
 *	Memory: fail-stop tn_mem_* allocation. Per-session state is made at
 *	negotiation and freed at close; per-message state is made at MAIL
 *	FROM and freed at end of message, abort and close, each releasing
 *	a reservation still pending.
 * SECURITY
 *	Started as root: opens the milter socket (a unix socket is given
 *	to submit_milter_user) and the /metrics listener, then switches to
 *	submit_milter_user. The login comes from Postfix's SASL (or
 *	XCLIENT from a trusted client), never from the SMTP client itself.
 *	SMTP input is length-bounded and sanitised before it reaches a log
 *	line, an event or a Redis key; reply texts carry no user data.
 *--*/
#include "tn-build.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include <jansson.h>
#include <libmilter/mfapi.h>

#include "submit-commit.h"
#include "submit-policy.h"
#include "submit-redis.h"
#include "tn-cache.h"
#include "tn-conf.h"
#include "tn-conf-shared.h"
#include "tn-daemon.h"
#include "tn-log.h"
#include "tn-lookup.h"
#include "tn-mem.h"
#include "tn-milter-common.h"
#include "tn-outbox.h"

#define SM_PROGRAM "tn-submit-milter"
#define SM_ADDR_SIZE (SUBMIT_POLICY_ADDRESS_MAX * 4 + 8)

/* The table is the documentation source: man/tn-submit-milter.8 lists the
 * same names, types and defaults (tests/integration/test_submit_milter.py). */
static const struct tn_conf_param submit_milter_params[] = {
	{ "submit_milter_socket", TN_CONF_STR, "unix:/run/tenantmail/submit-milter.sock", 0, 0,
	  NULL, "libmilter socket: unix:/path or inet:PORT@ADDRESS" },
	{ "submit_milter_socket_mode", TN_CONF_STR, "0660", 0, 0, NULL,
	  "mode of a unix socket (octal), owned by submit_milter_user" },
	{ "submit_milter_user", TN_CONF_STR, "tenantmail", 0, 0, NULL,
	  "user to run as after opening the sockets (empty: no switch)" },
	{ "submit_milter_lookup_timeout", TN_CONF_TIME, "5s", 100, 25000, NULL,
	  "deadline of MAIL FROM's directory lookups (login, sender, domain) together" },
	{ "submit_milter_require_auth", TN_CONF_BOOL, "yes", 0, 0, NULL,
	  "no SASL login: 530 5.7.0 (no: pass unchecked and unlimited)" },
	{ "submit_milter_tenant_domains", TN_CONF_BOOL, "no", 0, 0, NULL,
	  "a login may send as any address of its tenant's domains" },
	{ "submit_milter_null_sender", TN_CONF_ENUM, "allow", 0, 0, "allow|refuse",
	  "MAIL FROM:<> from a login: allowed (and counted) or 553 5.7.1" },
	{ "submit_milter_suspended_reply", TN_CONF_ENUM, "permanent", 0, 0,
	  "permanent|temporary", "suspended login: 550 5.7.1 or 450 4.7.1" },
	{ "submit_milter_redis_unavailable", TN_CONF_ENUM, "accept", 0, 0, "accept|tempfail",
	  "Redis unanswered at RCPT: accept without the limits (counted), or 451 4.3.0" },
	{ "submit_milter_send_rate", TN_CONF_INT, "0", 0, 100000000, NULL,
	  "messages per hour per mailbox when the directory sets none (0: unlimited)" },
	{ "submit_milter_tenant_send_rate", TN_CONF_INT, "0", 0, 100000000, NULL,
	  "messages per hour per tenant when the directory sets none (0: unlimited)" },
	{ "submit_milter_rcpt_rate", TN_CONF_INT, "0", 0, 100000000, NULL,
	  "recipients per hour per mailbox (0: unlimited)" },
	{ "submit_milter_tenant_rcpt_rate", TN_CONF_INT, "0", 0, 100000000, NULL,
	  "recipients per hour per tenant (0: unlimited)" },
	{ "submit_milter_window", TN_CONF_TIME, "1h", 1000, 86400000, NULL,
	  "length of the sliding window the limits count over" },
	{ "submit_milter_reservation_hold", TN_CONF_TIME, "15m", 1000, 86400000, NULL,
	  "a reservation neither committed nor released expires after this (<= window)" },
	{ "submit_milter_commit_queue", TN_CONF_INT, "10000", 0, 1000000, NULL,
	  "end-of-message commits queued for the committer thread (full: committed"
	  " at once; 0: always at once)" },
	{ "submit_milter_commit_delay", TN_CONF_TIME, "20ms", 0, 1000, NULL,
	  "how long the committer thread lets a batch of commits fill before it"
	  " sends it (0: at once)" },
	{ "submit_milter_events", TN_CONF_BOOL, "yes", 0, 0, NULL,
	  "record message.rejected and ratelimit.exceeded events in the outbox" },
	{ "submit_milter_event_interval", TN_CONF_TIME, "1m", 1000, 86400000, NULL,
	  "at most one message.rejected per tenant and reason in this interval" },
	{ "submit_milter_count_traffic", TN_CONF_BOOL, "yes", 0, 0, NULL,
	  "count accepted messages and bytes out per tenant for usage.rollup" },
	{ "submit_milter_metrics_listen", TN_CONF_STR, "127.0.0.1:9467", 0, 0, NULL,
	  "address:port of the Prometheus /metrics endpoint (empty: off)" },
	{ "submit_milter_log_level", TN_CONF_ENUM, "info", 0, 0, "debug|info|warning|error",
	  "lowest severity logged" },
	TN_CONF_END
};

static const struct tn_conf_param *const submit_milter_tables[] = {
	TN_CONF_SHARED_TABLES, submit_milter_params, NULL,
};

/* What a reload may change; a message keeps the one it started with. */
struct sm_settings {
	atomic_int refs;
	struct submit_policy_settings policy;
	tn_msec_t lookup_timeout, window, hold, event_interval;
	bool events, count_traffic;
};

enum sm_redis_op { SM_REDIS_RESERVE, SM_REDIS_COMMIT, SM_REDIS_RELEASE, SM_REDIS_EVENTS,
		   SM_REDIS_OPS };
enum sm_event_type { SM_EV_REJECTED, SM_EV_RATELIMIT, SM_EV_TYPES };
enum sm_event_outcome { SM_EV_APPENDED, SM_EV_SUPPRESSED, SM_EV_UNCHECKED, SM_EV_FAILED,
			SM_EV_OUTCOMES };
enum sm_stage { SM_STAGE_MAIL, SM_STAGE_RCPT, SM_STAGE_EOM, SM_STAGES };
enum sm_commit_path { SM_COMMIT_QUEUED, SM_COMMIT_DIRECT, SM_COMMIT_PATHS };

static const char *const sm_redis_op_names[SM_REDIS_OPS] = { "reserve", "commit", "release",
							     "events" };
static const char *const sm_event_names[SM_EV_TYPES] = { "message.rejected",
							 "ratelimit.exceeded" };
static const char *const sm_outcome_names[SM_EV_OUTCOMES] = { "appended", "suppressed",
							      "redis_failed", "failed" };
static const char *const sm_stage_names[SM_STAGES] = { "mail", "rcpt", "eom" };
static const char *const sm_commit_path_names[SM_COMMIT_PATHS] = { "queued", "direct" };

struct sm_metrics {
	atomic_uint_fast64_t decisions[SM_STAGES][SUBMIT_POLICY_RESULTS];
	atomic_uint_fast64_t limited[SUBMIT_LIMITS];
	atomic_uint_fast64_t redis_failures[SM_REDIS_OPS];
	atomic_uint_fast64_t events[SM_EV_TYPES][SM_EV_OUTCOMES];
	atomic_uint_fast64_t commits[SM_COMMIT_PATHS];
	atomic_uint_fast64_t messages, bytes, reloads, reload_failures;
	atomic_int_fast64_t sessions, transactions, reservations;	/* gauges */
	atomic_uint_fast64_t session_ids;
	struct tn_milter_common_hist lookup;
};

struct sm_daemon {
	struct tn_conf *conf;
	struct tn_milter_common_args args;	/* -c and -o, for reloads */
	struct tn_lookup *lookup;
	struct submit_redis *redis;
	struct submit_commit *commit;	/* NULL: submit_milter_commit_queue = 0 */
	struct tn_outbox *outbox;
	pthread_mutex_t set_lock;
	struct sm_settings *set;	/* under set_lock */
	struct tn_milter_common_metrics *http;
	struct sm_metrics m;
};

static struct sm_daemon sm = { .set_lock = PTHREAD_MUTEX_INITIALIZER };

struct sm_msg {
	struct sm_settings *set;
	bool checked;			/* a login owns the sender: limits apply */
	char login[SM_ADDR_SIZE];
	char sender[SM_ADDR_SIZE];
	char *tenant;
	struct submit_policy_login pl;	/* strings: login, tenant */
	struct submit_policy_limits limits;
	char resid[SUBMIT_REDIS_RESID_SIZE];
	bool msg_reserved;
	unsigned reserved;		/* recipients reserved */
	unsigned accepted;		/* recipients answered continue */
	tn_msec_t reserved_at;		/* before the first reservation */
	int64_t declared, size;
	char queue_id[32];
};

struct sm_session {
	char id[24];
	bool nr_mail, nr_rcpt, nr_hdr, nr_body;
	struct sm_msg *msg;
};

/* --- settings ----------------------------------------------------------------- */

static struct sm_settings *sm_settings_read(const struct tn_conf *conf)
{
	struct sm_settings *s = tn_mem_calloc(1, sizeof(*s));
	struct submit_policy_settings *p = &s->policy;

	atomic_init(&s->refs, 1);
	p->require_auth = tn_conf_bool(conf, "submit_milter_require_auth");
	p->tenant_domains = tn_conf_bool(conf, "submit_milter_tenant_domains");
	p->null_sender_refused = tn_conf_enum(conf, "submit_milter_null_sender") == 1;
	p->suspended_temporary = tn_conf_enum(conf, "submit_milter_suspended_reply") == 1;
	p->redis_unavailable_tempfail =
		tn_conf_enum(conf, "submit_milter_redis_unavailable") == 1;
	p->send_rate = tn_conf_int(conf, "submit_milter_send_rate");
	p->tenant_send_rate = tn_conf_int(conf, "submit_milter_tenant_send_rate");
	p->rcpt_rate = tn_conf_int(conf, "submit_milter_rcpt_rate");
	p->tenant_rcpt_rate = tn_conf_int(conf, "submit_milter_tenant_rcpt_rate");
	s->lookup_timeout = tn_conf_time_ms(conf, "submit_milter_lookup_timeout");
	s->window = tn_conf_time_ms(conf, "submit_milter_window");
	s->hold = tn_conf_time_ms(conf, "submit_milter_reservation_hold");
	s->events = tn_conf_bool(conf, "submit_milter_events");
	s->event_interval = tn_conf_time_ms(conf, "submit_milter_event_interval");
	s->count_traffic = tn_conf_bool(conf, "submit_milter_count_traffic");
	return s;
}

static struct sm_settings *sm_settings_get(void)
{
	struct sm_settings *s;

	pthread_mutex_lock(&sm.set_lock);
	s = sm.set;
	atomic_fetch_add(&s->refs, 1);
	pthread_mutex_unlock(&sm.set_lock);
	return s;
}

static void sm_settings_unref(struct sm_settings **sp)
{
	struct sm_settings *s = *sp;

	*sp = NULL;
	if (s != NULL && atomic_fetch_sub(&s->refs, 1) == 1)
		tn_mem_free(&s);
}

static void sm_settings_replace(struct sm_settings *s)
{
	struct sm_settings *old;

	pthread_mutex_lock(&sm.set_lock);
	old = sm.set;
	sm.set = s;
	pthread_mutex_unlock(&sm.set_lock);
	sm_settings_unref(&old);
}

/* What the table's types cannot check: 0, or -1 with *error_r. */
static int sm_conf_check(const struct tn_conf *conf, const char **error_r)
{
	unsigned mode;

	if (tn_milter_common_parse_mode(tn_conf_str(conf, "submit_milter_socket_mode"),
					&mode) < 0) {
		*error_r = "submit_milter_socket_mode: expected an octal mode such as 0660";
		return -1;
	}
	if (tn_conf_time_ms(conf, "submit_milter_reservation_hold") >
	    tn_conf_time_ms(conf, "submit_milter_window")) {
		*error_r = "submit_milter_reservation_hold: longer than submit_milter_window";
		return -1;
	}
	return 0;
}

static struct tn_conf *sm_conf_load(void)
{
	struct tn_conf *conf = tn_conf_create(SM_PROGRAM, submit_milter_tables);
	const char *error;

	if (tn_milter_common_args_load(&sm.args, conf, &error) < 0)
		goto fail;
	if (sm_conf_check(conf, &error) < 0)
		goto fail;
	return conf;
fail:
	tn_error("reload: %s (the running settings stay)", error);
	tn_conf_destroy(&conf);
	return NULL;
}

/* SIGUSR1, in the reload thread: struct sm_settings; sockets, user, log
 * level (tn-log's level is a plain global set once, before threads
 * exist), directory, Redis and outbox need a restart. */
static void sm_reload(void *context)
{
	struct tn_conf *conf = sm_conf_load();

	(void)context;
	if (conf == NULL) {
		atomic_fetch_add(&sm.m.reload_failures, 1);
		return;
	}
	sm_settings_replace(sm_settings_read(conf));
	tn_conf_destroy(&conf);
	atomic_fetch_add(&sm.m.reloads, 1);
	tn_info("reloaded %s", sm.args.conf_path);
}

/* --- per-session and per-message state ------------------------------------------ */

static struct sm_session *sm_session(SMFICTX *ctx)
{
	return smfi_getpriv(ctx);
}

static struct tn_log_ctx sm_log_ctx(const struct sm_session *s, const struct sm_msg *m)
{
	return (struct tn_log_ctx){ s->id,
				    m != NULL && m->queue_id[0] != '\0' ? m->queue_id : NULL,
				    m != NULL ? m->tenant : NULL };
}

/* Drop a reservation still pending (abort, close, refusal at end of
 * message); Redis expires it anyway when this fails. */
static void sm_msg_release(struct sm_msg *m, const struct tn_log_ctx *lc)
{
	if (!m->msg_reserved && m->reserved == 0)
		return;
	if (submit_redis_release(sm.redis, m->login, m->tenant, m->resid, m->reserved,
				 tn_time_now_ms() + submit_redis_timeout(sm.redis)) < 0) {
		atomic_fetch_add(&sm.m.redis_failures[SM_REDIS_RELEASE], 1);
		tn_log(TN_LOG_WARNING, lc, "reservation %s not released (Redis drops it after"
		       " submit_milter_reservation_hold)", m->resid);
	} else {
		tn_log(TN_LOG_DEBUG, lc, "reservation %s released: recipients=%u", m->resid,
		       m->reserved);
	}
	m->msg_reserved = false;
	m->reserved = 0;
	atomic_fetch_sub(&sm.m.reservations, 1);
}

static void sm_msg_free(struct sm_session *s)
{
	struct sm_msg *m = s->msg;
	struct tn_log_ctx lc;

	if (m == NULL)
		return;
	lc = sm_log_ctx(s, m);
	sm_msg_release(m, &lc);
	tn_mem_free(&m->tenant);
	sm_settings_unref(&m->set);
	tn_mem_free(&s->msg);
	atomic_fetch_sub(&sm.m.transactions, 1);
}

static struct sm_msg *sm_msg_new(void)
{
	struct sm_msg *m = tn_mem_calloc(1, sizeof(*m));

	m->set = sm_settings_get();
	m->declared = -1;
	submit_redis_resid(m->resid);
	atomic_fetch_add(&sm.m.transactions, 1);
	return m;
}

static void sm_msg_queue_id(SMFICTX *ctx, struct sm_msg *m)
{
	const char *qid = smfi_getsymval(ctx, "i");

	if (qid != NULL && *qid != '\0' && m->queue_id[0] == '\0')
		tn_log_sanitize(m->queue_id, sizeof(m->queue_id), qid, strlen(qid));
}

/* --- events ----------------------------------------------------------------------- */

static int sm_append(enum sm_event_type type, const char *tenant, json_t *data,
		     const struct tn_log_ctx *lc)
{
	char id[TN_OUTBOX_ID_SIZE];
	uint64_t seq;
	const char *error;
	int ret = tn_outbox_append(sm.outbox, sm_event_names[type], tenant, data, id, &seq,
				   &error);

	json_decref(data);
	if (ret < 0) {
		atomic_fetch_add(&sm.m.events[type][SM_EV_FAILED], 1);
		tn_log(TN_LOG_ERROR, lc, "%s event not recorded: %s", sm_event_names[type], error);
		return -1;
	}
	atomic_fetch_add(&sm.m.events[type][SM_EV_APPENDED], 1);
	tn_log(TN_LOG_INFO, lc, "event %s id=%s sequence=%" PRIu64, sm_event_names[type], id, seq);
	return 0;
}

static json_t *sm_size_json(int64_t size)
{
	return size >= 0 ? json_integer(size) : json_null();
}

/* message.rejected, rate-limited per tenant and reason; -1 when it
 * should have been recorded and was not. */
static int sm_event_rejected(const struct sm_msg *m, const struct submit_policy_decision *d,
			     int64_t size, const struct tn_log_ctx *lc)
{
	int64_t suppressed = 0;
	int lim;

	if (!m->set->events || m->tenant == NULL || d->reason == NULL)
		return 0;
	lim = submit_redis_rejected(sm.redis, m->tenant, d->reason, m->set->event_interval,
				    tn_time_now_ms() + submit_redis_timeout(sm.redis),
				    &suppressed);
	if (lim == 0) {
		atomic_fetch_add(&sm.m.events[SM_EV_REJECTED][SM_EV_SUPPRESSED], 1);
		return 0;
	}
	if (lim < 0) {
		/* a flood must not reach billing unchecked */
		atomic_fetch_add(&sm.m.events[SM_EV_REJECTED][SM_EV_UNCHECKED], 1);
		atomic_fetch_add(&sm.m.redis_failures[SM_REDIS_EVENTS], 1);
		tn_log(TN_LOG_WARNING, lc, "message.rejected not recorded: its rate limit could"
		       " not be checked in Redis");
		return 0;
	}
	return sm_append(SM_EV_REJECTED, m->tenant,
			 json_pack("{s:s, s:s, s:s, s:s, s:i, s:s, s:o, s:I}", "direction",
				   "outbound", "address", m->sender, "login", m->login, "reason",
				   d->reason, "smtp_code", atoi(d->rcode), "enhanced_status",
				   d->xcode, "message_bytes", sm_size_json(size), "suppressed",
				   (json_int_t)suppressed), lc);
}

static int sm_event_ratelimit(const struct sm_msg *m, const struct submit_redis_outcome *o,
			      const struct tn_log_ctx *lc)
{
	if (!m->set->events || !o->notify)
		return 0;
	return sm_append(SM_EV_RATELIMIT, m->tenant,
			 json_pack("{s:s, s:s, s:s, s:I, s:I, s:I}", "scope",
				   submit_policy_limit_scope(o->limit), "unit",
				   submit_policy_limit_unit(o->limit), "address", m->login,
				   "limit_per_hour", (json_int_t)m->limits.value[o->limit],
				   "window_seconds", (json_int_t)(m->set->window / 1000),
				   "count", (json_int_t)o->count), lc);
}

/* --- replies ---------------------------------------------------------------------- */

static sfsistat sm_reply(SMFICTX *ctx, const struct submit_policy_decision *d)
{
	if (!submit_policy_refuses(d))
		return SMFIS_CONTINUE;
	smfi_setreply(ctx, (char *)d->rcode, (char *)d->xcode, (char *)d->text);
	return d->rcode[0] == '4' ? SMFIS_TEMPFAIL : SMFIS_REJECT;
}

/* A refusal whose event could not be recorded is a temporary failure. */
static void sm_tempfail_instead(struct submit_policy_decision *d)
{
	const struct submit_policy_settings tf = { .redis_unavailable_tempfail = true };

	submit_policy_rcpt(&tf, true, SUBMIT_LIMIT_NONE, 0, 0, d);
}

static const char *sm_reply_text(const struct submit_policy_decision *d, char *buf,
				 size_t size)
{
	if (!submit_policy_refuses(d))
		return "continue";
	snprintf(buf, size, "%s %s", d->rcode, d->xcode);
	return buf;
}

/* --- MAIL FROM ------------------------------------------------------------------------ */

struct sm_lookups {
	struct tn_account *login, *sender, *domain;
	struct submit_policy_sender ps;
	int64_t us;
};

static void sm_lookups_free(struct sm_lookups *l)
{
	tn_account_free(&l->login);
	tn_account_free(&l->sender);
	tn_account_free(&l->domain);
}

static enum tn_result sm_resolve(const char *what, enum tn_result (*fn)(struct tn_lookup *,
			const char *, tn_msec_t, struct tn_account **, const char **),
			const char *key, tn_msec_t deadline, struct tn_account **acct_r,
			const struct tn_log_ctx *lc)
{
	const char *error = NULL;
	enum tn_result res = fn(sm.lookup, key, deadline, acct_r, &error);

	if (res == TN_TEMPFAIL)
		tn_log(TN_LOG_WARNING, lc, "lookup of %s <%s> failed: %s", what, key,
		       error != NULL ? error : "?");
	return res;
}

/* The lookups MAIL FROM needs, within one deadline. */
static void sm_mail_lookups(struct sm_msg *m, struct sm_lookups *l,
			    const struct tn_log_ctx *lc)
{
	const struct submit_policy_settings *p = &m->set->policy;
	tn_msec_t deadline = tn_time_now_ms() + m->set->lookup_timeout;
	int64_t t0 = tn_time_now_us();
	const char *at;
	enum tn_result res;

	memset(l, 0, sizeof(*l));
	l->ps.address = m->sender;
	l->ps.domain_res = TN_NOTFOUND;
	if (m->login[0] == '\0')
		return;
	res = sm_resolve("login", tn_lookup_resolve, m->login, deadline, &l->login, lc);
	submit_policy_login_from_account(l->login, res, m->login, &m->pl);
	if (submit_policy_needs_sender(p, &m->pl, m->sender)) {
		l->ps.res = sm_resolve("sender", tn_lookup_resolve, m->sender, deadline,
				       &l->sender, lc);
		if (l->ps.res == TN_FOUND) {
			l->ps.kind = l->sender->kind;
			l->ps.tenant = l->sender->tenant;
			l->ps.targets = (const char *const *)l->sender->targets;
		}
		at = strrchr(m->sender, '@');
		if (submit_policy_needs_domain(p, &l->ps) && at != NULL && at[1] != '\0') {
			l->ps.domain_res = sm_resolve("sender domain", tn_lookup_resolve_domain,
						      at + 1, deadline, &l->domain, lc);
			if (l->ps.domain_res == TN_FOUND)
				l->ps.domain_tenant = l->domain->tenant;
		}
	}
	l->us = tn_time_now_us() - t0;
	tn_milter_common_hist_add(&sm.m.lookup, l->us);
}

/* Keep what the rest of the transaction needs of the login. */
static void sm_mail_keep(struct sm_msg *m, const struct tn_account *login)
{
	if (login == NULL)
		return;
	m->tenant = tn_mem_strdup(login->tenant);
	m->pl.address = m->login;
	m->pl.tenant = m->tenant;
	submit_policy_limits(&m->set->policy, login, &m->limits);
}

static void sm_log_mail(const struct tn_log_ctx *lc, const struct sm_msg *m,
			const struct submit_policy_decision *d, int64_t us)
{
	char reply[16];

	tn_log(TN_LOG_INFO, lc, "login=<%s> from=<%s> result=%s reply=%s%s%s size=%" PRId64
	       " limits=%" PRId64 "/%" PRId64 "/%" PRId64 "/%" PRId64 " lookup_ms=%.1f",
	       m->login, m->sender, submit_policy_result_name(d->result),
	       sm_reply_text(d, reply, sizeof(reply)), d->how != NULL ? " how=" : "",
	       d->how != NULL ? d->how : "", m->declared,
	       m->limits.value[SUBMIT_LIMIT_MAILBOX_MESSAGES],
	       m->limits.value[SUBMIT_LIMIT_TENANT_MESSAGES],
	       m->limits.value[SUBMIT_LIMIT_MAILBOX_RCPTS],
	       m->limits.value[SUBMIT_LIMIT_TENANT_RCPTS], (double)us / 1000.0);
}

static void sm_mail_decide(SMFICTX *ctx, struct sm_session *s, char **argv,
			   struct submit_policy_decision *d)
{
	struct sm_msg *m = s->msg;
	const char *login = smfi_getsymval(ctx, "{auth_authen}");
	struct sm_lookups l;
	struct tn_log_ctx lc = sm_log_ctx(s, m);

	submit_policy_address(login != NULL ? login : "", m->login, sizeof(m->login));
	submit_policy_address(argv[0], m->sender, sizeof(m->sender));
	m->declared = submit_policy_parse_size(argv + 1);
	sm_mail_lookups(m, &l, &lc);
	sm_mail_keep(m, m->pl.res == TN_FOUND ? l.login : NULL);
	lc = sm_log_ctx(s, m);
	submit_policy_mail(&m->set->policy, &m->pl, m->sender, &l.ps, m->declared, d);
	if (submit_policy_refuses(d) && sm_event_rejected(m, d, m->declared, &lc) < 0)
		sm_tempfail_instead(d);
	m->checked = d->result == SUBMIT_POLICY_PASS;
	atomic_fetch_add(&sm.m.decisions[SM_STAGE_MAIL][d->result], 1);
	sm_log_mail(&lc, m, d, l.us);
	sm_lookups_free(&l);
}

static sfsistat sm_envfrom(SMFICTX *ctx, char **argv)
{
	struct sm_session *s = sm_session(ctx);
	struct submit_policy_decision d;
	sfsistat ret;

	if (s == NULL || argv[0] == NULL)
		return SMFIS_TEMPFAIL;
	sm_msg_free(s);
	s->msg = sm_msg_new();
	sm_msg_queue_id(ctx, s->msg);
	sm_mail_decide(ctx, s, argv, &d);
	ret = sm_reply(ctx, &d);
	if (ret != SMFIS_CONTINUE)
		sm_msg_free(s);
	return ret;
}

/* --- RCPT TO ------------------------------------------------------------------------- */

static void sm_log_rcpt(const struct tn_log_ctx *lc, const char *rcpt,
			const struct sm_msg *m, const struct submit_policy_decision *d,
			const struct submit_redis_outcome *o)
{
	char reply[16];

	tn_log(TN_LOG_INFO, lc, "login=<%s> rcpt=<%s> result=%s reply=%s%s%s count=%" PRId64
	       " retry_ms=%" PRId64 " reserved=%u", m->login, rcpt,
	       submit_policy_result_name(d->result), sm_reply_text(d, reply, sizeof(reply)),
	       o->limit != SUBMIT_LIMIT_NONE ? " limit=" : "",
	       o->limit != SUBMIT_LIMIT_NONE ? submit_policy_limit_name(o->limit) : "",
	       o->count, o->retry_ms, m->reserved);
}

/* Reserve one recipient (and the message with the first). */
static void sm_rcpt_reserve(struct sm_msg *m, struct submit_policy_decision *d,
			    struct submit_redis_outcome *o, const struct tn_log_ctx *lc)
{
	bool first = !m->msg_reserved;
	tn_msec_t t0 = tn_time_now_ms();
	int ret = submit_redis_reserve(sm.redis, m->login, m->tenant, m->resid, m->reserved + 1,
				       first, &m->limits, m->set->window, m->set->hold,
				       t0 + submit_redis_timeout(sm.redis), o);

	if (ret < 0) {
		atomic_fetch_add(&sm.m.redis_failures[SM_REDIS_RESERVE], 1);
		tn_log(TN_LOG_WARNING, lc, "send limits unchecked: Redis did not answer (%s)",
		       tn_cache_last_error());
	} else if (o->limit == SUBMIT_LIMIT_NONE) {
		if (!m->msg_reserved && m->reserved == 0) {
			atomic_fetch_add(&sm.m.reservations, 1);
			m->reserved_at = t0;
		}
		m->msg_reserved = true;
		m->reserved++;
	} else {
		atomic_fetch_add(&sm.m.limited[o->limit], 1);
	}
	submit_policy_rcpt(&m->set->policy, ret < 0, o->limit,
			   o->limit < SUBMIT_LIMITS ? m->limits.value[o->limit] : 0, o->retry_ms,
			   d);
}

static sfsistat sm_envrcpt(SMFICTX *ctx, char **argv)
{
	struct sm_session *s = sm_session(ctx);
	struct sm_msg *m = s != NULL ? s->msg : NULL;
	struct submit_policy_decision d;
	struct submit_redis_outcome o = { 0 };
	char rcpt[SM_ADDR_SIZE];
	struct tn_log_ctx lc;

	if (m == NULL || argv[0] == NULL)
		return SMFIS_TEMPFAIL;		/* protocol out of order */
	sm_msg_queue_id(ctx, m);
	if (!m->checked) {
		m->accepted++;
		return s->nr_rcpt ? SMFIS_NOREPLY : SMFIS_CONTINUE;
	}
	lc = sm_log_ctx(s, m);
	submit_policy_address(argv[0], rcpt, sizeof(rcpt));
	sm_rcpt_reserve(m, &d, &o, &lc);
	if (d.result == SUBMIT_POLICY_RATE_LIMITED &&
	    (sm_event_ratelimit(m, &o, &lc) < 0 || sm_event_rejected(m, &d, m->declared, &lc) < 0))
		sm_tempfail_instead(&d);
	if (!submit_policy_refuses(&d))
		m->accepted++;
	atomic_fetch_add(&sm.m.decisions[SM_STAGE_RCPT][d.result], 1);
	sm_log_rcpt(&lc, rcpt, m, &d, &o);
	return sm_reply(ctx, &d);
}

/* --- the rest of the transaction ------------------------------------------------------ */

static sfsistat sm_negotiate(SMFICTX *ctx, unsigned long f0, unsigned long f1,
			     unsigned long f2, unsigned long f3, unsigned long *pf0,
			     unsigned long *pf1, unsigned long *pf2, unsigned long *pf3)
{
	const unsigned long skip = SMFIP_NOCONNECT | SMFIP_NOHELO | SMFIP_NOUNKNOWN |
				   SMFIP_NODATA | SMFIP_NOEOH;
	const unsigned long noreply = SMFIP_NR_HDR | SMFIP_NR_BODY;
	struct sm_session *s = sm_session(ctx);

	(void)f2;
	(void)f3;
	if (s == NULL) {
		s = tn_mem_calloc(1, sizeof(*s));
		snprintf(s->id, sizeof(s->id), "%" PRIuFAST64,
			 atomic_fetch_add(&sm.m.session_ids, 1) + 1);
		smfi_setpriv(ctx, s);
		atomic_fetch_add(&sm.m.sessions, 1);
	}
	*pf0 = f0 & SMFIF_SETSYMLIST;
	*pf1 = f1 & (skip | noreply);
	*pf2 = *pf3 = 0;
	s->nr_hdr = (*pf1 & SMFIP_NR_HDR) != 0;
	s->nr_body = (*pf1 & SMFIP_NR_BODY) != 0;
	if (*pf0 & SMFIF_SETSYMLIST) {
		smfi_setsymlist(ctx, SMFIM_ENVFROM, "i {auth_authen}");
		smfi_setsymlist(ctx, SMFIM_ENVRCPT, "i");
		smfi_setsymlist(ctx, SMFIM_EOM, "i");
	}
	return SMFIS_CONTINUE;
}

static sfsistat sm_header(SMFICTX *ctx, char *name, char *value)
{
	struct sm_session *s = sm_session(ctx);

	if (s != NULL && s->msg != NULL)
		s->msg->size += (int64_t)(strlen(name) + 2 + strlen(value) + 2);
	return s != NULL && s->nr_hdr ? SMFIS_NOREPLY : SMFIS_CONTINUE;
}

static sfsistat sm_body(SMFICTX *ctx, unsigned char *chunk, size_t len)
{
	struct sm_session *s = sm_session(ctx);

	(void)chunk;
	if (s != NULL && s->msg != NULL)
		s->msg->size += (int64_t)len;
	return s != NULL && s->nr_body ? SMFIS_NOREPLY : SMFIS_CONTINUE;
}

/* A commit that did not land, at end of message or in the committer
 * thread: its reservation expires after the hold. */
static void sm_commit_failed(const struct submit_redis_commit *c)
{
	struct tn_log_ctx lc = { c->session, c->queue_id, c->tenant };

	atomic_fetch_add(&sm.m.redis_failures[SM_REDIS_COMMIT], 1);
	tn_log(TN_LOG_WARNING, &lc, "reservation %s not committed, traffic not counted:"
	       " Redis did not answer", c->resid);
}

/* The committer thread's report on a queued commit. */
static void sm_commit_done(const struct submit_redis_commit *c, bool ok, void *context)
{
	(void)context;
	if (!ok)
		sm_commit_failed(c);
}

/* Commit the reservation with the real count and count the message out:
 * queued for the committer thread (end of message does not wait for
 * Redis), or here when the queue is full or off. */
static void sm_commit(struct sm_msg *m, const struct tn_log_ctx *lc)
{
	bool traffic = m->set->count_traffic && m->tenant != NULL;
	struct submit_redis_commit c;

	atomic_fetch_add(&sm.m.messages, 1);
	atomic_fetch_add(&sm.m.bytes, (uint_fast64_t)m->size);
	if (m->tenant == NULL || (!traffic && !m->msg_reserved && m->reserved == 0))
		return;
	c = (struct submit_redis_commit){
		.mailbox = m->login, .tenant = m->tenant, .reserved = m->reserved,
		.count = m->reserved,
		.keys_used = submit_redis_keys_used(&m->limits, m->msg_reserved, m->reserved),
		.traffic = traffic, .bytes = m->size, .wall_time = tn_time_wall(),
		.window = m->set->window, .hold = m->set->hold, .reserved_at = m->reserved_at,
		.session = lc->session, .queue_id = lc->queue_id,
	};
	memcpy(c.resid, m->resid, sizeof(c.resid));
	if (sm.commit != NULL && submit_commit_queue(sm.commit, &c)) {
		atomic_fetch_add(&sm.m.commits[SM_COMMIT_QUEUED], 1);
	} else {
		atomic_fetch_add(&sm.m.commits[SM_COMMIT_DIRECT], 1);
		if (submit_redis_commit(sm.redis, &c,
					tn_time_now_ms() + submit_redis_timeout(sm.redis)) < 0) {
			sm_commit_failed(&c);
			return;		/* released at free; expires anyway */
		}
	}
	if (m->msg_reserved || m->reserved > 0)
		atomic_fetch_sub(&sm.m.reservations, 1);
	m->msg_reserved = false;
	m->reserved = 0;
}

static sfsistat sm_eom(SMFICTX *ctx)
{
	struct sm_session *s = sm_session(ctx);
	struct sm_msg *m = s != NULL ? s->msg : NULL;
	struct submit_policy_decision d;
	struct tn_log_ctx lc;
	char reply[16];
	sfsistat ret;

	if (m == NULL)
		return SMFIS_CONTINUE;
	sm_msg_queue_id(ctx, m);
	m->size += 2;		/* the empty line after the header */
	lc = sm_log_ctx(s, m);
	submit_policy_eom(m->checked ? &m->pl : NULL, m->size, &d);
	if (submit_policy_refuses(&d) && sm_event_rejected(m, &d, m->size, &lc) < 0)
		sm_tempfail_instead(&d);
	atomic_fetch_add(&sm.m.decisions[SM_STAGE_EOM][d.result], 1);
	if (!submit_policy_refuses(&d))
		sm_commit(m, &lc);
	tn_log(TN_LOG_INFO, &lc, "end of message: login=<%s> from=<%s> size=%" PRId64
	       " recipients=%u result=%s reply=%s", m->login, m->sender, m->size, m->accepted,
	       submit_policy_result_name(d.result), sm_reply_text(&d, reply, sizeof(reply)));
	ret = sm_reply(ctx, &d);
	sm_msg_free(s);
	return ret;
}

static sfsistat sm_abort(SMFICTX *ctx)
{
	struct sm_session *s = sm_session(ctx);

	if (s != NULL)
		sm_msg_free(s);
	return SMFIS_CONTINUE;
}

static sfsistat sm_close(SMFICTX *ctx)
{
	struct sm_session *s = sm_session(ctx);

	if (s == NULL)
		return SMFIS_CONTINUE;
	sm_msg_free(s);
	smfi_setpriv(ctx, NULL);
	tn_mem_free(&s);
	atomic_fetch_sub(&sm.m.sessions, 1);
	return SMFIS_CONTINUE;
}

/* --- /metrics --------------------------------------------------------------------------- */

static void sm_render_counters(FILE *f)
{
	fputs("# TYPE tn_submit_milter_decisions_total counter\n", f);
	for (int st = 0; st < SM_STAGES; st++)
		for (int i = 0; i < SUBMIT_POLICY_RESULTS; i++)
			fprintf(f, "tn_submit_milter_decisions_total{stage=\"%s\",result=\"%s\"}"
				" %llu\n", sm_stage_names[st],
				submit_policy_result_name((enum submit_policy_result)i),
				(unsigned long long)atomic_load(&sm.m.decisions[st][i]));
	fputs("# TYPE tn_submit_milter_limited_total counter\n", f);
	for (int i = 1; i < SUBMIT_LIMITS; i++)
		fprintf(f, "tn_submit_milter_limited_total{limit=\"%s\"} %llu\n",
			submit_policy_limit_name((enum submit_policy_limit)i),
			(unsigned long long)atomic_load(&sm.m.limited[i]));
	fputs("# TYPE tn_submit_milter_redis_failures_total counter\n", f);
	for (int i = 0; i < SM_REDIS_OPS; i++)
		fprintf(f, "tn_submit_milter_redis_failures_total{op=\"%s\"} %llu\n",
			sm_redis_op_names[i],
			(unsigned long long)atomic_load(&sm.m.redis_failures[i]));
	fputs("# TYPE tn_submit_milter_commits_total counter\n", f);
	for (int i = 0; i < SM_COMMIT_PATHS; i++)
		fprintf(f, "tn_submit_milter_commits_total{path=\"%s\"} %llu\n",
			sm_commit_path_names[i], (unsigned long long)atomic_load(&sm.m.commits[i]));
	fputs("# TYPE tn_submit_milter_events_total counter\n", f);
	for (int t = 0; t < SM_EV_TYPES; t++)
		for (int o = 0; o < SM_EV_OUTCOMES; o++)
			fprintf(f, "tn_submit_milter_events_total{type=\"%s\",outcome=\"%s\"} %llu\n",
				sm_event_names[t], sm_outcome_names[o],
				(unsigned long long)atomic_load(&sm.m.events[t][o]));
}

static void sm_render_gauges(FILE *f)
{
	struct submit_commit_stats cs = { 0, 0 };

	fprintf(f, "# TYPE tn_submit_milter_messages_total counter\n"
		"tn_submit_milter_messages_total %llu\n",
		(unsigned long long)atomic_load(&sm.m.messages));
	fprintf(f, "# TYPE tn_submit_milter_bytes_total counter\n"
		"tn_submit_milter_bytes_total %llu\n", (unsigned long long)atomic_load(&sm.m.bytes));
	fprintf(f, "# TYPE tn_submit_milter_reloads_total counter\n"
		"tn_submit_milter_reloads_total{outcome=\"ok\"} %llu\n"
		"tn_submit_milter_reloads_total{outcome=\"failed\"} %llu\n",
		(unsigned long long)atomic_load(&sm.m.reloads),
		(unsigned long long)atomic_load(&sm.m.reload_failures));
	fprintf(f, "# TYPE tn_submit_milter_sessions gauge\ntn_submit_milter_sessions %lld\n",
		(long long)atomic_load(&sm.m.sessions));
	fprintf(f, "# TYPE tn_submit_milter_transactions gauge\n"
		"tn_submit_milter_transactions %lld\n", (long long)atomic_load(&sm.m.transactions));
	fprintf(f, "# TYPE tn_submit_milter_reservations gauge\n"
		"tn_submit_milter_reservations %lld\n", (long long)atomic_load(&sm.m.reservations));
	if (sm.commit != NULL)
		submit_commit_stats(sm.commit, &cs);
	fprintf(f, "# TYPE tn_submit_milter_commit_queue gauge\n"
		"tn_submit_milter_commit_queue %llu\n"
		"# TYPE tn_submit_milter_commit_batches_total counter\n"
		"tn_submit_milter_commit_batches_total %llu\n", (unsigned long long)cs.depth,
		(unsigned long long)cs.batches);
}

static char *sm_render(void *context)
{
	char *text = NULL, *lookup;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	(void)context;
	if (f == NULL)
		return strdup("# out of memory\n");
	sm_render_counters(f);
	sm_render_gauges(f);
	tn_milter_common_hist_render(&sm.m.lookup, "tn_submit_milter_lookup_seconds", f);
	lookup = tn_lookup_metrics(sm.lookup, "tn_submit_milter");
	if (lookup != NULL)
		fputs(lookup, f);
	free(lookup);
	fclose(f);
	return text;
}

/* --- start-up ------------------------------------------------------------------------------ */

static struct smfiDesc sm_desc = {
	.xxfi_name = SM_PROGRAM,
	.xxfi_version = SMFI_VERSION,
	.xxfi_flags = 0,
	.xxfi_envfrom = sm_envfrom,
	.xxfi_envrcpt = sm_envrcpt,
	.xxfi_header = sm_header,
	.xxfi_body = sm_body,
	.xxfi_eom = sm_eom,
	.xxfi_abort = sm_abort,
	.xxfi_close = sm_close,
	.xxfi_negotiate = sm_negotiate,
};

static int sm_backends(const char **error_r)
{
	if ((sm.lookup = tn_lookup_create(sm.conf, 0, error_r)) == NULL)
		return -1;
	if ((sm.redis = submit_redis_create(sm.conf, error_r)) == NULL)
		return -1;
	if (tn_conf_int(sm.conf, "submit_milter_commit_queue") > 0 &&
	    (sm.commit = submit_commit_create(sm.redis,
			(unsigned)tn_conf_int(sm.conf, "submit_milter_commit_queue"),
			tn_conf_time_ms(sm.conf, "submit_milter_commit_delay"),
			sm_commit_done, NULL, error_r)) == NULL)
		return -1;
	sm.outbox = tn_outbox_create_conf(sm.conf);
	return 0;
}

static int sm_open_socket(void)
{
	const char *spec = tn_conf_str(sm.conf, "submit_milter_socket"), *error;
	unsigned mode = 0660;

	(void)tn_milter_common_parse_mode(tn_conf_str(sm.conf, "submit_milter_socket_mode"),
					  &mode);
	if (smfi_setconn((char *)spec) == MI_FAILURE || smfi_register(sm_desc) == MI_FAILURE ||
	    smfi_opensocket(true) == MI_FAILURE) {
		tn_error("cannot open the milter socket %s", spec);
		return EX_UNAVAILABLE;
	}
	if (tn_milter_common_socket_setup(spec, mode, tn_conf_str(sm.conf, "submit_milter_user"),
					  &error) < 0) {
		tn_error("%s: %s", spec, error);
		return EX_UNAVAILABLE;
	}
	return 0;
}

static int sm_start_services(void)
{
	const char *listen = tn_conf_str(sm.conf, "submit_milter_metrics_listen"), *error;

	if (*listen != '\0' &&
	    (sm.http = tn_milter_common_metrics_start(listen, sm_render, NULL, &error)) == NULL) {
		tn_error("%s", error);
		return EX_UNAVAILABLE;
	}
	if (tn_daemon_drop_privileges("submit_milter_user",
				      tn_conf_str(sm.conf, "submit_milter_user")) < 0)
		return EX_NOPERM;
	if (tn_conf_bool(sm.conf, "submit_milter_events") &&
	    tn_outbox_check(sm.outbox, &error) < 0) {
		tn_error("outbox: %s", error);
		return EX_CONFIG;
	}
	if (tn_lookup_start(sm.lookup, &error) < 0 ||
	    tn_milter_common_reload_start(sm_reload, NULL, &error) < 0) {
		tn_error("%s", error);
		return EX_SOFTWARE;
	}
	return 0;
}

static int sm_run(void)
{
	const char *error;
	int ret;

	if (sm_backends(&error) < 0) {
		tn_error("%s", error);
		return EX_CONFIG;
	}
	if ((ret = sm_open_socket()) != 0 || (ret = sm_start_services()) != 0)
		return ret;
	tn_info("started: socket %s, /metrics on %s",
		tn_conf_str(sm.conf, "submit_milter_socket"),
		*tn_conf_str(sm.conf, "submit_milter_metrics_listen") != '\0' ?
		tn_conf_str(sm.conf, "submit_milter_metrics_listen") : "(off)");
	ret = smfi_main() == MI_SUCCESS ? 0 : EX_SOFTWARE;
	tn_info("stopped");
	return ret;
}

static void sm_teardown(void)
{
	tn_milter_common_metrics_stop(&sm.http);
	submit_commit_destroy(&sm.commit);	/* sends what is queued */
	tn_outbox_destroy(&sm.outbox);
	submit_redis_destroy(&sm.redis);
	tn_lookup_destroy(&sm.lookup);
	sm_settings_unref(&sm.set);
	tn_milter_common_args_free(&sm.args);
	tn_conf_destroy(&sm.conf);
}

int main(int argc, char **argv)
{
	bool check = false;
	const char *error;
	int ret;

	signal(SIGPIPE, SIG_IGN);
	tn_milter_common_reload_block();
	if ((ret = tn_daemon_configure(SM_PROGRAM, submit_milter_tables,
				       "submit_milter_log_level", argc, argv, &sm.conf,
				       &check)) != 0)
		return ret;
	tn_milter_common_args_save(&sm.args, argc, argv);
	sm.set = sm_settings_read(sm.conf);
	if (sm_conf_check(sm.conf, &error) < 0) {
		fprintf(stderr, "%s: %s\n", SM_PROGRAM, error);
		tn_error("%s", error);
		ret = EX_CONFIG;
	} else if (check) {
		tn_conf_dump(sm.conf, stdout, TN_CONF_DUMP_CHANGED);
	} else if ((ret = sm_run()) == 0 && !tn_milter_common_quiesce(&sm.m.sessions)) {
		return ret;
	}
	sm_teardown();
	return ret;
}

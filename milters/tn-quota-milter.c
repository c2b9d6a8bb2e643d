/*++
 * NAME
 *	tn-quota-milter 8
 * SUMMARY
 *	refuse at RCPT TO what the directory or a quota would refuse later
 * SYNOPSIS
 *	tn-quota-milter [-c FILE] [-o NAME=VALUE]... [-e] [-n]
 * DESCRIPTION
 *	A libmilter filter for the port-25 smtpd. Each RCPT TO is resolved
 *	through lib/tn-lookup (blocking, with quota_milter_lookup_timeout
 *	as the deadline, in libmilter's thread for that SMTP session), the
 *	usage counters of the mailbox and its tenant are read from Redis
 *	(lib/tn-usage: the keys the Dovecot tenant_quota plugin writes),
 *	and milters/quota-policy.c decides; the answer is set with
 *	smfi_setreply(). Nothing is ever SMFIS_ACCEPTed: every recipient
 *	of a transaction is checked, each with its own answer.
 *
 *	At end of message the accepted recipients are checked again with
 *	the real size (quota-policy.h says what Postfix can do with that),
 *	and an accepted message is counted once per tenant in the traffic
 *	counters (quota-redis.h) for usage.rollup.
 *
 *	Refusals become quota.exceeded and message.rejected events in the
 *	outbox, each rate-limited in Redis (one per quota, or per tenant
 *	and reason, per quota_milter_event_interval, across all nodes). An
 *	event that cannot be recorded turns the refusal into 451 4.3.0:
 *	a refusal is never confirmed without its event (docs/events.md).
 *
 *	Threads: libmilter's (one per SMTP session; callbacks of one
 *	session never run concurrently), its signal thread (SIGHUP, SIGINT,
 *	SIGTERM: stop), the reload thread (SIGUSR1), libmicrohttpd's for
 *	/metrics, and the lookup library's invalidation subscriber.
 *	Counters are atomics; the settings a message uses are a reference
 *	taken at MAIL FROM, so a reload never changes a transaction midway.
 *
 *	Names: qm_ for everything of this file (all static: main() is its
 *	only external symbol), quota_milter_ for its parameters.
 *
 *	Memory: fail-stop tn_mem_* allocation. Per-session state is made
 *	at negotiation and freed at close; per-message state is made at
 *	MAIL FROM and freed at end of message, abort and close.
 * SECURITY
 *	Started as root: opens the milter socket (chmod/chown of a unix
 *	socket to quota_milter_user) and the /metrics listener, then
 *	switches to quota_milter_user before it reads a secret-less
 *	directory or Redis answer. SMTP input (addresses, ESMTP arguments)
 *	is length-bounded and sanitised before it reaches a log line or an
 *	event; reply texts carry no user data.
 *--*/
#include "tn-build.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <libmilter/mfapi.h>

#include "quota-policy.h"
#include "quota-redis.h"
#include "tn-cache.h"
#include "tn-conf.h"
#include "tn-conf-shared.h"
#include "tn-daemon.h"
#include "tn-log.h"
#include "tn-lookup.h"
#include "tn-mem.h"
#include "tn-milter-common.h"
#include "tn-outbox.h"
#include "tn-usage.h"

#define QM_PROGRAM "tn-quota-milter"
#define QM_ADDRESS_MAX 320	/* longest RCPT address looked at */
#define QM_RCPTS_MAX 1000	/* recipients kept per message */

/* The table is the documentation source: man/tn-quota-milter.8 lists the
 * same names, types and defaults (tests/integration/test_quota_milter.py). */
static const struct tn_conf_param quota_milter_params[] = {
	{ "quota_milter_socket", TN_CONF_STR, "unix:/run/tenantmail/quota-milter.sock", 0, 0,
	  NULL, "libmilter socket: unix:/path or inet:PORT@ADDRESS" },
	{ "quota_milter_socket_mode", TN_CONF_STR, "0660", 0, 0, NULL,
	  "mode of a unix socket (octal), owned by quota_milter_user" },
	{ "quota_milter_user", TN_CONF_STR, "tenantmail", 0, 0, NULL,
	  "user to run as after opening the sockets (empty: no switch)" },
	{ "quota_milter_lookup_timeout", TN_CONF_TIME, "5s", 100, 25000, NULL,
	  "deadline of one recipient's directory lookup (well under milter_command_timeout)" },
	{ "quota_milter_over_quota_reply", TN_CONF_ENUM, "temporary", 0, 0,
	  "temporary|permanent", "full mailbox or tenant pool: 452 4.2.2 or 552 5.2.2" },
	{ "quota_milter_suspended_reply", TN_CONF_ENUM, "permanent", 0, 0,
	  "permanent|temporary", "suspended recipient: 550 5.2.1 or 450 4.2.1" },
	{ "quota_milter_usage_unavailable", TN_CONF_ENUM, "accept", 0, 0, "accept|tempfail",
	  "Redis unanswered: accept without the quota check, or 451 4.3.0" },
	{ "quota_milter_events", TN_CONF_BOOL, "yes", 0, 0, NULL,
	  "record quota.exceeded and message.rejected events in the outbox" },
	{ "quota_milter_event_interval", TN_CONF_TIME, "1m", 1000, 86400000, NULL,
	  "at most one event per quota, and per tenant and reason, in this interval" },
	{ "quota_milter_count_traffic", TN_CONF_BOOL, "yes", 0, 0, NULL,
	  "count accepted messages and bytes per tenant for usage.rollup" },
	{ "quota_milter_traffic_flush_interval", TN_CONF_TIME, "1s", 10, 60000, NULL,
	  "traffic counters are summed in memory and written to Redis this often" },
	{ "quota_milter_traffic_max_pending", TN_CONF_INT, "100000", 100, 10000000, NULL,
	  "counters (tenant and hour) waiting for Redis, at most; beyond it new ones are dropped" },
	{ "quota_milter_tenant_header", TN_CONF_STR, "", 0, 0, NULL,
	  "header naming the recipients' tenants, incoming copies removed (empty: none)" },
	{ "quota_milter_metrics_listen", TN_CONF_STR, "127.0.0.1:9466", 0, 0, NULL,
	  "address:port of the Prometheus /metrics endpoint (empty: off)" },
	{ "quota_milter_log_level", TN_CONF_ENUM, "info", 0, 0, "debug|info|warning|error",
	  "lowest severity logged" },
	TN_CONF_END
};

static const struct tn_conf_param *const quota_milter_tables[] = {
	TN_CONF_SHARED_TABLES, quota_milter_params, NULL,
};

/* What a reload may change; a message keeps the one it started with. */
struct qm_settings {
	atomic_int refs;
	struct quota_policy_settings policy;
	tn_msec_t lookup_timeout;
	bool events, count_traffic;
	tn_msec_t event_interval;
};

enum qm_redis_op { QM_REDIS_USAGE, QM_REDIS_EVENTS, QM_REDIS_TRAFFIC, QM_REDIS_OPS };
enum qm_event_type { QM_EV_EXCEEDED, QM_EV_REJECTED, QM_EV_TYPES };
enum qm_event_outcome { QM_EV_APPENDED, QM_EV_SUPPRESSED, QM_EV_UNCHECKED, QM_EV_FAILED,
			QM_EV_OUTCOMES };

static const char *const qm_redis_op_names[QM_REDIS_OPS] = { "usage", "events", "traffic" };
static const char *const qm_event_names[QM_EV_TYPES] = { "quota.exceeded",
							 "message.rejected" };
static const char *const qm_outcome_names[QM_EV_OUTCOMES] = { "appended", "suppressed",
							      "redis_failed", "failed" };

struct qm_metrics {
	atomic_uint_fast64_t rcpt[QUOTA_POLICY_RESULTS];
	atomic_uint_fast64_t eom[QUOTA_POLICY_RESULTS];
	atomic_uint_fast64_t redis_failures[QM_REDIS_OPS];
	atomic_uint_fast64_t usage_reads[2];	/* with the lookup, separately */
	atomic_uint_fast64_t events[QM_EV_TYPES][QM_EV_OUTCOMES];
	atomic_uint_fast64_t messages, bytes, reloads, reload_failures;
	atomic_int_fast64_t sessions, transactions;	/* open states (gauges) */
	atomic_uint_fast64_t session_ids;
	struct tn_milter_common_hist lookup;
};

struct qm_daemon {
	struct tn_conf *conf;
	struct tn_milter_common_args args;	/* -c and -o, for reloads */
	struct tn_lookup *lookup;
	struct tn_usage *usage;
	struct quota_redis *redis;
	struct quota_traffic *traffic;	/* NULL: not counted in Redis */
	struct tn_outbox *outbox;
	pthread_mutex_t set_lock;
	struct qm_settings *set;	/* under set_lock */
	struct tn_milter_common_metrics *http;
	const char *tenant_header;	/* "" none (read at start: negotiated) */
	struct qm_metrics m;
};

static struct qm_daemon qm = { .set_lock = PTHREAD_MUTEX_INITIALIZER };

struct qm_rcpt {
	char *address, *tenant;
	struct quota_policy_rcpt pr;
};

struct qm_msg {
	struct qm_settings *set;
	int64_t declared;		/* SIZE=, -1 none */
	int64_t size;			/* headers and body as received */
	int header_copies;		/* incoming tenant headers */
	char queue_id[32];
	struct qm_rcpt *rcpts;
	size_t n, cap;
};

struct qm_session {
	char id[24];
	bool nr_mail, nr_hdr, nr_body;
	struct qm_msg *msg;
};

/* --- settings ----------------------------------------------------------------- */

static struct qm_settings *qm_settings_read(const struct tn_conf *conf)
{
	struct qm_settings *s = tn_mem_calloc(1, sizeof(*s));

	atomic_init(&s->refs, 1);
	s->policy.over_quota_permanent = tn_conf_enum(conf, "quota_milter_over_quota_reply") == 1;
	s->policy.suspended_temporary = tn_conf_enum(conf, "quota_milter_suspended_reply") == 1;
	s->policy.usage_unavailable_tempfail =
		tn_conf_enum(conf, "quota_milter_usage_unavailable") == 1;
	s->lookup_timeout = tn_conf_time_ms(conf, "quota_milter_lookup_timeout");
	s->events = tn_conf_bool(conf, "quota_milter_events");
	s->event_interval = tn_conf_time_ms(conf, "quota_milter_event_interval");
	s->count_traffic = tn_conf_bool(conf, "quota_milter_count_traffic");
	return s;
}

static struct qm_settings *qm_settings_get(void)
{
	struct qm_settings *s;

	pthread_mutex_lock(&qm.set_lock);
	s = qm.set;
	atomic_fetch_add(&s->refs, 1);
	pthread_mutex_unlock(&qm.set_lock);
	return s;
}

static void qm_settings_unref(struct qm_settings **sp)
{
	struct qm_settings *s = *sp;

	*sp = NULL;
	if (s != NULL && atomic_fetch_sub(&s->refs, 1) == 1)
		tn_mem_free(&s);
}

static void qm_settings_replace(struct qm_settings *s)
{
	struct qm_settings *old;

	pthread_mutex_lock(&qm.set_lock);
	old = qm.set;
	qm.set = s;
	pthread_mutex_unlock(&qm.set_lock);
	qm_settings_unref(&old);
}

/* A fresh configuration from the file and the -o overrides, or NULL
 * after an error line (the error text lives in the configuration, so it
 * is logged before that is destroyed). */
static struct tn_conf *qm_conf_load(void)
{
	struct tn_conf *conf = tn_conf_create(QM_PROGRAM, quota_milter_tables);
	const char *error;

	if (tn_milter_common_args_load(&qm.args, conf, &error) < 0)
		goto fail;
	return conf;
fail:
	tn_error("reload: %s (the running settings stay)", error);
	tn_conf_destroy(&conf);
	return NULL;
}

/* SIGUSR1, in the reload thread: the settings of struct qm_settings;
 * sockets, user, tenant header, log level (tn-log's level is set once,
 * before threads exist), directory, Redis and outbox settings need a
 * restart. A bad file changes nothing. */
static void qm_reload(void *context)
{
	struct tn_conf *conf = qm_conf_load();

	(void)context;
	if (conf == NULL) {
		atomic_fetch_add(&qm.m.reload_failures, 1);
		return;
	}
	qm_settings_replace(qm_settings_read(conf));
	tn_conf_destroy(&conf);
	atomic_fetch_add(&qm.m.reloads, 1);
	tn_info("reloaded %s", qm.args.conf_path);
}

/* --- per-session and per-message state ------------------------------------------ */

static struct qm_session *qm_session(SMFICTX *ctx)
{
	return smfi_getpriv(ctx);
}

static void qm_msg_free(struct qm_msg **mp)
{
	struct qm_msg *m = *mp;

	if (m == NULL)
		return;
	for (size_t i = 0; i < m->n; i++) {
		tn_mem_free(&m->rcpts[i].address);
		tn_mem_free(&m->rcpts[i].tenant);
	}
	tn_mem_free(&m->rcpts);
	qm_settings_unref(&m->set);
	tn_mem_free(mp);
	atomic_fetch_sub(&qm.m.transactions, 1);
}

static struct qm_msg *qm_msg_new(void)
{
	struct qm_msg *m = tn_mem_calloc(1, sizeof(*m));

	m->set = qm_settings_get();
	m->declared = -1;
	atomic_fetch_add(&qm.m.transactions, 1);
	return m;
}

static void qm_msg_queue_id(SMFICTX *ctx, struct qm_msg *m)
{
	const char *qid = smfi_getsymval(ctx, "i");

	if (qid != NULL && *qid != '\0' && m->queue_id[0] == '\0')
		tn_log_sanitize(m->queue_id, sizeof(m->queue_id), qid, strlen(qid));
}

static void qm_msg_keep(struct qm_msg *m, const char *address, const char *tenant,
			const struct quota_policy_rcpt *pr)
{
	struct qm_rcpt *r;

	if (m->n == QM_RCPTS_MAX)
		return;		/* Postfix's own recipient limit is far lower */
	if (m->n == m->cap) {
		m->cap = m->cap == 0 ? 4 : m->cap * 2;
		m->rcpts = tn_mem_realloc(m->rcpts, m->cap * sizeof(*m->rcpts));
	}
	r = &m->rcpts[m->n++];
	r->address = tn_mem_strdup(address);
	r->tenant = tenant != NULL ? tn_mem_strdup(tenant) : NULL;
	r->pr = *pr;
	r->pr.address = r->address;
	r->pr.tenant = r->tenant;
}

/* --- events ----------------------------------------------------------------------- */

static json_t *qm_size_json(int64_t size)
{
	return size >= 0 ? json_integer(size) : json_null();
}

static int qm_append(enum qm_event_type type, const char *tenant, json_t *data,
		     const struct tn_log_ctx *lc)
{
	char id[TN_OUTBOX_ID_SIZE];
	uint64_t seq;
	const char *error;
	int ret = tn_outbox_append(qm.outbox, qm_event_names[type], tenant, data, id, &seq,
				   &error);

	json_decref(data);
	if (ret < 0) {
		atomic_fetch_add(&qm.m.events[type][QM_EV_FAILED], 1);
		tn_log(TN_LOG_ERROR, lc, "%s event not recorded: %s", qm_event_names[type], error);
		return -1;
	}
	atomic_fetch_add(&qm.m.events[type][QM_EV_APPENDED], 1);
	tn_log(TN_LOG_INFO, lc, "event %s id=%s sequence=%" PRIu64, qm_event_names[type], id, seq);
	return 0;
}

/* The limiter's verdict: 1 report, 0 suppressed, -1 Redis failed (then
 * nothing is reported: a flood must not reach billing unchecked). */
static int qm_event_allowed(enum qm_event_type type, int limiter, const struct tn_log_ctx *lc)
{
	if (limiter > 0)
		return 1;
	if (limiter == 0) {
		atomic_fetch_add(&qm.m.events[type][QM_EV_SUPPRESSED], 1);
		return 0;
	}
	atomic_fetch_add(&qm.m.events[type][QM_EV_UNCHECKED], 1);
	atomic_fetch_add(&qm.m.redis_failures[QM_REDIS_EVENTS], 1);
	tn_log(TN_LOG_WARNING, lc, "%s not recorded: its rate limit could not be checked in Redis",
	       qm_event_names[type]);
	return 0;
}

static int qm_event_exceeded(const struct qm_settings *set, const char *address,
			     const char *tenant, const struct quota_policy_decision *d,
			     int64_t size, const struct tn_log_ctx *lc)
{
	bool mbx = strcmp(d->scope, "mailbox") == 0;
	int64_t suppressed = 0;
	int lim = qm.usage == NULL ? -1 :
		tn_usage_exceeded(qm.usage, mbx ? "mbx" : "ten", mbx ? address : tenant,
				  set->event_interval, tn_time_now_ms() + tn_usage_timeout(qm.usage),
				  &suppressed);

	if (qm_event_allowed(QM_EV_EXCEEDED, lim, lc) <= 0)
		return 0;
	return qm_append(QM_EV_EXCEEDED, tenant,
			 json_pack("{s:s, s:s, s:s, s:o, s:I, s:I, s:I}", "scope", d->scope,
				   "address", address, "where", "smtp", "message_bytes",
				   qm_size_json(size), "usage_bytes", (json_int_t)d->usage,
				   "limit_bytes", (json_int_t)d->limit, "suppressed",
				   (json_int_t)suppressed), lc);
}

static int qm_event_rejected(const struct qm_settings *set, const char *address,
			     const char *tenant, const struct quota_policy_decision *d,
			     int64_t size, const struct tn_log_ctx *lc)
{
	int64_t suppressed = 0;
	int lim = qm.redis == NULL ? -1 :
		quota_redis_rejected(qm.redis, tenant, d->reason, set->event_interval,
				     tn_time_now_ms() + quota_redis_timeout(qm.redis), &suppressed);

	if (qm_event_allowed(QM_EV_REJECTED, lim, lc) <= 0)
		return 0;
	return qm_append(QM_EV_REJECTED, tenant,
			 json_pack("{s:s, s:s, s:n, s:s, s:i, s:s, s:o, s:I}", "direction",
				   "inbound", "address", address, "login", "reason", d->reason,
				   "smtp_code", atoi(d->rcode), "enhanced_status", d->xcode,
				   "message_bytes", qm_size_json(size), "suppressed",
				   (json_int_t)suppressed), lc);
}

/* Record the refusal's events; -1 when one could not be recorded. */
static int qm_events(const struct qm_settings *set, const char *address, const char *tenant,
		     const struct quota_policy_decision *d, int64_t size,
		     const struct tn_log_ctx *lc)
{
	if (!set->events || tenant == NULL || d->reason == NULL)
		return 0;
	if (d->scope != NULL && qm_event_exceeded(set, address, tenant, d, size, lc) < 0)
		return -1;
	return qm_event_rejected(set, address, tenant, d, size, lc);
}

/* --- RCPT TO ------------------------------------------------------------------------- */

/* The address of a RCPT argument: without <>, lower case, printable. */
static void qm_rcpt_address(const char *arg, char *buf, size_t size)
{
	size_t len = strlen(arg);
	char tmp[QM_ADDRESS_MAX + 1];

	if (len >= 2 && arg[0] == '<' && arg[len - 1] == '>') {
		arg++;
		len -= 2;
	}
	if (len > QM_ADDRESS_MAX)
		len = QM_ADDRESS_MAX;
	for (size_t i = 0; i < len; i++)
		tmp[i] = (char)tolower((unsigned char)arg[i]);
	tn_log_sanitize(buf, size, tmp, len);
}

/* The recipient's usage: as read with its lookup (one round trip for
 * both) when it was, else with a round trip of its own. */
static void qm_read_usage(struct quota_policy_rcpt *pr, const struct tn_lookup_usage *lu,
			  const struct tn_log_ctx *lc)
{
	bool mbx, ten;
	int64_t mcount[2] = { 0, 0 }, tcount[2] = { 0, 0 };
	tn_msec_t deadline;
	int ret;

	if (!quota_policy_needs_usage(pr, &mbx, &ten))
		return;
	pr->usage_known = false;
	if (qm.usage == NULL)
		return;
	if (lu->known) {
		atomic_fetch_add(&qm.m.usage_reads[0], 1);
		pr->mailbox_bytes = mbx ? lu->mailbox_bytes : 0;
		pr->tenant_bytes = ten ? lu->tenant_bytes : 0;
		pr->usage_known = true;
		return;
	}
	atomic_fetch_add(&qm.m.usage_reads[1], 1);
	deadline = tn_time_now_ms() + tn_usage_timeout(qm.usage);
	if (mbx && ten)		/* both in one round trip */
		ret = tn_usage_get_pair(qm.usage, pr->address, pr->tenant, deadline, mcount, tcount);
	else if (mbx)
		ret = tn_usage_get(qm.usage, "mbx", pr->address, deadline, &mcount[0], &mcount[1]);
	else
		ret = tn_usage_get(qm.usage, "ten", pr->tenant, deadline, &tcount[0], &tcount[1]);
	if (ret < 0) {
		atomic_fetch_add(&qm.m.redis_failures[QM_REDIS_USAGE], 1);
		tn_log(TN_LOG_WARNING, lc, "usage counters unavailable from Redis: %s",
		       tn_cache_last_error());
		return;
	}
	if (mbx)
		pr->mailbox_bytes = mcount[0];
	if (ten)
		pr->tenant_bytes = tcount[0];
	pr->usage_known = true;
}

struct qm_lookup {
	enum tn_result res, dres;
	struct tn_account *acct, *dacct;
	struct quota_policy_rcpt pr;
	struct tn_lookup_usage usage;
	const char *tenant;
	int64_t us;
};

static void qm_lookup(const struct qm_settings *set, const char *address,
		      const struct tn_log_ctx *lc, struct qm_lookup *l)
{
	tn_msec_t deadline = tn_time_now_ms() + set->lookup_timeout;
	int64_t t0 = tn_time_now_us();
	const char *error, *at = strrchr(address, '@');

	memset(l, 0, sizeof(*l));
	l->dres = TN_NOTFOUND;
	l->res = tn_lookup_resolve_usage(qm.lookup, address, deadline, &l->acct,
					 qm.usage != NULL ? &l->usage : NULL, &error);
	if (l->res == TN_NOTFOUND && at != NULL && at[1] != '\0')
		l->dres = tn_lookup_resolve_domain(qm.lookup, at + 1, deadline, &l->dacct, &error);
	l->us = tn_time_now_us() - t0;
	tn_milter_common_hist_add(&qm.m.lookup, l->us);
	if (l->res == TN_FOUND) {
		quota_policy_rcpt_from_account(l->acct, &l->pr);
		l->tenant = l->acct->tenant;
	} else if (l->dres == TN_FOUND) {
		l->tenant = l->dacct->tenant;
	}
	if (l->res == TN_TEMPFAIL || (l->res == TN_NOTFOUND && l->dres == TN_TEMPFAIL))
		tn_log(TN_LOG_WARNING, lc, "lookup of <%s> failed: %s", address, error);
}

static sfsistat qm_reply(SMFICTX *ctx, const struct quota_policy_decision *d)
{
	if (!quota_policy_refuses(d))
		return SMFIS_CONTINUE;
	smfi_setreply(ctx, (char *)d->rcode, (char *)d->xcode, (char *)d->text);
	return d->rcode[0] == '4' ? SMFIS_TEMPFAIL : SMFIS_REJECT;
}

static void qm_log_rcpt(const struct tn_log_ctx *lc, const char *address,
			const struct qm_lookup *l, const struct quota_policy_decision *d,
			int64_t size)
{
	tn_log(TN_LOG_INFO, lc, "rcpt=<%s> result=%s reply=%s%s%s%s%s size=%" PRId64
	       " lookup=%s lookup_ms=%.1f", address, quota_policy_result_name(d->result),
	       d->rcode != NULL ? d->rcode : "continue", d->xcode != NULL ? " " : "",
	       d->xcode != NULL ? d->xcode : "", d->scope != NULL ? " scope=" : "",
	       d->scope != NULL ? d->scope : "", size,
	       l->res == TN_FOUND ? "found" : l->res == TN_NOTFOUND ? "notfound" : "tempfail",
	       (double)l->us / 1000.0);
}

static sfsistat qm_envrcpt(SMFICTX *ctx, char **argv)
{
	struct qm_session *s = qm_session(ctx);
	struct qm_msg *m = s != NULL ? s->msg : NULL;
	char address[QM_ADDRESS_MAX * 4 + 8];
	struct quota_policy_decision d;
	struct tn_log_ctx lc = { 0 };
	struct qm_lookup l;

	if (m == NULL || argv[0] == NULL)
		return SMFIS_TEMPFAIL;		/* protocol out of order */
	qm_msg_queue_id(ctx, m);
	qm_rcpt_address(argv[0], address, sizeof(address));
	lc = (struct tn_log_ctx){ s->id, m->queue_id[0] != '\0' ? m->queue_id : NULL, NULL };
	qm_lookup(m->set, address, &lc, &l);
	lc.tenant = l.tenant;
	if (l.res == TN_FOUND)
		qm_read_usage(&l.pr, &l.usage, &lc);
	quota_policy_rcpt(&m->set->policy, l.res, l.dres, &l.pr, m->declared, &d);
	if (quota_policy_refuses(&d) &&
	    qm_events(m->set, address, l.tenant, &d, m->declared, &lc) < 0)
		quota_policy_rcpt(&m->set->policy, TN_TEMPFAIL, TN_TEMPFAIL, NULL, -1, &d);
	atomic_fetch_add(&qm.m.rcpt[d.result], 1);
	qm_log_rcpt(&lc, address, &l, &d, m->declared);
	if (!quota_policy_refuses(&d))
		qm_msg_keep(m, address, l.res == TN_FOUND ? l.tenant : NULL, &l.pr);
	tn_account_free(&l.acct);
	tn_account_free(&l.dacct);
	return qm_reply(ctx, &d);
}

/* --- the rest of the transaction ------------------------------------------------------ */

static sfsistat qm_negotiate(SMFICTX *ctx, unsigned long f0, unsigned long f1,
			     unsigned long f2, unsigned long f3, unsigned long *pf0,
			     unsigned long *pf1, unsigned long *pf2, unsigned long *pf3)
{
	const unsigned long skip = SMFIP_NOCONNECT | SMFIP_NOHELO | SMFIP_NOUNKNOWN |
				   SMFIP_NODATA | SMFIP_NOEOH;
	const unsigned long noreply = SMFIP_NR_MAIL | SMFIP_NR_HDR | SMFIP_NR_BODY;
	struct qm_session *s = qm_session(ctx);

	(void)f2;
	(void)f3;
	if (s == NULL) {
		s = tn_mem_calloc(1, sizeof(*s));
		snprintf(s->id, sizeof(s->id), "%" PRIuFAST64,
			 atomic_fetch_add(&qm.m.session_ids, 1) + 1);
		smfi_setpriv(ctx, s);
		atomic_fetch_add(&qm.m.sessions, 1);
	}
	*pf0 = f0 & SMFIF_SETSYMLIST;
	if (*qm.tenant_header != '\0')
		*pf0 |= f0 & (SMFIF_ADDHDRS | SMFIF_CHGHDRS);
	*pf1 = f1 & (skip | noreply);
	*pf2 = *pf3 = 0;
	s->nr_mail = (*pf1 & SMFIP_NR_MAIL) != 0;
	s->nr_hdr = (*pf1 & SMFIP_NR_HDR) != 0;
	s->nr_body = (*pf1 & SMFIP_NR_BODY) != 0;
	if (*pf0 & SMFIF_SETSYMLIST) {
		smfi_setsymlist(ctx, SMFIM_ENVFROM, "i");
		smfi_setsymlist(ctx, SMFIM_ENVRCPT, "i");
		smfi_setsymlist(ctx, SMFIM_EOM, "i");
	}
	return SMFIS_CONTINUE;
}

static sfsistat qm_envfrom(SMFICTX *ctx, char **argv)
{
	struct qm_session *s = qm_session(ctx);

	if (s == NULL)
		return SMFIS_TEMPFAIL;
	qm_msg_free(&s->msg);
	s->msg = qm_msg_new();
	s->msg->declared = quota_policy_parse_size(argv[0] != NULL ? argv + 1 : NULL);
	qm_msg_queue_id(ctx, s->msg);
	return s->nr_mail ? SMFIS_NOREPLY : SMFIS_CONTINUE;
}

static sfsistat qm_header(SMFICTX *ctx, char *name, char *value)
{
	struct qm_session *s = qm_session(ctx);

	if (s != NULL && s->msg != NULL) {
		s->msg->size += (int64_t)(strlen(name) + 2 + strlen(value) + 2);
		if (*qm.tenant_header != '\0' && strcasecmp(name, qm.tenant_header) == 0)
			s->msg->header_copies++;
	}
	return s != NULL && s->nr_hdr ? SMFIS_NOREPLY : SMFIS_CONTINUE;
}

static sfsistat qm_body(SMFICTX *ctx, unsigned char *chunk, size_t len)
{
	struct qm_session *s = qm_session(ctx);

	(void)chunk;
	if (s != NULL && s->msg != NULL)
		s->msg->size += (int64_t)len;
	return s != NULL && s->nr_body ? SMFIS_NOREPLY : SMFIS_CONTINUE;
}

#define QM_TENANTS_MAX 64

/* The tenants among the accepted recipients, each once, in RCPT order. */
static size_t qm_tenants(const struct qm_msg *m, const char *tenants[QM_TENANTS_MAX])
{
	size_t n = 0;

	for (size_t i = 0; i < m->n && n < QM_TENANTS_MAX; i++) {
		bool seen = m->rcpts[i].tenant == NULL;

		for (size_t j = 0; j < n && !seen; j++)
			seen = strcmp(tenants[j], m->rcpts[i].tenant) == 0;
		if (!seen)
			tenants[n++] = m->rcpts[i].tenant;
	}
	return n;
}

/* Incoming copies of the tenant header go (a sender must not choose the
 * tenant downstream sees); ours names the recipients' tenants. */
static void qm_tenant_header(SMFICTX *ctx, const struct qm_msg *m,
			     const struct tn_log_ctx *lc)
{
	const char *tenants[QM_TENANTS_MAX];
	size_t n = qm_tenants(m, tenants), len = 0;
	char value[QM_TENANTS_MAX * (TN_OUTBOX_TENANT_MAX + 2) + 1];

	if (*qm.tenant_header == '\0')
		return;
	for (int i = m->header_copies; i >= 1; i--) {
		if (smfi_chgheader(ctx, (char *)qm.tenant_header, i, NULL) == MI_FAILURE)
			tn_log(TN_LOG_WARNING, lc, "could not remove an incoming %s header",
			       qm.tenant_header);
	}
	value[0] = '\0';
	for (size_t i = 0; i < n; i++)
		len += (size_t)snprintf(value + len, sizeof(value) - len, "%s%.*s",
					i > 0 ? ", " : "", TN_OUTBOX_TENANT_MAX, tenants[i]);
	if (n > 0 && smfi_addheader(ctx, (char *)qm.tenant_header, value) == MI_FAILURE)
		tn_log(TN_LOG_WARNING, lc, "could not add the %s header", qm.tenant_header);
}

static void qm_count_traffic(const struct qm_msg *m, const struct tn_log_ctx *lc)
{
	const char *tenants[QM_TENANTS_MAX];
	size_t n = qm_tenants(m, tenants);

	if (n == 0)
		return;
	atomic_fetch_add(&qm.m.messages, 1);
	atomic_fetch_add(&qm.m.bytes, (uint_fast64_t)m->size);
	if (!m->set->count_traffic || qm.traffic == NULL)
		return;
	if (quota_traffic_add(qm.traffic, tenants, n, m->size, tn_time_wall()) < 0) {
		static atomic_int_fast64_t last_warning;
		tn_msec_t now = tn_time_now_ms(), last = atomic_load(&last_warning);

		if (now - last >= 10000 && atomic_compare_exchange_strong(&last_warning, &last, now))
			tn_log(TN_LOG_WARNING, lc, "traffic not counted: too many counters wait for"
			       " Redis (quota_milter_traffic_max_pending)");
	}
}

static void qm_eom_decide(const struct qm_msg *m, struct quota_policy_decision *d,
			  size_t *failing_r)
{
	struct quota_policy_rcpt *prs = tn_mem_calloc(m->n + 1, sizeof(*prs));

	for (size_t i = 0; i < m->n; i++)
		prs[i] = m->rcpts[i].pr;
	quota_policy_eom(&m->set->policy, prs, m->n, m->size, d, failing_r);
	tn_mem_free(&prs);
}

static sfsistat qm_eom(SMFICTX *ctx)
{
	struct qm_session *s = qm_session(ctx);
	struct qm_msg *m = s != NULL ? s->msg : NULL;
	struct quota_policy_decision d;
	struct tn_log_ctx lc;
	size_t failing;
	sfsistat ret;

	if (m == NULL)
		return SMFIS_CONTINUE;
	qm_msg_queue_id(ctx, m);
	m->size += 2;		/* the empty line after the header */
	qm_eom_decide(m, &d, &failing);
	lc = (struct tn_log_ctx){ s->id, m->queue_id[0] != '\0' ? m->queue_id : NULL,
				  m->n > 0 ? m->rcpts[0].tenant : NULL };
	if (quota_policy_refuses(&d) &&
	    qm_events(m->set, m->rcpts[0].address, m->rcpts[0].tenant, &d, m->size, &lc) < 0)
		quota_policy_rcpt(&m->set->policy, TN_TEMPFAIL, TN_TEMPFAIL, NULL, -1, &d);
	atomic_fetch_add(&qm.m.eom[d.result], 1);
	tn_log(TN_LOG_INFO, &lc, "end of message: size=%" PRId64 " recipients=%zu failing=%zu"
	       " result=%s reply=%s%s%s", m->size, m->n, failing,
	       quota_policy_result_name(d.result), d.rcode != NULL ? d.rcode : "continue",
	       d.xcode != NULL ? " " : "", d.xcode != NULL ? d.xcode : "");
	if (!quota_policy_refuses(&d)) {
		qm_tenant_header(ctx, m, &lc);
		qm_count_traffic(m, &lc);
	}
	ret = qm_reply(ctx, &d);
	qm_msg_free(&s->msg);
	return ret;
}

static sfsistat qm_abort(SMFICTX *ctx)
{
	struct qm_session *s = qm_session(ctx);

	if (s != NULL)
		qm_msg_free(&s->msg);
	return SMFIS_CONTINUE;
}

static sfsistat qm_close(SMFICTX *ctx)
{
	struct qm_session *s = qm_session(ctx);

	if (s == NULL)
		return SMFIS_CONTINUE;
	qm_msg_free(&s->msg);
	smfi_setpriv(ctx, NULL);
	tn_mem_free(&s);
	atomic_fetch_sub(&qm.m.sessions, 1);
	return SMFIS_CONTINUE;
}

/* --- /metrics --------------------------------------------------------------------------- */

static void qm_render_counters(FILE *f)
{
	fputs("# TYPE tn_quota_milter_rcpt_decisions_total counter\n", f);
	for (int i = 0; i < QUOTA_POLICY_RESULTS; i++)
		fprintf(f, "tn_quota_milter_rcpt_decisions_total{result=\"%s\"} %llu\n",
			quota_policy_result_name((enum quota_policy_result)i),
			(unsigned long long)atomic_load(&qm.m.rcpt[i]));
	fputs("# TYPE tn_quota_milter_eom_decisions_total counter\n", f);
	for (int i = 0; i < QUOTA_POLICY_RESULTS; i++)
		fprintf(f, "tn_quota_milter_eom_decisions_total{result=\"%s\"} %llu\n",
			quota_policy_result_name((enum quota_policy_result)i),
			(unsigned long long)atomic_load(&qm.m.eom[i]));
	fputs("# TYPE tn_quota_milter_redis_failures_total counter\n", f);
	for (int i = 0; i < QM_REDIS_OPS; i++) {
		unsigned long long n = atomic_load(&qm.m.redis_failures[i]);

		if (i == QM_REDIS_TRAFFIC && qm.traffic != NULL) {	/* failed batches */
			struct quota_traffic_stats st;

			quota_traffic_get_stats(qm.traffic, &st);
			n += st.failed_batches;
		}
		fprintf(f, "tn_quota_milter_redis_failures_total{op=\"%s\"} %llu\n",
			qm_redis_op_names[i], n);
	}
	fputs("# TYPE tn_quota_milter_usage_reads_total counter\n", f);
	for (int i = 0; i < 2; i++)
		fprintf(f, "tn_quota_milter_usage_reads_total{how=\"%s\"} %llu\n",
			i == 0 ? "with_lookup" : "separate",
			(unsigned long long)atomic_load(&qm.m.usage_reads[i]));
	fputs("# TYPE tn_quota_milter_events_total counter\n", f);
	for (int t = 0; t < QM_EV_TYPES; t++)
		for (int o = 0; o < QM_EV_OUTCOMES; o++)
			fprintf(f, "tn_quota_milter_events_total{type=\"%s\",outcome=\"%s\"} %llu\n",
				qm_event_names[t], qm_outcome_names[o],
				(unsigned long long)atomic_load(&qm.m.events[t][o]));
}

static void qm_render_gauges(FILE *f)
{
	fprintf(f, "# TYPE tn_quota_milter_messages_total counter\n"
		"tn_quota_milter_messages_total %llu\n",
		(unsigned long long)atomic_load(&qm.m.messages));
	fprintf(f, "# TYPE tn_quota_milter_bytes_total counter\n"
		"tn_quota_milter_bytes_total %llu\n", (unsigned long long)atomic_load(&qm.m.bytes));
	fprintf(f, "# TYPE tn_quota_milter_reloads_total counter\n"
		"tn_quota_milter_reloads_total{outcome=\"ok\"} %llu\n"
		"tn_quota_milter_reloads_total{outcome=\"failed\"} %llu\n",
		(unsigned long long)atomic_load(&qm.m.reloads),
		(unsigned long long)atomic_load(&qm.m.reload_failures));
	fprintf(f, "# TYPE tn_quota_milter_sessions gauge\ntn_quota_milter_sessions %lld\n",
		(long long)atomic_load(&qm.m.sessions));
	fprintf(f, "# TYPE tn_quota_milter_transactions gauge\n"
		"tn_quota_milter_transactions %lld\n", (long long)atomic_load(&qm.m.transactions));
	if (qm.traffic != NULL) {
		struct quota_traffic_stats st;

		quota_traffic_get_stats(qm.traffic, &st);
		fprintf(f, "# TYPE tn_quota_milter_traffic_pending gauge\n"
			"tn_quota_milter_traffic_pending %zu\n"
			"# TYPE tn_quota_milter_traffic_counters_total counter\n"
			"tn_quota_milter_traffic_counters_total{outcome=\"sent\"} %llu\n"
			"tn_quota_milter_traffic_counters_total{outcome=\"dropped\"} %llu\n",
			st.pending, (unsigned long long)st.sent, (unsigned long long)st.dropped);
	}
}

static char *qm_render(void *context)
{
	char *text = NULL, *lookup;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	(void)context;
	if (f == NULL)
		return strdup("# out of memory\n");
	qm_render_counters(f);
	qm_render_gauges(f);
	tn_milter_common_hist_render(&qm.m.lookup, "tn_quota_milter_lookup_seconds", f);
	lookup = tn_lookup_metrics(qm.lookup, "tn_quota_milter");
	if (lookup != NULL)
		fputs(lookup, f);
	free(lookup);
	fclose(f);
	return text;
}

/* --- start-up ------------------------------------------------------------------------------ */

static struct smfiDesc qm_desc = {
	.xxfi_name = QM_PROGRAM,
	.xxfi_version = SMFI_VERSION,
	.xxfi_flags = 0,
	.xxfi_envfrom = qm_envfrom,
	.xxfi_envrcpt = qm_envrcpt,
	.xxfi_header = qm_header,
	.xxfi_body = qm_body,
	.xxfi_eom = qm_eom,
	.xxfi_abort = qm_abort,
	.xxfi_close = qm_close,
	.xxfi_negotiate = qm_negotiate,
};

/* A header field name (RFC 5322 ftext), at most 64 bytes. */
static bool qm_header_name_ok(const char *name)
{
	size_t len = strlen(name);

	if (len > 64)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (name[i] < 33 || name[i] > 126 || name[i] == ':')
			return false;
	}
	return true;
}

/* What the table's types cannot check; -1 after an error line on stderr. */
static int qm_validate(void)
{
	unsigned mode;

	if (tn_milter_common_parse_mode(tn_conf_str(qm.conf, "quota_milter_socket_mode"),
					&mode) < 0) {
		fprintf(stderr, "%s: quota_milter_socket_mode: expected an octal mode such as"
			" 0660\n", QM_PROGRAM);
		return -1;
	}
	if (!qm_header_name_ok(qm.tenant_header)) {
		fprintf(stderr, "%s: quota_milter_tenant_header: not a header field name\n",
			QM_PROGRAM);
		return -1;
	}
	return 0;
}

static int qm_backends(const char **error_r)
{
	if ((qm.lookup = tn_lookup_create(qm.conf, 0, error_r)) == NULL)
		return -1;
	if ((qm.usage = tn_usage_create(qm.conf, error_r)) == NULL ||
	    (qm.redis = quota_redis_create(qm.conf, error_r)) == NULL)
		tn_warning("%s: quotas are not enforced, traffic is not counted, events are"
			   " not recorded", *error_r);
	else
		qm.traffic = quota_traffic_create(quota_redis_traffic, qm.redis,
			(size_t)tn_conf_int(qm.conf, "quota_milter_traffic_max_pending"));
	qm.outbox = tn_outbox_create_conf(qm.conf);
	return 0;
}

static int qm_open_socket(void)
{
	const char *spec = tn_conf_str(qm.conf, "quota_milter_socket"), *error;
	unsigned mode;

	if (tn_milter_common_parse_mode(tn_conf_str(qm.conf, "quota_milter_socket_mode"),
					&mode) < 0) {
		tn_error("quota_milter_socket_mode: expected an octal mode such as 0660");
		return EX_CONFIG;
	}
	if (smfi_setconn((char *)spec) == MI_FAILURE || smfi_register(qm_desc) == MI_FAILURE ||
	    smfi_opensocket(true) == MI_FAILURE) {
		tn_error("cannot open the milter socket %s", spec);
		return EX_UNAVAILABLE;
	}
	if (tn_milter_common_socket_setup(spec, mode, tn_conf_str(qm.conf, "quota_milter_user"),
					  &error) < 0) {
		tn_error("%s: %s", spec, error);
		return EX_UNAVAILABLE;
	}
	return 0;
}

static int qm_start_services(void)
{
	const char *listen = tn_conf_str(qm.conf, "quota_milter_metrics_listen"), *error;

	if (*listen != '\0' &&
	    (qm.http = tn_milter_common_metrics_start(listen, qm_render, NULL, &error)) == NULL) {
		tn_error("%s", error);
		return EX_UNAVAILABLE;
	}
	if (tn_daemon_drop_privileges("quota_milter_user",
				      tn_conf_str(qm.conf, "quota_milter_user")) < 0)
		return EX_NOPERM;
	if (tn_conf_bool(qm.conf, "quota_milter_events") &&
	    tn_outbox_check(qm.outbox, &error) < 0) {
		tn_error("outbox: %s", error);
		return EX_CONFIG;
	}
	if (tn_lookup_start(qm.lookup, &error) < 0 ||
	    (qm.traffic != NULL &&
	     quota_traffic_start(qm.traffic,
				 tn_conf_time_ms(qm.conf, "quota_milter_traffic_flush_interval"),
				 &error) < 0) ||
	    tn_milter_common_reload_start(qm_reload, NULL, &error) < 0) {
		tn_error("%s", error);
		return EX_SOFTWARE;
	}
	return 0;
}

static int qm_run(void)
{
	const char *error;
	int ret;

	if (qm_backends(&error) < 0) {
		tn_error("%s", error);
		return EX_CONFIG;
	}
	if ((ret = qm_open_socket()) != 0 || (ret = qm_start_services()) != 0)
		return ret;
	tn_info("started: socket %s, /metrics on %s", tn_conf_str(qm.conf, "quota_milter_socket"),
		*tn_conf_str(qm.conf, "quota_milter_metrics_listen") != '\0' ?
		tn_conf_str(qm.conf, "quota_milter_metrics_listen") : "(off)");
	ret = smfi_main() == MI_SUCCESS ? 0 : EX_SOFTWARE;
	tn_info("stopped");
	return ret;
}

static void qm_teardown(void)
{
	tn_milter_common_metrics_stop(&qm.http);
	tn_outbox_destroy(&qm.outbox);
	quota_traffic_destroy(&qm.traffic);	/* its last flush needs qm.redis */
	quota_redis_destroy(&qm.redis);
	tn_usage_destroy(&qm.usage);
	tn_lookup_destroy(&qm.lookup);
	qm_settings_unref(&qm.set);
	tn_milter_common_args_free(&qm.args);
	tn_conf_destroy(&qm.conf);
}

int main(int argc, char **argv)
{
	bool check = false;
	int ret;

	signal(SIGPIPE, SIG_IGN);
	tn_milter_common_reload_block();
	if ((ret = tn_daemon_configure(QM_PROGRAM, quota_milter_tables, "quota_milter_log_level",
				       argc, argv, &qm.conf, &check)) != 0)
		return ret;
	tn_milter_common_args_save(&qm.args, argc, argv);
	qm.set = qm_settings_read(qm.conf);
	qm.tenant_header = tn_conf_str(qm.conf, "quota_milter_tenant_header");
	if (qm_validate() < 0)
		ret = EX_CONFIG;
	else if (check)
		tn_conf_dump(qm.conf, stdout, TN_CONF_DUMP_CHANGED);
	else if ((ret = qm_run()) == 0 && !tn_milter_common_quiesce(&qm.m.sessions))
		return ret;
	qm_teardown();
	return ret;
}

/*++
 * NAME
 *	tn-place-record 3
 * SUMMARY
 *	record a hash placement in the directory (see tn-place-record.h)
 * DESCRIPTION
 *	Moved here from lmtp-router/router-place.c, so that the Dovecot
 *	proxy records its placements with the router's write logic (the
 *	same compare-and-write, the same log lines) instead of a copy.
 *	The program's words (actor, log label, what is retried) come from
 *	struct tn_place_record_settings; the router's lines are unchanged.
 *--*/
#include "tn-build.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "tn-log.h"
#include "tn-mem.h"
#include "tn-outbox.h"
#include "tn-place-record.h"
#include "tn-prov.h"

#define PLACE_QUEUE_MAX 1000

struct place_job {
	struct place_job *next;
	const struct tn_place_record_settings *set;	/* the recorder's */
	char *address;
	char *host;
	char *tenant;
	char *session;
};

struct tn_place_record {
	struct tn_place_record_settings set;
	struct tn_outbox *outbox;	/* tn-prov wants one; no event is written */
	struct tn_prov *prov;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct place_job *queue, **tail;
	size_t queued;
	struct place_job *running;
	bool stopping;
	bool started;
	pthread_t thread;
	uint64_t counts[TN_PLACE_N];
};

static const char *const place_result_names[TN_PLACE_N] = {
	"recorded", "already_placed", "failed", "dropped",
};

const char *tn_place_record_result_name(enum tn_place_result res)
{
	return place_result_names[res];
}

static void place_job_free(struct place_job **jobp)
{
	struct place_job *job = *jobp;

	if (job == NULL)
		return;
	tn_mem_free(&job->address);
	tn_mem_free(&job->host);
	tn_mem_free(&job->tenant);
	tn_mem_free(&job->session);
	tn_mem_free(jobp);
}

static void place_log(const struct place_job *job, enum tn_log_level level, const char *fmt,
		      ...) __attribute__((format(printf, 3, 4)));

static void place_log(const struct place_job *job, enum tn_log_level level, const char *fmt,
		      ...)
{
	struct tn_log_ctx ctx = { .session = job->session, .tenant = job->tenant };
	char text[TN_LOG_LINE_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	tn_log(level, &ctx, "%s=<%s> %s", job->set->label, job->address, text);
}

/* --- the write (worker thread) ------------------------------------------------------- */

/* The mailbox's own host or pool in a tn_prov object, or NULL. */
static const char *place_current(json_t *obj)
{
	static const char *const fields[] = { "host", "pool" };

	for (size_t i = 0; i < 2; i++) {
		const char *v = json_string_value(json_object_get(obj, fields[i]));

		if (v != NULL && *v != '\0')
			return v;
	}
	return NULL;
}

static enum tn_place_result place_already(const struct place_job *job, json_t *obj)
{
	const char *now = place_current(obj);
	bool same = strcmp(now, job->host) == 0;

	place_log(job, same ? TN_LOG_INFO : TN_LOG_WARNING,
		  "placement: the directory already says %s%s%s%s%s%s", now,
		  same ? "" : " (another writer was first; this ", same ? "" : job->set->writer,
		  same ? "" : "'s ", same ? "" : job->set->uses,
		  same ? "" : " before it saw that went to its own choice)");
	return TN_PLACE_ALREADY;
}

static enum tn_place_result place_failed(const struct place_job *job,
					 const struct tn_prov_result *res)
{
	place_log(job, TN_LOG_WARNING, "placement on %s not recorded: %s: %s; tried "
		  "again at the next %s", job->host, tn_prov_status_name(res->status),
		  res->message != NULL ? res->message : "no detail", job->set->retry);
	return TN_PLACE_FAILED;
}

/* Write host under the ETag read; the entry changed meanwhile: read it
 * again and follow it. */
static enum tn_place_result place_write(struct tn_place_record *pl,
					const struct place_job *job, const char *etag,
					bool *again_r)
{
	struct tn_prov_ctx ctx = { .actor_kind = "system", .actor_id = pl->set.actor_id,
				   .if_match = etag };
	struct tn_prov_result res = { 0 };
	enum tn_place_result out;
	json_t *changes = json_pack("{s:s}", "host", job->host);

	res.status = tn_prov_modify(pl->prov, &ctx, TN_PROV_MAILBOX, job->address, changes,
				    &res);
	json_decref(changes);
	if (res.status == TN_PROV_OK) {
		place_log(job, TN_LOG_INFO, "placement recorded: tnMailHost %s%s",
			  job->host, res.cache_stale ?
			  " (the cache invalidation failed: lookups may not see it until "
			  "their entries expire)" : "");
		out = TN_PLACE_RECORDED;
	} else if (res.status == TN_PROV_PRECONDITION) {
		place_log(job, TN_LOG_INFO, "placement: the mailbox changed meanwhile, "
			  "reading it again");
		out = TN_PLACE_FAILED;
		*again_r = true;
	} else {
		out = place_failed(job, &res);
	}
	tn_prov_result_clear(&res);
	return out;
}

/* The tenant's pool (inherited by the mailbox), or NULL; *failed_r when
 * the tenant could not be read. */
static char *place_tenant_pool(struct tn_place_record *pl, const struct place_job *job,
			       json_t *mailbox, bool *failed_r)
{
	struct tn_prov_ctx ctx = { .actor_kind = "system", .actor_id = pl->set.actor_id };
	struct tn_prov_result res = { 0 };
	const char *tenant = json_string_value(json_object_get(mailbox, "tenant")), *pool;
	char *out = NULL;

	*failed_r = false;
	if (tenant == NULL)
		return NULL;
	res.status = tn_prov_get(pl->prov, &ctx, TN_PROV_TENANT, tenant, &res);
	if (res.status != TN_PROV_OK) {
		place_failed(job, &res);
		*failed_r = true;
	} else if ((pool = json_string_value(json_object_get(res.object, "pool"))) != NULL &&
		   *pool != '\0') {
		out = tn_mem_strdup(pool);
	}
	tn_prov_result_clear(&res);
	return out;
}

/* The mailbox has no host or pool of its own: the write, unless its
 * tenant has a pool by now. */
static enum tn_place_result place_unplaced(struct tn_place_record *pl,
					   const struct place_job *job, json_t *mailbox,
					   const char *etag, bool *again_r)
{
	bool failed;
	char *pool = place_tenant_pool(pl, job, mailbox, &failed);

	if (failed)
		return TN_PLACE_FAILED;
	if (pool != NULL) {
		place_log(job, TN_LOG_INFO, "placement: the tenant has pool %s now: "
			  "not placed", pool);
		tn_mem_free(&pool);
		return TN_PLACE_ALREADY;
	}
	return place_write(pl, job, etag, again_r);
}

/* One attempt: read, then write if still unplaced. *again_r when the
 * entry changed between the two. */
static enum tn_place_result place_try(struct tn_place_record *pl,
				      const struct place_job *job, bool *again_r)
{
	struct tn_prov_ctx ctx = { .actor_kind = "system", .actor_id = pl->set.actor_id };
	struct tn_prov_result res = { 0 };
	enum tn_place_result out;

	*again_r = false;
	res.status = tn_prov_get(pl->prov, &ctx, TN_PROV_MAILBOX, job->address, &res);
	if (res.status != TN_PROV_OK)
		out = place_failed(job, &res);
	else if (place_current(res.object) != NULL)
		out = place_already(job, res.object);
	else if (res.etag == NULL)
		out = place_failed(job, &res);
	else
		out = place_unplaced(pl, job, res.object, res.etag, again_r);
	tn_prov_result_clear(&res);
	return out;
}

static enum tn_place_result place_run(struct tn_place_record *pl,
				      const struct place_job *job)
{
	enum tn_place_result out;
	bool again;

	out = place_try(pl, job, &again);
	if (again)
		out = place_try(pl, job, &again);
	return out;
}

static void *place_worker(void *arg)
{
	struct tn_place_record *pl = arg;
	enum tn_place_result out;
	struct place_job *job;

	pthread_mutex_lock(&pl->lock);
	for (;;) {
		while (pl->queue == NULL && !pl->stopping)
			pthread_cond_wait(&pl->cond, &pl->lock);
		if (pl->stopping)
			break;
		job = pl->running = pl->queue;
		if ((pl->queue = job->next) == NULL)
			pl->tail = &pl->queue;
		pl->queued--;
		pthread_mutex_unlock(&pl->lock);
		out = place_run(pl, job);
		pthread_mutex_lock(&pl->lock);
		pl->counts[out]++;
		place_job_free(&pl->running);
	}
	pthread_mutex_unlock(&pl->lock);
	return NULL;
}

/* --- the caller's side ------------------------------------------------------------------ */

/* Under pl->lock: a job for address is queued or running. */
static bool place_pending(const struct tn_place_record *pl, const char *address)
{
	if (pl->running != NULL && strcmp(pl->running->address, address) == 0)
		return true;
	for (const struct place_job *j = pl->queue; j != NULL; j = j->next) {
		if (strcmp(j->address, address) == 0)
			return true;
	}
	return false;
}

/* Under pl->lock: the worker, started on the first job unless
 * tn_place_record_start() did it. */
static int place_start_locked(struct tn_place_record *pl, const char **error_r)
{
	if (pl->started)
		return 0;
	if (pthread_create(&pl->thread, NULL, place_worker, pl) != 0) {
		*error_r = "placement: cannot start the worker thread";
		return -1;
	}
	pl->started = true;
	return 0;
}

int tn_place_record_start(struct tn_place_record *pl, const char **error_r)
{
	int ret;

	pthread_mutex_lock(&pl->lock);
	ret = place_start_locked(pl, error_r);
	pthread_mutex_unlock(&pl->lock);
	return ret;
}

void tn_place_record_queue(struct tn_place_record *pl, const char *address,
			   const char *host, const char *tenant, const char *session)
{
	struct place_job *job;
	const char *error;

	if (pl == NULL || address == NULL)
		return;
	pthread_mutex_lock(&pl->lock);
	if (place_pending(pl, address)) {
		pthread_mutex_unlock(&pl->lock);
		return;
	}
	if (pl->queued >= PLACE_QUEUE_MAX) {
		pl->counts[TN_PLACE_DROPPED]++;
		pthread_mutex_unlock(&pl->lock);
		return;
	}
	if (place_start_locked(pl, &error) < 0) {
		pl->counts[TN_PLACE_FAILED]++;
		pthread_mutex_unlock(&pl->lock);
		tn_warning("%s=<%s> placement on %s not recorded: %s; tried again at the next %s",
			   pl->set.label, address, host, error, pl->set.retry);
		return;
	}
	job = tn_mem_calloc(1, sizeof(*job));
	job->set = &pl->set;
	job->address = tn_mem_strdup(address);
	job->host = tn_mem_strdup(host);
	job->tenant = tenant != NULL ? tn_mem_strdup(tenant) : NULL;
	job->session = session != NULL ? tn_mem_strdup(session) : NULL;
	*pl->tail = job;
	pl->tail = &job->next;
	pl->queued++;
	pthread_cond_signal(&pl->cond);
	pthread_mutex_unlock(&pl->lock);
}

void tn_place_record_stats(struct tn_place_record *pl, uint64_t counts_r[TN_PLACE_N],
			   uint64_t *pending_r)
{
	pthread_mutex_lock(&pl->lock);
	memcpy(counts_r, pl->counts, sizeof(pl->counts));
	*pending_r = pl->queued + (pl->running != NULL ? 1 : 0);
	pthread_mutex_unlock(&pl->lock);
}

/* --- create and destroy --------------------------------------------------------------- */

int tn_place_record_credentials(struct tn_conf *conf, const char *mode, const char *dn_param,
				const char *pw_param, const char **error_r)
{
	static __thread char error[256];
	const char *const pairs[][2] = {
		{ dn_param, "prov_ldap_bind_dn" },
		{ pw_param, "prov_ldap_bind_password_file" },
	};

	for (size_t i = 0; i < 2; i++) {
		const char *v = tn_conf_str(conf, pairs[i][0]);

		if (*v != '\0' && tn_conf_set(conf, pairs[i][1], v, error_r) < 0)
			return -1;
		if (*tn_conf_str(conf, pairs[i][1]) == '\0') {
			snprintf(error, sizeof(error), "%s needs %s (or %s)%s", mode, pairs[i][0],
				 pairs[i][1], i == 0 ? ": an account that may write tnMailHost" : "");
			*error_r = error;
			return -1;
		}
	}
	return 0;
}

struct tn_place_record *tn_place_record_create(const struct tn_conf *conf, struct tn_lookup *lk,
					       const struct tn_place_record_settings *set,
					       const char **error_r)
{
	struct tn_place_record *pl;

	pl = tn_mem_calloc(1, sizeof(*pl));
	pl->set = *set;
	pl->outbox = tn_outbox_create_conf(conf);
	if ((pl->prov = tn_prov_create(conf, lk, pl->outbox, error_r)) == NULL) {
		tn_outbox_destroy(&pl->outbox);
		tn_mem_free(&pl);
		return NULL;
	}
	pl->tail = &pl->queue;
	pthread_mutex_init(&pl->lock, NULL);
	pthread_cond_init(&pl->cond, NULL);
	return pl;
}

void tn_place_record_destroy(struct tn_place_record **plp)
{
	struct tn_place_record *pl = *plp;
	struct place_job *job, *next;

	if (pl == NULL)
		return;
	*plp = NULL;
	pthread_mutex_lock(&pl->lock);
	pl->stopping = true;
	pthread_cond_broadcast(&pl->cond);
	pthread_mutex_unlock(&pl->lock);
	if (pl->started)
		pthread_join(pl->thread, NULL);
	for (job = pl->queue; job != NULL; job = next) {
		next = job->next;
		place_job_free(&job);
	}
	tn_prov_destroy(&pl->prov);
	tn_outbox_destroy(&pl->outbox);
	pthread_mutex_destroy(&pl->lock);
	pthread_cond_destroy(&pl->cond);
	tn_mem_free(&pl);
}

/*++
 * NAME
 *	router-place 3
 * SUMMARY
 *	tn-lmtp-router: record hash placements in the directory
 * DESCRIPTION
 *	With router_placement = hash-record, the first delivery to a
 *	mailbox that has neither tnMailHost nor tnMailPool (its own or its
 *	tenant's) goes to the member of router_default_pool that
 *	rendezvous hashing picks (router-route.c), and that member is
 *	written to the mailbox's tnMailHost, so that the mailbox stays
 *	there whatever later happens to the pool's member list, and the
 *	Dovecot proxy (which reads tnMailHost first) finds it there too.
 *
 *	The write goes through the provisioning core (tn-prov.h), the
 *	project's one directory-write path: LDAP modify, then the cache
 *	invalidation of the address (Redis DEL + PUBLISH, so every router
 *	and proxy sees the host within a second), then the event (none:
 *	docs/events.md, store placement is never part of an event). It is
 *	a compare-and-write: the entry is read (tn_prov_get), left alone
 *	when it has a host or a pool by then, or its tenant has a pool
 *	(another router, or an admin, was first: the next lookup follows
 *	what is there), else modified
 *	under the ETag just read (If-Match: slapd's assertion control on
 *	entryCSN), so a concurrent change makes the write fail instead of
 *	being overwritten.
 *
 *	The loop never waits: tn_router_place_record() queues the job for
 *	one worker thread (placements are rare: first deliveries only) and
 *	returns; the recipient is delivered to the chosen member meanwhile.
 *	A job for an address already queued or being written is not
 *	queued again. A failed write (directory down, timed out, refused)
 *	is logged as a warning and forgotten: the mailbox still has no host
 *	at its next delivery, which tries again. Mail is never refused or
 *	delayed because a placement could not be recorded.
 *
 *	Locking: one mutex guards the queue, the job in flight and the
 *	counters; the worker holds it only to take a job and to finish it.
 * SECURITY
 *	The bind password is read at creation (as root) and kept only
 *	inside the provisioning core's directory pool. Addresses reach
 *	the directory through tn-prov, which validates and escapes them.
 *--*/
#include "tn-build.h"

#include <pthread.h>
#include <stdarg.h>
#include <string.h>

#include <jansson.h>

#include "router.h"
#include "tn-mem.h"
#include "tn-outbox.h"
#include "tn-prov.h"

#define PLACE_QUEUE_MAX 1000

struct place_job {
	struct place_job *next;
	char *address;
	char *host;
	char *tenant;
	char *session;
};

struct tn_router_place {
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
	uint64_t counts[TN_RP_N];
};

static const char *const place_result_names[TN_RP_N] = {
	"recorded", "already_placed", "failed", "dropped",
};

const char *tn_router_place_result_name(enum tn_router_place_result res)
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
	va_list ap;

	va_start(ap, fmt);
	tn_logv(level, &ctx, fmt, ap);
	va_end(ap);
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

static enum tn_router_place_result place_already(const struct place_job *job, json_t *obj)
{
	const char *now = place_current(obj);
	bool same = strcmp(now, job->host) == 0;

	place_log(job, same ? TN_LOG_INFO : TN_LOG_WARNING,
		  "to=<%s> placement: the directory already says %s%s", job->address, now,
		  same ? "" : " (another writer was first; this router's deliveries "
		  "before it saw that went to its own choice)");
	return TN_RP_ALREADY;
}

static enum tn_router_place_result place_failed(const struct place_job *job,
						const struct tn_prov_result *res)
{
	place_log(job, TN_LOG_WARNING, "to=<%s> placement on %s not recorded: %s: %s; tried "
		  "again at the next delivery", job->address, job->host,
		  tn_prov_status_name(res->status),
		  res->message != NULL ? res->message : "no detail");
	return TN_RP_FAILED;
}

/* Write host under the ETag read; the entry changed meanwhile: read it
 * again and follow it. */
static enum tn_router_place_result place_write(struct tn_router_place *pl,
					       const struct place_job *job, const char *etag,
					       bool *again_r)
{
	struct tn_prov_ctx ctx = { .actor_kind = "system", .actor_id = "tn-lmtp-router",
				   .if_match = etag };
	struct tn_prov_result res = { 0 };
	enum tn_router_place_result out;
	json_t *changes = json_pack("{s:s}", "host", job->host);

	res.status = tn_prov_modify(pl->prov, &ctx, TN_PROV_MAILBOX, job->address, changes,
				    &res);
	json_decref(changes);
	if (res.status == TN_PROV_OK) {
		place_log(job, TN_LOG_INFO, "to=<%s> placement recorded: tnMailHost %s%s",
			  job->address, job->host, res.cache_stale ?
			  " (the cache invalidation failed: lookups may not see it until "
			  "their entries expire)" : "");
		out = TN_RP_RECORDED;
	} else if (res.status == TN_PROV_PRECONDITION) {
		place_log(job, TN_LOG_INFO, "to=<%s> placement: the mailbox changed meanwhile, "
			  "reading it again", job->address);
		out = TN_RP_FAILED;
		*again_r = true;
	} else {
		out = place_failed(job, &res);
	}
	tn_prov_result_clear(&res);
	return out;
}

/* The tenant's pool (inherited by the mailbox), or NULL; *failed_r when
 * the tenant could not be read. */
static char *place_tenant_pool(struct tn_router_place *pl, const struct place_job *job,
			       json_t *mailbox, bool *failed_r)
{
	struct tn_prov_ctx ctx = { .actor_kind = "system", .actor_id = "tn-lmtp-router" };
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
static enum tn_router_place_result place_unplaced(struct tn_router_place *pl,
						  const struct place_job *job, json_t *mailbox,
						  const char *etag, bool *again_r)
{
	bool failed;
	char *pool = place_tenant_pool(pl, job, mailbox, &failed);

	if (failed)
		return TN_RP_FAILED;
	if (pool != NULL) {
		place_log(job, TN_LOG_INFO, "to=<%s> placement: the tenant has pool %s now: "
			  "not placed", job->address, pool);
		tn_mem_free(&pool);
		return TN_RP_ALREADY;
	}
	return place_write(pl, job, etag, again_r);
}

/* One attempt: read, then write if still unplaced. *again_r when the
 * entry changed between the two. */
static enum tn_router_place_result place_try(struct tn_router_place *pl,
					     const struct place_job *job, bool *again_r)
{
	struct tn_prov_ctx ctx = { .actor_kind = "system", .actor_id = "tn-lmtp-router" };
	struct tn_prov_result res = { 0 };
	enum tn_router_place_result out;

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

static enum tn_router_place_result place_run(struct tn_router_place *pl,
					     const struct place_job *job)
{
	enum tn_router_place_result out;
	bool again;

	out = place_try(pl, job, &again);
	if (again)
		out = place_try(pl, job, &again);
	return out;
}

static void *place_worker(void *arg)
{
	struct tn_router_place *pl = arg;
	enum tn_router_place_result out;
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

/* --- the loop's side ------------------------------------------------------------------ */

/* Under pl->lock: a job for address is queued or running. */
static bool place_pending(const struct tn_router_place *pl, const char *address)
{
	if (pl->running != NULL && strcmp(pl->running->address, address) == 0)
		return true;
	for (const struct place_job *j = pl->queue; j != NULL; j = j->next) {
		if (strcmp(j->address, address) == 0)
			return true;
	}
	return false;
}

void tn_router_place_record(struct tn_router_place *pl, const char *address,
			    const char *host, const char *tenant, const char *session)
{
	struct place_job *job;

	if (pl == NULL || address == NULL)
		return;
	pthread_mutex_lock(&pl->lock);
	if (place_pending(pl, address)) {
		pthread_mutex_unlock(&pl->lock);
		return;
	}
	if (pl->queued >= PLACE_QUEUE_MAX) {
		pl->counts[TN_RP_DROPPED]++;
		pthread_mutex_unlock(&pl->lock);
		return;
	}
	job = tn_mem_calloc(1, sizeof(*job));
	job->address = tn_mem_strdup(address);
	job->host = tn_mem_strdup(host);
	job->tenant = tenant != NULL ? tn_mem_strdup(tenant) : NULL;
	job->session = tn_mem_strdup(session);
	*pl->tail = job;
	pl->tail = &job->next;
	pl->queued++;
	pthread_cond_signal(&pl->cond);
	pthread_mutex_unlock(&pl->lock);
}

void tn_router_place_stats(struct tn_router_place *pl, uint64_t counts_r[TN_RP_N],
			   uint64_t *pending_r)
{
	pthread_mutex_lock(&pl->lock);
	memcpy(counts_r, pl->counts, sizeof(pl->counts));
	*pending_r = pl->queued + (pl->running != NULL ? 1 : 0);
	pthread_mutex_unlock(&pl->lock);
}

/* --- create and destroy --------------------------------------------------------------- */

/* router_placement_bind_dn / _password_file stand in for the
 * provisioning account's in the router's own copy of the settings. */
static int place_credentials(struct tn_conf *conf, const char **error_r)
{
	static const char *const pairs[][2] = {
		{ "router_placement_bind_dn", "prov_ldap_bind_dn" },
		{ "router_placement_password_file", "prov_ldap_bind_password_file" },
	};

	for (size_t i = 0; i < 2; i++) {
		const char *v = tn_conf_str(conf, pairs[i][0]);

		if (*v != '\0' && tn_conf_set(conf, pairs[i][1], v, error_r) < 0)
			return -1;
		if (*tn_conf_str(conf, pairs[i][1]) == '\0') {
			*error_r = i == 0 ?
				"router_placement = hash-record needs router_placement_bind_dn "
				"(or prov_ldap_bind_dn): an account that may write tnMailHost" :
				"router_placement = hash-record needs router_placement_password_file "
				"(or prov_ldap_bind_password_file)";
			return -1;
		}
	}
	return 0;
}

struct tn_router_place *tn_router_place_create(struct tn_conf *conf, struct tn_lookup *lk,
					       const char **error_r)
{
	struct tn_router_place *pl;

	if (place_credentials(conf, error_r) < 0)
		return NULL;
	pl = tn_mem_calloc(1, sizeof(*pl));
	pl->outbox = tn_outbox_create_conf(conf);
	if ((pl->prov = tn_prov_create(conf, lk, pl->outbox, error_r)) == NULL) {
		tn_outbox_destroy(&pl->outbox);
		tn_mem_free(&pl);
		return NULL;
	}
	pl->tail = &pl->queue;
	pthread_mutex_init(&pl->lock, NULL);
	pthread_cond_init(&pl->cond, NULL);
	if (pthread_create(&pl->thread, NULL, place_worker, pl) != 0) {
		*error_r = "router_placement: cannot start the worker thread";
		tn_router_place_destroy(&pl);
		return NULL;
	}
	pl->started = true;
	return pl;
}

void tn_router_place_destroy(struct tn_router_place **plp)
{
	struct tn_router_place *pl = *plp;
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

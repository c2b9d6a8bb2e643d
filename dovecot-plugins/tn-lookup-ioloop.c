/*++
 * NAME
 *	tn-lookup-ioloop 3
 * SUMMARY
 *	Dovecot ioloop adapter for the lookup library (see tn-lookup-ioloop.h)
 * DESCRIPTION
 *	A pending request is referenced by the loop (until its callback ran
 *	or it was cancelled) and by a thread (while queued or running); it
 *	is freed when both let go. Reference and queue changes happen under
 *	li->lock; callbacks run in the loop's thread without the lock held.
 *	The deadline timer is added and removed in the loop's thread only,
 *	and so is the list of requests the loop still holds (pending), which
 *	destroy walks to remove their timers.
 *--*/
#include "lib.h"
#include "ioloop.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "tn-dovecot-build.h"
#include "tn-log.h"
#include "tn-lookup-ioloop.h"
#include "tn-mem.h"

#define TN_LOOKUP_IOLOOP_QUEUE_MAX 10000
/* A lookup thread's stack: the default (ulimit -s, 8 MiB) would count
 * against the process's vsz_limit for nothing; a lookup (libldap,
 * OpenSSL, hiredis, getaddrinfo) needs far less. */
#define TN_LOOKUP_IOLOOP_STACK (1024 * 1024)

struct tn_lookup_ioloop_request {
	struct tn_lookup_ioloop_request *next;		/* queue or done list */
	struct tn_lookup_ioloop_request *pend_prev, *pend_next;	/* loop thread */
	struct tn_lookup_ioloop *li;
	char *address;
	tn_msec_t deadline;
	tn_lookup_ioloop_cb *cb;
	void *context;
	tn_lookup_ioloop_job_fn *job;		/* a job instead of a lookup */
	void *job_context;
	void (*job_free)(void *);
	tn_lookup_ioloop_job_cb *job_cb;
	struct timeout *to;	/* loop thread only */
	unsigned refs;
	bool delivered;		/* callback ran, or cancelled */
	enum tn_result rc;
	struct tn_account *acct;
	char error[256];
};

struct tn_lookup_ioloop {
	struct tn_lookup *lk;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct tn_lookup_ioloop_request *queue, **queue_tail;
	struct tn_lookup_ioloop_request *done;
	struct tn_lookup_ioloop_request *pending;	/* loop thread only */
	size_t queued;
	bool stopping;
	pthread_t *threads;
	unsigned nthreads;
	int pipe_fds[2];
	struct io *io;
	struct tn_lookup_ioloop_stats stats;
};

static void tn_req_unref_locked(struct tn_lookup_ioloop_request *req)
{
	if (--req->refs > 0)
		return;
	tn_account_free(&req->acct);
	tn_mem_free(&req->address);
	if (req->job_free != NULL)
		req->job_free(req->job_context);
	tn_mem_free(&req);
}

static void tn_req_unref(struct tn_lookup_ioloop_request *req)
{
	struct tn_lookup_ioloop *li = req->li;

	pthread_mutex_lock(&li->lock);
	tn_req_unref_locked(req);
	pthread_mutex_unlock(&li->lock);
}

/* The loop lets go of a request: off the pending list, timer removed. */
static void tn_req_unlink(struct tn_lookup_ioloop_request *req)
{
	if (req->pend_prev != NULL)
		req->pend_prev->pend_next = req->pend_next;
	else if (req->li->pending == req)
		req->li->pending = req->pend_next;
	if (req->pend_next != NULL)
		req->pend_next->pend_prev = req->pend_prev;
	req->pend_prev = req->pend_next = NULL;
	timeout_remove(&req->to);
}

/* Run the callback once and drop the loop's reference (loop thread). */
static void tn_req_deliver(struct tn_lookup_ioloop_request *req, enum tn_result rc,
			   const char *error)
{
	struct tn_lookup_ioloop *li = req->li;
	struct tn_account *acct = NULL;
	bool already;

	pthread_mutex_lock(&li->lock);
	already = req->delivered;
	req->delivered = true;
	if (!already && rc == TN_FOUND) {
		acct = req->acct;
		req->acct = NULL;
	}
	pthread_mutex_unlock(&li->lock);
	if (already)
		return;
	tn_req_unlink(req);
	if (req->job_cb != NULL)
		req->job_cb(rc == TN_FOUND, req->job_context, req->context);
	else
		req->cb(rc, acct, error, req->context);
	tn_req_unref(req);
}

static void tn_req_timeout(struct tn_lookup_ioloop_request *req)
{
	req->li->stats.timeouts++;
	tn_req_deliver(req, TN_TEMPFAIL, "lookup timed out");
}

/* Completions from the threads (loop thread). */
static void tn_lookup_ioloop_input(struct tn_lookup_ioloop *li)
{
	struct tn_lookup_ioloop_request *list, *next;
	char buf[256];

	while (read(li->pipe_fds[0], buf, sizeof(buf)) > 0)
		;
	pthread_mutex_lock(&li->lock);
	list = li->done;
	li->done = NULL;
	pthread_mutex_unlock(&li->lock);
	for (; list != NULL; list = next) {
		next = list->next;
		/* the thread's reference goes after delivery, so a request
		 * the loop still holds stays valid through its callback */
		tn_req_deliver(list, list->rc, list->error);
		tn_req_unref(list);
	}
}

/* One miss, in a thread: the blocking lookup, then back to the loop. */
static void tn_lookup_ioloop_work(struct tn_lookup_ioloop *li,
				  struct tn_lookup_ioloop_request *req)
{
	const char *error = "";
	bool skip;

	pthread_mutex_lock(&li->lock);
	skip = req->delivered;
	pthread_mutex_unlock(&li->lock);
	if (!skip && tn_time_left_ms(req->deadline) > 0 && req->job != NULL) {
		req->job(req->job_context);
		req->rc = TN_FOUND;		/* done */
	} else if (!skip && tn_time_left_ms(req->deadline) > 0) {
		req->rc = tn_lookup_resolve(li->lk, req->address, req->deadline,
					    &req->acct, &error);
	} else {
		req->rc = TN_TEMPFAIL;
		error = "lookup timed out";
	}
	snprintf(req->error, sizeof(req->error), "%s", error != NULL ? error : "");
	pthread_mutex_lock(&li->lock);
	req->next = li->done;
	li->done = req;
	pthread_mutex_unlock(&li->lock);
	/* a full pipe already holds a wake-up: EAGAIN loses nothing */
	if (write(li->pipe_fds[1], "x", 1) < 0 && errno != EAGAIN)
		tn_error("lookup adapter: cannot wake the ioloop: %s", strerror(errno));
}

static void *tn_lookup_ioloop_thread(void *arg)
{
	struct tn_lookup_ioloop *li = arg;

	pthread_mutex_lock(&li->lock);
	for (;;) {
		struct tn_lookup_ioloop_request *req;

		while (li->queue == NULL && !li->stopping)
			pthread_cond_wait(&li->cond, &li->lock);
		if (li->stopping)
			break;
		req = li->queue;
		li->queue = req->next;
		if (li->queue == NULL)
			li->queue_tail = &li->queue;
		li->queued--;
		pthread_mutex_unlock(&li->lock);
		tn_lookup_ioloop_work(li, req);
		pthread_mutex_lock(&li->lock);
	}
	pthread_mutex_unlock(&li->lock);
	return NULL;
}

static int tn_lookup_ioloop_pipe(int fds[2])
{
	if (pipe(fds) < 0)
		return -1;
	for (int i = 0; i < 2; i++) {
		if (fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK) < 0 ||
		    fcntl(fds[i], F_SETFD, FD_CLOEXEC) < 0) {
			close(fds[0]);
			close(fds[1]);
			return -1;
		}
	}
	return 0;
}

static void tn_lookup_ioloop_free(struct tn_lookup_ioloop *li)
{
	pthread_mutex_destroy(&li->lock);
	pthread_cond_destroy(&li->cond);
	tn_mem_free(&li->threads);
	tn_mem_free(&li);
}

struct tn_lookup_ioloop *tn_lookup_ioloop_create(struct tn_lookup *lk, unsigned threads,
						 const char **error_r)
{
	struct tn_lookup_ioloop *li = tn_mem_calloc(1, sizeof(*li));
	pthread_attr_t attr;

	li->lk = lk;
	li->queue_tail = &li->queue;
	pthread_mutex_init(&li->lock, NULL);
	pthread_cond_init(&li->cond, NULL);
	if (tn_lookup_ioloop_pipe(li->pipe_fds) < 0) {
		*error_r = "lookup adapter: cannot make its pipe";
		tn_lookup_ioloop_free(li);
		return NULL;
	}
	li->threads = tn_mem_calloc(threads > 0 ? threads : 1, sizeof(pthread_t));
	pthread_attr_init(&attr);
	(void)pthread_attr_setstacksize(&attr, TN_LOOKUP_IOLOOP_STACK);
	for (unsigned i = 0; i < (threads > 0 ? threads : 1); i++) {
		if (pthread_create(&li->threads[li->nthreads], &attr,
				   tn_lookup_ioloop_thread, li) != 0)
			break;
		li->nthreads++;
	}
	pthread_attr_destroy(&attr);
	if (li->nthreads == 0) {
		*error_r = "lookup adapter: cannot start a thread";
		close(li->pipe_fds[0]);
		close(li->pipe_fds[1]);
		tn_lookup_ioloop_free(li);
		return NULL;
	}
	li->io = io_add(li->pipe_fds[0], IO_READ, tn_lookup_ioloop_input, li);
	return li;
}

void tn_lookup_ioloop_destroy(struct tn_lookup_ioloop **lip)
{
	struct tn_lookup_ioloop *li = *lip;
	struct tn_lookup_ioloop_request *req, *next;

	if (li == NULL)
		return;
	*lip = NULL;
	pthread_mutex_lock(&li->lock);
	li->stopping = true;
	pthread_cond_broadcast(&li->cond);
	pthread_mutex_unlock(&li->lock);
	for (unsigned i = 0; i < li->nthreads; i++)
		pthread_join(li->threads[i], NULL);
	/* the loop lets go of what it holds: no callbacks from now on */
	while ((req = li->pending) != NULL) {
		req->delivered = true;
		tn_req_unlink(req);
		tn_req_unref_locked(req);
	}
	/* queued and finished requests lose the thread's reference */
	for (req = li->queue; req != NULL; req = next) {
		next = req->next;
		tn_req_unref_locked(req);
	}
	for (req = li->done; req != NULL; req = next) {
		next = req->next;
		tn_req_unref_locked(req);
	}
	io_remove(&li->io);
	close(li->pipe_fds[0]);
	close(li->pipe_fds[1]);
	tn_lookup_ioloop_free(li);
}

static struct tn_lookup_ioloop_request *
tn_req_new(struct tn_lookup_ioloop *li, const char *address, tn_msec_t timeout_ms,
	   tn_lookup_ioloop_cb *cb, void *context)
{
	struct tn_lookup_ioloop_request *req = tn_mem_calloc(1, sizeof(*req));

	req->li = li;
	req->address = tn_mem_strdup(address);
	req->deadline = tn_time_now_ms() +
		(timeout_ms > 0 ? timeout_ms : tn_lookup_default_timeout(li->lk));
	req->cb = cb;
	req->context = context;
	req->refs = 2;		/* the loop's and the thread's */
	return req;
}

/* Queue a miss: false when the queue is full. */
static bool tn_lookup_ioloop_queue(struct tn_lookup_ioloop *li,
				   struct tn_lookup_ioloop_request *req)
{
	pthread_mutex_lock(&li->lock);
	if (li->queued >= TN_LOOKUP_IOLOOP_QUEUE_MAX) {
		pthread_mutex_unlock(&li->lock);
		return false;
	}
	*li->queue_tail = req;
	li->queue_tail = &req->next;
	li->queued++;
	pthread_cond_signal(&li->cond);
	pthread_mutex_unlock(&li->lock);
	return true;
}

/* Queue a new request and arm its deadline timer: NULL (and the request
 * answered TN_TEMPFAIL) when the queue is full. */
static struct tn_lookup_ioloop_request *
tn_lookup_ioloop_submit(struct tn_lookup_ioloop *li, struct tn_lookup_ioloop_request *req)
{
	if (!tn_lookup_ioloop_queue(li, req)) {
		tn_req_unref(req);		/* the thread's */
		tn_req_deliver(req, TN_TEMPFAIL, "lookup queue full");
		return NULL;
	}
	req->to = timeout_add((unsigned int)tn_time_left_ms(req->deadline),
			      tn_req_timeout, req);
	req->pend_next = li->pending;
	if (li->pending != NULL)
		li->pending->pend_prev = req;
	li->pending = req;
	return req;
}

struct tn_lookup_ioloop_request *
tn_lookup_ioloop_run(struct tn_lookup_ioloop *li, tn_msec_t timeout_ms,
		     tn_lookup_ioloop_job_fn *job, void *job_context,
		     void (*free_fn)(void *), tn_lookup_ioloop_job_cb *cb,
		     void *context)
{
	struct tn_lookup_ioloop_request *req = tn_req_new(li, "", timeout_ms, NULL, context);

	req->job = job;
	req->job_context = job_context;
	req->job_free = free_fn;
	req->job_cb = cb;
	return tn_lookup_ioloop_submit(li, req);
}

struct tn_lookup_ioloop_request *
tn_lookup_ioloop_resolve(struct tn_lookup_ioloop *li, const char *address,
			 tn_msec_t timeout_ms, tn_lookup_ioloop_cb *cb, void *context)
{
	struct tn_lookup_ioloop_request *req;
	struct tn_account *acct;
	enum tn_result rc = tn_lookup_resolve_cached(li->lk, address, &acct);

	if (rc != TN_TEMPFAIL) {
		li->stats.hits++;
		cb(rc, acct, rc == TN_FOUND ? "" : "no such address", context);
		return NULL;
	}
	li->stats.misses++;
	req = tn_req_new(li, address, timeout_ms, cb, context);
	return tn_lookup_ioloop_submit(li, req);
}

void tn_lookup_ioloop_cancel(struct tn_lookup_ioloop_request **_req)
{
	struct tn_lookup_ioloop_request *req = *_req;
	struct tn_lookup_ioloop *li;
	bool already;

	if (req == NULL)
		return;
	*_req = NULL;
	li = req->li;
	pthread_mutex_lock(&li->lock);
	already = req->delivered;
	req->delivered = true;
	pthread_mutex_unlock(&li->lock);
	if (already)
		return;
	tn_req_unlink(req);
	tn_req_unref(req);
}

void tn_lookup_ioloop_get_stats(struct tn_lookup_ioloop *li,
				struct tn_lookup_ioloop_stats *stats_r)
{
	*stats_r = li->stats;
}

/*++
 * NAME
 *	tn-lookup-event 3
 * SUMMARY
 *	libevent adapter for the lookup library (see tn-lookup-event.h)
 * DESCRIPTION
 *	A request is referenced by the loop (until its callback ran or it
 *	was cancelled) and by a worker (while queued or running); it is
 *	freed when both let go. All reference and queue changes happen under
 *	le->lock; callbacks run in the loop thread without the lock held.
 *--*/
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "tn-log.h"
#include "tn-lookup-event.h"
#include "tn-mem.h"

#define TN_LOOKUP_EVENT_QUEUE_MAX 10000

struct tn_lookup_request {
	struct tn_lookup_request *next;
	struct tn_lookup_event *le;
	char *address;
	bool domain;		/* resolve a bare domain, not an address */
	tn_msec_t deadline;
	tn_lookup_event_cb *cb;
	void *context;
	struct event *timer;
	unsigned refs;
	bool answered;		/* result stored by worker or cache */
	bool delivered;		/* callback ran, or cancelled, or timed out */
	enum tn_result rc;
	struct tn_account *acct;
	char error[256];
};

struct tn_lookup_event {
	struct event_base *base;
	struct tn_lookup *lk;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct tn_lookup_request *queue, **queue_tail;
	struct tn_lookup_request *done;
	size_t queued;
	bool stopping;
	pthread_t *threads;
	unsigned nthreads;
	int pipe_fds[2];
	struct event *pipe_ev;
};

static void tn_request_unref_locked(struct tn_lookup_request *req)
{
	if (--req->refs > 0)
		return;
	if (req->timer != NULL)
		event_free(req->timer);
	tn_account_free(&req->acct);
	tn_mem_free(&req->address);
	tn_mem_free(&req);
}

static void tn_request_unref(struct tn_lookup_request *req)
{
	struct tn_lookup_event *le = req->le;

	pthread_mutex_lock(&le->lock);
	tn_request_unref_locked(req);
	pthread_mutex_unlock(&le->lock);
}

/* Run the callback once (loop thread). */
static void tn_request_deliver(struct tn_lookup_request *req, enum tn_result rc,
			       const char *error)
{
	struct tn_lookup_event *le = req->le;
	struct tn_account *acct;
	bool already;

	pthread_mutex_lock(&le->lock);
	already = req->delivered;
	req->delivered = true;
	pthread_mutex_unlock(&le->lock);
	if (already)
		return;
	event_del(req->timer);
	acct = rc == TN_FOUND ? req->acct : NULL;
	if (rc == TN_FOUND)
		req->acct = NULL;
	req->cb(rc, acct, error, req->context);
	tn_request_unref(req);	/* the loop's reference */
}

static void tn_request_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct tn_lookup_request *req = arg;
	bool answered;

	pthread_mutex_lock(&req->le->lock);
	answered = req->answered;
	pthread_mutex_unlock(&req->le->lock);
	if (answered)
		tn_request_deliver(req, req->rc, req->error);
	else
		tn_request_deliver(req, TN_TEMPFAIL, "lookup timed out");
}

static void tn_lookup_event_pipe_cb(evutil_socket_t fd, short what, void *arg)
{
	struct tn_lookup_event *le = arg;
	struct tn_lookup_request *list, *next;
	char buf[256];

	while (read(fd, buf, sizeof(buf)) > 0)
		;
	pthread_mutex_lock(&le->lock);
	list = le->done;
	le->done = NULL;
	pthread_mutex_unlock(&le->lock);
	for (; list != NULL; list = next) {
		next = list->next;
		/* the worker's reference is dropped after delivery: a
		 * request the loop still holds stays valid until then */
		tn_request_deliver(list, list->rc, list->error);
		tn_request_unref(list);
	}
}

static void tn_lookup_event_work(struct tn_lookup_event *le, struct tn_lookup_request *req)
{
	const char *error = "";
	bool skip;

	pthread_mutex_lock(&le->lock);
	skip = req->delivered;
	pthread_mutex_unlock(&le->lock);
	if (!skip && tn_time_left_ms(req->deadline) > 0) {
		req->rc = req->domain ?
			tn_lookup_resolve_domain(le->lk, req->address, req->deadline,
						 &req->acct, &error) :
			tn_lookup_resolve(le->lk, req->address, req->deadline,
					  &req->acct, &error);
	} else {
		req->rc = TN_TEMPFAIL;
		error = "lookup timed out";
	}
	snprintf(req->error, sizeof(req->error), "%s", error != NULL ? error : "");
	pthread_mutex_lock(&le->lock);
	req->answered = true;
	req->next = le->done;
	le->done = req;
	pthread_mutex_unlock(&le->lock);
	if (write(le->pipe_fds[1], "x", 1) < 0 && errno != EAGAIN)
		tn_error("lookup adapter: cannot wake the event loop: %s", strerror(errno));
}

static void *tn_lookup_event_worker(void *arg)
{
	struct tn_lookup_event *le = arg;

	pthread_mutex_lock(&le->lock);
	for (;;) {
		struct tn_lookup_request *req;

		while (le->queue == NULL && !le->stopping)
			pthread_cond_wait(&le->cond, &le->lock);
		if (le->stopping)
			break;
		req = le->queue;
		le->queue = req->next;
		if (le->queue == NULL)
			le->queue_tail = &le->queue;
		le->queued--;
		pthread_mutex_unlock(&le->lock);
		tn_lookup_event_work(le, req);
		pthread_mutex_lock(&le->lock);
	}
	pthread_mutex_unlock(&le->lock);
	return NULL;
}

static int tn_lookup_event_pipe(int fds[2])
{
	if (pipe(fds) < 0)
		return -1;
	for (int i = 0; i < 2; i++) {
		fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
		fcntl(fds[i], F_SETFD, FD_CLOEXEC);
	}
	return 0;
}

struct tn_lookup_event *tn_lookup_event_create(struct event_base *base,
					       struct tn_lookup *lk, unsigned workers)
{
	struct tn_lookup_event *le = tn_mem_calloc(1, sizeof(*le));

	le->base = base;
	le->lk = lk;
	le->queue_tail = &le->queue;
	pthread_mutex_init(&le->lock, NULL);
	pthread_cond_init(&le->cond, NULL);
	if (tn_lookup_event_pipe(le->pipe_fds) < 0) {
		pthread_mutex_destroy(&le->lock);
		pthread_cond_destroy(&le->cond);
		tn_mem_free(&le);
		return NULL;
	}
	le->pipe_ev = event_new(base, le->pipe_fds[0], EV_READ | EV_PERSIST,
				tn_lookup_event_pipe_cb, le);
	event_add(le->pipe_ev, NULL);
	le->nthreads = workers > 0 ? workers : 1;
	le->threads = tn_mem_calloc(le->nthreads, sizeof(pthread_t));
	for (unsigned i = 0; i < le->nthreads; i++) {
		if (pthread_create(&le->threads[i], NULL, tn_lookup_event_worker, le) != 0) {
			le->nthreads = i;
			break;
		}
	}
	return le;
}

void tn_lookup_event_destroy(struct tn_lookup_event **lep)
{
	struct tn_lookup_event *le = *lep;
	struct tn_lookup_request *req, *next;

	if (le == NULL)
		return;
	pthread_mutex_lock(&le->lock);
	le->stopping = true;
	pthread_cond_broadcast(&le->cond);
	pthread_mutex_unlock(&le->lock);
	for (unsigned i = 0; i < le->nthreads; i++)
		pthread_join(le->threads[i], NULL);
	/* queued requests lose the worker's reference, finished ones too */
	for (req = le->queue; req != NULL; req = next) {
		next = req->next;
		tn_request_unref_locked(req);
	}
	for (req = le->done; req != NULL; req = next) {
		next = req->next;
		tn_request_unref_locked(req);
	}
	event_free(le->pipe_ev);
	close(le->pipe_fds[0]);
	close(le->pipe_fds[1]);
	tn_mem_free(&le->threads);
	pthread_mutex_destroy(&le->lock);
	pthread_cond_destroy(&le->cond);
	tn_mem_free(lep);
}

static struct tn_lookup_request *tn_request_new(struct tn_lookup_event *le,
						const char *address, tn_msec_t timeout_ms,
						tn_lookup_event_cb *cb, void *context)
{
	struct tn_lookup_request *req = tn_mem_calloc(1, sizeof(*req));

	req->le = le;
	req->address = tn_mem_strdup(address);
	req->deadline = tn_time_now_ms() +
		(timeout_ms > 0 ? timeout_ms : tn_lookup_default_timeout(le->lk));
	req->cb = cb;
	req->context = context;
	req->refs = 1;
	req->timer = evtimer_new(le->base, tn_request_timer_cb, req);
	return req;
}

static void tn_request_arm(struct tn_lookup_request *req, tn_msec_t ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	evtimer_add(req->timer, &tv);
}

static struct tn_lookup_request *tn_request_queue(struct tn_lookup_event *le,
						  struct tn_lookup_request *req)
{
	pthread_mutex_lock(&le->lock);
	if (le->queued >= TN_LOOKUP_EVENT_QUEUE_MAX) {
		pthread_mutex_unlock(&le->lock);
		req->rc = TN_TEMPFAIL;
		req->answered = true;
		snprintf(req->error, sizeof(req->error), "lookup queue full");
		tn_request_arm(req, 0);
		return req;
	}
	req->refs++;
	*le->queue_tail = req;
	le->queue_tail = &req->next;
	le->queued++;
	pthread_cond_signal(&le->cond);
	pthread_mutex_unlock(&le->lock);
	tn_request_arm(req, tn_time_left_ms(req->deadline));
	return req;
}

struct tn_lookup_request *tn_lookup_event_resolve(struct tn_lookup_event *le,
						  const char *address,
						  tn_msec_t timeout_ms,
						  tn_lookup_event_cb *cb,
						  void *context)
{
	struct tn_lookup_request *req = tn_request_new(le, address, timeout_ms, cb, context);
	enum tn_result rc = tn_lookup_resolve_cached(le->lk, address, &req->acct);

	if (rc != TN_TEMPFAIL) {
		req->rc = rc;
		req->answered = true;
		tn_request_arm(req, 0);
		return req;
	}
	return tn_request_queue(le, req);
}

/* Domains have no memory-only path: always a worker (whose lookup still
 * answers from the in-process cache first). */
struct tn_lookup_request *tn_lookup_event_resolve_domain(struct tn_lookup_event *le,
							 const char *domain,
							 tn_msec_t timeout_ms,
							 tn_lookup_event_cb *cb,
							 void *context)
{
	struct tn_lookup_request *req = tn_request_new(le, domain, timeout_ms, cb, context);

	req->domain = true;
	return tn_request_queue(le, req);
}

void tn_lookup_event_cancel(struct tn_lookup_request *req)
{
	struct tn_lookup_event *le = req->le;

	pthread_mutex_lock(&le->lock);
	if (req->delivered) {
		pthread_mutex_unlock(&le->lock);
		return;
	}
	req->delivered = true;
	pthread_mutex_unlock(&le->lock);
	event_del(req->timer);
	tn_request_unref(req);
}

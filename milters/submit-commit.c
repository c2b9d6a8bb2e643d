/*++
 * NAME
 *	submit-commit 3
 * SUMMARY
 *	tn-submit-milter's committer thread (see submit-commit.h)
 * DESCRIPTION
 *	A FIFO of jobs under one mutex; each job is one allocation holding
 *	the commit and copies of its strings. The thread holds the mutex
 *	only to take a batch off the queue, never while Redis answers.
 *--*/
#include "tn-build.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "submit-commit.h"
#include "tn-mem.h"
#include "tn-time.h"

struct submit_commit_job {
	struct submit_commit_job *next;
	struct submit_redis_commit c;	/* its strings point into text */
	char text[];
};

struct submit_commit {
	struct submit_redis *sr;
	unsigned queue_max;
	tn_msec_t delay;		/* how long a batch waits to fill */
	submit_commit_done_cb *done;
	void *context;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	/* under lock */
	struct submit_commit_job *head, **tail;
	unsigned depth;
	bool idle;			/* waiting for a first commit */
	bool lingering;			/* waiting for more, until full */
	bool stop;
	tn_msec_t drain_deadline;	/* set with stop */
	uint64_t batches;
};

/* Copy *s (NULL stays NULL) to p and point *s at the copy: the end. */
static char *submit_commit_keep(char *p, const char **s)
{
	size_t len;

	if (*s == NULL)
		return p;
	len = strlen(*s) + 1;
	memcpy(p, *s, len);
	*s = p;
	return p + len;
}

static size_t submit_commit_len(const char *s)
{
	return s != NULL ? strlen(s) + 1 : 0;
}

bool submit_commit_queue(struct submit_commit *sc, const struct submit_redis_commit *c)
{
	struct submit_commit_job *job;
	char *p;

	job = tn_mem_alloc(sizeof(*job) + submit_commit_len(c->mailbox) +
			   submit_commit_len(c->tenant) + submit_commit_len(c->session) +
			   submit_commit_len(c->queue_id));
	job->next = NULL;
	job->c = *c;
	p = submit_commit_keep(job->text, &job->c.mailbox);
	p = submit_commit_keep(p, &job->c.tenant);
	p = submit_commit_keep(p, &job->c.session);
	(void)submit_commit_keep(p, &job->c.queue_id);
	pthread_mutex_lock(&sc->lock);
	if (sc->stop || sc->depth >= sc->queue_max) {
		pthread_mutex_unlock(&sc->lock);
		tn_mem_free(&job);
		return false;
	}
	*sc->tail = job;
	sc->tail = &job->next;
	sc->depth++;
	/* Wake the thread only for the first commit of a batch or for a full
	 * one: a wake-up per message is what the delay saves. */
	if (sc->idle || (sc->lingering && sc->depth >= SUBMIT_REDIS_BATCH_MAX))
		pthread_cond_signal(&sc->cond);
	pthread_mutex_unlock(&sc->lock);
	return true;
}

/* Send one batch (taken off the queue) and report every commit of it. */
static void submit_commit_send(struct submit_commit *sc, struct submit_commit_job **jobs,
			       unsigned n, tn_msec_t drain_deadline)
{
	const struct submit_redis_commit *cs[SUBMIT_REDIS_BATCH_MAX];
	bool ok[SUBMIT_REDIS_BATCH_MAX] = { false };
	tn_msec_t now = tn_time_now_ms(), deadline = now + submit_redis_timeout(sc->sr);

	if (drain_deadline != 0 && drain_deadline < deadline)
		deadline = drain_deadline;
	for (unsigned i = 0; i < n; i++)
		cs[i] = &jobs[i]->c;
	if (deadline > now) {
		(void)submit_redis_commit_batch(sc->sr, cs, n, ok, deadline);
		pthread_mutex_lock(&sc->lock);
		sc->batches++;
		pthread_mutex_unlock(&sc->lock);
	}
	for (unsigned i = 0; i < n; i++) {
		sc->done(cs[i], ok[i], sc->context);
		tn_mem_free(&jobs[i]);
	}
}

/* With the lock held and a commit queued: wait up to the delay for the
 * batch to fill (or the process to stop). */
static void submit_commit_linger(struct submit_commit *sc)
{
	struct timespec until;

	if (sc->delay <= 0 || sc->stop || sc->depth >= SUBMIT_REDIS_BATCH_MAX)
		return;
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += sc->delay / 1000;
	until.tv_nsec += (long)(sc->delay % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	sc->lingering = true;
	while (!sc->stop && sc->depth < SUBMIT_REDIS_BATCH_MAX &&
	       pthread_cond_timedwait(&sc->cond, &sc->lock, &until) != ETIMEDOUT)
		;
	sc->lingering = false;
}

static void *submit_commit_main(void *arg)
{
	struct submit_commit *sc = arg;
	struct submit_commit_job *jobs[SUBMIT_REDIS_BATCH_MAX];

	pthread_mutex_lock(&sc->lock);
	for (;;) {
		unsigned n = 0;
		tn_msec_t drain_deadline;

		sc->idle = true;
		while (sc->head == NULL && !sc->stop)
			pthread_cond_wait(&sc->cond, &sc->lock);
		sc->idle = false;
		if (sc->head == NULL)
			break;		/* stopping, and nothing left */
		submit_commit_linger(sc);
		for (; n < SUBMIT_REDIS_BATCH_MAX && sc->head != NULL; n++) {
			jobs[n] = sc->head;
			sc->head = jobs[n]->next;
		}
		if (sc->head == NULL)
			sc->tail = &sc->head;
		sc->depth -= n;
		drain_deadline = sc->stop ? sc->drain_deadline : 0;
		pthread_mutex_unlock(&sc->lock);
		submit_commit_send(sc, jobs, n, drain_deadline);
		pthread_mutex_lock(&sc->lock);
	}
	pthread_mutex_unlock(&sc->lock);
	return NULL;
}

struct submit_commit *submit_commit_create(struct submit_redis *sr, unsigned queue_max,
					   tn_msec_t delay, submit_commit_done_cb *done,
					   void *context, const char **error_r)
{
	struct submit_commit *sc = tn_mem_calloc(1, sizeof(*sc));
	pthread_condattr_t attr;

	sc->sr = sr;
	sc->queue_max = queue_max;
	sc->delay = delay;
	sc->done = done;
	sc->context = context;
	sc->tail = &sc->head;
	pthread_mutex_init(&sc->lock, NULL);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&sc->cond, &attr);
	pthread_condattr_destroy(&attr);
	if (pthread_create(&sc->thread, NULL, submit_commit_main, sc) != 0) {
		pthread_cond_destroy(&sc->cond);
		pthread_mutex_destroy(&sc->lock);
		tn_mem_free(&sc);
		*error_r = "cannot start the committer thread";
		return NULL;
	}
	return sc;
}

void submit_commit_destroy(struct submit_commit **scp)
{
	struct submit_commit *sc = *scp;

	if (sc == NULL)
		return;
	pthread_mutex_lock(&sc->lock);
	sc->stop = true;
	sc->drain_deadline = tn_time_now_ms() + submit_redis_timeout(sc->sr);
	pthread_cond_signal(&sc->cond);
	pthread_mutex_unlock(&sc->lock);
	pthread_join(sc->thread, NULL);
	pthread_cond_destroy(&sc->cond);
	pthread_mutex_destroy(&sc->lock);
	tn_mem_free(scp);
}

void submit_commit_stats(struct submit_commit *sc, struct submit_commit_stats *stats_r)
{
	pthread_mutex_lock(&sc->lock);
	stats_r->depth = sc->depth;
	stats_r->batches = sc->batches;
	pthread_mutex_unlock(&sc->lock);
}

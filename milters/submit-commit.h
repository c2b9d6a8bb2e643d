/*++
 * NAME
 *	submit-commit 3h
 * SUMMARY
 *	tn-submit-milter's committer: end-of-message commits off the mail path
 * DESCRIPTION
 *	End of message does not wait for Redis: it queues the commit
 *	(submit_commit_queue(), which copies every string) and answers.
 *	One committer thread takes whatever is queued, up to
 *	SUBMIT_REDIS_BATCH_MAX commits at a time, and sends them as one
 *	pipeline on one pooled connection (submit_redis_commit_batch(): one
 *	round trip, one write and one read for the lot, deadline now +
 *	redis_timeout), then calls done() for each, in that thread.
 *
 *	The limits stay exact meanwhile: a commit changes no count. Until
 *	it lands, the message's members are pending ones, which the reserve
 *	script counts like committed ones (ZCARD of the window); the commit
 *	only scores them with the commit time (and drops recipients above
 *	the real count, which can only lower a count). A reservation that
 *	the commit never reaches -- Redis down or too slow, this process
 *	killed with commits queued -- keeps counting until it leaves the
 *	window submit_milter_reservation_hold after it was made, as an
 *	uncommitted reservation always did: the limit errs towards refusing,
 *	never towards letting more through. (The traffic counters of such a
 *	message are lost, as with a failed synchronous commit.) A commit
 *	queued later than the hold after its reservation may find the
 *	member gone and not count it; the queue's drain time is bounded by
 *	redis_timeout per batch, far below any hold.
 *
 *	The queue is bounded (queue_max commits): when it is full
 *	submit_commit_queue() refuses and the caller commits synchronously
 *	(backpressure: nothing is dropped). The thread sleeps on a
 *	condition variable while the queue is empty. Woken by a first
 *	commit, it waits up to delay ms more for others to join the batch
 *	(until SUBMIT_REDIS_BATCH_MAX are queued or the process stops):
 *	under load a batch then carries several commits, and the thread,
 *	Redis and the connection see one wake-up, one write and one read for
 *	all of them instead of one per message. Nothing waits on it: end of
 *	message has already answered, and a pending member counts like a
 *	committed one. 0: send at once.
 *
 *	submit_commit_destroy() stops taking commits, lets the thread send
 *	what is queued (all batches together bounded by redis_timeout; what
 *	is left after that fails, through done()) and joins it; call it
 *	before submit_redis_destroy(). Thread-safe.
 *--*/
#ifndef SUBMIT_COMMIT_H
#define SUBMIT_COMMIT_H

#include <stdbool.h>
#include <stdint.h>

#include "submit-redis.h"
#include "tn-time.h"

struct submit_commit;

/* After each queued commit, in the committer thread: ok when it landed.
 * c and its strings are valid during the call only. */
typedef void submit_commit_done_cb(const struct submit_redis_commit *c, bool ok,
				   void *context);

struct submit_commit_stats {
	uint64_t depth;		/* commits queued now */
	uint64_t batches;	/* pipelines sent */
};

/* The committer of sr, with its thread started; NULL with *error_r
 * when the thread cannot start. */
struct submit_commit *submit_commit_create(struct submit_redis *sr, unsigned queue_max,
					   tn_msec_t delay, submit_commit_done_cb *done,
					   void *context, const char **error_r);
void submit_commit_destroy(struct submit_commit **sc);

/* Queue a copy of c (its strings too): true; false when the queue is
 * full or stopping (commit it yourself). */
bool submit_commit_queue(struct submit_commit *sc, const struct submit_redis_commit *c);

void submit_commit_stats(struct submit_commit *sc, struct submit_commit_stats *stats_r);

#endif

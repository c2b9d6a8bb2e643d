/*++
 * NAME
 *	tn-lookup-ioloop 3h
 * SUMMARY
 *	the lookup library inside a Dovecot process, without blocking its ioloop
 * DESCRIPTION
 *	The Dovecot counterpart of tn-lookup-event.h (libevent): the lookup
 *	library blocks with a deadline, Dovecot's auth process must not.
 *
 *	tn_lookup_ioloop_resolve() first asks the in-process cache (kept
 *	fresh by the invalidation channel). A hit or a cached negative
 *	answer is delivered from inside the call: the callback has run
 *	when resolve returns NULL. Dovecot's auth request callbacks may
 *	be called that way (passwd-file does it), and it is what makes a
 *	hit cost no more than a hash lookup.
 *
 *	A miss is queued for a small pool of threads that run the blocking
 *	lookup (Redis, LDAP) and is answered later, in the ioloop's thread:
 *	completions come back through a pipe watched with io_add(). Each
 *	miss carries a timeout_add() timer at its deadline; when it fires
 *	first the callback gets TN_TEMPFAIL ("lookup timed out") and the
 *	thread's late answer is dropped. The ioloop never waits on Redis or
 *	LDAP, and a hung directory delays nobody past the deadline.
 *
 *	tn_lookup_ioloop_run() runs another blocking job of the caller's
 *	(Redis counters, say) in the same threads, with the same deadline
 *	timer.
 *
 *	A pending miss can be cancelled (tn_lookup_ioloop_cancel) until its
 *	callback has run; the callback is then never called. The callback
 *	owns the account it is given (tn_account_free()).
 * THREADS
 *	The threads call only the lookup library and libc; Dovecot's
 *	functions (ioloop, pools, data stack, log) are called only in the
 *	ioloop's thread. Requests are malloc()ed (lib/tn-mem), not taken
 *	from Dovecot pools, because threads touch them.
 *--*/
#ifndef TN_LOOKUP_IOLOOP_H
#define TN_LOOKUP_IOLOOP_H

#include <stdbool.h>
#include <stdint.h>

#include "tn-lookup.h"

struct tn_lookup_ioloop;
struct tn_lookup_ioloop_request;

struct tn_lookup_ioloop_stats {
	uint64_t hits;		/* answered from the in-process cache, in the call */
	uint64_t misses;	/* handed to the threads */
	uint64_t timeouts;	/* answered TN_TEMPFAIL by the deadline timer */
};

typedef void tn_lookup_ioloop_cb(enum tn_result rc, struct tn_account *acct,
				 const char *error, void *context);

/* In the ioloop's thread, with current_ioloop the loop to answer in.
 * NULL with *error_r when the pipe or no thread can be made. */
struct tn_lookup_ioloop *tn_lookup_ioloop_create(struct tn_lookup *lk, unsigned threads,
						 const char **error_r);
/* Cancels what is pending (no callbacks) and joins the threads. */
void tn_lookup_ioloop_destroy(struct tn_lookup_ioloop **li);

/* timeout_ms 0: lookup_timeout. NULL when the callback has already run
 * (cache hit), else the handle of the pending request. */
struct tn_lookup_ioloop_request *
tn_lookup_ioloop_resolve(struct tn_lookup_ioloop *li, const char *address,
			 tn_msec_t timeout_ms, tn_lookup_ioloop_cb *cb, void *context);
void tn_lookup_ioloop_cancel(struct tn_lookup_ioloop_request **req);

/* job(job_context) in a thread, then cb(true, job_context, context) in
 * the loop; cb(false, ...) when the deadline (timeout_ms, 0: lookup_timeout)
 * came first or the queue is full -- the job may then still run later.
 * job_context is malloc()ed by the caller and becomes the adapter's: it
 * is freed with free_fn once neither a thread nor the loop needs it, so
 * the caller must not keep it past cb. Returns the pending request. */
typedef void tn_lookup_ioloop_job_fn(void *job_context);
typedef void tn_lookup_ioloop_job_cb(bool done, void *job_context, void *context);
struct tn_lookup_ioloop_request *
tn_lookup_ioloop_run(struct tn_lookup_ioloop *li, tn_msec_t timeout_ms,
		     tn_lookup_ioloop_job_fn *job, void *job_context,
		     void (*free_fn)(void *), tn_lookup_ioloop_job_cb *cb,
		     void *context);

void tn_lookup_ioloop_get_stats(struct tn_lookup_ioloop *li,
				struct tn_lookup_ioloop_stats *stats_r);

#endif

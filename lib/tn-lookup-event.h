/*++
 * NAME
 *	tn-lookup-event 3h
 * SUMMARY
 *	the lookup library for libevent programs, without blocking the loop
 * DESCRIPTION
 *	The lookup library blocks with a deadline; an event loop must not.
 *	This adapter answers from the in-process cache at once (delivered
 *	from the loop on its next turn, never from inside the call), and
 *	hands misses to a small pool of worker threads that run the
 *	blocking lookup. Completions come back to the loop through a pipe,
 *	so callbacks always run in the loop's thread.
 *
 *	Each request carries a timer at its deadline: when it fires first,
 *	the callback gets TN_TEMPFAIL ("timed out") and the worker's late
 *	answer is dropped. So a hung directory delays nobody past the
 *	deadline, and the loop keeps running meanwhile.
 *
 *	A request can be cancelled (tn_lookup_event_cancel) until its
 *	callback has run; the callback is then never called. The callback
 *	owns the account it is given.
 *--*/
#ifndef TN_LOOKUP_EVENT_H
#define TN_LOOKUP_EVENT_H

#include <event2/event.h>

#include "tn-lookup.h"

struct tn_lookup_event;
struct tn_lookup_request;

typedef void tn_lookup_event_cb(enum tn_result rc, struct tn_account *acct,
				const char *error, void *context);

struct tn_lookup_event *tn_lookup_event_create(struct event_base *base,
					       struct tn_lookup *lk,
					       unsigned workers);
/* Cancels what is pending (no callbacks) and joins the workers. */
void tn_lookup_event_destroy(struct tn_lookup_event **le);

/* timeout_ms 0: lookup_timeout. Returns the request handle. */
struct tn_lookup_request *tn_lookup_event_resolve(struct tn_lookup_event *le,
						  const char *address,
						  tn_msec_t timeout_ms,
						  tn_lookup_event_cb *cb,
						  void *context);
/* The same for a bare domain (tn_lookup_resolve_domain). */
struct tn_lookup_request *tn_lookup_event_resolve_domain(struct tn_lookup_event *le,
							 const char *domain,
							 tn_msec_t timeout_ms,
							 tn_lookup_event_cb *cb,
							 void *context);
void tn_lookup_event_cancel(struct tn_lookup_request *req);

#endif

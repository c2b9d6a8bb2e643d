/*++
 * NAME
 *	quota-traffic 3h
 * SUMMARY
 *	tn-quota-milter's traffic counters, summed in memory and written
 *	to Redis in batches
 * DESCRIPTION
 *	The end of an accepted message adds one message and its bytes
 *	to each of its tenants' counter for the UTC hour; nothing waits
 *	for Redis there. A flusher thread hands the sums to a send
 *	function every interval (tn-quota-milter: one script call per
 *	256 counters, lib's EVALSHA on the shared pool), so the end of
 *	message costs no Redis round trip and a busy tenant costs one
 *	write per interval, not one per message.
 *
 *	A batch that could not be sent stays pending and is retried
 *	with the next one (sums merge); pending counters are bounded by
 *	max_pending, above which new counters are dropped and counted.
 *	quota_traffic_destroy() sends what is pending once more. What a
 *	crashed process had not sent (at most one interval's worth) is
 *	lost: the counters feed usage.rollup, not a quota decision.
 *
 *	Thread-safe: add from any thread.
 *--*/
#ifndef QUOTA_TRAFFIC_H
#define QUOTA_TRAFFIC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tn-time.h"

struct quota_traffic;

/* One counter: tenant's messages and bytes in the UTC hour starting
 * at hour (Unix seconds, a multiple of 3600). */
struct quota_traffic_item {
	char *tenant;
	int64_t hour;
	int64_t msgs, bytes;
};

/* Apply items[0..n-1] (all or none); 0 or -1. */
typedef int quota_traffic_send_fn(void *ctx, const struct quota_traffic_item *items, size_t n);

/* Items handed to send at once, at most. */
#define QUOTA_TRAFFIC_BATCH 256

struct quota_traffic *quota_traffic_create(quota_traffic_send_fn *send, void *ctx,
					   size_t max_pending);
/* Stop the flusher (if started), send what is pending once, free. */
void quota_traffic_destroy(struct quota_traffic **qt);

/* One message of bytes for each of tenants[0..n-1] at wall_time.
 * 0, or -1 when a new counter was dropped (max_pending reached). */
int quota_traffic_add(struct quota_traffic *qt, const char *const *tenants, size_t n,
		      int64_t bytes, int64_t wall_time);
/* Send everything pending now. 0, or -1 when a batch failed (it and
 * the rest stay pending). */
int quota_traffic_flush(struct quota_traffic *qt);
/* A thread calling quota_traffic_flush() every interval ms. */
int quota_traffic_start(struct quota_traffic *qt, tn_msec_t interval, const char **error_r);

struct quota_traffic_stats {
	size_t pending;			/* counters not yet sent */
	uint64_t sent, failed_batches, dropped;
};
void quota_traffic_get_stats(struct quota_traffic *qt, struct quota_traffic_stats *stats_r);

#endif

/*++
 * NAME
 *	quota-redis 3h
 * SUMMARY
 *	tn-quota-milter's own Redis keys: traffic counters, refusal reports
 * DESCRIPTION
 *	docs/redis-keys.md, "tn-quota-milter":
 *	traffic:<tenant>:<YYYYMMDDHH> (hash msgs_in, bytes_in; the UTC hour
 *	of the end of message; expires 7 days after the hour ends) and
 *	rejected:<tenant>:<reason> (hash until, suppressed: at most one
 *	message.rejected event per tenant and reason per window, across
 *	all nodes). Usage counters and quota.exceeded's limiter are
 *	lib/tn-usage's (the keys the Dovecot plugin shares).
 *
 *	Traffic arrives in batches from quota-traffic.h's flusher.
 *	Every call is one EVAL on the shared cache code's pooled
 *	connections (lib/tn-cache.h): bounded by redis_timeout and the
 *	deadline, failing at once while Redis is marked down.
 *--*/
#ifndef QUOTA_REDIS_H
#define QUOTA_REDIS_H

#include <stddef.h>
#include <stdint.h>

#include "quota-traffic.h"
#include "tn-conf.h"
#include "tn-time.h"

struct quota_redis;

/* From the redis_* parameters; NULL with *error_r when Redis is
 * disabled or its password file unreadable. No traffic here. */
struct quota_redis *quota_redis_create(const struct tn_conf *conf, const char **error_r);
void quota_redis_destroy(struct quota_redis **qr);

/* A quota_traffic_send_fn (ctx: the quota_redis): add items[0..n-1]
 * (n <= QUOTA_TRAFFIC_BATCH) to their traffic hashes in one script
 * call bounded by redis_timeout. 0 or -1. */
int quota_redis_traffic(void *ctx, const struct quota_traffic_item *items, size_t n);
/* A refusal of tenant for reason: 1 when it is to be reported
 * (*suppressed_r: refusals since the previous report), 0 when one was
 * reported less than window ms ago (this one is counted), -1. */
int quota_redis_rejected(struct quota_redis *qr, const char *tenant, const char *reason,
			 tn_msec_t window, tn_msec_t deadline, int64_t *suppressed_r);
tn_msec_t quota_redis_timeout(const struct quota_redis *qr);

/* "YYYYMMDDHH" of wall_time (UTC) into buf (11 bytes). */
void quota_redis_period(int64_t wall_time, char buf[11]);

#endif

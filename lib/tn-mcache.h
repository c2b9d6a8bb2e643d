/*++
 * NAME
 *	tn-mcache 3h
 * SUMMARY
 *	in-process cache of directory objects (seconds)
 * DESCRIPTION
 *	A small thread-safe map from cache key ("adr:alice@acme.example",
 *	"dom:acme.example", "ten:acme") to a shared immutable object, or to
 *	a negative entry (the directory said: no such object). Entries live
 *	for a few seconds; an invalidation message from Redis drops a key at
 *	once. The map is sharded (one mutex per shard) so milter threads do
 *	not queue behind each other, and bounded: a full shard evicts.
 *
 *	Fills race with invalidations: a lookup that fetched an object just
 *	before an invalidation must not put the old object back. Callers
 *	read tn_mcache_generation() before fetching and pass it to
 *	tn_mcache_put(), which drops the fill if any invalidation or flush
 *	happened in between.
 *
 *	While disabled (the process lost its invalidation subscription) gets
 *	miss and puts are dropped; disabling flushes.
 *--*/
#ifndef TN_MCACHE_H
#define TN_MCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tn-record.h"
#include "tn-time.h"

enum tn_mcache_result {
	TN_MCACHE_MISS = -1,
	TN_MCACHE_NEGATIVE = 0,
	TN_MCACHE_HIT = 1,
};

struct tn_mcache;

/* max_entries 0 makes a cache that never holds anything. */
struct tn_mcache *tn_mcache_create(size_t max_entries);
void tn_mcache_destroy(struct tn_mcache **mc);

/* On TN_MCACHE_HIT *obj_r holds a new reference. */
enum tn_mcache_result tn_mcache_get(struct tn_mcache *mc, const char *key,
				    struct tn_obj **obj_r);
uint64_t tn_mcache_generation(struct tn_mcache *mc);
/* obj NULL stores a negative entry. Dropped when generation moved on. */
void tn_mcache_put(struct tn_mcache *mc, const char *key, struct tn_obj *obj,
		   tn_msec_t ttl_ms, uint64_t generation);
void tn_mcache_invalidate(struct tn_mcache *mc, const char *key);
void tn_mcache_flush(struct tn_mcache *mc);
void tn_mcache_set_enabled(struct tn_mcache *mc, bool enabled);
bool tn_mcache_enabled(struct tn_mcache *mc);
size_t tn_mcache_count(struct tn_mcache *mc);

#endif

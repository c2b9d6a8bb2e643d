/*++
 * NAME
 *	hookd 3h
 * SUMMARY
 *	tn-hookd's internal interfaces
 * DESCRIPTION
 *	hookd_queue: the in-memory index of one endpoint's queue directory:
 *	every item (one event) by id (hash), the items waiting to be sent
 *	ordered by (next attempt, id) (binary heap; UUIDv7 ids sort by time,
 *	so among items due now the oldest goes first), and the segment files
 *	of the queue by name (hash). An item being sent is out of the heap
 *	but still in the hash, so a rescan does not add it twice.
 *
 *	An item's file is either its segment (item->seg: never attempted,
 *	one line of the segment <seg id>.json, which holds the events of
 *	one group commit) or its own file (<id>.json after a replay, or
 *	<id>.<attempts>.<first_ms>.<next_ms>.retry). A segment stays known
 *	until its file is gone, so a rescan does not load it again; its
 *	items leave it when delivered or written out as their own retry
 *	file, and when none is left the file is removed.
 *
 *	hookd_metrics: the /metrics endpoint (libmicrohttpd, its own
 *	thread), rendering text the main loop prepared.
 *--*/
#ifndef HOOKD_H
#define HOOKD_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tn-hook-spool.h"

#define HOOKD_NOT_IN_HEAP ((size_t)-1)

struct hookd_ev;

/* A segment file in one endpoint's queue. */
struct hookd_seg {
	char id[TN_HOOK_ID_SIZE];	/* the file is <id>.json */
	unsigned left;			/* its items still in it */
	bool wrote_retry;		/* an item left as a retry file: sync before removing */
	bool reaping;			/* its file is being removed */
	struct hookd_seg *hnext;	/* hash chain */
};

struct hookd_item {
	char id[TN_HOOK_ID_SIZE];
	struct hookd_seg *seg;		/* the segment holding it, or NULL: its own file */
	struct hookd_ev *ev;		/* the event read at fan-out, until the first attempt */
	unsigned attempts;
	int64_t first_ms;
	int64_t next_ms;
	size_t heap_index;		/* HOOKD_NOT_IN_HEAP while in flight */
	struct hookd_item *hnext;	/* hash chain */
};

struct hookd_queue {
	struct hookd_item **heap;
	size_t heap_len, heap_cap;
	struct hookd_item **buckets;
	size_t nbuckets, count;
	struct hookd_seg **sbuckets;
	size_t nsbuckets, nsegs;
};

void hookd_queue_init(struct hookd_queue *q);
void hookd_queue_free(struct hookd_queue *q);
struct hookd_item *hookd_queue_find(const struct hookd_queue *q, const char *id);
/* Add an item in the heap; NULL when the id is already known. */
struct hookd_item *hookd_queue_add(struct hookd_queue *q, const struct tn_hook_qname *qn);
/* The waiting item due first, or NULL. */
struct hookd_item *hookd_queue_peek(const struct hookd_queue *q);
/* Take an item out of the heap (it is being sent). */
void hookd_queue_take(struct hookd_queue *q, struct hookd_item *item);
/* Put a taken item back with its (new) next_ms. */
void hookd_queue_put(struct hookd_queue *q, struct hookd_item *item);
/* Forget an item (delivered, dead, vanished) and free it. */
void hookd_queue_remove(struct hookd_queue *q, struct hookd_item *item);
/* The file name of an item's current state (its segment's, if in one). */
void hookd_item_name(const struct hookd_item *item, char buf[TN_HOOK_QNAME_SIZE]);
struct hookd_seg *hookd_queue_seg_find(const struct hookd_queue *q, const char *id);
/* A new segment (left 0); the id must not be known. */
struct hookd_seg *hookd_queue_seg_add(struct hookd_queue *q, const char *id);
/* Forget a segment (its file is gone) and free it; no item may point to it. */
void hookd_queue_seg_remove(struct hookd_queue *q, struct hookd_seg *seg);

/* /metrics: text is produced by render(arg) into a malloc'ed string,
 * called from the server's thread; the caller makes render thread-safe. */
struct hookd_metrics;
struct hookd_metrics *hookd_metrics_start(const char *listen, char *(*render)(void *),
					  void *arg, const char **error_r);
void hookd_metrics_stop(struct hookd_metrics **mp);

#endif

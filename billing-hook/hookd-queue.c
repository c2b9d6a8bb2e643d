/*++
 * NAME
 *	hookd-queue 3
 * SUMMARY
 *	in-memory index of one endpoint's queue
 * DESCRIPTION
 *	See hookd.h. A chained hash on the id (FNV-1a, doubled at load 1)
 *	and a binary min-heap on (next_ms, id); the segments in a second
 *	chained hash on their id.
 *--*/
#include "tn-build.h"

#include <stdio.h>
#include <string.h>

#include "hookd.h"
#include "tn-mem.h"

static size_t hookd_hash(const char *id)
{
	uint64_t h = 1469598103934665603ULL;

	for (; *id != '\0'; id++)
		h = (h ^ (unsigned char)*id) * 1099511628211ULL;
	return (size_t)h;
}

static bool hookd_before(const struct hookd_item *a, const struct hookd_item *b)
{
	if (a->next_ms != b->next_ms)
		return a->next_ms < b->next_ms;
	return strcmp(a->id, b->id) < 0;
}

static void hookd_heap_set(struct hookd_queue *q, size_t i, struct hookd_item *item)
{
	q->heap[i] = item;
	item->heap_index = i;
}

static void hookd_heap_up(struct hookd_queue *q, size_t i)
{
	struct hookd_item *item = q->heap[i];

	while (i > 0 && hookd_before(item, q->heap[(i - 1) / 2])) {
		hookd_heap_set(q, i, q->heap[(i - 1) / 2]);
		i = (i - 1) / 2;
	}
	hookd_heap_set(q, i, item);
}

static void hookd_heap_down(struct hookd_queue *q, size_t i)
{
	struct hookd_item *item = q->heap[i];

	for (;;) {
		size_t c = 2 * i + 1;

		if (c >= q->heap_len)
			break;
		if (c + 1 < q->heap_len && hookd_before(q->heap[c + 1], q->heap[c]))
			c++;
		if (!hookd_before(q->heap[c], item))
			break;
		hookd_heap_set(q, i, q->heap[c]);
		i = c;
	}
	hookd_heap_set(q, i, item);
}

static void hookd_grow_hash(struct hookd_queue *q)
{
	size_t n = q->nbuckets * 2;
	struct hookd_item **b = tn_mem_calloc(n, sizeof(*b));

	for (size_t i = 0; i < q->nbuckets; i++) {
		struct hookd_item *item = q->buckets[i], *next;

		for (; item != NULL; item = next) {
			next = item->hnext;
			item->hnext = b[hookd_hash(item->id) & (n - 1)];
			b[hookd_hash(item->id) & (n - 1)] = item;
		}
	}
	tn_mem_free(&q->buckets);
	q->buckets = b;
	q->nbuckets = n;
}

void hookd_queue_init(struct hookd_queue *q)
{
	memset(q, 0, sizeof(*q));
	q->nbuckets = 1024;
	q->buckets = tn_mem_calloc(q->nbuckets, sizeof(*q->buckets));
	q->nsbuckets = 256;
	q->sbuckets = tn_mem_calloc(q->nsbuckets, sizeof(*q->sbuckets));
}

static void hookd_grow_segs(struct hookd_queue *q)
{
	size_t n = q->nsbuckets * 2;
	struct hookd_seg **b = tn_mem_calloc(n, sizeof(*b));

	for (size_t i = 0; i < q->nsbuckets; i++) {
		struct hookd_seg *seg = q->sbuckets[i], *next;

		for (; seg != NULL; seg = next) {
			next = seg->hnext;
			seg->hnext = b[hookd_hash(seg->id) & (n - 1)];
			b[hookd_hash(seg->id) & (n - 1)] = seg;
		}
	}
	tn_mem_free(&q->sbuckets);
	q->sbuckets = b;
	q->nsbuckets = n;
}

struct hookd_seg *hookd_queue_seg_find(const struct hookd_queue *q, const char *id)
{
	struct hookd_seg *seg = q->sbuckets[hookd_hash(id) & (q->nsbuckets - 1)];

	while (seg != NULL && strcmp(seg->id, id) != 0)
		seg = seg->hnext;
	return seg;
}

struct hookd_seg *hookd_queue_seg_add(struct hookd_queue *q, const char *id)
{
	struct hookd_seg *seg;
	size_t b;

	if (q->nsegs >= q->nsbuckets)
		hookd_grow_segs(q);
	seg = tn_mem_calloc(1, sizeof(*seg));
	memcpy(seg->id, id, sizeof(seg->id));
	b = hookd_hash(seg->id) & (q->nsbuckets - 1);
	seg->hnext = q->sbuckets[b];
	q->sbuckets[b] = seg;
	q->nsegs++;
	return seg;
}

void hookd_queue_seg_remove(struct hookd_queue *q, struct hookd_seg *seg)
{
	struct hookd_seg **pp = &q->sbuckets[hookd_hash(seg->id) & (q->nsbuckets - 1)];

	while (*pp != seg)
		pp = &(*pp)->hnext;
	*pp = seg->hnext;
	q->nsegs--;
	tn_mem_free(&seg);
}

void hookd_queue_free(struct hookd_queue *q)
{
	for (size_t i = 0; i < q->nbuckets; i++) {
		struct hookd_item *item = q->buckets[i], *next;

		for (; item != NULL; item = next) {
			next = item->hnext;
			tn_mem_free(&item);
		}
	}
	for (size_t i = 0; i < q->nsbuckets; i++) {
		struct hookd_seg *seg = q->sbuckets[i], *next;

		for (; seg != NULL; seg = next) {
			next = seg->hnext;
			tn_mem_free(&seg);
		}
	}
	tn_mem_free(&q->buckets);
	tn_mem_free(&q->sbuckets);
	tn_mem_free(&q->heap);
	memset(q, 0, sizeof(*q));
}

struct hookd_item *hookd_queue_find(const struct hookd_queue *q, const char *id)
{
	struct hookd_item *item = q->buckets[hookd_hash(id) & (q->nbuckets - 1)];

	while (item != NULL && strcmp(item->id, id) != 0)
		item = item->hnext;
	return item;
}

struct hookd_item *hookd_queue_add(struct hookd_queue *q, const struct tn_hook_qname *qn)
{
	struct hookd_item *item;
	size_t b;

	if (hookd_queue_find(q, qn->id) != NULL)
		return NULL;
	if (q->count >= q->nbuckets)
		hookd_grow_hash(q);
	item = tn_mem_calloc(1, sizeof(*item));
	memcpy(item->id, qn->id, sizeof(item->id));
	item->attempts = qn->attempts;
	item->first_ms = qn->first_ms;
	item->next_ms = qn->next_ms;
	b = hookd_hash(item->id) & (q->nbuckets - 1);
	item->hnext = q->buckets[b];
	q->buckets[b] = item;
	q->count++;
	item->heap_index = HOOKD_NOT_IN_HEAP;
	hookd_queue_put(q, item);
	return item;
}

struct hookd_item *hookd_queue_peek(const struct hookd_queue *q)
{
	return q->heap_len == 0 ? NULL : q->heap[0];
}

void hookd_queue_take(struct hookd_queue *q, struct hookd_item *item)
{
	struct hookd_item *moved;
	size_t i = item->heap_index;

	if (i == HOOKD_NOT_IN_HEAP)
		return;
	item->heap_index = HOOKD_NOT_IN_HEAP;
	if (--q->heap_len == i)
		return;
	moved = q->heap[q->heap_len];
	hookd_heap_set(q, i, moved);
	hookd_heap_up(q, i);
	hookd_heap_down(q, moved->heap_index);
}

void hookd_queue_put(struct hookd_queue *q, struct hookd_item *item)
{
	if (item->heap_index != HOOKD_NOT_IN_HEAP)
		return;
	if (q->heap_len == q->heap_cap) {
		q->heap_cap = q->heap_cap == 0 ? 256 : q->heap_cap * 2;
		q->heap = tn_mem_realloc(q->heap, q->heap_cap * sizeof(*q->heap));
	}
	hookd_heap_set(q, q->heap_len++, item);
	hookd_heap_up(q, item->heap_index);
}

void hookd_queue_remove(struct hookd_queue *q, struct hookd_item *item)
{
	struct hookd_item **pp = &q->buckets[hookd_hash(item->id) & (q->nbuckets - 1)];

	hookd_queue_take(q, item);
	while (*pp != item)
		pp = &(*pp)->hnext;
	*pp = item->hnext;
	q->count--;
	tn_mem_free(&item);
}

void hookd_item_name(const struct hookd_item *item, char buf[TN_HOOK_QNAME_SIZE])
{
	struct tn_hook_qname qn;

	if (item->seg != NULL) {
		snprintf(buf, TN_HOOK_QNAME_SIZE, "%s.json", item->seg->id);
		return;
	}
	memcpy(qn.id, item->id, sizeof(qn.id));
	qn.attempts = item->attempts;
	qn.first_ms = item->first_ms;
	qn.next_ms = item->next_ms;
	tn_hook_qname_format(&qn, buf);
}

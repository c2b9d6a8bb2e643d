/*++
 * NAME
 *	tn-mcache 3
 * SUMMARY
 *	in-process cache of directory objects (see tn-mcache.h)
 * DESCRIPTION
 *	Chained hash buckets per shard. The generation counter and the
 *	enabled flag are atomics; each shard has its own mutex. Eviction
 *	walks the shard's buckets from a moving cursor and drops the first
 *	expired entry, else the first entry found (a cheap clock).
 *--*/
#include <pthread.h>
#include <string.h>

#include "tn-mcache.h"
#include "tn-mem.h"

#define TN_MCACHE_SHARDS 16
#define TN_MCACHE_BUCKETS 1024	/* per shard */

struct tn_mcache_entry {
	struct tn_mcache_entry *next;
	char *key;
	struct tn_obj *obj;	/* NULL: negative */
	tn_msec_t expires;
};

struct tn_mcache_shard {
	pthread_mutex_t lock;
	struct tn_mcache_entry *buckets[TN_MCACHE_BUCKETS];
	size_t count;
	size_t cursor;
};

struct tn_mcache {
	size_t max_per_shard;
	uint64_t generation;
	bool enabled;
	struct tn_mcache_shard shards[TN_MCACHE_SHARDS];
};

static uint64_t tn_mcache_hash(const char *key)
{
	uint64_t h = 14695981039346656037ULL;

	for (const unsigned char *p = (const unsigned char *)key; *p != '\0'; p++) {
		h ^= *p;
		h *= 1099511628211ULL;
	}
	return h;
}

struct tn_mcache *tn_mcache_create(size_t max_entries)
{
	struct tn_mcache *mc = tn_mem_calloc(1, sizeof(*mc));

	mc->max_per_shard = (max_entries + TN_MCACHE_SHARDS - 1) / TN_MCACHE_SHARDS;
	mc->enabled = max_entries > 0;
	for (size_t i = 0; i < TN_MCACHE_SHARDS; i++)
		pthread_mutex_init(&mc->shards[i].lock, NULL);
	return mc;
}

static void tn_mcache_entry_free(struct tn_mcache_entry **ep)
{
	struct tn_mcache_entry *e = *ep;

	tn_obj_unref(&e->obj);
	tn_mem_free(&e->key);
	tn_mem_free(ep);
}

static void tn_mcache_shard_clear(struct tn_mcache_shard *sh)
{
	for (size_t b = 0; b < TN_MCACHE_BUCKETS; b++) {
		while (sh->buckets[b] != NULL) {
			struct tn_mcache_entry *e = sh->buckets[b];

			sh->buckets[b] = e->next;
			tn_mcache_entry_free(&e);
		}
	}
	sh->count = 0;
}

void tn_mcache_destroy(struct tn_mcache **mcp)
{
	struct tn_mcache *mc = *mcp;

	if (mc == NULL)
		return;
	for (size_t i = 0; i < TN_MCACHE_SHARDS; i++) {
		tn_mcache_shard_clear(&mc->shards[i]);
		pthread_mutex_destroy(&mc->shards[i].lock);
	}
	tn_mem_free(mcp);
}

static struct tn_mcache_shard *tn_mcache_shard_of(struct tn_mcache *mc, uint64_t h,
						  size_t *bucket_r)
{
	*bucket_r = (size_t)(h >> 8) % TN_MCACHE_BUCKETS;
	return &mc->shards[h % TN_MCACHE_SHARDS];
}

/* Unlink the entry for key from its bucket; caller holds the lock. */
static struct tn_mcache_entry *tn_mcache_unlink(struct tn_mcache_shard *sh,
						size_t bucket, const char *key)
{
	for (struct tn_mcache_entry **pp = &sh->buckets[bucket]; *pp != NULL;
	     pp = &(*pp)->next) {
		struct tn_mcache_entry *e = *pp;

		if (strcmp(e->key, key) == 0) {
			*pp = e->next;
			sh->count--;
			return e;
		}
	}
	return NULL;
}

enum tn_mcache_result tn_mcache_get(struct tn_mcache *mc, const char *key,
				    struct tn_obj **obj_r)
{
	enum tn_mcache_result res = TN_MCACHE_MISS;
	struct tn_mcache_shard *sh;
	struct tn_mcache_entry *e;
	size_t bucket;

	*obj_r = NULL;
	if (!__atomic_load_n(&mc->enabled, __ATOMIC_ACQUIRE))
		return TN_MCACHE_MISS;
	sh = tn_mcache_shard_of(mc, tn_mcache_hash(key), &bucket);
	pthread_mutex_lock(&sh->lock);
	for (e = sh->buckets[bucket]; e != NULL; e = e->next) {
		if (strcmp(e->key, key) != 0)
			continue;
		if (e->expires > tn_time_now_ms()) {
			res = e->obj != NULL ? TN_MCACHE_HIT : TN_MCACHE_NEGATIVE;
			if (e->obj != NULL)
				*obj_r = tn_obj_ref(e->obj);
		}
		break;
	}
	pthread_mutex_unlock(&sh->lock);
	return res;
}

uint64_t tn_mcache_generation(struct tn_mcache *mc)
{
	return __atomic_load_n(&mc->generation, __ATOMIC_ACQUIRE);
}

static void tn_mcache_evict_one(struct tn_mcache_shard *sh)
{
	tn_msec_t now = tn_time_now_ms();
	struct tn_mcache_entry **victim = NULL;

	for (size_t n = 0; n < TN_MCACHE_BUCKETS; n++) {
		size_t b = (sh->cursor + n) % TN_MCACHE_BUCKETS;

		for (struct tn_mcache_entry **pp = &sh->buckets[b]; *pp != NULL;
		     pp = &(*pp)->next) {
			if ((*pp)->expires <= now || victim == NULL) {
				victim = pp;
				sh->cursor = b + 1;
				if ((*pp)->expires <= now)
					goto found;
			}
		}
		if (victim != NULL)
			break;
	}
	if (victim == NULL)
		return;
found:;
	struct tn_mcache_entry *e = *victim;

	*victim = e->next;
	sh->count--;
	tn_mcache_entry_free(&e);
}

void tn_mcache_put(struct tn_mcache *mc, const char *key, struct tn_obj *obj,
		   tn_msec_t ttl_ms, uint64_t generation)
{
	struct tn_mcache_shard *sh;
	struct tn_mcache_entry *e;
	size_t bucket;

	if (!tn_mcache_enabled(mc) || ttl_ms <= 0)
		return;
	sh = tn_mcache_shard_of(mc, tn_mcache_hash(key), &bucket);
	pthread_mutex_lock(&sh->lock);
	/* checked under the lock: invalidations bump the generation
	 * before they take it, so a fill cannot slip in after them */
	if (tn_mcache_generation(mc) == generation) {
		e = tn_mcache_unlink(sh, bucket, key);
		if (e != NULL)
			tn_mcache_entry_free(&e);
		else if (sh->count >= mc->max_per_shard)
			tn_mcache_evict_one(sh);
		e = tn_mem_calloc(1, sizeof(*e));
		e->key = tn_mem_strdup(key);
		e->obj = obj != NULL ? tn_obj_ref(obj) : NULL;
		e->expires = tn_time_now_ms() + ttl_ms;
		e->next = sh->buckets[bucket];
		sh->buckets[bucket] = e;
		sh->count++;
	}
	pthread_mutex_unlock(&sh->lock);
}

void tn_mcache_invalidate(struct tn_mcache *mc, const char *key)
{
	struct tn_mcache_shard *sh;
	struct tn_mcache_entry *e;
	size_t bucket;

	__atomic_add_fetch(&mc->generation, 1, __ATOMIC_ACQ_REL);
	sh = tn_mcache_shard_of(mc, tn_mcache_hash(key), &bucket);
	pthread_mutex_lock(&sh->lock);
	e = tn_mcache_unlink(sh, bucket, key);
	pthread_mutex_unlock(&sh->lock);
	if (e != NULL)
		tn_mcache_entry_free(&e);
}

void tn_mcache_flush(struct tn_mcache *mc)
{
	__atomic_add_fetch(&mc->generation, 1, __ATOMIC_ACQ_REL);
	for (size_t i = 0; i < TN_MCACHE_SHARDS; i++) {
		pthread_mutex_lock(&mc->shards[i].lock);
		tn_mcache_shard_clear(&mc->shards[i]);
		pthread_mutex_unlock(&mc->shards[i].lock);
	}
}

void tn_mcache_set_enabled(struct tn_mcache *mc, bool enabled)
{
	if (mc->max_per_shard == 0)
		enabled = false;
	__atomic_store_n(&mc->enabled, enabled, __ATOMIC_RELEASE);
	if (!enabled)
		tn_mcache_flush(mc);
}

bool tn_mcache_enabled(struct tn_mcache *mc)
{
	return __atomic_load_n(&mc->enabled, __ATOMIC_ACQUIRE);
}

size_t tn_mcache_count(struct tn_mcache *mc)
{
	size_t n = 0;

	for (size_t i = 0; i < TN_MCACHE_SHARDS; i++) {
		pthread_mutex_lock(&mc->shards[i].lock);
		n += mc->shards[i].count;
		pthread_mutex_unlock(&mc->shards[i].lock);
	}
	return n;
}

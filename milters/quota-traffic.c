/*++
 * NAME
 *	quota-traffic 3
 * SUMMARY
 *	traffic counters summed in memory, sent in batches (see
 *	quota-traffic.h)
 * DESCRIPTION
 *	The pending counters are an open-addressing table keyed by
 *	(tenant, hour), grown at half load. A flush swaps the table for
 *	an empty one under the lock and sends outside it, so adds never
 *	wait for Redis; one flush runs at a time (flush_lock).
 *--*/
#include "tn-build.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "quota-traffic.h"
#include "tn-mem.h"

struct qt_table {
	struct quota_traffic_item *slots;	/* tenant NULL: empty */
	size_t cap, n;
};

struct quota_traffic {
	quota_traffic_send_fn *send;
	void *ctx;
	size_t max_pending;

	pthread_mutex_t lock;		/* table, stats, stop */
	struct qt_table table;
	uint64_t sent, failed_batches, dropped;

	pthread_mutex_t flush_lock;	/* one flush at a time */

	pthread_cond_t wake;
	pthread_t thread;
	bool started, stop;
	tn_msec_t interval;
};

static uint64_t qt_hash(const char *tenant, int64_t hour)
{
	uint64_t h = 14695981039346656037ULL;

	for (const unsigned char *p = (const unsigned char *)tenant; *p != '\0'; p++)
		h = (h ^ *p) * 1099511628211ULL;
	return (h ^ (uint64_t)hour) * 1099511628211ULL;
}

static struct quota_traffic_item *qt_slot(struct qt_table *t, const char *tenant, int64_t hour)
{
	size_t i = (size_t)qt_hash(tenant, hour) & (t->cap - 1);

	while (t->slots[i].tenant != NULL &&
	       (t->slots[i].hour != hour || strcmp(t->slots[i].tenant, tenant) != 0))
		i = (i + 1) & (t->cap - 1);
	return &t->slots[i];
}

static void qt_grow(struct qt_table *t)
{
	struct qt_table g = { tn_mem_calloc(t->cap > 0 ? t->cap * 2 : 64,
					    sizeof(*g.slots)), t->cap > 0 ? t->cap * 2 : 64, t->n };

	for (size_t i = 0; i < t->cap; i++)
		if (t->slots[i].tenant != NULL)
			*qt_slot(&g, t->slots[i].tenant, t->slots[i].hour) = t->slots[i];
	tn_mem_free(&t->slots);
	*t = g;
}

/* Add to (tenant, hour); the tenant string is copied for a new slot.
 * false when it would be a new counter beyond limit (0: no limit). */
static bool qt_table_add(struct qt_table *t, const char *tenant, int64_t hour, int64_t msgs,
			 int64_t bytes, size_t limit)
{
	struct quota_traffic_item *s;

	if ((t->n + 1) * 2 > t->cap)
		qt_grow(t);
	s = qt_slot(t, tenant, hour);
	if (s->tenant == NULL) {
		if (limit > 0 && t->n >= limit)
			return false;
		s->tenant = tn_mem_strdup(tenant);
		s->hour = hour;
		t->n++;
	}
	s->msgs += msgs;
	s->bytes += bytes;
	return true;
}

static void qt_table_free(struct qt_table *t)
{
	for (size_t i = 0; i < t->cap; i++)
		tn_mem_free(&t->slots[i].tenant);
	tn_mem_free(&t->slots);
	t->cap = t->n = 0;
}

struct quota_traffic *quota_traffic_create(quota_traffic_send_fn *send, void *ctx,
					   size_t max_pending)
{
	struct quota_traffic *qt = tn_mem_calloc(1, sizeof(*qt));

	qt->send = send;
	qt->ctx = ctx;
	qt->max_pending = max_pending;
	pthread_mutex_init(&qt->lock, NULL);
	pthread_mutex_init(&qt->flush_lock, NULL);
	pthread_cond_init(&qt->wake, NULL);
	return qt;
}

int quota_traffic_add(struct quota_traffic *qt, const char *const *tenants, size_t n,
		      int64_t bytes, int64_t wall_time)
{
	int64_t hour = wall_time - wall_time % 3600;
	int ret = 0;

	pthread_mutex_lock(&qt->lock);
	for (size_t i = 0; i < n; i++) {
		if (!qt_table_add(&qt->table, tenants[i], hour, 1, bytes, qt->max_pending)) {
			qt->dropped++;
			ret = -1;
		}
	}
	pthread_mutex_unlock(&qt->lock);
	return ret;
}

int quota_traffic_flush(struct quota_traffic *qt)
{
	struct qt_table t;
	struct quota_traffic_item batch[QUOTA_TRAFFIC_BATCH];
	size_t i = 0, nb;
	int ret = 0;

	pthread_mutex_lock(&qt->flush_lock);
	pthread_mutex_lock(&qt->lock);
	t = qt->table;
	qt->table = (struct qt_table){ NULL, 0, 0 };
	pthread_mutex_unlock(&qt->lock);

	while (i < t.cap && ret == 0) {
		size_t first = i;

		for (nb = 0; i < t.cap && nb < QUOTA_TRAFFIC_BATCH; i++)
			if (t.slots[i].tenant != NULL)
				batch[nb++] = t.slots[i];
		if (nb == 0)
			break;
		if (qt->send(qt->ctx, batch, nb) == 0) {
			for (size_t j = first; j < i; j++)
				tn_mem_free(&t.slots[j].tenant);
			pthread_mutex_lock(&qt->lock);
			qt->sent += nb;
			pthread_mutex_unlock(&qt->lock);
		} else {
			i = first;
			ret = -1;
		}
	}
	if (ret < 0) {
		/* This batch and the rest go back; sums merge with what
		 * was added meanwhile, whatever max_pending says (they
		 * were counted already). */
		pthread_mutex_lock(&qt->lock);
		qt->failed_batches++;
		for (; i < t.cap; i++)
			if (t.slots[i].tenant != NULL)
				qt_table_add(&qt->table, t.slots[i].tenant, t.slots[i].hour,
					     t.slots[i].msgs, t.slots[i].bytes, 0);
		pthread_mutex_unlock(&qt->lock);
	}
	qt_table_free(&t);
	pthread_mutex_unlock(&qt->flush_lock);
	return ret;
}

static void *qt_thread(void *arg)
{
	struct quota_traffic *qt = arg;

	pthread_mutex_lock(&qt->lock);
	while (!qt->stop) {
		struct timespec ts;

		tn_time_deadline_timespec(tn_time_now_ms() + qt->interval, &ts);
		while (!qt->stop && pthread_cond_timedwait(&qt->wake, &qt->lock, &ts) != ETIMEDOUT)
			;
		if (qt->stop)
			break;
		pthread_mutex_unlock(&qt->lock);
		(void)quota_traffic_flush(qt);
		pthread_mutex_lock(&qt->lock);
	}
	pthread_mutex_unlock(&qt->lock);
	return NULL;
}

int quota_traffic_start(struct quota_traffic *qt, tn_msec_t interval, const char **error_r)
{
	int err;

	qt->interval = interval;
	if ((err = pthread_create(&qt->thread, NULL, qt_thread, qt)) != 0) {
		*error_r = "cannot start the traffic flusher thread";
		errno = err;
		return -1;
	}
	qt->started = true;
	return 0;
}

void quota_traffic_get_stats(struct quota_traffic *qt, struct quota_traffic_stats *stats_r)
{
	pthread_mutex_lock(&qt->lock);
	stats_r->pending = qt->table.n;
	stats_r->sent = qt->sent;
	stats_r->failed_batches = qt->failed_batches;
	stats_r->dropped = qt->dropped;
	pthread_mutex_unlock(&qt->lock);
}

void quota_traffic_destroy(struct quota_traffic **qtp)
{
	struct quota_traffic *qt = *qtp;

	if (qt == NULL)
		return;
	if (qt->started) {
		pthread_mutex_lock(&qt->lock);
		qt->stop = true;
		pthread_cond_signal(&qt->wake);
		pthread_mutex_unlock(&qt->lock);
		pthread_join(qt->thread, NULL);
	}
	(void)quota_traffic_flush(qt);
	qt_table_free(&qt->table);
	pthread_cond_destroy(&qt->wake);
	pthread_mutex_destroy(&qt->flush_lock);
	pthread_mutex_destroy(&qt->lock);
	tn_mem_free(qtp);
}

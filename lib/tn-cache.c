/*++
 * NAME
 *	tn-cache 3
 * SUMMARY
 *	the shared Redis cache (see tn-cache.h)
 * DESCRIPTION
 *	Commands go through redisCommandArgv only: keys and values are
 *	binary-safe arguments, never spliced into command text.
 *
 *	The two scripts (fill, invalidate) are loaded lazily: calls use EVALSHA with the
 *	SHA1 that SCRIPT LOAD returned, and load again after NOSCRIPT (a
 *	restarted or flushed server).
 *--*/
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <hiredis/hiredis.h>
#include <openssl/evp.h>

#include "tn-cache.h"
#include "tn-log.h"
#include "tn-mcache.h"
#include "tn-mem.h"

#define TN_CACHE_MAX_KEYS 16
#define TN_CACHE_MAX_EXTRA 4	/* commands pipelined behind a get */
#define TN_CACHE_BACKOFF_MIN 100
#define TN_CACHE_BACKOFF_MAX 5000
#define TN_CACHE_SUB_STACK (512 * 1024)
#define TN_CACHE_PING_INTERVAL 1000
#define TN_CACHE_PING_DEADLINE 2000
#define TN_CACHE_NEGATIVE_VALUE "!"
/* Decoded entries kept by their exact bytes (see tn_cache_decode_entry). */
#define TN_CACHE_DECODED_MAX 10000
#define TN_CACHE_DECODED_TTL 60000

/* KEYS[1]: generation key, KEYS[2..]: keys. ARGV[1]: generation read
 * before the directory was asked ('' = absent); then value, ttl-ms pairs. */
static const char tn_cache_script_put[] =
	"local g = redis.call('GET', KEYS[1]) or ''\n"
	"if g ~= ARGV[1] then return 0 end\n"
	"for i = 2, #KEYS do\n"
	"  redis.call('SET', KEYS[i], ARGV[2 * i - 2], 'PX', ARGV[2 * i - 1])\n"
	"end\n"
	"return 1\n";

/* KEYS[1]: generation key, KEYS[2..]: keys. ARGV[1]: channel,
 * ARGV[2]: message. */
static const char tn_cache_script_invalidate[] =
	"for i = 2, #KEYS do redis.call('DEL', KEYS[i]) end\n"
	"redis.call('INCR', KEYS[1])\n"
	"redis.call('PUBLISH', ARGV[1], ARGV[2])\n"
	"return 1\n";

enum tn_cache_script_id { TN_SCRIPT_PUT, TN_SCRIPT_INVALIDATE, TN_SCRIPT_COUNT };

static const char *const tn_cache_scripts[TN_SCRIPT_COUNT] = {
	tn_cache_script_put, tn_cache_script_invalidate,
};

struct tn_cache_conn {
	redisContext *ctx;
	tn_msec_t timeout;	/* socket timeout now set on ctx */
	bool busy;
};

struct tn_cache {
	struct tn_cache_settings set;
	char *host, *socket_path, *password, *prefix, *gen_key, *channel;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct tn_cache_conn *conns;
	tn_msec_t down_until, backoff;
	char shas[TN_SCRIPT_COUNT][41];
	struct tn_mcache *decoded;
	struct tn_cache_stats stats;
	/* subscriber */
	pthread_t sub_thread;
	bool sub_running, sub_stop;
	tn_cache_message_cb *on_message;
	tn_cache_state_cb *on_state;
	void *sub_context;
};

static __thread char tn_cache_errbuf[256];

static void tn_cache_set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void tn_cache_set_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(tn_cache_errbuf, sizeof(tn_cache_errbuf), fmt, ap);
	va_end(ap);
}

const char *tn_cache_last_error(void)
{
	return tn_cache_errbuf;
}

static void tn_cache_count(uint64_t *counter)
{
	__atomic_add_fetch(counter, 1, __ATOMIC_RELAXED);
}

static char *tn_cache_strdup_opt(const char *s)
{
	return s != NULL && *s != '\0' ? tn_mem_strdup(s) : NULL;
}

struct tn_cache *tn_cache_create(const struct tn_cache_settings *set)
{
	struct tn_cache *cache = tn_mem_calloc(1, sizeof(*cache));

	cache->set = *set;
	if (cache->set.max_connections == 0)
		cache->set.max_connections = 1;
	cache->host = tn_mem_strdup(set->host != NULL ? set->host : "127.0.0.1");
	cache->socket_path = tn_cache_strdup_opt(set->socket_path);
	cache->password = tn_cache_strdup_opt(set->password);
	cache->prefix = tn_mem_strdup(set->key_prefix != NULL ? set->key_prefix : "");
	cache->gen_key = tn_mem_printf("%sgen", cache->prefix);
	cache->channel = tn_mem_printf("%sinvalidate", cache->prefix);
	cache->set.host = cache->set.socket_path = cache->set.password = NULL;
	cache->set.key_prefix = NULL;
	cache->conns = tn_mem_calloc(cache->set.max_connections, sizeof(*cache->conns));
	cache->backoff = TN_CACHE_BACKOFF_MIN;
	cache->decoded = tn_mcache_create(TN_CACHE_DECODED_MAX);
	pthread_mutex_init(&cache->lock, NULL);
	pthread_cond_init(&cache->cond, NULL);
	return cache;
}

void tn_cache_destroy(struct tn_cache **cachep)
{
	struct tn_cache *cache = *cachep;

	if (cache == NULL)
		return;
	if (cache->sub_running) {
		__atomic_store_n(&cache->sub_stop, true, __ATOMIC_RELEASE);
		pthread_join(cache->sub_thread, NULL);
	}
	for (unsigned i = 0; i < cache->set.max_connections; i++) {
		if (cache->conns[i].ctx != NULL)
			redisFree(cache->conns[i].ctx);
	}
	if (cache->password != NULL)
		explicit_bzero(cache->password, strlen(cache->password));
	tn_mcache_destroy(&cache->decoded);
	tn_mem_free(&cache->conns);
	tn_mem_free(&cache->host);
	tn_mem_free(&cache->socket_path);
	tn_mem_free(&cache->password);
	tn_mem_free(&cache->prefix);
	tn_mem_free(&cache->gen_key);
	tn_mem_free(&cache->channel);
	pthread_mutex_destroy(&cache->lock);
	pthread_cond_destroy(&cache->cond);
	tn_mem_free(cachep);
}

void tn_cache_get_stats(struct tn_cache *cache, struct tn_cache_stats *stats_r)
{
	uint64_t *src = (uint64_t *)&cache->stats, *dst = (uint64_t *)stats_r;

	for (size_t i = 0; i < sizeof(*stats_r) / sizeof(uint64_t); i++)
		dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
}

/* --- connections ----------------------------------------------------------- */

static struct timeval tn_cache_tv(tn_msec_t limit, tn_msec_t deadline)
{
	tn_msec_t left = tn_time_left_ms(deadline);
	struct timeval tv;

	if (limit > 0 && limit < left)
		left = limit;
	if (left < 1)
		left = 1;
	tv.tv_sec = left / 1000;
	tv.tv_usec = (left % 1000) * 1000;
	return tv;
}

/* Set the socket timeout to min(limit, time left), skipping the two
 * setsockopt() calls when it is what the socket has already (the usual
 * case: the deadline is far). *current: the timeout set now, or NULL. */
static int tn_cache_set_timeout(redisContext *ctx, tn_msec_t *current, tn_msec_t limit,
				tn_msec_t deadline)
{
	struct timeval tv = tn_cache_tv(limit, deadline);
	tn_msec_t ms = (tn_msec_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;

	if (current != NULL && *current == ms)
		return 0;
	if (redisSetTimeout(ctx, tv) != REDIS_OK)
		return -1;
	if (current != NULL)
		*current = ms;
	return 0;
}

/* Run one command; NULL on transport failure (ctx unusable). */
static redisReply *tn_cache_command_t(redisContext *ctx, tn_msec_t *current, tn_msec_t limit,
				      tn_msec_t deadline, int argc, const char **argv,
				      const size_t *argvlen)
{
	redisReply *reply;

	if (tn_cache_set_timeout(ctx, current, limit, deadline) < 0)
		return NULL;
	reply = redisCommandArgv(ctx, argc, argv, argvlen);
	if (reply == NULL)
		tn_cache_set_error("redis: %s", ctx->errstr[0] != '\0' ? ctx->errstr : "no reply");
	return reply;
}

static redisReply *tn_cache_command(redisContext *ctx, tn_msec_t limit, tn_msec_t deadline,
				    int argc, const char **argv, const size_t *argvlen)
{
	return tn_cache_command_t(ctx, NULL, limit, deadline, argc, argv, argvlen);
}

static bool tn_cache_reply_ok(redisContext *ctx, tn_msec_t limit, tn_msec_t deadline,
			      int argc, const char **argv)
{
	redisReply *r = tn_cache_command(ctx, limit, deadline, argc, argv, NULL);
	bool ok = r != NULL && r->type != REDIS_REPLY_ERROR;

	if (r != NULL && r->type == REDIS_REPLY_ERROR)
		tn_cache_set_error("redis: %s: %s", argv[0], r->str);
	if (r != NULL)
		freeReplyObject(r);
	return ok;
}

static redisContext *tn_cache_connect(struct tn_cache *cache, tn_msec_t deadline)
{
	struct timeval tv = tn_cache_tv(cache->set.timeout, deadline);
	redisContext *ctx = cache->socket_path != NULL ?
		redisConnectUnixWithTimeout(cache->socket_path, tv) :
		redisConnectWithTimeout(cache->host, cache->set.port, tv);
	char db[16];

	if (ctx == NULL || ctx->err) {
		tn_cache_set_error("redis connect: %s", ctx != NULL ? ctx->errstr : "out of memory");
		goto fail;
	}
	if (cache->password != NULL &&
	    !tn_cache_reply_ok(ctx, cache->set.timeout, deadline, 2,
			       (const char *[]){ "AUTH", cache->password }))
		goto fail;
	snprintf(db, sizeof(db), "%d", cache->set.db);
	if (cache->set.db != 0 &&
	    !tn_cache_reply_ok(ctx, cache->set.timeout, deadline, 2,
			       (const char *[]){ "SELECT", db }))
		goto fail;
	return ctx;
fail:
	if (ctx != NULL)
		redisFree(ctx);
	return NULL;
}

static void tn_cache_mark_down(struct tn_cache *cache)
{
	pthread_mutex_lock(&cache->lock);
	if (cache->down_until <= tn_time_now_ms()) {
		cache->down_until = tn_time_now_ms() + cache->backoff;
		tn_warning("redis unavailable, lookups bypass it for %lld ms: %s",
			   (long long)cache->backoff, tn_cache_errbuf);
		cache->backoff = cache->backoff * 2 > TN_CACHE_BACKOFF_MAX ?
			TN_CACHE_BACKOFF_MAX : cache->backoff * 2;
	}
	pthread_mutex_unlock(&cache->lock);
}

static void tn_cache_mark_up(struct tn_cache *cache)
{
	pthread_mutex_lock(&cache->lock);
	if (cache->backoff != TN_CACHE_BACKOFF_MIN)
		tn_info("redis available again");
	cache->backoff = TN_CACHE_BACKOFF_MIN;
	pthread_mutex_unlock(&cache->lock);
}

static struct tn_cache_conn *tn_cache_pick(struct tn_cache *cache)
{
	struct tn_cache_conn *empty = NULL;

	for (unsigned i = 0; i < cache->set.max_connections; i++) {
		struct tn_cache_conn *c = &cache->conns[i];

		if (c->busy)
			continue;
		if (c->ctx != NULL)
			return c;
		if (empty == NULL)
			empty = c;
	}
	return empty;
}

/* Whether a pooled connection is still open: nothing to read and no end
 * of file or reset waiting (one non-blocking peek). A server that
 * restarted, or closed idle clients (its `timeout`), has closed every
 * pooled connection; found here, before anything is sent on it, the
 * connection is replaced at once, so no call fails on it and Redis is not
 * marked down for what is only a reconnection. (A reply nobody read would
 * also show here: that connection is not reused either.) */
static bool tn_cache_conn_open(const redisContext *ctx)
{
	char b;
	ssize_t n = recv(ctx->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);

	return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
}

static struct tn_cache_conn *tn_cache_acquire(struct tn_cache *cache, tn_msec_t deadline)
{
	struct tn_cache_conn *c = NULL;
	struct timespec ts;

	tn_time_deadline_timespec(deadline, &ts);
	pthread_mutex_lock(&cache->lock);
	while (cache->down_until <= tn_time_now_ms() && (c = tn_cache_pick(cache)) == NULL) {
		if (pthread_cond_timedwait(&cache->cond, &cache->lock, &ts) == ETIMEDOUT)
			break;
	}
	if (c != NULL)
		c->busy = true;
	pthread_mutex_unlock(&cache->lock);
	if (c == NULL) {
		tn_cache_set_error("redis marked down or no connection free in time");
		return NULL;
	}
	if (c->ctx != NULL && !tn_cache_conn_open(c->ctx)) {
		redisFree(c->ctx);
		c->ctx = NULL;
		tn_cache_count(&cache->stats.reconnects);
	}
	if (c->ctx == NULL)
		c->timeout = -1;	/* whatever the connect left: set it */
	if (c->ctx == NULL && (c->ctx = tn_cache_connect(cache, deadline)) == NULL) {
		pthread_mutex_lock(&cache->lock);
		c->busy = false;
		pthread_cond_signal(&cache->cond);
		pthread_mutex_unlock(&cache->lock);
		tn_cache_mark_down(cache);
		return NULL;
	}
	return c;
}

static void tn_cache_release(struct tn_cache *cache, struct tn_cache_conn *c, bool broken)
{
	if (broken && c->ctx != NULL) {
		redisFree(c->ctx);
		c->ctx = NULL;
	}
	pthread_mutex_lock(&cache->lock);
	c->busy = false;
	pthread_cond_signal(&cache->cond);
	pthread_mutex_unlock(&cache->lock);
	if (broken)
		tn_cache_mark_down(cache);
	else
		tn_cache_mark_up(cache);
}

/* --- scripts ------------------------------------------------------------------ */

static int tn_cache_load_script(struct tn_cache *cache, struct tn_cache_conn *c,
				enum tn_cache_script_id id, tn_msec_t deadline)
{
	const char *argv[] = { "SCRIPT", "LOAD", tn_cache_scripts[id] };
	redisReply *r = tn_cache_command_t(c->ctx, &c->timeout, cache->set.timeout, deadline,
					   3, argv, NULL);
	int ret = -1;

	if (r != NULL && r->type == REDIS_REPLY_STRING && r->len == 40) {
		pthread_mutex_lock(&cache->lock);
		memcpy(cache->shas[id], r->str, 41);
		pthread_mutex_unlock(&cache->lock);
		ret = 0;
	} else if (r != NULL) {
		tn_cache_set_error("redis: SCRIPT LOAD failed");
	}
	if (r != NULL)
		freeReplyObject(r);
	return ret;
}

struct tn_cache_args;
static redisReply *tn_cache_eval(struct tn_cache *cache, struct tn_cache_conn *c,
				 enum tn_cache_script_id id, struct tn_cache_args *a,
				 tn_msec_t deadline, bool *broken_r);

/* Build "EVALSHA sha numkeys key... arg..." in argv (caller's arrays). */
struct tn_cache_args {
	const char *argv[4 + 2 * TN_CACHE_MAX_KEYS + 4];
	size_t lens[4 + 2 * TN_CACHE_MAX_KEYS + 4];
	char *owned[2 * TN_CACHE_MAX_KEYS + 4];
	int argc, nowned;
	char sha[41], numkeys[16];
};

static void tn_cache_args_init(struct tn_cache_args *a, int numkeys)
{
	a->argc = a->nowned = 0;
	a->sha[0] = '\0';
	snprintf(a->numkeys, sizeof(a->numkeys), "%d", numkeys);
	a->argv[a->argc] = "EVALSHA"; a->lens[a->argc++] = 7;
	a->argv[a->argc] = a->sha; a->lens[a->argc++] = 40;
	a->argv[a->argc] = a->numkeys; a->lens[a->argc++] = strlen(a->numkeys);
}

static void tn_cache_args_add(struct tn_cache_args *a, const char *s, size_t len)
{
	a->argv[a->argc] = s;
	a->lens[a->argc++] = len;
}

static void tn_cache_args_add_owned(struct tn_cache_args *a, char *s)
{
	a->owned[a->nowned++] = s;
	tn_cache_args_add(a, s, strlen(s));
}

static void tn_cache_args_free(struct tn_cache_args *a)
{
	for (int i = 0; i < a->nowned; i++)
		free(a->owned[i]);
}

/* EVALSHA the script with a's keys and args; (re)load it when it is not
 * known yet or the server answers NOSCRIPT. *broken_r tells a transport
 * failure from an error reply. */
static redisReply *tn_cache_eval(struct tn_cache *cache, struct tn_cache_conn *c,
				 enum tn_cache_script_id id, struct tn_cache_args *a,
				 tn_msec_t deadline, bool *broken_r)
{
	for (int attempt = 0; attempt < 2; attempt++) {
		redisReply *r;

		pthread_mutex_lock(&cache->lock);
		memcpy(a->sha, cache->shas[id], sizeof(a->sha));
		pthread_mutex_unlock(&cache->lock);
		if (a->sha[0] == '\0' || attempt > 0) {
			if (tn_cache_load_script(cache, c, id, deadline) < 0) {
				*broken_r = c->ctx->err != 0;
				return NULL;
			}
			pthread_mutex_lock(&cache->lock);
			memcpy(a->sha, cache->shas[id], sizeof(a->sha));
			pthread_mutex_unlock(&cache->lock);
		}
		r = tn_cache_command_t(c->ctx, &c->timeout, cache->set.timeout, deadline,
				       a->argc, a->argv, a->lens);
		if (r == NULL) {
			*broken_r = true;
			return NULL;
		}
		if (r->type != REDIS_REPLY_ERROR)
			return r;
		if (strncmp(r->str, "NOSCRIPT", 8) != 0) {
			tn_cache_set_error("redis: script error: %.200s", r->str);
			freeReplyObject(r);
			return NULL;
		}
		freeReplyObject(r);
	}
	return NULL;
}

/* Run a script on a pooled connection (tn_cache_acquire() has replaced
 * one the server closed, e.g. after a Redis restart, before this). */
static redisReply *tn_cache_run(struct tn_cache *cache, enum tn_cache_script_id id,
				struct tn_cache_args *a, tn_msec_t deadline)
{
	struct tn_cache_conn *c = tn_cache_acquire(cache, deadline);
	bool broken = false;
	redisReply *r;

	tn_cache_count(&cache->stats.calls);
	if (c == NULL) {
		tn_cache_count(&cache->stats.errors);
		return NULL;
	}
	r = tn_cache_eval(cache, c, id, a, deadline, &broken);
	tn_cache_release(cache, c, broken);
	if (r == NULL) {
		tn_cache_count(&cache->stats.errors);
		/* an error reply (NOAUTH, OOM, READONLY, ...) is a setup
		 * problem: bypass Redis for a while, and say so */
		if (!broken)
			tn_cache_mark_down(cache);
	}
	return r;
}

/* --- get / put / invalidate ------------------------------------------------------ */

void tn_cache_entry_clear(struct tn_cache_entry *entry)
{
	tn_obj_unref(&entry->obj);
	entry->state = TN_CACHE_ABSENT;
}

static void tn_cache_decode_entry(struct tn_cache *cache, const redisReply *v,
				  struct tn_cache_entry *e)
{
	const char *why;

	e->state = TN_CACHE_ABSENT;
	e->obj = NULL;
	if (v->type != REDIS_REPLY_STRING)
		return;
	if (v->len == 1 && v->str[0] == '!') {
		e->state = TN_CACHE_NEGATIVE;
		return;
	}
	/* Parsing JSON is most of a Redis hit's client time; the same bytes
	 * always decode to the same object, so decoded objects are kept by
	 * their exact text (memoisation, not caching: Redis still decides
	 * which text is current, so this needs no invalidation). */
	if (v->len < 4096 && memchr(v->str, '\0', v->len) == NULL &&
	    tn_mcache_get(cache->decoded, v->str, &e->obj) == TN_MCACHE_HIT) {
		e->state = TN_CACHE_POSITIVE;
		tn_cache_count(&cache->stats.hits);
		return;
	}
	e->obj = tn_obj_decode(v->str, v->len, &why);
	if (e->obj != NULL) {
		e->state = TN_CACHE_POSITIVE;
		if (v->len < 4096 && memchr(v->str, '\0', v->len) == NULL)
			tn_mcache_put(cache->decoded, v->str, e->obj, TN_CACHE_DECODED_TTL,
				      tn_mcache_generation(cache->decoded));
	} else {
		tn_warning("redis: ignoring malformed cache entry: %s", why);
	}
	tn_cache_count(e->obj != NULL ? &cache->stats.hits : &cache->stats.misses);
}

static int tn_cache_decode_get(struct tn_cache *cache, const redisReply *r, unsigned n,
			       struct tn_cache_entry *entries_r, char generation_r[32])
{
	const redisReply *g;

	if (r->type != REDIS_REPLY_ARRAY || r->elements != n + 1)
		return -1;
	for (unsigned i = 0; i < n; i++) {
		tn_cache_decode_entry(cache, r->element[i], &entries_r[i]);
		if (entries_r[i].state == TN_CACHE_ABSENT)
			tn_cache_count(&cache->stats.misses);
		else if (entries_r[i].state == TN_CACHE_NEGATIVE)
			tn_cache_count(&cache->stats.hits);
	}
	g = r->element[n];
	snprintf(generation_r, 32, "%.*s", g->type == REDIS_REPLY_STRING ? (int)g->len : 0,
		 g->type == REDIS_REPLY_STRING ? g->str : "");
	return 0;
}

/* The commands of a pipeline on one connection: all written, then every
 * reply read, within the cache's per-command timeout and the deadline.
 * Returns 0 with replies_r[0..n-1] set, or -1 with none (the connection
 * is then in an unknown state: the caller drops it). */
static int tn_cache_pipeline(struct tn_cache_conn *c, struct tn_cache *cache,
			     tn_msec_t deadline, unsigned n, const int *argcs,
			     const char **const *argvs, redisReply **replies_r)
{
	void *reply;
	unsigned got = 0;

	if (tn_cache_set_timeout(c->ctx, &c->timeout, cache->set.timeout, deadline) < 0)
		return -1;
	for (unsigned i = 0; i < n; i++) {
		if (redisAppendCommandArgv(c->ctx, argcs[i], argvs[i], NULL) != REDIS_OK)
			goto fail;
	}
	for (; got < n; got++) {
		if (redisGetReply(c->ctx, &reply) != REDIS_OK || reply == NULL)
			goto fail;
		replies_r[got] = reply;
	}
	return 0;
fail:
	tn_cache_set_error("redis: %s", c->ctx->errstr[0] != '\0' ? c->ctx->errstr : "no reply");
	while (got > 0)
		freeReplyObject(replies_r[--got]);
	return -1;
}

/* One plain MGET: no script on the read path (a Lua call costs several
 * microseconds of server time, a GET a fraction of one). */
int tn_cache_get_with(struct tn_cache *cache, const char *const *keys, unsigned n,
		      struct tn_cache_cmd *extra, unsigned nextra, tn_msec_t deadline,
		      struct tn_cache_entry *entries_r, char generation_r[32])
{
	const char *argv[TN_CACHE_MAX_KEYS + 2];
	const char **argvv[TN_CACHE_MAX_EXTRA + 1];
	int argcs[TN_CACHE_MAX_EXTRA + 1];
	redisReply *replies[TN_CACHE_MAX_EXTRA + 1];
	char *owned[TN_CACHE_MAX_KEYS];
	struct tn_cache_conn *c;
	int ret = -1;

	if (n == 0 || n > TN_CACHE_MAX_KEYS || nextra > TN_CACHE_MAX_EXTRA)
		return -1;
	argv[0] = "MGET";
	for (unsigned i = 0; i < n; i++)
		argv[i + 1] = owned[i] = tn_mem_printf("%s%s", cache->prefix, keys[i]);
	argv[n + 1] = cache->gen_key;
	argvv[0] = argv;
	argcs[0] = (int)n + 2;
	for (unsigned i = 0; i < nextra; i++) {
		argvv[i + 1] = extra[i].argv;
		argcs[i + 1] = extra[i].argc;
		extra[i].reply = NULL;
	}
	tn_cache_count(&cache->stats.calls);
	if ((c = tn_cache_acquire(cache, deadline)) != NULL) {
		ret = tn_cache_pipeline(c, cache, deadline, nextra + 1, argcs, argvv, replies);
		tn_cache_release(cache, c, ret < 0);
	}
	for (unsigned i = 0; i < n; i++)
		tn_mem_free(&owned[i]);
	if (ret == 0) {
		ret = tn_cache_decode_get(cache, replies[0], n, entries_r, generation_r);
		if (ret < 0)
			tn_cache_set_error("redis: unexpected reply to MGET");
		freeReplyObject(replies[0]);
		for (unsigned i = 0; i < nextra; i++) {
			if (ret == 0)
				extra[i].reply = replies[i + 1];
			else
				freeReplyObject(replies[i + 1]);
		}
	}
	if (ret < 0)
		tn_cache_count(&cache->stats.errors);
	return ret;
}

int tn_cache_get(struct tn_cache *cache, const char *const *keys, unsigned n,
		 tn_msec_t deadline, struct tn_cache_entry *entries_r,
		 char generation_r[32])
{
	return tn_cache_get_with(cache, keys, n, NULL, 0, deadline, entries_r, generation_r);
}

int tn_cache_put(struct tn_cache *cache, const char *const *keys,
		 struct tn_obj *const *objs, unsigned n,
		 const char *generation, tn_msec_t deadline)
{
	struct tn_cache_args a;
	redisReply *r;
	int ret;

	if (n == 0 || n > TN_CACHE_MAX_KEYS)
		return -1;
	tn_cache_args_init(&a, (int)n + 1);
	tn_cache_args_add(&a, cache->gen_key, strlen(cache->gen_key));
	for (unsigned i = 0; i < n; i++)
		tn_cache_args_add_owned(&a, tn_mem_printf("%s%s", cache->prefix, keys[i]));
	tn_cache_args_add(&a, generation, strlen(generation));
	for (unsigned i = 0; i < n; i++) {
		tn_cache_args_add_owned(&a, objs[i] != NULL ? tn_obj_encode(objs[i]) :
					tn_mem_strdup(TN_CACHE_NEGATIVE_VALUE));
		tn_cache_args_add_owned(&a, tn_mem_printf("%lld", (long long)
			(objs[i] != NULL ? cache->set.positive_ttl : cache->set.negative_ttl)));
	}
	r = tn_cache_run(cache, TN_SCRIPT_PUT, &a, deadline);
	tn_cache_args_free(&a);
	if (r == NULL)
		return -1;
	ret = r->type == REDIS_REPLY_INTEGER ? (int)r->integer : -1;
	freeReplyObject(r);
	return ret;
}

int tn_cache_invalidate(struct tn_cache *cache, const char *const *keys,
			unsigned n, tn_msec_t deadline)
{
	struct tn_cache_args a;
	size_t msglen = 0;
	char *msg, *p;
	redisReply *r;

	if (n == 0 || n > TN_CACHE_MAX_KEYS)
		return -1;
	for (unsigned i = 0; i < n; i++)
		msglen += strlen(keys[i]) + 1;
	p = msg = tn_mem_alloc(msglen + 1);
	for (unsigned i = 0; i < n; i++)
		p += sprintf(p, "%s%s", i > 0 ? "\n" : "", keys[i]);
	tn_cache_args_init(&a, (int)n + 1);
	tn_cache_args_add(&a, cache->gen_key, strlen(cache->gen_key));
	for (unsigned i = 0; i < n; i++)
		tn_cache_args_add_owned(&a, tn_mem_printf("%s%s", cache->prefix, keys[i]));
	tn_cache_args_add(&a, cache->channel, strlen(cache->channel));
	tn_cache_args_add_owned(&a, msg);
	r = tn_cache_run(cache, TN_SCRIPT_INVALIDATE, &a, deadline);
	tn_cache_args_free(&a);
	if (r == NULL)
		return -1;
	freeReplyObject(r);
	return 0;
}

int tn_cache_usage_reply(const struct redisReply *r, int64_t *bytes_r, int64_t *messages_r)
{
	int64_t v[2] = { 0, 0 };
	char *end;

	if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2)
		return -1;
	for (unsigned i = 0; i < 2; i++) {
		if (r->element[i]->type == REDIS_REPLY_NIL)
			continue;
		if (r->element[i]->type != REDIS_REPLY_STRING)
			return -1;
		v[i] = strtoll(r->element[i]->str, &end, 10);
		if (*end != '\0')
			return -1;
	}
	*bytes_r = v[0];
	*messages_r = v[1];
	return 0;
}

int tn_cache_get_usage(struct tn_cache *cache, const char *kind, const char *id,
		       tn_msec_t deadline, int64_t *bytes_r, int64_t *messages_r)
{
	char *key = tn_mem_printf("%susage:%s:%s", cache->prefix, kind, id);
	const char *argv[] = { "HMGET", key, "bytes", "messages" };
	struct tn_cache_conn *c = tn_cache_acquire(cache, deadline);
	redisReply *r = NULL;
	int ret;

	*bytes_r = *messages_r = 0;
	if (c != NULL) {
		r = tn_cache_command_t(c->ctx, &c->timeout, cache->set.timeout, deadline,
				       4, argv, NULL);
		tn_cache_release(cache, c, r == NULL);
	}
	ret = tn_cache_usage_reply(r, bytes_r, messages_r);
	if (r != NULL)
		freeReplyObject(r);
	tn_mem_free(&key);
	return ret;
}

redisReply *tn_cache_command_argv(struct tn_cache *cache, int argc, const char **argv,
				  const size_t *argvlen, tn_msec_t deadline)
{
	struct tn_cache_conn *c = tn_cache_acquire(cache, deadline);
	redisReply *r;

	tn_cache_count(&cache->stats.calls);
	if (c == NULL) {
		tn_cache_count(&cache->stats.errors);
		return NULL;
	}
	r = tn_cache_command_t(c->ctx, &c->timeout, cache->set.timeout, deadline,
			       argc, argv, argvlen);
	tn_cache_release(cache, c, r == NULL);
	if (r == NULL)
		tn_cache_count(&cache->stats.errors);
	return r;
}

void tn_cache_script_init(struct tn_cache_script *script, const char *text)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int len = 0;

	script->text = text;
	script->sha[0] = '\0';		/* no digest: EVAL every time */
	if (EVP_Digest(text, strlen(text), md, &len, EVP_sha1(), NULL) != 1 || len != 20)
		return;
	for (unsigned i = 0; i < len; i++)
		snprintf(script->sha + 2 * i, 3, "%02x", md[i]);
}

static bool tn_cache_noscript(const redisReply *r)
{
	return r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0;
}

/* The calls of a script pipeline that the server answered NOSCRIPT, again
 * with EVAL of the text (the first one loads it) in one more pipeline on
 * the same connection. A call whose retry fails gets a NULL reply.
 * Returns false when the connection broke. */
static bool tn_cache_script_again(struct tn_cache *cache, struct tn_cache_conn *c,
				  const struct tn_cache_script *script, unsigned n,
				  const int *argcs, const char ***argvs, redisReply **replies,
				  tn_msec_t deadline)
{
	unsigned *idx, m = 0;
	const char ***again;
	int *againc;
	redisReply **got;
	bool ok = true;

	for (unsigned i = 0; i < n; i++)
		m += tn_cache_noscript(replies[i]);
	if (m == 0)
		return true;
	idx = tn_mem_calloc(m, sizeof(*idx));
	again = tn_mem_calloc(m, sizeof(*again));
	againc = tn_mem_calloc(m, sizeof(*againc));
	got = tn_mem_calloc(m, sizeof(*got));
	m = 0;
	for (unsigned i = 0; i < n; i++) {
		if (!tn_cache_noscript(replies[i]))
			continue;
		freeReplyObject(replies[i]);
		replies[i] = NULL;
		argvs[i][0] = "EVAL";
		argvs[i][1] = script->text;
		idx[m] = i;
		again[m] = argvs[i];
		againc[m++] = argcs[i];
	}
	if (tn_cache_pipeline(c, cache, deadline, m, againc, (const char **const *)again,
			      got) < 0)
		ok = false;
	for (unsigned j = 0; ok && j < m; j++)
		replies[idx[j]] = got[j];
	tn_mem_free(&got);
	tn_mem_free(&againc);
	tn_mem_free(&again);
	tn_mem_free(&idx);
	return ok;
}

int tn_cache_script_pipeline(struct tn_cache *cache, const struct tn_cache_script *script,
			     unsigned n, const int *argcs, const char **const *argvs,
			     redisReply **replies_r, tn_msec_t deadline)
{
	const char ***all;
	int *allc, ret = -1;
	bool sha = script->sha[0] != '\0', ok = false;
	struct tn_cache_conn *c;

	if (n == 0)
		return 0;
	all = tn_mem_calloc(n, sizeof(*all));
	allc = tn_mem_calloc(n, sizeof(*allc));
	for (unsigned i = 0; i < n; i++) {
		all[i] = tn_mem_calloc((size_t)argcs[i] + 2, sizeof(**all));
		memcpy(all[i] + 2, argvs[i], (size_t)argcs[i] * sizeof(**all));
		all[i][0] = sha ? "EVALSHA" : "EVAL";
		all[i][1] = sha ? script->sha : script->text;
		allc[i] = argcs[i] + 2;
	}
	tn_cache_count(&cache->stats.calls);
	if ((c = tn_cache_acquire(cache, deadline)) != NULL) {
		ret = tn_cache_pipeline(c, cache, deadline, n, allc, (const char **const *)all,
					replies_r);
		ok = ret == 0 && (!sha || tn_cache_script_again(cache, c, script, n, allc, all,
								replies_r, deadline));
		tn_cache_release(cache, c, !ok);
	}
	if (!ok)
		tn_cache_count(&cache->stats.errors);
	for (unsigned i = 0; i < n; i++)
		tn_mem_free(&all[i]);
	tn_mem_free(&allc);
	tn_mem_free(&all);
	return ret;
}

redisReply *tn_cache_script_argv(struct tn_cache *cache, const struct tn_cache_script *script,
				 int argc, const char **argv, tn_msec_t deadline)
{
	redisReply *r = NULL;

	if (tn_cache_script_pipeline(cache, script, 1, &argc,
				     (const char **const *)&argv, &r, deadline) < 0)
		return NULL;
	return r;
}

const char *tn_cache_key_prefix(const struct tn_cache *cache)
{
	return cache->prefix;
}

/* --- the subscriber ------------------------------------------------------------ */

static void tn_cache_sub_dispatch(struct tn_cache *cache, const redisReply *r)
{
	const char *keys[TN_CACHE_MAX_KEYS + 1];
	char *msg, *save = NULL;
	unsigned n = 0;

	if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
	    r->element[0]->type != REDIS_REPLY_STRING ||
	    strcmp(r->element[0]->str, "message") != 0 ||
	    r->element[2]->type != REDIS_REPLY_STRING)
		return;
	tn_cache_count(&cache->stats.invalidations_received);
	msg = tn_mem_strndup(r->element[2]->str, r->element[2]->len);
	for (char *k = strtok_r(msg, "\n", &save); k != NULL; k = strtok_r(NULL, "\n", &save)) {
		keys[n++] = k;
		if (n == TN_CACHE_MAX_KEYS) {
			keys[n] = NULL;
			cache->on_message(keys, cache->sub_context);
			n = 0;
		}
	}
	keys[n] = NULL;
	if (n > 0)
		cache->on_message(keys, cache->sub_context);
	tn_mem_free(&msg);
}

static bool tn_cache_is_pong(const redisReply *r)
{
	return r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
		r->element[0]->type == REDIS_REPLY_STRING &&
		strcmp(r->element[0]->str, "pong") == 0;
}

static bool tn_cache_is_subscribed(const redisReply *r)
{
	return r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
		r->element[0]->type == REDIS_REPLY_STRING &&
		strcmp(r->element[0]->str, "subscribe") == 0;
}

static int tn_cache_sub_send(redisContext *ctx, int argc, const char **argv)
{
	int done = 0;

	if (redisAppendCommandArgv(ctx, argc, argv, NULL) != REDIS_OK)
		return -1;
	while (!done) {
		if (redisBufferWrite(ctx, &done) != REDIS_OK)
			return -1;
	}
	return 0;
}

struct tn_cache_sub_state {
	bool subscribed;
	tn_msec_t last_pong, last_ping;
};

/* Handle every complete reply in the buffer; -1 on protocol trouble. */
static int tn_cache_sub_drain(struct tn_cache *cache, redisContext *ctx,
			      struct tn_cache_sub_state *st)
{
	void *reply;

	for (;;) {
		if (redisGetReplyFromReader(ctx, &reply) != REDIS_OK)
			return -1;
		if (reply == NULL)
			return 0;
		if (tn_cache_is_subscribed(reply) && !st->subscribed) {
			st->subscribed = true;
			tn_info("redis: subscribed to %s, in-process cache on", cache->channel);
			cache->on_state(true, cache->sub_context);
		} else if (tn_cache_is_pong(reply)) {
			st->last_pong = tn_time_now_ms();
		} else {
			tn_cache_sub_dispatch(cache, reply);
		}
		freeReplyObject(reply);
	}
}

/* One subscribed session: returns when the connection fails, stops
 * answering, or the cache is being destroyed. */
static void tn_cache_sub_session(struct tn_cache *cache, redisContext *ctx)
{
	struct tn_cache_sub_state st = { false, tn_time_now_ms(), tn_time_now_ms() };
	const char *sub[] = { "SUBSCRIBE", cache->channel };
	const char *ping[] = { "PING" };

	if (tn_cache_sub_send(ctx, 2, sub) < 0)
		return;
	while (!__atomic_load_n(&cache->sub_stop, __ATOMIC_ACQUIRE)) {
		struct pollfd pfd = { ctx->fd, POLLIN, 0 };
		tn_msec_t now = tn_time_now_ms();

		if (now - st.last_pong > TN_CACHE_PING_DEADLINE + TN_CACHE_PING_INTERVAL) {
			tn_cache_set_error("no answer to PING");
			return;
		}
		if (now - st.last_ping >= TN_CACHE_PING_INTERVAL) {
			if (tn_cache_sub_send(ctx, 1, ping) < 0)
				return;
			st.last_ping = now;
		}
		if (poll(&pfd, 1, 100) < 0 && errno != EINTR)
			return;
		if ((pfd.revents & (POLLIN | POLLHUP | POLLERR)) != 0 &&
		    redisBufferRead(ctx) != REDIS_OK)
			return;
		if (tn_cache_sub_drain(cache, ctx, &st) < 0)
			return;
	}
}

static void tn_cache_sub_sleep(struct tn_cache *cache, tn_msec_t ms)
{
	tn_msec_t until = tn_time_now_ms() + ms;

	while (!__atomic_load_n(&cache->sub_stop, __ATOMIC_ACQUIRE) &&
	       tn_time_now_ms() < until)
		poll(NULL, 0, 50);
}

static void *tn_cache_sub_main(void *arg)
{
	struct tn_cache *cache = arg;
	tn_msec_t backoff = TN_CACHE_BACKOFF_MIN;

	while (!__atomic_load_n(&cache->sub_stop, __ATOMIC_ACQUIRE)) {
		redisContext *ctx = tn_cache_connect(cache, tn_time_now_ms() + 1000);
		tn_msec_t started = tn_time_now_ms();

		if (ctx != NULL) {
			tn_cache_sub_session(cache, ctx);
			redisFree(ctx);
			cache->on_state(false, cache->sub_context);
			tn_cache_count(&cache->stats.subscription_losses);
			if (!__atomic_load_n(&cache->sub_stop, __ATOMIC_ACQUIRE))
				tn_warning("redis: invalidation subscription lost (%s); "
					   "in-process cache off until it is back", tn_cache_errbuf);
		}
		if (tn_time_now_ms() - started > 10 * TN_CACHE_BACKOFF_MAX)
			backoff = TN_CACHE_BACKOFF_MIN;
		tn_cache_sub_sleep(cache, backoff);
		backoff = backoff * 2 > TN_CACHE_BACKOFF_MAX ? TN_CACHE_BACKOFF_MAX : backoff * 2;
	}
	return NULL;
}

int tn_cache_subscribe(struct tn_cache *cache, tn_cache_message_cb *on_message,
		       tn_cache_state_cb *on_state, void *context)
{
	pthread_attr_t attr;
	int ret;

	if (cache->sub_running)
		return -1;
	cache->on_message = on_message;
	cache->on_state = on_state;
	cache->sub_context = context;
	on_state(false, context);
	/* the default stack (ulimit -s) counts against the address-space
	 * limit of the process it runs in (Dovecot's vsz_limit) */
	pthread_attr_init(&attr);
	(void)pthread_attr_setstacksize(&attr, TN_CACHE_SUB_STACK);
	ret = pthread_create(&cache->sub_thread, &attr, tn_cache_sub_main, cache);
	pthread_attr_destroy(&attr);
	if (ret != 0)
		return -1;
	cache->sub_running = true;
	return 0;
}

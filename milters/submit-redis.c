/*++
 * NAME
 *	submit-redis 3
 * SUMMARY
 *	tn-submit-milter's Redis scripts (see submit-redis.h)
 * DESCRIPTION
 *	Times are Redis's own (TIME in the script), so that every node
 *	shares one clock for a window. Scores are milliseconds; a pending
 *	member is scored reservation time - window + hold, so the one
 *	ZREMRANGEBYSCORE that ages committed members out of the window
 *	also drops reservations older than hold.
 *--*/
#include "tn-build.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "submit-redis.h"
#include "tn-cache.h"
#include "tn-log.h"
#include "tn-lookup.h"
#include "tn-mem.h"

#define SUBMIT_REDIS_KEEP (7 * 86400)	/* traffic kept after its hour */

/* KEYS: rate mbx, rate ten, rate rcpt mbx, rate rcpt ten, note mbx,
 * note ten. ARGV: window, hold, resid, rcpt number, first (0|1), the
 * four limits (0: not counted). {limit index, count, retry ms, first
 * refusal} or {0,0,0,0} when reserved. */
static const char submit_redis_reserve_lua[] =
	"local t = redis.call('TIME')\n"
	"local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
	"local w, hold = tonumber(ARGV[1]), tonumber(ARGV[2])\n"
	"local first = ARGV[5] == '1'\n"
	"local use = {}\n"
	"for i = 1, 4 do\n"
	"  use[i] = tonumber(ARGV[5 + i]) > 0 and (i > 2 or first)\n"
	"end\n"
	"for i = 1, 4 do\n"
	"  if use[i] then\n"
	"    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - w)\n"
	"    local n = redis.call('ZCARD', KEYS[i])\n"
	"    if n >= tonumber(ARGV[5 + i]) then\n"
	"      local o = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')\n"
	"      local retry = w\n"
	"      if o[2] then retry = tonumber(o[2]) + w - now end\n"
	"      local note = KEYS[5]\n"
	"      if i % 2 == 0 then note = KEYS[6] end\n"
	"      local fresh = 0\n"
	"      if redis.call('SET', note, '1', 'NX', 'PX', w) then fresh = 1 end\n"
	"      return {i, n, retry, fresh}\n"
	"    end\n"
	"  end\n"
	"end\n"
	"for i = 1, 4 do\n"
	"  if use[i] then\n"
	"    local m = 'r:' .. ARGV[3]\n"
	"    if i > 2 then m = m .. ':' .. ARGV[4] end\n"
	"    redis.call('ZADD', KEYS[i], now - w + hold, m)\n"
	"    redis.call('PEXPIRE', KEYS[i], w + hold)\n"
	"  end\n"
	"end\n"
	"if first then redis.call('DEL', KEYS[5], KEYS[6]) end\n"
	"return {0, 0, 0, 0}\n";

/* KEYS: the four rate keys, traffic. ARGV: resid, reserved, count,
 * window, late (0|1), traffic (0|1), bytes, expire-at (Unix s), the
 * rate keys holding members of resid ("1" or "0" for each of the four:
 * the limits set when it was reserved). The pending members are scored
 * now in place (ZADD XX: the member exists, one call per key, nothing
 * allocated) instead of renamed; recipients above count go. Only a late
 * commit (its reservation older than half the hold: the key's TTL, set
 * by the reservation to window + hold, may end before now + window)
 * needs the TTL looked at. */
static const char submit_redis_commit_lua[] =
	"local t = redis.call('TIME')\n"
	"local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
	"local m = 'r:' .. ARGV[1]\n"
	"local k, n = tonumber(ARGV[2]), tonumber(ARGV[3])\n"
	"local w, late = tonumber(ARGV[4]), ARGV[5] == '1'\n"
	"for i = 1, 4 do\n"
	"  if string.byte(ARGV[9], i) == 49 then\n"
	"    if i <= 2 then\n"
	"      redis.call('ZADD', KEYS[i], 'XX', now, m)\n"
	"    else\n"
	"      local a = {'ZADD', KEYS[i], 'XX'}\n"
	"      for j = 1, math.min(k, n) do\n"
	"        a[#a + 1] = now\n"
	"        a[#a + 1] = m .. ':' .. j\n"
	"      end\n"
	"      if #a > 3 then redis.call(unpack(a)) end\n"
	"      if n < k then\n"
	"        a = {'ZREM', KEYS[i]}\n"
	"        for j = n + 1, k do a[#a + 1] = m .. ':' .. j end\n"
	"        redis.call(unpack(a))\n"
	"      end\n"
	"    end\n"
	"    if late and redis.call('PTTL', KEYS[i]) < w then\n"
	"      redis.call('PEXPIRE', KEYS[i], w)\n"
	"    end\n"
	"  end\n"
	"end\n"
	"if ARGV[6] == '1' then\n"
	"  if redis.call('HINCRBY', KEYS[5], 'msgs_out', 1) == 1 then\n"
	"    redis.call('EXPIREAT', KEYS[5], ARGV[8])\n"
	"  end\n"
	"  redis.call('HINCRBY', KEYS[5], 'bytes_out', ARGV[7])\n"
	"end\n"
	"return 1\n";

/* KEYS: the four rate keys. ARGV: resid, reserved. */
static const char submit_redis_release_lua[] =
	"for i = 1, 2 do redis.call('ZREM', KEYS[i], 'r:' .. ARGV[1]) end\n"
	"for i = 3, 4 do\n"
	"  for j = 1, tonumber(ARGV[2]) do\n"
	"    redis.call('ZREM', KEYS[i], 'r:' .. ARGV[1] .. ':' .. j)\n"
	"  end\n"
	"end\n"
	"return 1\n";

/* KEYS: rejected:<tenant>:<reason>. ARGV: interval ms. The suppressed
 * count when this refusal is reported, else -1 (counted). The same
 * semantics as tn-quota-milter's (milters/quota-redis.c). */
static const char submit_redis_rejected_lua[] =
	"local t = redis.call('TIME')\n"
	"local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
	"local u = tonumber(redis.call('HGET', KEYS[1], 'until') or '0')\n"
	"if now < u then\n"
	"  redis.call('HINCRBY', KEYS[1], 'suppressed', 1)\n"
	"  return -1\n"
	"end\n"
	"local s = tonumber(redis.call('HGET', KEYS[1], 'suppressed') or '0')\n"
	"redis.call('HSET', KEYS[1], 'until', now + tonumber(ARGV[1]), 'suppressed', 0)\n"
	"redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 10)\n"
	"return s\n";

enum submit_redis_script_id {
	SUBMIT_SCRIPT_RESERVE,
	SUBMIT_SCRIPT_COMMIT,
	SUBMIT_SCRIPT_RELEASE,
	SUBMIT_SCRIPT_REJECTED,
	SUBMIT_SCRIPTS
};

static const char *const submit_redis_sources[SUBMIT_SCRIPTS] = {
	submit_redis_reserve_lua, submit_redis_commit_lua, submit_redis_release_lua,
	submit_redis_rejected_lua,
};

struct submit_redis {
	struct tn_cache *cache;
	tn_msec_t timeout;
	struct tn_cache_script scripts[SUBMIT_SCRIPTS];
};

/* Most arguments of one script call after the script: numkeys, 6 keys,
 * 9 arguments. */
#define SUBMIT_REDIS_ARGV_MAX 18

struct submit_redis *submit_redis_create(const struct tn_conf *conf, const char **error_r)
{
	struct submit_redis *sr;
	struct tn_cache *cache;

	if (!tn_conf_bool(conf, "redis_enabled")) {
		*error_r = "redis_enabled = no: send limits and traffic counters need Redis";
		return NULL;
	}
	if ((cache = tn_lookup_redis_create(conf, error_r)) == NULL)
		return NULL;
	sr = tn_mem_calloc(1, sizeof(*sr));
	sr->cache = cache;
	sr->timeout = tn_conf_time_ms(conf, "redis_timeout");
	for (int i = 0; i < SUBMIT_SCRIPTS; i++)
		tn_cache_script_init(&sr->scripts[i], submit_redis_sources[i]);
	return sr;
}

void submit_redis_destroy(struct submit_redis **srp)
{
	struct submit_redis *sr = *srp;

	if (sr == NULL)
		return;
	tn_cache_destroy(&sr->cache);
	tn_mem_free(srp);
}

tn_msec_t submit_redis_timeout(const struct submit_redis *sr)
{
	return sr->timeout;
}

void submit_redis_period(int64_t wall_time, char buf[11])
{
	time_t t = (time_t)wall_time;
	struct tm tm;

	gmtime_r(&t, &tm);
	if (strftime(buf, 11, "%Y%m%d%H", &tm) != 10)
		snprintf(buf, 11, "0000000000");
}

void submit_redis_resid(char buf[SUBMIT_REDIS_RESID_SIZE])
{
	unsigned char b[8];
	static _Atomic uint64_t fallback;

	if (getrandom(b, sizeof(b), GRND_NONBLOCK) != (ssize_t)sizeof(b)) {
		uint64_t v = (uint64_t)tn_time_now_us() ^ (++fallback << 40);

		memcpy(b, &v, sizeof(b));
	}
	for (size_t i = 0; i < sizeof(b); i++)
		snprintf(buf + 2 * i, 3, "%02x", b[i]);
}

/* The script's reply (the caller frees it), or NULL after a transport
 * failure or an error reply (logged). */
static redisReply *submit_redis_run(struct submit_redis *sr, enum submit_redis_script_id id,
				    int nkeys, const char **keys, int nargs, const char **args,
				    tn_msec_t deadline)
{
	const char *argv[SUBMIT_REDIS_ARGV_MAX];
	char numkeys[8];
	int argc = 0;
	redisReply *r;

	snprintf(numkeys, sizeof(numkeys), "%d", nkeys);
	argv[argc++] = numkeys;
	for (int i = 0; i < nkeys; i++)
		argv[argc++] = keys[i];
	for (int i = 0; i < nargs; i++)
		argv[argc++] = args[i];
	r = tn_cache_script_argv(sr->cache, &sr->scripts[id], argc, argv, deadline);
	if (r != NULL && r->type == REDIS_REPLY_ERROR) {
		tn_error("redis: tn-submit-milter script: %s", r->str);
		freeReplyObject(r);
		r = NULL;
	}
	return r;
}

/* The six keys of a mailbox and tenant (caller frees them). */
static void submit_redis_rate_keys(struct submit_redis *sr, const char *mailbox,
				   const char *tenant, char *keys[6])
{
	const char *p = tn_cache_key_prefix(sr->cache);

	keys[0] = tn_mem_printf("%srate:mbx:%s", p, mailbox);
	keys[1] = tn_mem_printf("%srate:ten:%s", p, tenant);
	keys[2] = tn_mem_printf("%srate:rcpt:mbx:%s", p, mailbox);
	keys[3] = tn_mem_printf("%srate:rcpt:ten:%s", p, tenant);
	keys[4] = tn_mem_printf("%srate:note:mbx:%s", p, mailbox);
	keys[5] = tn_mem_printf("%srate:note:ten:%s", p, tenant);
}

static void submit_redis_keys_free(char **keys, int n)
{
	for (int i = 0; i < n; i++)
		tn_mem_free(&keys[i]);
}

static long long submit_redis_elem(const redisReply *r, size_t i)
{
	return r->type == REDIS_REPLY_ARRAY && i < r->elements &&
	       r->element[i]->type == REDIS_REPLY_INTEGER ? r->element[i]->integer : -1;
}

int submit_redis_reserve(struct submit_redis *sr, const char *mailbox, const char *tenant,
			 const char *resid, unsigned rcpt, bool first,
			 const struct submit_policy_limits *limits, tn_msec_t window,
			 tn_msec_t hold, tn_msec_t deadline, struct submit_redis_outcome *out)
{
	char *keys[6], w[24], h[24], n[16], lim[4][24];
	const char *args[9] = { w, h, resid, n, first ? "1" : "0", lim[0], lim[1], lim[2],
				lim[3] };
	redisReply *r;
	long long which;

	memset(out, 0, sizeof(*out));
	snprintf(w, sizeof(w), "%" PRId64, (int64_t)window);
	snprintf(h, sizeof(h), "%" PRId64, (int64_t)hold);
	snprintf(n, sizeof(n), "%u", rcpt);
	for (int i = 0; i < 4; i++)
		snprintf(lim[i], sizeof(lim[i]), "%" PRId64, limits->value[i + 1]);
	submit_redis_rate_keys(sr, mailbox, tenant, keys);
	r = submit_redis_run(sr, SUBMIT_SCRIPT_RESERVE, 6, (const char **)keys, 9, args,
			     deadline);
	submit_redis_keys_free(keys, 6);
	if (r == NULL)
		return -1;
	which = submit_redis_elem(r, 0);
	if (which < 0 || which > 4) {
		freeReplyObject(r);
		tn_error("redis: tn-submit-milter reserve: unexpected answer");
		return -1;
	}
	out->limit = (enum submit_policy_limit)which;
	out->count = submit_redis_elem(r, 1);
	out->retry_ms = submit_redis_elem(r, 2);
	out->notify = submit_redis_elem(r, 3) == 1;
	freeReplyObject(r);
	return 0;
}

unsigned submit_redis_keys_used(const struct submit_policy_limits *limits, bool msg,
				unsigned rcpts)
{
	unsigned used = 0;

	for (int i = 0; i < 4; i++) {
		if (limits->value[i + 1] > 0 && (i < 2 ? msg : rcpts > 0))
			used |= 1u << i;
	}
	return used;
}

/* The arguments of one commit script call (submit_redis_commit_lua). */
struct submit_redis_commit_args {
	char *keys[6];
	char k[16], c[16], w[24], late[2], b[24], at[24], used[5], period[11];
	const char *argv[1 + 5 + 9];
};

static void submit_redis_commit_args(struct submit_redis *sr, const struct submit_redis_commit *c,
				     tn_msec_t now, struct submit_redis_commit_args *a)
{
	int argc = 0;

	submit_redis_rate_keys(sr, c->mailbox, c->tenant, a->keys);
	tn_mem_free(&a->keys[5]);
	tn_mem_free(&a->keys[4]);
	submit_redis_period(c->wall_time, a->period);
	a->keys[4] = tn_mem_printf("%straffic:%s:%s", tn_cache_key_prefix(sr->cache), c->tenant,
				   a->period);
	snprintf(a->k, sizeof(a->k), "%u", c->reserved);
	snprintf(a->c, sizeof(a->c), "%u", c->count);
	snprintf(a->w, sizeof(a->w), "%" PRId64, (int64_t)c->window);
	snprintf(a->late, sizeof(a->late), "%d", 2 * (now - c->reserved_at) >= c->hold);
	snprintf(a->b, sizeof(a->b), "%" PRId64, c->bytes);
	snprintf(a->at, sizeof(a->at), "%" PRId64,
		 c->wall_time - c->wall_time % 3600 + 3600 + SUBMIT_REDIS_KEEP);
	for (int i = 0; i < 4; i++)
		a->used[i] = (c->keys_used & (1u << i)) != 0 ? '1' : '0';
	a->used[4] = '\0';
	a->argv[argc++] = "5";
	for (int i = 0; i < 5; i++)
		a->argv[argc++] = a->keys[i];
	a->argv[argc++] = c->resid;
	a->argv[argc++] = a->k;
	a->argv[argc++] = a->c;
	a->argv[argc++] = a->w;
	a->argv[argc++] = a->late;
	a->argv[argc++] = c->traffic ? "1" : "0";
	a->argv[argc++] = a->b;
	a->argv[argc++] = a->at;
	a->argv[argc++] = a->used;
}

unsigned submit_redis_commit_batch(struct submit_redis *sr,
				   const struct submit_redis_commit *const *commits, unsigned n,
				   bool *ok_r, tn_msec_t deadline)
{
	struct submit_redis_commit_args *a = tn_mem_calloc(n, sizeof(*a));
	const char **argvs[SUBMIT_REDIS_BATCH_MAX];
	int argcs[SUBMIT_REDIS_BATCH_MAX];
	redisReply *r[SUBMIT_REDIS_BATCH_MAX];
	tn_msec_t now = tn_time_now_ms();
	unsigned ok = 0;

	if (n > SUBMIT_REDIS_BATCH_MAX) {
		tn_mem_free(&a);
		ok = submit_redis_commit_batch(sr, commits, SUBMIT_REDIS_BATCH_MAX, ok_r, deadline);
		return ok + submit_redis_commit_batch(sr, commits + SUBMIT_REDIS_BATCH_MAX,
						      n - SUBMIT_REDIS_BATCH_MAX,
						      ok_r + SUBMIT_REDIS_BATCH_MAX, deadline);
	}
	for (unsigned i = 0; i < n; i++) {
		submit_redis_commit_args(sr, commits[i], now, &a[i]);
		argvs[i] = a[i].argv;
		argcs[i] = (int)(sizeof(a[i].argv) / sizeof(a[i].argv[0]));
		ok_r[i] = false;
	}
	if (tn_cache_script_pipeline(sr->cache, &sr->scripts[SUBMIT_SCRIPT_COMMIT], n, argcs,
				     (const char **const *)argvs, r, deadline) == 0) {
		for (unsigned i = 0; i < n; i++) {
			if (r[i] != NULL && r[i]->type == REDIS_REPLY_ERROR)
				tn_error("redis: tn-submit-milter script: %s", r[i]->str);
			ok_r[i] = r[i] != NULL && r[i]->type != REDIS_REPLY_ERROR;
			ok += ok_r[i];
			if (r[i] != NULL)
				freeReplyObject(r[i]);
		}
	}
	for (unsigned i = 0; i < n; i++)
		submit_redis_keys_free(a[i].keys, 5);
	tn_mem_free(&a);
	return ok;
}

int submit_redis_commit(struct submit_redis *sr, const struct submit_redis_commit *c,
			tn_msec_t deadline)
{
	bool ok;

	return submit_redis_commit_batch(sr, &c, 1, &ok, deadline) == 1 ? 0 : -1;
}

int submit_redis_release(struct submit_redis *sr, const char *mailbox, const char *tenant,
			 const char *resid, unsigned reserved, tn_msec_t deadline)
{
	char *keys[6], k[16];
	const char *args[2] = { resid, k };
	redisReply *r;

	snprintf(k, sizeof(k), "%u", reserved);
	submit_redis_rate_keys(sr, mailbox, tenant, keys);
	r = submit_redis_run(sr, SUBMIT_SCRIPT_RELEASE, 4, (const char **)keys, 2, args,
			     deadline);
	submit_redis_keys_free(keys, 6);
	if (r == NULL)
		return -1;
	freeReplyObject(r);
	return 0;
}

int submit_redis_rejected(struct submit_redis *sr, const char *tenant, const char *reason,
			  tn_msec_t interval, tn_msec_t deadline, int64_t *suppressed_r)
{
	char *key = tn_mem_printf("%srejected:%s:%s", tn_cache_key_prefix(sr->cache), tenant,
				  reason), iv[24];
	const char *args[1] = { iv };
	redisReply *r;
	long long v;

	*suppressed_r = 0;
	snprintf(iv, sizeof(iv), "%" PRId64, (int64_t)interval);
	r = submit_redis_run(sr, SUBMIT_SCRIPT_REJECTED, 1, (const char **)&key, 1, args,
			     deadline);
	tn_mem_free(&key);
	if (r == NULL)
		return -1;
	v = r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
	freeReplyObject(r);
	if (v < 0)
		return 0;
	*suppressed_r = v;
	return 1;
}

/*++
 * NAME
 *	tn-usage 3
 * SUMMARY
 *	storage usage counters in Redis (see tn-usage.h)
 * DESCRIPTION
 *	Each operation is one command or one EVAL on the shared cache's
 *	connection pool. The scripts read and write only the keys they are
 *	given (KEYS[]), so they hold on a Redis Cluster slot per tenant as
 *	long as the keys share a hash tag (not used today).
 *--*/
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "tn-cache.h"
#include "tn-log.h"
#include "tn-lookup.h"
#include "tn-mem.h"
#include "tn-usage.h"

/* KEYS: tenant counter, mailbox counter ('' = none), tenant warnings,
 * mailbox warnings. ARGV: dbytes, dmessages, tenant limit, mailbox
 * limit, thresholds... Returns {bytes, messages, mailbox bytes, mailbox
 * messages, newly crossed thresholds (tenant t, mailbox -t)...}. */
static const char tn_usage_script_add[] =
	"local function add(k)\n"
	"  local b = redis.call('HINCRBY', k, 'bytes', ARGV[1])\n"
	"  local m = redis.call('HINCRBY', k, 'messages', ARGV[2])\n"
	"  if b < 0 then b = 0; redis.call('HSET', k, 'bytes', 0) end\n"
	"  if m < 0 then m = 0; redis.call('HSET', k, 'messages', 0) end\n"
	"  return b, m\n"
	"end\n"
	"local r = {}\n"
	"local function warn(k, usage, lim, sign)\n"
	"  if lim <= 0 then return end\n"
	"  for i = 5, #ARGV do\n"
	"    if usage >= lim * tonumber(ARGV[i]) / 100 then\n"
	"      if tonumber(ARGV[1]) > 0 and redis.call('HSETNX', k, ARGV[i], '1') == 1 then\n"
	"        r[#r + 1] = sign * tonumber(ARGV[i])\n"
	"      end\n"
	"    else\n"
	"      redis.call('HDEL', k, ARGV[i])\n"
	"    end\n"
	"  end\n"
	"end\n"
	"local b, m = add(KEYS[1])\n"
	"local mb, mm = 0, 0\n"
	"if KEYS[2] ~= '' then mb, mm = add(KEYS[2]) end\n"
	"r = {b, m, mb, mm}\n"
	"warn(KEYS[3], b, tonumber(ARGV[3]), 1)\n"
	"if KEYS[2] ~= '' then warn(KEYS[4], mb, tonumber(ARGV[4]), -1) end\n"
	"return r\n";

/* KEYS: usage:exc:ten:<tenant>. ARGV: window ms. Returns the refusals
 * suppressed since the last report when this one is to be reported,
 * else -1 (and counts it). */
static const char tn_usage_script_exceeded[] =
	"local t = redis.call('TIME')\n"
	"local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
	"local u = tonumber(redis.call('HGET', KEYS[1], 'until') or '0')\n"
	"if now < u then\n"
	"  redis.call('HINCRBY', KEYS[1], 'suppressed', 1)\n"
	"  return -1\n"
	"end\n"
	"local s = tonumber(redis.call('HGET', KEYS[1], 'suppressed') or '0')\n"
	"redis.call('HSET', KEYS[1], 'until', now + tonumber(ARGV[1]), 'suppressed', 0)\n"
	"return s\n";

/* KEYS: tenant counter, mailbox counters... ARGV: '1' to write.
 * Returns {sum bytes, sum messages, old bytes, old messages}. */
static const char tn_usage_script_sum[] =
	"local b, m = 0, 0\n"
	"for i = 2, #KEYS do\n"
	"  local v = redis.call('HMGET', KEYS[i], 'bytes', 'messages')\n"
	"  b = b + (tonumber(v[1]) or 0)\n"
	"  m = m + (tonumber(v[2]) or 0)\n"
	"end\n"
	"local o = redis.call('HMGET', KEYS[1], 'bytes', 'messages')\n"
	"if ARGV[1] == '1' then\n"
	"  redis.call('HSET', KEYS[1], 'bytes', string.format('%d', b),\n"
	"             'messages', string.format('%d', m))\n"
	"end\n"
	"return {b, m, tonumber(o[1]) or 0, tonumber(o[2]) or 0}\n";

/* KEYS: usage:mbx:<address>, usage:ten:<tenant>. Both counters, absent
 * as 0, in one round trip. */
static const char tn_usage_script_pair[] =
	"local m = redis.call('HMGET', KEYS[1], 'bytes', 'messages')\n"
	"local t = redis.call('HMGET', KEYS[2], 'bytes', 'messages')\n"
	"return {tonumber(m[1]) or 0, tonumber(m[2]) or 0,\n"
	"        tonumber(t[1]) or 0, tonumber(t[2]) or 0}\n";

struct tn_usage {
	struct tn_cache *cache;
	tn_msec_t timeout;
	struct tn_cache_script add, sum, exceeded, pair;
};

struct tn_usage *tn_usage_create(const struct tn_conf *conf, const char **error_r)
{
	struct tn_usage *usage;
	struct tn_cache *cache;

	if (!tn_conf_bool(conf, "redis_enabled")) {
		*error_r = "redis_enabled = no: usage counters need Redis";
		return NULL;
	}
	if ((cache = tn_lookup_redis_create(conf, error_r)) == NULL)
		return NULL;
	usage = tn_mem_calloc(1, sizeof(*usage));
	usage->cache = cache;
	usage->timeout = tn_conf_time_ms(conf, "redis_timeout");
	tn_cache_script_init(&usage->add, tn_usage_script_add);
	tn_cache_script_init(&usage->sum, tn_usage_script_sum);
	tn_cache_script_init(&usage->exceeded, tn_usage_script_exceeded);
	tn_cache_script_init(&usage->pair, tn_usage_script_pair);
	return usage;
}

void tn_usage_destroy(struct tn_usage **usagep)
{
	struct tn_usage *usage = *usagep;

	if (usage == NULL)
		return;
	tn_cache_destroy(&usage->cache);
	tn_mem_free(usagep);
}

tn_msec_t tn_usage_timeout(const struct tn_usage *usage)
{
	return usage->timeout;
}

static char *tn_usage_key(struct tn_usage *usage, const char *kind, const char *id)
{
	return tn_mem_printf("%susage:%s:%s", tn_cache_key_prefix(usage->cache), kind, id);
}

static bool tn_usage_reply_ok(redisReply *r, int type)
{
	if (r == NULL)
		return false;
	if (r->type == REDIS_REPLY_ERROR)
		tn_log(TN_LOG_ERROR, NULL, "redis: usage counters: %s", r->str);
	return r->type == type;
}

static int tn_usage_decode_add(const redisReply *r, unsigned n,
			       struct tn_usage_result *result_r)
{
	if (r->elements < 4 || r->elements > 4 + 2 * (size_t)n)
		return -1;
	for (size_t i = 0; i < r->elements; i++) {
		if (r->element[i]->type != REDIS_REPLY_INTEGER)
			return -1;
	}
	result_r->bytes = r->element[0]->integer;
	result_r->messages = r->element[1]->integer;
	result_r->mailbox_bytes = r->element[2]->integer;
	result_r->mailbox_messages = r->element[3]->integer;
	for (size_t i = 4; i < r->elements; i++) {
		long long t = r->element[i]->integer;

		if (t > 0)
			result_r->crossed[result_r->n_crossed++] = (unsigned)t;
		else
			result_r->crossed_mailbox[result_r->n_crossed_mailbox++] = (unsigned)-t;
	}
	return 0;
}

int tn_usage_add(struct tn_usage *usage, const char *tenant, const char *address,
		 int64_t dbytes, int64_t dmessages, const struct tn_usage_limits *limits,
		 tn_msec_t deadline, struct tn_usage_result *result_r)
{
	static const struct tn_usage_limits none;
	char *keys[4], nums[4 + TN_USAGE_THRESHOLDS_MAX][24];
	const char *argv[1 + 4 + 4 + TN_USAGE_THRESHOLDS_MAX];
	unsigned n;
	int argc = 0, ret = -1;
	redisReply *r;

	memset(result_r, 0, sizeof(*result_r));
	if (limits == NULL)
		limits = &none;
	n = limits->n_thresholds > TN_USAGE_THRESHOLDS_MAX ? TN_USAGE_THRESHOLDS_MAX :
		limits->n_thresholds;
	keys[0] = tn_usage_key(usage, "ten", tenant);
	keys[1] = address != NULL ? tn_usage_key(usage, "mbx", address) : tn_mem_strdup("");
	keys[2] = tn_usage_key(usage, "warn:ten", tenant);
	keys[3] = address != NULL ? tn_usage_key(usage, "warn:mbx", address) : tn_mem_strdup("");
	snprintf(nums[0], sizeof(nums[0]), "%" PRId64, dbytes);
	snprintf(nums[1], sizeof(nums[1]), "%" PRId64, dmessages);
	snprintf(nums[2], sizeof(nums[2]), "%" PRId64, limits->tenant_limit);
	snprintf(nums[3], sizeof(nums[3]), "%" PRId64, limits->mailbox_limit);
	for (unsigned i = 0; i < n; i++)
		snprintf(nums[4 + i], sizeof(nums[0]), "%u", limits->thresholds[i]);
	argv[argc++] = "4";
	for (unsigned i = 0; i < 4; i++)
		argv[argc++] = keys[i];
	for (unsigned i = 0; i < 4 + n; i++)
		argv[argc++] = nums[i];
	r = tn_cache_script_argv(usage->cache, &usage->add, argc, argv, deadline);
	if (tn_usage_reply_ok(r, REDIS_REPLY_ARRAY))
		ret = tn_usage_decode_add(r, n, result_r);
	if (r != NULL)
		freeReplyObject(r);
	for (unsigned i = 0; i < 4; i++)
		tn_mem_free(&keys[i]);
	return ret;
}

int tn_usage_get(struct tn_usage *usage, const char *kind, const char *id,
		 tn_msec_t deadline, int64_t *bytes_r, int64_t *messages_r)
{
	return tn_cache_get_usage(usage->cache, kind, id, deadline, bytes_r, messages_r);
}

int tn_usage_get_pair(struct tn_usage *usage, const char *address, const char *tenant,
		      tn_msec_t deadline, int64_t mailbox_r[2], int64_t tenant_r[2])
{
	char *keys[2] = { tn_usage_key(usage, "mbx", address),
			  tn_usage_key(usage, "ten", tenant) };
	const char *argv[] = { "2", keys[0], keys[1] };
	redisReply *r = tn_cache_script_argv(usage->cache, &usage->pair, 3, argv, deadline);
	int ret = -1;

	if (tn_usage_reply_ok(r, REDIS_REPLY_ARRAY) && r->elements == 4 &&
	    r->element[0]->type == REDIS_REPLY_INTEGER) {
		for (size_t i = 0; i < 4; i++)
			(i < 2 ? mailbox_r : tenant_r)[i % 2] = r->element[i]->integer;
		ret = 0;
	}
	if (r != NULL)
		freeReplyObject(r);
	tn_mem_free(&keys[0]);
	tn_mem_free(&keys[1]);
	return ret;
}

int tn_usage_set(struct tn_usage *usage, const char *kind, const char *id,
		 int64_t bytes, int64_t messages, tn_msec_t deadline)
{
	char *key = tn_usage_key(usage, kind, id), b[24], m[24];
	const char *argv[] = { "HSET", key, "bytes", b, "messages", m };
	redisReply *r;
	int ret;

	snprintf(b, sizeof(b), "%" PRId64, bytes);
	snprintf(m, sizeof(m), "%" PRId64, messages);
	r = tn_cache_command_argv(usage->cache, 6, argv, NULL, deadline);
	ret = tn_usage_reply_ok(r, REDIS_REPLY_INTEGER) ? 0 : -1;
	if (r != NULL)
		freeReplyObject(r);
	tn_mem_free(&key);
	return ret;
}

int tn_usage_sum_tenant(struct tn_usage *usage, const char *tenant,
			const char *const *addresses, size_t n, bool write,
			tn_msec_t deadline, int64_t sums_r[2], int64_t old_r[2])
{
	const char **argv = tn_mem_calloc(n + 3, sizeof(*argv));
	char **keys = tn_mem_calloc(n + 1, sizeof(*keys)), numkeys[24];
	redisReply *r;
	int ret = -1;

	snprintf(numkeys, sizeof(numkeys), "%zu", n + 1);
	keys[0] = tn_usage_key(usage, "ten", tenant);
	for (size_t i = 0; i < n; i++)
		keys[i + 1] = tn_usage_key(usage, "mbx", addresses[i]);
	argv[0] = numkeys;
	for (size_t i = 0; i <= n; i++)
		argv[1 + i] = keys[i];
	argv[n + 2] = write ? "1" : "0";
	r = tn_cache_script_argv(usage->cache, &usage->sum, (int)n + 3, argv, deadline);
	if (tn_usage_reply_ok(r, REDIS_REPLY_ARRAY) && r->elements == 4) {
		for (size_t i = 0; i < 4; i++)
			(i < 2 ? sums_r : old_r)[i % 2] = r->element[i]->integer;
		ret = 0;
	}
	if (r != NULL)
		freeReplyObject(r);
	for (size_t i = 0; i <= n; i++)
		tn_mem_free(&keys[i]);
	tn_mem_free(&keys);
	tn_mem_free(&argv);
	return ret;
}

int tn_usage_exceeded(struct tn_usage *usage, const char *kind, const char *id,
		      tn_msec_t window, tn_msec_t deadline, int64_t *suppressed_r)
{
	char *key = tn_mem_printf("%susage:exc:%s:%s", tn_cache_key_prefix(usage->cache),
				  kind, id), w[24];
	const char *argv[] = { "1", key, w };
	redisReply *r;
	int ret = -1;

	*suppressed_r = 0;
	snprintf(w, sizeof(w), "%" PRId64, window);
	r = tn_cache_script_argv(usage->cache, &usage->exceeded, 3, argv, deadline);
	if (tn_usage_reply_ok(r, REDIS_REPLY_INTEGER)) {
		ret = r->integer >= 0 ? 1 : 0;
		*suppressed_r = r->integer >= 0 ? r->integer : 0;
	}
	if (r != NULL)
		freeReplyObject(r);
	tn_mem_free(&key);
	return ret;
}

static int tn_usage_cmp(const void *a, const void *b)
{
	unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;

	return x < y ? -1 : x > y;
}

int tn_usage_parse_thresholds(const char *text, unsigned thresholds_r[TN_USAGE_THRESHOLDS_MAX],
			      const char **error_r)
{
	unsigned n = 0, out = 0;
	const char *p = text;

	while (*p != '\0') {
		char *end;
		unsigned long v;

		while (isspace((unsigned char)*p) || *p == ',')
			p++;
		if (*p == '\0')
			break;
		errno = 0;
		v = strtoul(p, &end, 10);
		if (end == p || errno != 0 || v < 1 || v > 1000 ||
		    (*end != '\0' && !isspace((unsigned char)*end) && *end != ',')) {
			*error_r = "warning thresholds are percents 1..1000 separated by spaces";
			return -1;
		}
		if (n == TN_USAGE_THRESHOLDS_MAX) {
			*error_r = "too many warning thresholds (at most 8)";
			return -1;
		}
		thresholds_r[n++] = (unsigned)v;
		p = end;
	}
	qsort(thresholds_r, n, sizeof(*thresholds_r), tn_usage_cmp);
	for (unsigned i = 0; i < n; i++) {
		if (out == 0 || thresholds_r[out - 1] != thresholds_r[i])
			thresholds_r[out++] = thresholds_r[i];
	}
	return (int)out;
}

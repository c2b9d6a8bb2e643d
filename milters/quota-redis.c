/*++
 * NAME
 *	quota-redis 3
 * SUMMARY
 *	tn-quota-milter's own Redis keys (see quota-redis.h)
 *--*/
#include "tn-build.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "quota-redis.h"
#include "tn-cache.h"
#include "tn-log.h"
#include "tn-lookup.h"
#include "tn-mem.h"

#define QUOTA_REDIS_KEEP (7 * 86400)	/* traffic kept after its hour */

/* KEYS: traffic hashes. ARGV: per key messages, bytes, expire-at (Unix s). */
static const char quota_redis_script_traffic[] =
	"for i = 1, #KEYS do\n"
	"  local j = (i - 1) * 3\n"
	"  redis.call('HINCRBY', KEYS[i], 'msgs_in', ARGV[j + 1])\n"
	"  redis.call('HINCRBY', KEYS[i], 'bytes_in', ARGV[j + 2])\n"
	"  redis.call('EXPIREAT', KEYS[i], ARGV[j + 3])\n"
	"end\n"
	"return #KEYS\n";

/* KEYS: rejected:<tenant>:<reason>. ARGV: window ms. The suppressed
 * count when this refusal is reported, else -1 (and it is counted). */
static const char quota_redis_script_rejected[] =
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

struct quota_redis {
	struct tn_cache *cache;
	tn_msec_t timeout;
	struct tn_cache_script traffic, rejected;
	tn_msec_t traffic_warned;	/* last warning of a failed batch */
};

struct quota_redis *quota_redis_create(const struct tn_conf *conf, const char **error_r)
{
	struct quota_redis *qr;
	struct tn_cache *cache;

	if (!tn_conf_bool(conf, "redis_enabled")) {
		*error_r = "redis_enabled = no: quotas and traffic counters need Redis";
		return NULL;
	}
	if ((cache = tn_lookup_redis_create(conf, error_r)) == NULL)
		return NULL;
	qr = tn_mem_calloc(1, sizeof(*qr));
	qr->cache = cache;
	qr->timeout = tn_conf_time_ms(conf, "redis_timeout");
	tn_cache_script_init(&qr->traffic, quota_redis_script_traffic);
	tn_cache_script_init(&qr->rejected, quota_redis_script_rejected);
	return qr;
}

void quota_redis_destroy(struct quota_redis **qrp)
{
	struct quota_redis *qr = *qrp;

	if (qr == NULL)
		return;
	tn_cache_destroy(&qr->cache);
	tn_mem_free(qrp);
}

tn_msec_t quota_redis_timeout(const struct quota_redis *qr)
{
	return qr->timeout;
}

void quota_redis_period(int64_t wall_time, char buf[11])
{
	time_t t = (time_t)wall_time;
	struct tm tm;

	gmtime_r(&t, &tm);
	if (strftime(buf, 11, "%Y%m%d%H", &tm) != 10)
		snprintf(buf, 11, "0000000000");
}

static int quota_redis_eval(struct quota_redis *qr, const struct tn_cache_script *script,
			    int argc, const char **argv, tn_msec_t deadline, long long *value_r)
{
	redisReply *r = tn_cache_script_argv(qr->cache, script, argc, argv, deadline);
	int ret = -1;

	if (r == NULL)
		return -1;
	if (r->type == REDIS_REPLY_INTEGER) {
		*value_r = r->integer;
		ret = 0;
	} else if (r->type == REDIS_REPLY_ERROR) {
		tn_error("redis: tn-quota-milter keys: %s", r->str);
	}
	freeReplyObject(r);
	return ret;
}

int quota_redis_traffic(void *ctx, const struct quota_traffic_item *items, size_t n)
{
	struct quota_redis *qr = ctx;
	const char *argv[1 + QUOTA_TRAFFIC_BATCH * 4];
	char *keys[QUOTA_TRAFFIC_BATCH], nkeys[24], nums[QUOTA_TRAFFIC_BATCH][3][24], period[11];
	long long v;
	int argc = 0, ret;

	if (n == 0)
		return 0;
	if (n > QUOTA_TRAFFIC_BATCH)
		return -1;
	snprintf(nkeys, sizeof(nkeys), "%zu", n);
	argv[argc++] = nkeys;
	for (size_t i = 0; i < n; i++) {
		quota_redis_period(items[i].hour, period);
		keys[i] = tn_mem_printf("%straffic:%s:%s", tn_cache_key_prefix(qr->cache),
					items[i].tenant, period);
		argv[argc++] = keys[i];
	}
	for (size_t i = 0; i < n; i++) {
		snprintf(nums[i][0], sizeof(nums[i][0]), "%" PRId64, items[i].msgs);
		snprintf(nums[i][1], sizeof(nums[i][1]), "%" PRId64, items[i].bytes);
		snprintf(nums[i][2], sizeof(nums[i][2]), "%" PRId64,
			 items[i].hour + 3600 + QUOTA_REDIS_KEEP);
		for (int k = 0; k < 3; k++)
			argv[argc++] = nums[i][k];
	}
	ret = quota_redis_eval(qr, &qr->traffic, argc, argv,
			       tn_time_now_ms() + qr->timeout, &v);
	for (size_t i = 0; i < n; i++)
		tn_mem_free(&keys[i]);
	if (ret < 0 && tn_time_now_ms() - qr->traffic_warned >= 10000) {
		/* one flusher at a time calls this: no lock needed */
		qr->traffic_warned = tn_time_now_ms();
		tn_warning("traffic counters kept for the next batch: Redis did not take them: %s",
			   tn_cache_last_error());
	}
	return ret;
}

int quota_redis_rejected(struct quota_redis *qr, const char *tenant, const char *reason,
			 tn_msec_t window, tn_msec_t deadline, int64_t *suppressed_r)
{
	char *key = tn_mem_printf("%srejected:%s:%s", tn_cache_key_prefix(qr->cache), tenant,
				  reason), w[24];
	const char *argv[] = { "1", key, w };
	long long v = 0;
	int ret;

	*suppressed_r = 0;
	snprintf(w, sizeof(w), "%" PRId64, window);
	ret = quota_redis_eval(qr, &qr->rejected, 3, argv, deadline, &v);
	tn_mem_free(&key);
	if (ret < 0)
		return -1;
	if (v < 0)
		return 0;
	*suppressed_r = v;
	return 1;
}

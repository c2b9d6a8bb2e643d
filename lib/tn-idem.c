/*++
 * NAME
 *	tn-idem 3
 * SUMMARY
 *	idempotency records in Redis (see tn-idem.h)
 * DESCRIPTION
 *	Commands go through the lookup cache's connection pool
 *	(tn_cache_command_argv, as tn-usage.c does): its per-command
 *	timeout, deadline and down-marking -- after a failure calls fail
 *	at once for a short backoff, so a stopped Redis costs a request
 *	nothing but the error. Unlike the lookup cache, a failure here
 *	reaches the caller.
 *--*/
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <hiredis/hiredis.h>
#include <openssl/sha.h>

#include "tn-cache.h"
#include "tn-idem.h"
#include "tn-lookup.h"
#include "tn-mem.h"

#define TN_IDEM_NONCE_LEN 16
#define TN_IDEM_HEAD_LEN (1 + 2 * TN_IDEM_FP_LEN)	/* "R"/"D" and the fingerprint */

/* KEYS[1]: the key; ARGV[1]: our reservation, ARGV[2]: payload, ARGV[3]: ttl ms */
static const char tn_idem_script_commit[] =
	"if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end\n"
	"redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])\n"
	"return 1\n";

/* KEYS[1]: the key; ARGV[1]: our reservation */
static const char tn_idem_script_release[] =
	"if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end\n"
	"redis.call('DEL', KEYS[1])\n"
	"return 1\n";

struct tn_idem {
	bool enabled;
	char *prefix;
	struct tn_cache *cache;
};

static __thread char tn_idem_errbuf[256];

static const char *tn_idem_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *tn_idem_err(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(tn_idem_errbuf, sizeof(tn_idem_errbuf), fmt, ap);
	va_end(ap);
	return tn_idem_errbuf;
}

struct tn_idem *tn_idem_create(const struct tn_conf *conf, const char **error_r)
{
	struct tn_cache *cache = NULL;
	struct tn_idem *im;

	if (tn_conf_bool(conf, "redis_enabled") &&
	    (cache = tn_lookup_redis_create(conf, error_r)) == NULL)
		return NULL;
	im = tn_mem_calloc(1, sizeof(*im));
	im->enabled = cache != NULL;
	im->prefix = tn_mem_strdup(tn_conf_str(conf, "redis_key_prefix"));
	im->cache = cache;
	return im;
}

void tn_idem_destroy(struct tn_idem **imp)
{
	struct tn_idem *im = *imp;

	if (im == NULL)
		return;
	if (im->cache != NULL)
		tn_cache_destroy(&im->cache);
	tn_mem_free(&im->prefix);
	tn_mem_free(imp);
}

void tn_idem_slot_clear(struct tn_idem_slot *slot)
{
	tn_mem_free(&slot->rkey);
	tn_mem_free(&slot->marker);
}

/* Runs one command; NULL with *error_r on a transport failure or an
 * error reply. */
static redisReply *tn_idem_run(struct tn_idem *im, tn_msec_t deadline, int argc,
			       const char **argv, const size_t *lens, const char **error_r)
{
	redisReply *r;

	if (!im->enabled) {
		*error_r = "redis is disabled (redis_enabled = no)";
		return NULL;
	}
	r = tn_cache_command_argv(im->cache, argc, argv, lens, deadline);
	if (r == NULL) {
		*error_r = tn_idem_err("redis: %s: %s", argv[0], tn_cache_last_error());
		return NULL;
	}
	if (r->type == REDIS_REPLY_ERROR) {
		*error_r = tn_idem_err("redis: %s: %.200s", argv[0], r->str);
		freeReplyObject(r);
		return NULL;
	}
	return r;
}

/* --- records ---------------------------------------------------------------------- */

static void tn_idem_hex(char *out, const unsigned char *in, size_t len)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < len; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 0x0f];
	}
	out[2 * len] = '\0';
}

static bool tn_idem_scope_ok(const char *scope)
{
	size_t len = strlen(scope);

	if (len == 0 || len > 64)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (!isdigit((unsigned char)scope[i]) && !islower((unsigned char)scope[i]))
			return false;
	}
	return true;
}

/* "R" fingerprint nonce */
static char *tn_idem_marker(const unsigned char fp[TN_IDEM_FP_LEN])
{
	unsigned char nonce[TN_IDEM_NONCE_LEN];
	char *m = tn_mem_alloc(TN_IDEM_HEAD_LEN + 2 * TN_IDEM_NONCE_LEN + 1);
	size_t got = 0;
	ssize_t n;

	while (got < sizeof(nonce)) {
		n = getrandom(nonce + got, sizeof(nonce) - got, 0);
		if (n < 0 && errno != EINTR)
			abort();	/* the kernel has getrandom(2) since 3.17 */
		if (n > 0)
			got += (size_t)n;
	}
	m[0] = 'R';
	tn_idem_hex(m + 1, fp, TN_IDEM_FP_LEN);
	tn_idem_hex(m + TN_IDEM_HEAD_LEN, nonce, sizeof(nonce));
	return m;
}

/* What the GET of an existing record means. */
static enum tn_idem_state tn_idem_judge(const redisReply *r, const char *fphex,
					char **payload_r, size_t *len_r, const char **error_r)
{
	if (r->type != REDIS_REPLY_STRING || r->len < TN_IDEM_HEAD_LEN ||
	    (r->str[0] != 'R' && r->str[0] != 'D')) {
		*error_r = "redis: an idempotency record of unknown form";
		return TN_IDEM_ERROR;
	}
	if (memcmp(r->str + 1, fphex, 2 * TN_IDEM_FP_LEN) != 0)
		return TN_IDEM_MISMATCH;
	if (r->str[0] == 'R')
		return TN_IDEM_BUSY;
	*len_r = r->len - TN_IDEM_HEAD_LEN;
	*payload_r = tn_mem_alloc(*len_r + 1);
	memcpy(*payload_r, r->str + TN_IDEM_HEAD_LEN, *len_r);
	(*payload_r)[*len_r] = '\0';
	return TN_IDEM_DONE;
}

/* One SET NX; then, when the key exists, one GET. -1: gone in between
 * (expired or released): try again. */
static int tn_idem_try(struct tn_idem *im, struct tn_idem_slot *slot, tn_msec_t running_ttl,
		       tn_msec_t deadline, enum tn_idem_state *state_r, char **payload_r,
		       size_t *len_r, const char **error_r)
{
	char ttl[32];
	redisReply *r;

	snprintf(ttl, sizeof(ttl), "%lld", (long long)running_ttl);
	r = tn_idem_run(im, deadline, 6, (const char *[]){ "SET", slot->rkey, slot->marker,
							    "NX", "PX", ttl }, NULL, error_r);
	if (r == NULL) {
		*state_r = TN_IDEM_ERROR;
		return 0;
	}
	*state_r = r->type == REDIS_REPLY_STATUS ? TN_IDEM_NEW : TN_IDEM_BUSY;
	freeReplyObject(r);
	if (*state_r == TN_IDEM_NEW)
		return 0;
	r = tn_idem_run(im, deadline, 2, (const char *[]){ "GET", slot->rkey }, NULL, error_r);
	if (r == NULL) {
		*state_r = TN_IDEM_ERROR;
		return 0;
	}
	if (r->type == REDIS_REPLY_NIL) {
		freeReplyObject(r);
		return -1;
	}
	*state_r = tn_idem_judge(r, slot->marker + 1, payload_r, len_r, error_r);
	freeReplyObject(r);
	return 0;
}

enum tn_idem_state tn_idem_begin(struct tn_idem *im, const char *scope, const char *key,
				 const unsigned char fp[TN_IDEM_FP_LEN], tn_msec_t running_ttl,
				 tn_msec_t deadline, struct tn_idem_slot *slot,
				 char **payload_r, size_t *len_r, const char **error_r)
{
	unsigned char kd[SHA256_DIGEST_LENGTH];
	char khex[2 * SHA256_DIGEST_LENGTH + 1];
	enum tn_idem_state state = TN_IDEM_ERROR;

	*payload_r = NULL;
	*len_r = 0;
	slot->rkey = slot->marker = NULL;
	if (!tn_idem_scope_ok(scope)) {
		*error_r = "idempotency scope: expected 1 to 64 of [0-9a-z]";
		return TN_IDEM_ERROR;
	}
	SHA256((const unsigned char *)key, strlen(key), kd);
	tn_idem_hex(khex, kd, sizeof(kd));
	slot->rkey = tn_mem_printf("%sidem:%s:%s", im->prefix, scope, khex);
	slot->marker = tn_idem_marker(fp);
	/* a record that vanishes between SET NX and GET: at most a few rounds */
	for (int round = 0; round < 3; round++) {
		if (tn_idem_try(im, slot, running_ttl, deadline, &state, payload_r, len_r,
				error_r) == 0)
			break;
		state = TN_IDEM_BUSY;
	}
	if (state != TN_IDEM_NEW)
		tn_idem_slot_clear(slot);
	return state;
}

static int tn_idem_eval(struct tn_idem *im, const char *script, struct tn_idem_slot *slot,
			const char *payload, size_t len, tn_msec_t ttl, tn_msec_t deadline,
			const char **error_r)
{
	char ttlbuf[32];
	const char *argv[7] = { "EVAL", script, "1", slot->rkey, slot->marker, payload, ttlbuf };
	size_t lens[7] = { 4, strlen(script), 1, strlen(slot->rkey), strlen(slot->marker), len, 0 };
	redisReply *r;
	int ret = -1;

	snprintf(ttlbuf, sizeof(ttlbuf), "%lld", (long long)ttl);
	lens[6] = strlen(ttlbuf);
	r = tn_idem_run(im, deadline, payload != NULL ? 7 : 5, argv, lens, error_r);
	if (r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer == 1)
		ret = 0;
	else if (r != NULL)
		*error_r = "redis: the reservation had expired (another request may hold the key)";
	if (r != NULL)
		freeReplyObject(r);
	tn_idem_slot_clear(slot);
	return ret;
}

int tn_idem_commit(struct tn_idem *im, struct tn_idem_slot *slot, const char *payload,
		   size_t len, tn_msec_t ttl, tn_msec_t deadline, const char **error_r)
{
	char *value = tn_mem_alloc(TN_IDEM_HEAD_LEN + len + 1);
	int ret;

	value[0] = 'D';
	memcpy(value + 1, slot->marker + 1, 2 * TN_IDEM_FP_LEN);
	memcpy(value + TN_IDEM_HEAD_LEN, payload, len);
	value[TN_IDEM_HEAD_LEN + len] = '\0';
	ret = tn_idem_eval(im, tn_idem_script_commit, slot, value, TN_IDEM_HEAD_LEN + len, ttl,
			   deadline, error_r);
	tn_mem_free(&value);
	return ret;
}

int tn_idem_release(struct tn_idem *im, struct tn_idem_slot *slot, tn_msec_t deadline,
		    const char **error_r)
{
	return tn_idem_eval(im, tn_idem_script_release, slot, NULL, 0, 0, deadline, error_r);
}

/*++
 * NAME
 *	tn-cache 3h
 * SUMMARY
 *	the shared Redis cache: lookups, fills, invalidation, subscription
 * DESCRIPTION
 *	Redis holds one entry per directory object under
 *	<prefix>ten:<id>, <prefix>dom:<domain> and <prefix>adr:<address>
 *	(mailboxes and aliases share the address space), either the JSON of
 *	tn_obj_encode() with the positive TTL or "!" (the directory has no
 *	such object) with the negative TTL. docs/redis-keys.md is the full
 *	layout.
 *
 *	Reads: tn_cache_get() is one MGET of the keys asked for plus the
 *	invalidation generation. (The lookup adds the tenant it expects to the
 *	same MGET, so a resolve is one round trip; see tn-lookup.c.)
 *
 *	Fills never overwrite a newer invalidation: tn_cache_put() stores
 *	only if <prefix>gen still holds the generation read before the
 *	directory was asked. Invalidation (tn_cache_invalidate()) deletes
 *	the keys, increments <prefix>gen and publishes the keys on
 *	<prefix>invalidate, atomically.
 *
 *	Every call has a deadline (the socket timeout is set to what is left
 *	of it before each command). A pooled connection is checked before
 *	use (a non-blocking peek): one the server has closed (a restart, its
 *	idle `timeout`) is replaced before anything is sent on it. A failed
 *	connection marks Redis down for a backoff that doubles from 100 ms
 *	to 5 s, during which calls fail at once: with Redis gone, lookups
 *	go straight to the directory at directory speed. Calls return -1 on any failure; the cache is an
 *	accelerator, never the authority.
 *
 *	The subscriber runs in a thread of its own with its own connection:
 *	it calls on_message for every invalidation, on_state(true) once
 *	subscribed and on_state(false) as soon as the subscription is lost or
 *	Redis stops answering its PINGs (a frozen server), then reconnects.
 *--*/
#ifndef TN_CACHE_H
#define TN_CACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "tn-record.h"
#include "tn-time.h"

struct tn_cache_settings {
	const char *host;
	int port;
	const char *socket_path;	/* overrides host/port when set */
	const char *password;		/* NULL: no AUTH */
	int db;
	tn_msec_t timeout;		/* per command, within the deadline */
	unsigned max_connections;
	const char *key_prefix;		/* e.g. "tn:v1:" */
	tn_msec_t positive_ttl;
	tn_msec_t negative_ttl;
};

enum tn_cache_state {
	TN_CACHE_ABSENT,	/* not in Redis */
	TN_CACHE_NEGATIVE,	/* cached "no such object" */
	TN_CACHE_POSITIVE,
};

struct tn_cache_entry {
	enum tn_cache_state state;
	struct tn_obj *obj;	/* POSITIVE: a reference the caller owns */
};

struct tn_cache_stats {
	uint64_t calls;
	uint64_t errors;
	uint64_t hits;
	uint64_t misses;
	uint64_t invalidations_received;
	uint64_t subscription_losses;
	uint64_t reconnects;		/* pooled connections found closed */
};

/* Invalidation message: the keys (without prefix), NUL-separated list. */
typedef void tn_cache_message_cb(const char *const *keys, void *context);
typedef void tn_cache_state_cb(bool subscribed, void *context);

struct tn_cache;

struct tn_cache *tn_cache_create(const struct tn_cache_settings *set);
void tn_cache_destroy(struct tn_cache **cache);

/* Read keys[0..n-1] (without prefix) and the generation in one MGET.
 * entries_r[i] describes keys[i]; *generation_r is the invalidation
 * generation ("" when never set). Returns 0, or -1 when Redis could not
 * answer. */
int tn_cache_get(struct tn_cache *cache, const char *const *keys, unsigned n,
		 tn_msec_t deadline, struct tn_cache_entry *entries_r,
		 char generation_r[32]);
/* The same MGET with more commands pipelined behind it on the same
 * connection: one round trip for all (e.g. a recipient's usage counters
 * read with its lookup). extra[i].argv holds whole keys (the caller adds
 * the prefix); extra[i].reply is set to its reply (the caller frees it
 * with freeReplyObject(), an error reply included), or NULL. Returns as
 * tn_cache_get(); on -1 no reply is set. */
struct tn_cache_cmd {
	int argc;
	const char **argv;
	struct redisReply *reply;
};
int tn_cache_get_with(struct tn_cache *cache, const char *const *keys, unsigned n,
		      struct tn_cache_cmd *extra, unsigned nextra, tn_msec_t deadline,
		      struct tn_cache_entry *entries_r, char generation_r[32]);
/* Store objects (NULL = negative) under keys if the generation is still
 * 'generation'. Returns 1 stored, 0 refused (invalidated meanwhile),
 * -1 error. */
int tn_cache_put(struct tn_cache *cache, const char *const *keys,
		 struct tn_obj *const *objs, unsigned n,
		 const char *generation, tn_msec_t deadline);
/* Delete keys, bump the generation, publish. 0 or -1. */
int tn_cache_invalidate(struct tn_cache *cache, const char *const *keys,
			unsigned n, tn_msec_t deadline);
/* Usage counters: <prefix>usage:<kind>:<id> hash {bytes, messages}.
 * kind is "mbx" or "ten". Absent counters read as 0. 0 or -1. */
int tn_cache_get_usage(struct tn_cache *cache, const char *kind, const char *id,
		       tn_msec_t deadline, int64_t *bytes_r, int64_t *messages_r);
/* A reply to HMGET <usage key> bytes messages: 0 with both counters
 * (absent = 0), or -1 when it is not that (an error, a non-number). */
struct redisReply;
int tn_cache_usage_reply(const struct redisReply *r, int64_t *bytes_r, int64_t *messages_r);

/* Run one command on a pooled connection, with the cache's per-command
 * timeout and deadline and its down-marking (a failed call makes the
 * next ones fail at once for the backoff): for other lib/ modules that
 * keep data of their own in the same Redis (tn-usage.c). Returns the
 * reply, which the caller frees with freeReplyObject() -- an error reply
 * included -- or NULL on a transport failure (tn_cache_last_error()). */
struct redisReply;
struct redisReply *tn_cache_command_argv(struct tn_cache *cache, int argc,
					 const char **argv, const size_t *argvlen,
					 tn_msec_t deadline);
/* A Lua script run with tn_cache_script_argv(): its text and SHA1 (hex),
 * which tn_cache_script_init() computes once. */
struct tn_cache_script {
	const char *text;
	char sha[41];
};
void tn_cache_script_init(struct tn_cache_script *script, const char *text);
/* EVALSHA the script on a pooled connection, and EVAL its text when the
 * server does not know it (NOSCRIPT: a restarted Redis or SCRIPT FLUSH),
 * which also loads it. argv is what follows the script in EVAL: numkeys,
 * the keys, the arguments. Returns the reply as tn_cache_command_argv()
 * does -- an error reply included. */
struct redisReply *tn_cache_script_argv(struct tn_cache *cache,
					const struct tn_cache_script *script, int argc,
					const char **argv, tn_msec_t deadline);
/* n calls of the script in one pipeline on one pooled connection (one
 * round trip, one write and one read for all): argcs[i] and argvs[i] as
 * tn_cache_script_argv()'s argc and argv, within the per-command timeout
 * and the deadline. The calls answered NOSCRIPT are sent again, in one
 * more pipeline on the same connection, with EVAL of the text (which
 * loads it). Returns 0 with replies_r[0..n-1] set -- error replies
 * included, which the caller frees with freeReplyObject() like the
 * others; NULL for a NOSCRIPT call whose retry failed in transport (the
 * other replies stand: those calls ran) -- or -1 with none set (Redis
 * marked down, no connection in time, a transport failure:
 * tn_cache_last_error()). A failure marks Redis down like any call. */
int tn_cache_script_pipeline(struct tn_cache *cache, const struct tn_cache_script *script,
			     unsigned n, const int *argcs, const char **const *argvs,
			     struct redisReply **replies_r, tn_msec_t deadline);
/* redis_key_prefix, as given. */
const char *tn_cache_key_prefix(const struct tn_cache *cache);

/* Start the subscriber thread. on_state(false) is the initial state. */
int tn_cache_subscribe(struct tn_cache *cache, tn_cache_message_cb *on_message,
		       tn_cache_state_cb *on_state, void *context);

void tn_cache_entry_clear(struct tn_cache_entry *entry);
void tn_cache_get_stats(struct tn_cache *cache, struct tn_cache_stats *stats_r);
const char *tn_cache_last_error(void);

#endif

/*++
 * NAME
 *	tn-auth-cache 3h
 * SUMMARY
 *	Dovecot's own auth cache, kept fresh by the invalidation channel
 * DESCRIPTION
 *	With auth_cache_size set, Dovecot's auth process answers a login
 *	from its own cache (passdb_cache) without asking the driver at
 *	all, until auth_cache_ttl: by itself it would keep a suspended
 *	mailbox, an old password or an old store for that long. This
 *	module removes Dovecot's cached entries when provisioning changes
 *	what they were made from, so the cache is as fresh as the lookup
 *	library's own (docs/dovecot.md, "Dovecot's auth cache"):
 *
 *	- an invalidation of "adr:<address>" removes the entries of that
 *	  user and of every login name seen resolving to it (an alias
 *	  login's entries are kept under the alias);
 *	- any other invalidation ("dom:", "ten:": a cascade that may
 *	  touch any number of users) and a full queue empty the cache;
 *	- while the invalidation subscription is down (Redis unreachable,
 *	  redis_enabled = no, or not yet up), nothing would say what
 *	  changed: the cache is emptied at once and then every
 *	  TN_AUTH_CACHE_DOWN_FLUSH_MS;
 *	- an answer whose lookup began before an invalidation arrived
 *	  (read from the old data, then cached by Dovecot after the flush)
 *	  has its user's entries removed again right after Dovecot cached
 *	  it (tn_auth_cache_begin / tn_auth_cache_answered).
 *
 *	The invalidations arrive in the lookup library's subscriber thread
 *	(tn_lookup_set_listener); they are queued and handed to the
 *	ioloop's thread through a pipe, because Dovecot's cache may only be
 *	touched there. Entries are removed with auth_cache_clear_users()
 *	(passdb and userdb entries whose key begins with the user name:
 *	the driver's cache key is %u) and auth_cache_clear(); with
 *	auth_debug each flush is logged.
 * THREADS
 *	Everything but the listener runs in the ioloop's thread.
 *--*/
#ifndef TN_AUTH_CACHE_H
#define TN_AUTH_CACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "tn-lookup.h"

/* While unsubscribed, the cache is emptied this often. */
#define TN_AUTH_CACHE_DOWN_FLUSH_MS 500

struct tn_auth_cache;
struct auth_cache;

struct tn_auth_cache_stats {
	uint64_t invalidations;		/* keys received */
	uint64_t user_flushes;		/* auth_cache_clear_users() calls */
	uint64_t full_flushes;		/* auth_cache_clear() calls */
	uint64_t late_flushes;		/* answers older than an invalidation */
	uint64_t entries_removed;
};

/* In the ioloop's thread, before tn_lookup_start(lk): listen to lk's
 * invalidations for cache (Dovecot's passdb_cache, not NULL). NULL with
 * *error_r when the pipe cannot be made. */
struct tn_auth_cache *tn_auth_cache_create(struct tn_lookup *lk, struct auth_cache *cache,
					   const char **error_r);
/* After the lookup stopped calling the listener (tn_lookup_destroy);
 * logs what it did (tn_auth_cache_stats) at info level. */
void tn_auth_cache_destroy(struct tn_auth_cache **ac);

/* A lookup begins: the mark tn_auth_cache_answered() compares. */
uint64_t tn_auth_cache_begin(struct tn_auth_cache *ac);
/* Its answer has gone to Dovecot, which may have cached it: when an
 * invalidation arrived since begin, remove the entries of login (the
 * name the lookup was for) and of user (the name it resolved to; NULL
 * or the same: none). */
void tn_auth_cache_answered(struct tn_auth_cache *ac, uint64_t begin, const char *login,
			    const char *user);
/* login resolved to address, another name (an alias login): remember it
 * so that an invalidation of address removes login's entries too. */
void tn_auth_cache_alias(struct tn_auth_cache *ac, const char *login, const char *address);

#endif

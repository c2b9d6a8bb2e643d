/*++
 * NAME
 *	tn-lookup 3h
 * SUMMARY
 *	resolve a mail address, domain or tenant: memory, Redis, LDAP
 * DESCRIPTION
 *	The one lookup path of every tenantmail component.
 *
 *	tn_lookup_resolve() answers TN_FOUND with the account (tenant,
 *	status after the tenant -> domain -> mailbox cascade with its reason,
 *	limits after inheritance, store host and pool, alias targets
 *	expanded), TN_NOTFOUND when the directory said there is no such
 *	address (or the domain is not ours, or the address cannot be valid),
 *	and TN_TEMPFAIL when no answer could be had before the deadline.
 *	Callers map TN_TEMPFAIL to their protocol's temporary failure.
 *
 *	Layers: the in-process cache (memory_cache_ttl, dropped on
 *	invalidation, bypassed while the invalidation subscription is down),
 *	then Redis (one MGET for address, domain and tenant), then LDAP (one
 *	search for address, domain and tenant; the tenant is known from a
 *	per-process hint, verified against the domain entry read in the same
 *	request; without a hint it is read by DN afterwards). Every
 *	answer from a deeper layer fills the layers above it. Concurrent
 *	misses for the same key are coalesced: one thread asks, the others
 *	wait for its answer (within their own deadline).
 *
 *	Thread-safe. Blocking with a deadline: a deadline of 0 means
 *	lookup_timeout from now. The libevent adapter (tn-lookup-event.h)
 *	runs lookups without blocking an event loop.
 *
 *	Error texts returned through error_r live in thread-local storage
 *	until the thread's next lookup call.
 *
 *	Programs that link the library must ignore SIGPIPE (hiredis writes
 *	to sockets without MSG_NOSIGNAL): a Redis server that went away must
 *	be an error return, not the death of the process. Postfix, Dovecot
 *	and libmilter programs do; tenantmail's own main()s do it first.
 *--*/
#ifndef TN_LOOKUP_H
#define TN_LOOKUP_H

#include <stdbool.h>
#include <stdint.h>

#include "tn-conf.h"
#include "tn-record.h"
#include "tn-time.h"

extern const struct tn_conf_param tn_lookup_params[];

/* tn_lookup_create() flags */
#define TN_LOOKUP_NO_MEMORY_CACHE 0x01	/* one-shot tools: no in-process cache,
					   no subscriber thread */

struct tn_lookup_stats {
	uint64_t resolves;
	uint64_t memory_answers;
	uint64_t redis_answers;
	uint64_t ldap_answers;
	uint64_t tempfails;
	uint64_t coalesced;	/* lookups that waited for another's fetch */
	uint64_t subscribed;	/* 1 while the invalidation subscription is up */
};

struct tn_lookup;

/* Read the settings (and password files) from conf. NULL with *error_r
 * on bad settings. No network traffic happens here. */
struct tn_lookup *tn_lookup_create(const struct tn_conf *conf, unsigned flags,
				   const char **error_r);
/* Start the invalidation subscriber (after fork and privilege drop).
 * It runs while Redis is enabled and the in-process cache is in use, or
 * when a listener is set. */
int tn_lookup_start(struct tn_lookup *lk, const char **error_r);

/* A listener of the invalidation channel, for a caller that keeps
 * answers of its own (Dovecot's auth cache, say). Set it before
 * tn_lookup_start(); it is called in the subscriber thread:
 * on_keys(keys) after the in-process cache has dropped them (a
 * NULL-terminated list of "adr:<address>", "dom:<domain>",
 * "ten:<tenant>" ..., valid during the call), and on_state(subscribed)
 * whenever the subscription comes up or is lost (while it is down,
 * nothing tells the listener about changes). Both must be quick and
 * must not call the lookup. */
typedef void tn_lookup_keys_cb(const char *const *keys, void *context);
typedef void tn_lookup_state_cb(bool subscribed, void *context);
void tn_lookup_set_listener(struct tn_lookup *lk, tn_lookup_keys_cb *on_keys,
			    tn_lookup_state_cb *on_state, void *context);
void tn_lookup_destroy(struct tn_lookup **lk);

enum tn_result tn_lookup_resolve(struct tn_lookup *lk, const char *address,
				 tn_msec_t deadline, struct tn_account **acct_r,
				 const char **error_r);
enum tn_result tn_lookup_resolve_domain(struct tn_lookup *lk, const char *domain,
					tn_msec_t deadline, struct tn_account **acct_r,
					const char **error_r);
enum tn_result tn_lookup_resolve_tenant(struct tn_lookup *lk, const char *tenant,
					tn_msec_t deadline, struct tn_account **acct_r,
					const char **error_r);
/* Usage counters (docs/redis-keys.md) that tn_lookup_resolve_usage()
 * read in the lookup's own Redis round trip. */
struct tn_lookup_usage {
	bool known;		/* read for the account's own address and tenant */
	int64_t mailbox_bytes, mailbox_messages;
	int64_t tenant_bytes, tenant_messages;
};
/* tn_lookup_resolve(), and when the lookup asks Redis anyway (not an
 * in-process hit) and already knows the domain's tenant, the usage
 * counters of the address and of that tenant in the same pipeline: one
 * round trip for both. usage_r->known is true only when they were read
 * for the answer's address and tenant; otherwise the caller reads them
 * itself (tn-usage.h) if it needs them. */
enum tn_result tn_lookup_resolve_usage(struct tn_lookup *lk, const char *address,
				       tn_msec_t deadline, struct tn_account **acct_r,
				       struct tn_lookup_usage *usage_r,
				       const char **error_r);
/* Memory only, never blocks: TN_FOUND/TN_NOTFOUND when the in-process
 * cache holds the answer, TN_TEMPFAIL when it does not (ask the full
 * path). Aliases always need the full path. */
enum tn_result tn_lookup_resolve_cached(struct tn_lookup *lk, const char *address,
					struct tn_account **acct_r);
/* The same for a bare domain. */
enum tn_result tn_lookup_resolve_domain_cached(struct tn_lookup *lk, const char *domain,
					       struct tn_account **acct_r);

/* Provisioning side: drop the cached objects everywhere (Redis DEL +
 * generation bump + PUBLISH, and this process's memory at once). */
int tn_lookup_invalidate_address(struct tn_lookup *lk, const char *address,
				 const char **error_r);
int tn_lookup_invalidate_domain(struct tn_lookup *lk, const char *domain,
				const char **error_r);
int tn_lookup_invalidate_tenant(struct tn_lookup *lk, const char *tenant,
				const char **error_r);

/* Usage counters of a mailbox ("mbx") or tenant ("ten") from Redis. */
int tn_lookup_usage(struct tn_lookup *lk, const char *kind, const char *id,
		    int64_t *bytes_r, int64_t *messages_r, const char **error_r);

/* The first line of a password file (ldap_bind_password_file and the
 * like): *secret_r NULL for an empty path, else a fresh string the caller
 * wipes and frees; -1 with *error_r when unreadable or empty. Warns when
 * the file is readable by group or others. */
int tn_lookup_read_secret(const char *path, char **secret_r, const char **error_r);

/* A Redis connection pool from the redis_* parameters, its password file
 * read now (as root, before a privilege drop): for the lib/ modules and
 * programs that keep data of their own in Redis. It does not look at
 * redis_enabled (the caller decides what that means for it); NULL with
 * *error_r when the password file cannot be read. */
struct tn_cache *tn_lookup_redis_create(const struct tn_conf *conf, const char **error_r);

/* A directory connection pool from the ldap_* parameters (TLS, timeouts,
 * pool size) with these servers and this bind DN: uris NULL or empty
 * means ldap_uri, bind_dn NULL means ldap_bind_dn. The lookup uses it
 * as is; provisioning with its own account and writable providers. */
struct tn_dir *tn_lookup_dir_create(const struct tn_conf *conf, const char *const *uris,
				    const char *bind_dn, const char *password);

tn_msec_t tn_lookup_default_timeout(struct tn_lookup *lk);
/* True while the in-process cache is in use (subscribed). */
bool tn_lookup_memory_active(struct tn_lookup *lk);
void tn_lookup_get_stats(struct tn_lookup *lk, struct tn_lookup_stats *stats_r);
/* The directory client's counters (connections opened, searches, ...). */
struct tn_dir_stats;
void tn_lookup_get_dir_stats(struct tn_lookup *lk, struct tn_dir_stats *stats_r);
/* Prometheus text for the lookup, directory and cache counters. */
char *tn_lookup_metrics(struct tn_lookup *lk, const char *prefix);

#endif

/*++
 * NAME
 *	tn-auth-cache 3
 * SUMMARY
 *	Dovecot's own auth cache, kept fresh by the invalidation channel
 *	(see tn-auth-cache.h)
 *--*/
#include "auth-common.h"
#include "array.h"
#include "hash.h"
#include "ioloop.h"
#include "auth-cache.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "tn-auth-cache.h"
#include "tn-mem.h"

/* Queued addresses beyond this: the whole cache is emptied instead. */
#define TN_AUTH_CACHE_QUEUE_MAX 1024
/* Alias logins remembered; a full table is emptied with the cache. */
#define TN_AUTH_CACHE_ALIASES_MAX 10000

struct tn_auth_cache {
	struct auth_cache *cache;
	struct tn_lookup *lookup;
	int pipe_fds[2];
	struct io *io;
	struct timeout *down_to;
	/* login -> address, both i_strdup()ed (ioloop's thread only) */
	HASH_TABLE(char *, char *) aliases;
	struct tn_auth_cache_stats stats;

	/* shared with the subscriber thread */
	pthread_mutex_t lock;
	char **queue;			/* addresses to remove (tn_mem) */
	unsigned queued;
	bool clear_all, signaled, subscribed;
	atomic_uint_fast64_t epoch;	/* bumped by every invalidation */
};

/* --- the subscriber thread ------------------------------------------------- */

static void tn_auth_cache_signal(struct tn_auth_cache *ac)
{
	if (ac->signaled)
		return;
	ac->signaled = true;
	/* a full pipe already holds a wake-up */
	if (write(ac->pipe_fds[1], "x", 1) < 0 && errno != EAGAIN)
		ac->signaled = false;
}

static void tn_auth_cache_on_keys(const char *const *keys, void *context)
{
	struct tn_auth_cache *ac = context;

	pthread_mutex_lock(&ac->lock);
	for (size_t i = 0; keys[i] != NULL; i++) {
		ac->stats.invalidations++;
		if (strncmp(keys[i], "adr:", 4) != 0 || keys[i][4] == '\0' ||
		    ac->queued == TN_AUTH_CACHE_QUEUE_MAX) {
			ac->clear_all = true;
			continue;
		}
		if (!ac->clear_all)
			ac->queue[ac->queued++] = tn_mem_strdup(keys[i] + 4);
	}
	atomic_fetch_add(&ac->epoch, 1);
	tn_auth_cache_signal(ac);
	pthread_mutex_unlock(&ac->lock);
}

static void tn_auth_cache_on_state(bool subscribed, void *context)
{
	struct tn_auth_cache *ac = context;

	pthread_mutex_lock(&ac->lock);
	ac->subscribed = subscribed;
	/* what changed while it was down is unknown: start afresh either way */
	ac->clear_all = true;
	atomic_fetch_add(&ac->epoch, 1);
	tn_auth_cache_signal(ac);
	pthread_mutex_unlock(&ac->lock);
}

/* --- the ioloop's thread ----------------------------------------------------- */

static void tn_auth_cache_aliases_clear(struct tn_auth_cache *ac)
{
	struct hash_iterate_context *iter = hash_table_iterate_init(ac->aliases);
	char *login, *address;

	while (hash_table_iterate(iter, ac->aliases, &login, &address)) {
		i_free(login);
		i_free(address);
	}
	hash_table_iterate_deinit(&iter);
	hash_table_clear(ac->aliases, FALSE);
}

static void tn_auth_cache_clear_all(struct tn_auth_cache *ac)
{
	unsigned int n = auth_cache_clear(ac->cache);

	ac->stats.full_flushes++;
	ac->stats.entries_removed += n;
	tn_auth_cache_aliases_clear(ac);
	if (global_auth_settings->debug && n > 0)
		i_debug("tenant: auth cache emptied: %u entries removed", n);
}

/* Remove the entries of addresses[0..n-1] and of their alias logins. */
static void tn_auth_cache_clear_addresses(struct tn_auth_cache *ac, char **addresses,
					  unsigned n)
{
	ARRAY_TYPE(const_string) users;
	struct hash_iterate_context *iter;
	char *login, *address;
	unsigned int removed;

	t_array_init(&users, n + 4);
	for (unsigned i = 0; i < n; i++)
		array_push_back(&users, (const char *const *)&addresses[i]);
	if (hash_table_count(ac->aliases) > 0) {
		iter = hash_table_iterate_init(ac->aliases);
		while (hash_table_iterate(iter, ac->aliases, &login, &address)) {
			for (unsigned i = 0; i < n; i++) {
				if (strcmp(address, addresses[i]) == 0) {
					const char *l = t_strdup(login);

					array_push_back(&users, &l);
					break;
				}
			}
		}
		hash_table_iterate_deinit(&iter);
	}
	array_append_zero(&users);
	removed = auth_cache_clear_users(ac->cache, array_front(&users));
	ac->stats.user_flushes++;
	ac->stats.entries_removed += removed;
	if (global_auth_settings->debug) {
		i_debug("tenant: auth cache: %u entries removed for %u invalidated addresses "
			"(%s%s)", removed, n, addresses[0], n > 1 ? ", ..." : "");
	}
}

static void tn_auth_cache_input(struct tn_auth_cache *ac)
{
	char buf[64], **queue;
	unsigned queued;
	bool clear_all;

	while (read(ac->pipe_fds[0], buf, sizeof(buf)) > 0)
		;
	pthread_mutex_lock(&ac->lock);
	ac->signaled = false;
	clear_all = ac->clear_all;
	queue = ac->queue;
	queued = ac->queued;
	ac->queue = tn_mem_calloc(TN_AUTH_CACHE_QUEUE_MAX, sizeof(*ac->queue));
	ac->queued = 0;
	ac->clear_all = false;
	pthread_mutex_unlock(&ac->lock);

	if (clear_all)
		tn_auth_cache_clear_all(ac);
	else if (queued > 0) {
		T_BEGIN {
			tn_auth_cache_clear_addresses(ac, queue, queued);
		} T_END;
	}
	for (unsigned i = 0; i < queued; i++)
		tn_mem_free(&queue[i]);
	tn_mem_free(&queue);
}

static void tn_auth_cache_down_tick(struct tn_auth_cache *ac)
{
	bool subscribed;

	pthread_mutex_lock(&ac->lock);
	subscribed = ac->subscribed;
	pthread_mutex_unlock(&ac->lock);
	if (!subscribed)
		tn_auth_cache_clear_all(ac);
}

static int tn_auth_cache_pipe(int fds[2])
{
	if (pipe(fds) < 0)
		return -1;
	for (int i = 0; i < 2; i++) {
		if (fcntl(fds[i], F_SETFL, O_NONBLOCK) < 0 ||
		    fcntl(fds[i], F_SETFD, FD_CLOEXEC) < 0) {
			close(fds[0]);
			close(fds[1]);
			return -1;
		}
	}
	return 0;
}

struct tn_auth_cache *tn_auth_cache_create(struct tn_lookup *lk, struct auth_cache *cache,
					   const char **error_r)
{
	struct tn_auth_cache *ac = i_new(struct tn_auth_cache, 1);

	if (tn_auth_cache_pipe(ac->pipe_fds) < 0) {
		*error_r = "auth cache flush: cannot make its pipe";
		i_free(ac);
		return NULL;
	}
	ac->cache = cache;
	ac->lookup = lk;
	ac->queue = tn_mem_calloc(TN_AUTH_CACHE_QUEUE_MAX, sizeof(*ac->queue));
	pthread_mutex_init(&ac->lock, NULL);
	atomic_init(&ac->epoch, 0);
	hash_table_create(&ac->aliases, default_pool, 0, str_hash, strcmp);
	ac->io = io_add(ac->pipe_fds[0], IO_READ, tn_auth_cache_input, ac);
	ac->down_to = timeout_add_short(TN_AUTH_CACHE_DOWN_FLUSH_MS, tn_auth_cache_down_tick, ac);
	tn_lookup_set_listener(lk, tn_auth_cache_on_keys, tn_auth_cache_on_state, ac);
	/* until the subscription says it is up, nothing is known fresh */
	tn_auth_cache_clear_all(ac);
	return ac;
}

void tn_auth_cache_destroy(struct tn_auth_cache **acp)
{
	struct tn_auth_cache *ac = *acp;

	if (ac == NULL)
		return;
	*acp = NULL;
	i_info("tenant: auth cache flush: %" PRIu64 " invalidations heard, %" PRIu64
	       " user flushes, %" PRIu64 " full flushes, %" PRIu64 " late answers removed, %"
	       PRIu64 " entries removed", ac->stats.invalidations, ac->stats.user_flushes,
	       ac->stats.full_flushes, ac->stats.late_flushes, ac->stats.entries_removed);
	io_remove(&ac->io);
	timeout_remove(&ac->down_to);
	close(ac->pipe_fds[0]);
	close(ac->pipe_fds[1]);
	for (unsigned i = 0; i < ac->queued; i++)
		tn_mem_free(&ac->queue[i]);
	tn_mem_free(&ac->queue);
	tn_auth_cache_aliases_clear(ac);
	hash_table_destroy(&ac->aliases);
	pthread_mutex_destroy(&ac->lock);
	i_free(ac);
}

uint64_t tn_auth_cache_begin(struct tn_auth_cache *ac)
{
	return atomic_load(&ac->epoch);
}

void tn_auth_cache_answered(struct tn_auth_cache *ac, uint64_t begin, const char *login,
			    const char *user)
{
	const char *users[3] = { login, NULL, NULL };

	if (atomic_load(&ac->epoch) == begin)
		return;
	if (user != NULL && strcmp(user, login) != 0)
		users[1] = user;
	ac->stats.late_flushes++;
	ac->stats.entries_removed += auth_cache_clear_users(ac->cache, users);
}

void tn_auth_cache_alias(struct tn_auth_cache *ac, const char *login, const char *address)
{
	char *old_login, *old_address;

	if (hash_table_lookup_full(ac->aliases, login, &old_login, &old_address)) {
		if (strcmp(old_address, address) == 0)
			return;
		hash_table_remove(ac->aliases, login);
		i_free(old_login);
		i_free(old_address);
	}
	if (hash_table_count(ac->aliases) >= TN_AUTH_CACHE_ALIASES_MAX)
		tn_auth_cache_clear_all(ac);
	hash_table_insert(ac->aliases, i_strdup(login), i_strdup(address));
}

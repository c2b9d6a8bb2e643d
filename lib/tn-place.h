/*++
 * NAME
 *	tn-place 3h
 * SUMMARY
 *	placement of a mailbox on one member of a pool: rendezvous hashing
 * DESCRIPTION
 *	The one implementation of "which member of the default pool holds
 *	this mailbox", shared by tn-lmtp-router (router-route.c: where a
 *	recipient is delivered) and the Dovecot auth driver
 *	(tn-auth-policy.c: where the proxy logs a user in), so that both
 *	pick the same store for a mailbox that has no tnMailHost and no
 *	tnMailPool yet (docs/lmtp-router.md, Placement).
 *
 *	Members are named "host:port" ("[v6]:port" for an IPv6 address),
 *	normalised by tn_place_hostport() from what router_pool_members
 *	says ("pool=host[:port]" items; the port defaults to
 *	router_lmtp_port). Both programs read the same items with the same
 *	function (tn_place_member_item), so they hash the same names.
 *
 *	Rendezvous (highest random weight) hashing: each member gets the
 *	score tn_place_score(member, address) -- FNV-1a over the member's
 *	name, a separator byte that no name holds, then the address
 *	without regard to case, finished with MurmurHash3's 64-bit
 *	finaliser -- and the highest score wins; equal scores go to the
 *	smaller name (strcmp). The result depends on the set of member
 *	names only, not on their order. Adding a member moves only the
 *	mailboxes that now score highest on it (about 1/N), removing one
 *	moves only its own.
 *
 *	These values are part of the platform's state: a change of the
 *	hash moves every unrecorded mailbox. tests/unit/test-router-route.c
 *	pins the behaviour.
 *
 *	Memory: lib/'s fail-stop tn_mem; strings returned are the caller's
 *	to free with tn_mem_free().
 *--*/
#ifndef TN_PLACE_H
#define TN_PLACE_H

#include <stddef.h>
#include <stdint.h>

/* "host", "host:port", "[v6]" or "[v6]:port" -> "host:port" /
 * "[v6]:port" (default_port when none is given). 0 with *out_r, or -1
 * with a static *error_r. Host names: letters, digits, '.', '-', '_'. */
int tn_place_hostport(const char *text, unsigned default_port, char **out_r,
		      const char **error_r);
/* Split a normalised "host:port" (host without brackets): 0, or -1. */
int tn_place_split(const char *hostport, char **host_r, unsigned *port_r);

/* One router_pool_members item, "pool=host[:port]": 0 with the length
 * of the pool name (at the start of item) and the normalised member,
 * or -1 with a static *error_r naming router_pool_members. */
int tn_place_member_item(const char *item, unsigned default_port, size_t *pool_len_r,
			 char **member_r, const char **error_r);
/* The members of pool in items (router_pool_members), normalised, in
 * their order: 0 with a NULL-terminated array (tn_place_members_free)
 * and its length, or -1 with a static *error_r when any item is not
 * pool=host[:port] or a member is listed twice in one pool (the errors
 * tn-lmtp-router refuses to start with). A pool with no item gives 0
 * members. */
int tn_place_pool_members(const char *const *items, const char *pool, unsigned default_port,
			  char ***members_r, size_t *n_r, const char **error_r);
void tn_place_members_free(char ***members);

/* The score of member for address (compared without regard to case). */
uint64_t tn_place_score(const char *member, const char *address);
/* The index of the member with the highest score for address (n > 0). */
size_t tn_place_pick(const char *const *members, size_t n, const char *address);

#endif

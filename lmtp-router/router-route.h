/*++
 * NAME
 *	router-route 3h
 * SUMMARY
 *	tn-lmtp-router's pure decisions: pools, where a recipient goes, replies
 * DESCRIPTION
 *	Nothing here touches the network or the event loop, so that the
 *	routing rules are unit-tested without either (tests/unit/
 *	test-router-route.c).
 *
 *	Pools come from router_pool_members, "pool=host[:port]" items in
 *	member order (tn_router_route_pools_parse). A recipient goes to
 *	(tn_router_route_decide):
 *	    its mailbox's tnMailHost ("host:port", the LMTP port), else
 *	    its pool (tnMailPool, inherited from the tenant), else
 *	    router_default_pool.
 *	The recipient rules follow the Dovecot userdb of the same platform
 *	(tn_auth_user_verdict): directory failure -> 451 4.3.0; no such
 *	address, an alias, or a mailbox deleted after the cascade -> 550
 *	5.1.1; a suspended mailbox (or tenant, or domain) is delivered,
 *	because its mail is kept; a pool that is not configured, or no
 *	destination at all -> 451 4.3.5 (an admin must act; Postfix keeps
 *	the mail).
 *
 *	Placement (router_placement, tn_router_route_set_placement): with
 *	"hash" or "hash-record", a mailbox that would go to the default
 *	pool goes instead to one member of it, chosen by rendezvous
 *	(highest random weight) hashing of the mailbox's address over the
 *	members' "host:port" names (tn_router_route_place, lib/tn-place.c:
 *	the same code the Dovecot proxy uses): the member whose hash with
 *	the address is highest. Every router with the same
 *	member list (in any order) picks the same member; adding a member
 *	moves only the mailboxes that now score highest on it (about 1/N),
 *	removing one moves only its own. The route is then VIA_PLACED with
 *	route->host set: the mailbox is pinned to that member like a
 *	tnMailHost (no failover: its mail lives there), and with
 *	"hash-record" route->record asks the caller to write the choice to
 *	the directory (router-place.c), after which the mailbox is VIA_HOST.
 *
 *	tn_router_route_order() picks the members of a pool to try, in
 *	order: the members that are up and not drained, in pool order, then
 *	those that are up and drained (a drained member takes new mail only
 *	when nothing else can: drain never refuses mail). Members marked
 *	down are not tried.
 *
 *	tn_router_route_parse_path() and tn_router_route_parse_param() read
 *	the arguments of MAIL FROM / RCPT TO (RFC 5321 4.1.2, the subset
 *	LMTP clients use: a bracketed path, then ESMTP parameters).
 *--*/
#ifndef ROUTER_ROUTE_H
#define ROUTER_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tn-record.h"

enum tn_router_verdict {
	TN_ROUTER_ROUTE,	/* deliver to route->pool or route->host */
	TN_ROUTER_UNKNOWN,	/* 550 5.1.1 */
	TN_ROUTER_TEMPFAIL,	/* 451 4.3.0 */
	TN_ROUTER_NOROUTE,	/* 451 4.3.5 */
};

enum tn_router_via {
	TN_ROUTER_VIA_NONE,
	TN_ROUTER_VIA_HOST,	/* the mailbox's tnMailHost */
	TN_ROUTER_VIA_POOL,	/* the mailbox's (or tenant's) pool */
	TN_ROUTER_VIA_DEFAULT,	/* router_default_pool */
	TN_ROUTER_VIA_PLACED,	/* a member of the default pool, by hash */
};

/* router_placement: the index of its words "none|hash|hash-record" */
enum tn_router_placement {
	TN_ROUTER_PLACE_NONE,	/* the default pool in member order */
	TN_ROUTER_PLACE_HASH,	/* one member by hash, not recorded */
	TN_ROUTER_PLACE_RECORD,	/* one member by hash, written to the directory */
};

struct tn_router_route {
	enum tn_router_verdict verdict;
	enum tn_router_via via;
	int pool;		/* pool index (VIA_POOL, VIA_DEFAULT), else -1 */
	char *host;		/* VIA_HOST, VIA_PLACED: normalised "host:port"
				   (owned); set means pinned to that store */
	bool record;		/* VIA_PLACED: write host to the directory */
	const char *reply;	/* refusals: "550 5.1.1 ..." (static) */
	const char *why;	/* for logs (static) */
};

struct tn_router_pools;

/* items: "pool=host[:port]" (NULL-terminated); default_pool "" = none.
 * 0 with *pools_r, or -1 with a static *error_r. */
int tn_router_route_pools_parse(const char *const *items, const char *default_pool,
				unsigned default_port, struct tn_router_pools **pools_r,
				const char **error_r);
void tn_router_route_pools_free(struct tn_router_pools **pools);
size_t tn_router_route_npools(const struct tn_router_pools *pools);
const char *tn_router_route_pool_name(const struct tn_router_pools *pools, size_t i);
size_t tn_router_route_nmembers(const struct tn_router_pools *pools, size_t i);
/* Normalised "host:port" of member j of pool i. */
const char *tn_router_route_member(const struct tn_router_pools *pools, size_t i, size_t j);
int tn_router_route_pool_find(const struct tn_router_pools *pools, const char *name);
/* How mailboxes of the default pool are placed (default: NONE). */
void tn_router_route_set_placement(struct tn_router_pools *pools,
				   enum tn_router_placement placement);

/* Rendezvous hashing: the score of a member ("host:port") for an
 * address (compared without regard to case), and the index of the
 * member of pool i with the highest score (ties: the smaller name). */
uint64_t tn_router_route_hrw_score(const char *member, const char *address);
size_t tn_router_route_place(const struct tn_router_pools *pools, size_t i,
			     const char *address);

/* "host", "host:port", "[v6]" or "[v6]:port" -> "host:port" /
 * "[v6]:port". 0 with *out_r (caller frees), or -1 with *error_r. */
int tn_router_route_hostport(const char *text, unsigned default_port, char **out_r,
			     const char **error_r);
/* Split a normalised "host:port" (host without brackets). */
int tn_router_route_split(const char *hostport, char **host_r, unsigned *port_r);

void tn_router_route_decide(const struct tn_router_pools *pools, enum tn_result res,
			    const struct tn_account *acct, struct tn_router_route *route_r);
void tn_router_route_clear(struct tn_router_route *route);
const char *tn_router_route_via_name(enum tn_router_via via);

struct tn_router_member_state {
	bool up;
	bool drained;
};
/* Indexes of the members to try, best first, into order_r (n entries
 * at most); returns how many. */
size_t tn_router_route_order(const struct tn_router_member_state *states, size_t n,
			     size_t *order_r);

/* "<addr>" at the start of args (after "FROM:" / "TO:", optional
 * blanks): 0 with *path_r (without brackets, caller frees) and *rest_r
 * after it, or -1 (syntax). The null path "<>" gives "". */
int tn_router_route_parse_path(const char *args, char **path_r, const char **rest_r);
/* Next "KEYWORD[=value]" of rest: 1 with the parts (keyword upper-cased
 * into kw, value into val; both bounded), 0 at the end, -1 on a
 * malformed or oversized parameter. */
int tn_router_route_parse_param(const char **rest, char *kw, size_t kwsize,
				char *val, size_t valsize);

/* An XFORWARD value (n bytes): xtext ("+XX", RFC 3461) decoded; NULL
 * when malformed, longer than 255 bytes or not printable ASCII.
 * Caller frees. */
char *tn_router_route_xtext(const char *v, size_t n);

/* The reply to the client for a store's answer: the store's code and
 * text (the last line of a multi-line reply), plus our session id:
 * "250 2.0.0 <text> [session]". text is sanitised and bounded. */
char *tn_router_route_reply(int code, const char *text, const char *session);

#endif

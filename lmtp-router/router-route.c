/*++
 * NAME
 *	router-route 3
 * SUMMARY
 *	tn-lmtp-router's pure decisions (see router-route.h)
 *--*/
#include "tn-build.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "router-route.h"
#include "tn-log.h"
#include "tn-mem.h"
#include "tn-place.h"

#define ROUTE_REPLY_TEXT_MAX 400

struct tn_router_pool {
	char *name;
	char **members;		/* normalised host:port */
	size_t nmembers;
};

struct tn_router_pools {
	struct tn_router_pool *pools;
	size_t npools;
	int default_pool;	/* -1: none */
	unsigned default_port;	/* of a tnMailHost without one */
	enum tn_router_placement placement;
};

/* --- host:port (lib/tn-place.c) ------------------------------------------------- */

int tn_router_route_hostport(const char *text, unsigned default_port, char **out_r,
			     const char **error_r)
{
	return tn_place_hostport(text, default_port, out_r, error_r);
}

int tn_router_route_split(const char *hostport, char **host_r, unsigned *port_r)
{
	return tn_place_split(hostport, host_r, port_r);
}

/* --- pools -------------------------------------------------------------------- */

static struct tn_router_pool *route_pool_get(struct tn_router_pools *pools, const char *name,
					     size_t n)
{
	struct tn_router_pool *p;

	for (size_t i = 0; i < pools->npools; i++) {
		p = &pools->pools[i];
		if (strlen(p->name) == n && memcmp(p->name, name, n) == 0)
			return p;
	}
	pools->pools = tn_mem_realloc(pools->pools, (pools->npools + 1) * sizeof(*p));
	p = &pools->pools[pools->npools++];
	memset(p, 0, sizeof(*p));
	p->name = tn_mem_strndup(name, n);
	return p;
}

static int route_pool_item(struct tn_router_pools *pools, const char *item,
			   unsigned default_port, const char **error_r)
{
	struct tn_router_pool *p;
	size_t pool_len;
	char *hp;

	if (tn_place_member_item(item, default_port, &pool_len, &hp, error_r) < 0)
		return -1;
	p = route_pool_get(pools, item, pool_len);
	for (size_t j = 0; j < p->nmembers; j++) {
		if (strcmp(p->members[j], hp) == 0) {
			tn_mem_free(&hp);
			*error_r = "router_pool_members: a member is listed twice in one pool";
			return -1;
		}
	}
	p->members = tn_mem_realloc(p->members, (p->nmembers + 1) * sizeof(char *));
	p->members[p->nmembers++] = hp;
	return 0;
}

int tn_router_route_pools_parse(const char *const *items, const char *default_pool,
				unsigned default_port, struct tn_router_pools **pools_r,
				const char **error_r)
{
	struct tn_router_pools *pools = tn_mem_calloc(1, sizeof(*pools));

	pools->default_pool = -1;
	pools->default_port = default_port;
	for (; items != NULL && *items != NULL; items++) {
		if (route_pool_item(pools, *items, default_port, error_r) < 0) {
			tn_router_route_pools_free(&pools);
			return -1;
		}
	}
	if (default_pool != NULL && *default_pool != '\0' &&
	    (pools->default_pool = tn_router_route_pool_find(pools, default_pool)) < 0) {
		*error_r = "router_default_pool names no pool of router_pool_members";
		tn_router_route_pools_free(&pools);
		return -1;
	}
	*pools_r = pools;
	return 0;
}

void tn_router_route_pools_free(struct tn_router_pools **poolsp)
{
	struct tn_router_pools *pools = *poolsp;

	if (pools == NULL)
		return;
	*poolsp = NULL;
	for (size_t i = 0; i < pools->npools; i++) {
		for (size_t j = 0; j < pools->pools[i].nmembers; j++)
			tn_mem_free(&pools->pools[i].members[j]);
		tn_mem_free(&pools->pools[i].members);
		tn_mem_free(&pools->pools[i].name);
	}
	tn_mem_free(&pools->pools);
	tn_mem_free(&pools);
}

size_t tn_router_route_npools(const struct tn_router_pools *pools)
{
	return pools->npools;
}

const char *tn_router_route_pool_name(const struct tn_router_pools *pools, size_t i)
{
	return pools->pools[i].name;
}

size_t tn_router_route_nmembers(const struct tn_router_pools *pools, size_t i)
{
	return pools->pools[i].nmembers;
}

const char *tn_router_route_member(const struct tn_router_pools *pools, size_t i, size_t j)
{
	return pools->pools[i].members[j];
}

int tn_router_route_pool_find(const struct tn_router_pools *pools, const char *name)
{
	for (size_t i = 0; i < pools->npools; i++) {
		if (strcmp(pools->pools[i].name, name) == 0)
			return (int)i;
	}
	return -1;
}

void tn_router_route_set_placement(struct tn_router_pools *pools,
				   enum tn_router_placement placement)
{
	pools->placement = placement;
}

/* --- placement: rendezvous hashing (lib/tn-place.c, shared with the Dovecot proxy) --- */

uint64_t tn_router_route_hrw_score(const char *member, const char *address)
{
	return tn_place_score(member, address);
}

size_t tn_router_route_place(const struct tn_router_pools *pools, size_t i,
			     const char *address)
{
	const struct tn_router_pool *p = &pools->pools[i];

	return tn_place_pick((const char *const *)p->members, p->nmembers, address);
}

/* --- the decision --------------------------------------------------------------- */

static void route_refuse(struct tn_router_route *route, enum tn_router_verdict v,
			 const char *reply, const char *why)
{
	route->verdict = v;
	route->reply = reply;
	route->why = why;
}

/* One member of the default pool for this mailbox, pinned. */
static void route_place(const struct tn_router_pools *pools, const char *address,
			struct tn_router_route *route)
{
	size_t j = tn_router_route_place(pools, (size_t)route->pool, address);

	route->host = tn_mem_strdup(pools->pools[route->pool].members[j]);
	route->via = TN_ROUTER_VIA_PLACED;
	route->record = pools->placement == TN_ROUTER_PLACE_RECORD;
	route->why = "default pool, placed by hash";
}

static void route_destination(const struct tn_router_pools *pools,
			      const struct tn_account *acct, struct tn_router_route *route)
{
	const char *error;

	if (acct->host != NULL && acct->host[0] != '\0') {
		if (tn_router_route_hostport(acct->host, pools->default_port, &route->host, &error) < 0) {
			route_refuse(route, TN_ROUTER_NOROUTE, "451 4.3.5 no route to the mailbox",
				     "tnMailHost is not host[:port]");
			return;
		}
		route->via = TN_ROUTER_VIA_HOST;
		route->why = "mailbox host";
		return;
	}
	if (acct->pool != NULL && acct->pool[0] != '\0') {
		route->pool = tn_router_route_pool_find(pools, acct->pool);
		route->via = TN_ROUTER_VIA_POOL;
		route->why = "mailbox pool";
		if (route->pool < 0)
			route_refuse(route, TN_ROUTER_NOROUTE, "451 4.3.5 no route to the mailbox",
				     "pool not configured");
		return;
	}
	route->pool = pools->default_pool;
	route->via = TN_ROUTER_VIA_DEFAULT;
	route->why = "default pool";
	if (route->pool < 0)
		route_refuse(route, TN_ROUTER_NOROUTE, "451 4.3.5 no route to the mailbox",
			     "no host, no pool and no default pool");
	else if (pools->placement != TN_ROUTER_PLACE_NONE && acct->address != NULL)
		route_place(pools, acct->address, route);
}

void tn_router_route_decide(const struct tn_router_pools *pools, enum tn_result res,
			    const struct tn_account *acct, struct tn_router_route *route_r)
{
	memset(route_r, 0, sizeof(*route_r));
	route_r->pool = -1;
	route_r->verdict = TN_ROUTER_ROUTE;
	if (res == TN_TEMPFAIL)
		route_refuse(route_r, TN_ROUTER_TEMPFAIL,
			     "451 4.3.0 directory unavailable, try again later",
			     "directory unavailable");
	else if (res == TN_NOTFOUND)
		route_refuse(route_r, TN_ROUTER_UNKNOWN, "550 5.1.1 no such mailbox",
			     "no such address");
	else if (acct->kind != TN_ACCOUNT_MAILBOX)
		route_refuse(route_r, TN_ROUTER_UNKNOWN, "550 5.1.1 no such mailbox",
			     "an alias, not a mailbox");
	else if (acct->status == TN_STATUS_DELETED)
		route_refuse(route_r, TN_ROUTER_UNKNOWN, "550 5.1.1 no such mailbox",
			     "mailbox deleted");
	else
		route_destination(pools, acct, route_r);
}

void tn_router_route_clear(struct tn_router_route *route)
{
	tn_mem_free(&route->host);
}

const char *tn_router_route_via_name(enum tn_router_via via)
{
	static const char *const names[] = { "none", "host", "pool", "default", "placed" };

	return names[via];
}

size_t tn_router_route_order(const struct tn_router_member_state *states, size_t n,
			     size_t *order_r)
{
	size_t k = 0;

	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < n; i++) {
			if (states[i].up && states[i].drained == (pass == 1))
				order_r[k++] = i;
		}
	}
	return k;
}

/* --- command arguments ---------------------------------------------------------- */

int tn_router_route_parse_path(const char *args, char **path_r, const char **rest_r)
{
	const char *end;

	while (*args == ' ')
		args++;
	if (*args != '<' || (end = strchr(args, '>')) == NULL)
		return -1;
	for (const char *c = args + 1; c < end; c++) {
		if ((unsigned char)*c <= ' ' || *c == '<' || (unsigned char)*c >= 0x7f)
			return -1;
	}
	if (end[1] != '\0' && end[1] != ' ')
		return -1;
	*path_r = tn_mem_strndup(args + 1, (size_t)(end - args - 1));
	*rest_r = end + 1;
	return 0;
}

int tn_router_route_parse_param(const char **rest, char *kw, size_t kwsize,
				char *val, size_t valsize)
{
	const char *p = *rest, *start;
	size_t n = 0;

	while (*p == ' ')
		p++;
	if (*p == '\0')
		return 0;
	for (start = p; *p != '\0' && *p != ' ' && *p != '='; p++) {
		if (n + 1 >= kwsize || !isalnum((unsigned char)*p))
			return -1;
		kw[n++] = (char)toupper((unsigned char)*p);
	}
	kw[n] = '\0';
	val[0] = '\0';
	if (p == start)
		return -1;
	if (*p == '=') {
		start = ++p;
		while (*p != '\0' && *p != ' ')
			p++;
		if ((size_t)(p - start) + 1 > valsize || p == start)
			return -1;
		memcpy(val, start, (size_t)(p - start));
		val[p - start] = '\0';
	}
	*rest = p;
	return 1;
}

char *tn_router_route_xtext(const char *v, size_t n)
{
	char *out, *o;

	if (n > 255)
		return NULL;
	out = o = tn_mem_alloc(n + 1);
	for (size_t i = 0; i < n; i++) {
		unsigned x;

		if (v[i] == '+' && i + 2 < n && isxdigit((unsigned char)v[i + 1]) &&
		    isxdigit((unsigned char)v[i + 2]) && sscanf(v + i + 1, "%2X", &x) == 1) {
			*o++ = (char)x;
			i += 2;
		} else {
			*o++ = v[i];
		}
		if ((unsigned char)o[-1] < 0x20 || (unsigned char)o[-1] > 0x7e) {
			tn_mem_free(&out);
			return NULL;
		}
	}
	*o = '\0';
	return out;
}

/* --- replies ---------------------------------------------------------------------- */

char *tn_router_route_reply(int code, const char *text, const char *session)
{
	char clean[ROUTE_REPLY_TEXT_MAX];

	tn_log_sanitize(clean, sizeof(clean), text, strlen(text));
	if (code < 200 || code > 599)
		code = 451;
	return tn_mem_printf("%03d %s [%s]", code, clean, session);
}

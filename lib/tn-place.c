/*++
 * NAME
 *	tn-place 3
 * SUMMARY
 *	placement of a mailbox on one member of a pool (see tn-place.h)
 * DESCRIPTION
 *	Moved here from lmtp-router/router-route.c unchanged, so that the
 *	Dovecot proxy computes the router's choice with the router's code
 *	rather than a copy that could drift.
 *--*/
#include "tn-build.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "tn-mem.h"
#include "tn-place.h"

/* --- host:port ---------------------------------------------------------------- */

static bool place_port_ok(const char *s, unsigned *port_r)
{
	char *end;
	long v;

	if (!isdigit((unsigned char)*s))
		return false;
	v = strtol(s, &end, 10);
	if (*end != '\0' || v < 1 || v > 65535)
		return false;
	*port_r = (unsigned)v;
	return true;
}

static bool place_host_ok(const char *h, size_t n)
{
	if (n == 0 || n > 255)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)h[i];

		if (!isalnum(c) && c != '.' && c != '-' && c != '_' && c != ':')
			return false;
	}
	return true;
}

int tn_place_hostport(const char *text, unsigned default_port, char **out_r,
		      const char **error_r)
{
	const char *host = text, *port = NULL, *end;
	unsigned p = default_port;
	bool v6 = text[0] == '[';

	if (v6) {
		host = text + 1;
		if ((end = strchr(host, ']')) == NULL || (end[1] != '\0' && end[1] != ':'))
			goto bad;
		port = end[1] == ':' ? end + 2 : NULL;
	} else {
		end = strchr(text, ':');
		if (end != NULL && strchr(end + 1, ':') != NULL)
			goto bad;	/* a bare IPv6 address needs brackets */
		port = end != NULL ? end + 1 : NULL;
		if (end == NULL)
			end = text + strlen(text);
	}
	if (!place_host_ok(host, (size_t)(end - host)) || (port != NULL && !place_port_ok(port, &p)))
		goto bad;
	if (!v6 && memchr(host, ':', (size_t)(end - host)) != NULL)
		goto bad;
	*out_r = tn_mem_printf(v6 ? "[%.*s]:%u" : "%.*s:%u", (int)(end - host), host, p);
	return 0;
bad:
	*error_r = "expected host, host:port or [IPv6]:port";
	return -1;
}

int tn_place_split(const char *hostport, char **host_r, unsigned *port_r)
{
	const char *colon = strrchr(hostport, ':');
	const char *h = hostport;
	size_t n;

	if (colon == NULL || !place_port_ok(colon + 1, port_r))
		return -1;
	n = (size_t)(colon - hostport);
	if (h[0] == '[' && n >= 2 && h[n - 1] == ']') {
		h++;
		n -= 2;
	}
	*host_r = tn_mem_strndup(h, n);
	return 0;
}

/* --- router_pool_members ---------------------------------------------------------- */

int tn_place_member_item(const char *item, unsigned default_port, size_t *pool_len_r,
			 char **member_r, const char **error_r)
{
	const char *eq = strchr(item, '=');

	if (eq == NULL || eq == item) {
		*error_r = "router_pool_members: items are pool=host[:port]";
		return -1;
	}
	if (tn_place_hostport(eq + 1, default_port, member_r, error_r) < 0) {
		*error_r = "router_pool_members: a member is not host[:port] or [IPv6]:port";
		return -1;
	}
	*pool_len_r = (size_t)(eq - item);
	return 0;
}

void tn_place_members_free(char ***membersp)
{
	char **members = *membersp;

	if (members == NULL)
		return;
	for (size_t i = 0; members[i] != NULL; i++)
		tn_mem_free(&members[i]);
	tn_mem_free(membersp);
}

int tn_place_pool_members(const char *const *items, const char *pool, unsigned default_port,
			  char ***members_r, size_t *n_r, const char **error_r)
{
	size_t nitems = 0, n = 0, *lens;
	char **all, **out;

	while (items != NULL && items[nitems] != NULL)
		nitems++;
	all = tn_mem_calloc(nitems + 1, sizeof(*all));
	lens = tn_mem_calloc(nitems + 1, sizeof(*lens));
	for (size_t i = 0; i < nitems; i++) {
		if (tn_place_member_item(items[i], default_port, &lens[i], &all[i], error_r) < 0)
			goto fail;
		for (size_t j = 0; j < i; j++) {
			if (lens[j] == lens[i] && memcmp(items[j], items[i], lens[i]) == 0 &&
			    strcmp(all[j], all[i]) == 0) {
				*error_r = "router_pool_members: a member is listed twice in one pool";
				goto fail;
			}
		}
	}
	out = tn_mem_calloc(nitems + 1, sizeof(*out));
	for (size_t i = 0; i < nitems; i++) {
		if (lens[i] == strlen(pool) && memcmp(items[i], pool, lens[i]) == 0) {
			out[n++] = all[i];
			all[i] = NULL;
		}
	}
	for (size_t i = 0; i < nitems; i++)
		tn_mem_free(&all[i]);
	tn_mem_free(&all);
	tn_mem_free(&lens);
	*members_r = out;
	*n_r = n;
	return 0;
fail:
	for (size_t i = 0; i < nitems; i++)
		tn_mem_free(&all[i]);
	tn_mem_free(&all);
	tn_mem_free(&lens);
	return -1;
}

/* --- rendezvous hashing ------------------------------------------------------------ */

#define PLACE_FNV_OFFSET UINT64_C(0xcbf29ce484222325)
#define PLACE_FNV_PRIME UINT64_C(0x100000001b3)

static uint64_t place_fnv1a(uint64_t h, const char *s, bool lower)
{
	for (; *s != '\0'; s++) {
		h ^= (unsigned char)(lower ? tolower((unsigned char)*s) : *s);
		h *= PLACE_FNV_PRIME;
	}
	return h;
}

/* MurmurHash3's finaliser: every input bit reaches every output bit, so
 * that scores of one address on different members are independent. */
static uint64_t place_mix64(uint64_t x)
{
	x ^= x >> 33;
	x *= UINT64_C(0xff51afd7ed558ccd);
	x ^= x >> 33;
	x *= UINT64_C(0xc4ceb9fe1a85ec53);
	x ^= x >> 33;
	return x;
}

uint64_t tn_place_score(const char *member, const char *address)
{
	uint64_t h = place_fnv1a(PLACE_FNV_OFFSET, member, false);

	h = (h ^ 0xff) * PLACE_FNV_PRIME;	/* no byte of a name: a separator */
	return place_mix64(place_fnv1a(h, address, true));
}

size_t tn_place_pick(const char *const *members, size_t n, const char *address)
{
	uint64_t best = 0, score;
	size_t pick = 0;

	for (size_t j = 0; j < n; j++) {
		score = tn_place_score(members[j], address);
		if (j == 0 || score > best ||
		    (score == best && strcmp(members[j], members[pick]) < 0)) {
			best = score;
			pick = j;
		}
	}
	return pick;
}

/*++
 * NAME
 *	mapd-policy 3h
 * SUMMARY
 *	tn-mapd's protocol and decisions, without a network
 * DESCRIPTION
 *	Postfix's socketmap protocol (socketmap_table(5)): a request is a
 *	netstring "LEN:name key," and the reply a netstring holding
 *	"OK value", "NOTFOUND ", "TEMP reason" or "PERM reason".
 *
 *	tn_mapd_netstring_parse() finds one netstring at the start of a
 *	buffer: TN_MAPD_PARSE_MORE while it is incomplete (and still
 *	possibly valid), TN_MAPD_PARSE_OK with the payload and the bytes
 *	it used, TN_MAPD_PARSE_ERROR when the bytes cannot be a netstring
 *	or announce more than max_payload bytes (the stream is then out
 *	of step: the caller answers PERM and closes the connection).
 *
 *	tn_mapd_request_split() splits "name key" and names the map:
 *	domains (virtual_mailbox_domains), mailboxes
 *	(virtual_mailbox_maps), aliases (virtual_alias_maps) and senders
 *	(smtpd_sender_login_maps).
 *
 *	tn_mapd_key_valid() tells whether a key could be one of ours at
 *	all: a domain name for "domains" (LDH labels, at least two, at most
 *	253 bytes: a hosted mail domain is never a single label),
 *	a dot-atom address for the others (one '@', local part of RFC 5322
 *	atext and dots, at most 64 bytes, at most 254 in all). The forms
 *	Postfix probes that cannot be ours ("user" without a domain,
 *	"@domain" catch-alls, quoted or over-long addresses, controls,
 *	8-bit bytes, LDAP or list metacharacters) are answered NOTFOUND
 *	without asking the directory.
 *
 *	tn_mapd_answer() turns a found account into the map's value:
 *	domains: the owning tenant id, whatever the status (the milter
 *	decides about suspended domains); mailboxes: the address, for a
 *	mailbox in any status (an alias is not a mailbox: NOTFOUND);
 *	aliases: the expanded targets, comma-separated (a mailbox:
 *	NOTFOUND, so Postfix keeps the address; an alias expanding to
 *	nothing: NOTFOUND); senders: a mailbox owns itself, an alias is
 *	owned by the local mailboxes it expands to (TN_MAPD_OWNERS: the
 *	caller resolves the targets and keeps the mailboxes).
 *
 *	tn_mapd_reply() formats a reply netstring; values longer than
 *	TN_MAPD_REPLY_MAX (the reply size Postfix accepts) are refused.
 *--*/
#ifndef MAPD_POLICY_H
#define MAPD_POLICY_H

#include <stdbool.h>
#include <stddef.h>

#include "tn-record.h"

/* Postfix's socketmap client refuses replies above 100000 bytes; the
 * request limit parameter is bounded by the same figure. */
#define TN_MAPD_REPLY_MAX 100000
#define TN_MAPD_REQUEST_HARD_MAX 100000

enum tn_mapd_map {
	TN_MAPD_DOMAINS,
	TN_MAPD_MAILBOXES,
	TN_MAPD_ALIASES,
	TN_MAPD_SENDERS,
	TN_MAPD_NMAPS
};

enum tn_mapd_parse {
	TN_MAPD_PARSE_MORE,
	TN_MAPD_PARSE_OK,
	TN_MAPD_PARSE_ERROR,
};

/* What tn_mapd_answer() decided. */
enum tn_mapd_answer {
	TN_MAPD_ANSWER_OK,		/* *value_r is the value */
	TN_MAPD_ANSWER_NOTFOUND,
	TN_MAPD_ANSWER_OWNERS,		/* senders of an alias: resolve acct->targets */
	TN_MAPD_ANSWER_TOO_LARGE,	/* the value would not fit a reply */
};

enum tn_mapd_parse tn_mapd_netstring_parse(const char *buf, size_t len, size_t max_payload,
					   const char **payload_r, size_t *payload_len_r,
					   size_t *consumed_r, const char **error_r);
int tn_mapd_request_split(const char *payload, size_t len, enum tn_mapd_map *map_r,
			  const char **key_r, size_t *key_len_r, const char **error_r);
const char *tn_mapd_map_name(enum tn_mapd_map map);
bool tn_mapd_key_valid(enum tn_mapd_map map, const char *key, size_t len,
		       const char **why_r);
bool tn_mapd_domain_valid(const char *name, size_t len);

enum tn_mapd_answer tn_mapd_answer(enum tn_mapd_map map, const struct tn_account *acct,
				   char **value_r);
/* items joined with ","; NULL when longer than TN_MAPD_REPLY_MAX - 16 */
char *tn_mapd_join(const char *const *items, size_t n);
/* A reply netstring "LEN:STATUS TEXT," (fresh, *len_r bytes). */
char *tn_mapd_reply(const char *status, const char *text, size_t *len_r);

#endif
